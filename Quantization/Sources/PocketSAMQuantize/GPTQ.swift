/// Error-compensating int8 rounding (GPTQ, Frantar et al. 2022) for a weight matrix `W[N][K]` whose
/// layer inputs have second moments `H = Σ x xᵀ` (K×K, from calibration images): columns are
/// quantized in order and each column's rounding error is spread over the columns not yet quantized,
/// weighted by the inverse Hessian, so that the layer's output error `‖(W − Ŵ) X‖` is minimised rather
/// than the weight error. Scales are chosen per output channel (or per group, when the group starts)
/// exactly as plain rounding chooses them (`Quantizer.bestScale`); with one scale per channel, each is then
/// refitted to the output once the codes are fixed (least squares in the `H` norm: s = qᵀHw / qᵀHq).
public enum GPTQ {
    /// Returns the int8 values (row-major `[N][K]`) and scales (channel-major, as `Quantizer`), or nil
    /// when `H` is not positive definite even after damping.
    public static func quantize(_ w: [Float], n: Int, k: Int, hessian h: [Float], groupSize: Int,
                                damping: Double = 0.01, refitScales: Bool = true) -> (values: [Int8], scales: [Float])? {
        // Per-channel scales: quantize the columns with the largest input energy first ("act order"),
        // so the error of the important inputs is compensated by the others. With groups, keep the order.
        if groupSize == 0, k > 1 {
            let perm = (0..<k).sorted { h[$0 * k + $0] > h[$1 * k + $1] || (h[$0 * k + $0] == h[$1 * k + $1] && $0 < $1) }
            var wp = [Float](repeating: 0, count: n * k), hp = [Float](repeating: 0, count: k * k)
            for r in 0..<n { for c in 0..<k { wp[r * k + c] = w[r * k + perm[c]] } }
            for i in 0..<k { for j in 0..<k { hp[i * k + j] = h[perm[i] * k + perm[j]] } }
            guard let (qp, sc) = quantizeInOrder(wp, n: n, k: k, hessian: hp, groupSize: 0, damping: damping,
                                                 refitScales: refitScales) else { return nil }
            var q = [Int8](repeating: 0, count: n * k)
            for r in 0..<n { for c in 0..<k { q[r * k + perm[c]] = qp[r * k + c] } }
            return (q, sc)
        }
        return quantizeInOrder(w, n: n, k: k, hessian: h, groupSize: groupSize, damping: damping, refitScales: refitScales)
    }

    static func quantizeInOrder(_ w: [Float], n: Int, k: Int, hessian h: [Float], groupSize: Int,
                                damping: Double, refitScales: Bool) -> (values: [Int8], scales: [Float])? {
        let g = groupSize == 0 ? k : groupSize
        let groups = k / g
        // Work in double: K up to a few thousand, and the Cholesky factors must stay accurate.
        var hd = h.map(Double.init)
        var wt = [Double](repeating: 0, count: k * n)  // Wᵀ: column j of W is row j here (contiguous)
        for r in 0..<n { for c in 0..<k { wt[c * n + r] = Double(w[r * k + c]) } }
        var meanDiag = 0.0
        for i in 0..<k { meanDiag += hd[i * k + i] }
        meanDiag /= Double(max(k, 1))
        guard meanDiag > 0, meanDiag.isFinite else { return nil }
        for i in 0..<k {
            if hd[i * k + i] <= 0 {  // an input that is always zero: its weights do not matter
                hd[i * k + i] = 1
                for r in 0..<n { wt[i * n + r] = 0 }
            }
            hd[i * k + i] += damping * meanDiag
        }
        guard let u = upperCholeskyOfInverse(hd, k) else { return nil }
        var q = [Int8](repeating: 0, count: n * k)
        var scales = [Float](repeating: 0, count: n * groups)
        var err = [Double](repeating: 0, count: n)
        var scale = [Double](repeating: 0, count: n)
        for c in 0..<k {
            if c % g == 0 {
                // Scales of this group from the (already error-compensated) weights.
                let grp = c / g
                for r in 0..<n {
                    let vals = (c..<(c + g)).map { Float(wt[$0 * n + r]) }
                    let s = Quantizer.bestScale(vals)
                    scales[r * groups + grp] = s
                    scale[r] = Double(s)
                }
            }
            let d = u[c * k + c]
            for r in 0..<n {
                let v = wt[c * n + r]
                let s = scale[r]
                let qv = s > 0 ? max(-127, min(127, (v / s).rounded(.toNearestOrEven))) : 0
                q[r * k + c] = Int8(qv)
                err[r] = (v - qv * s) / d
            }
            // Spread the error over the remaining columns: W[:, j] −= err · U[c, j].
            for j in (c + 1)..<max(c + 1, k) {
                let f = u[c * k + j]
                if f == 0 { continue }
                wt.withUnsafeMutableBufferPointer { b in
                    let row = b.baseAddress! + j * n
                    for r in 0..<n { row[r] -= err[r] * f }
                }
            }
        }
        if groups == 1, refitScales {
            // The codes fixed, each channel's scale refitted to the layer's output: s = qᵀHw / qᵀHq (the
            // minimum over s of (w − s·q)ᵀ H (w − s·q), the calibration output error of the channel).
            var hq = [Double](repeating: 0, count: k)
            for r in 0..<n {
                for i in 0..<k {
                    var acc = 0.0
                    for j in 0..<k where q[r * k + j] != 0 { acc += Double(h[i * k + j]) * Double(q[r * k + j]) }
                    hq[i] = acc
                }
                var num = 0.0, den = 0.0
                for i in 0..<k { num += Double(w[r * k + i]) * hq[i]; den += Double(q[r * k + i]) * hq[i] }
                let sNew = num / den
                if den > 0, sNew.isFinite, sNew > 0 { scales[r] = Float(sNew) }
            }
        }
        return (q, scales)
    }

    /// U upper triangular with H⁻¹ = Uᵀ U, via L = chol(H), L⁻¹, H⁻¹ = L⁻ᵀ L⁻¹, U = chol(H⁻¹)ᵀ.
    static func upperCholeskyOfInverse(_ h: [Double], _ k: Int) -> [Double]? {
        guard var l = cholesky(h, k) else { return nil }
        // L⁻¹ row by row (forward substitution over contiguous rows): for i < r,
        // L⁻¹[r][i] = −(Σ_{t<r} L[r][t] · L⁻¹[t][i]) / L[r][r], with L⁻¹[t][i] = 0 for i > t.
        var inv = [Double](repeating: 0, count: k * k)
        var acc = [Double](repeating: 0, count: k)
        inv.withUnsafeMutableBufferPointer { ib in
            let I = ib.baseAddress!
            for r in 0..<k {
                for i in 0..<r { acc[i] = 0 }
                acc.withUnsafeMutableBufferPointer { ab in
                    let A = ab.baseAddress!
                    for t in 0..<r {
                        let f = l[r * k + t]
                        if f == 0 { continue }
                        let row = I + t * k
                        for i in 0...t { A[i] += f * row[i] }
                    }
                }
                let d = l[r * k + r]
                for i in 0..<r { I[r * k + i] = -acc[i] / d }
                I[r * k + r] = 1 / d
            }
        }
        l = []
        // H⁻¹ = (L⁻¹)ᵀ L⁻¹: entry (i, j) = Σ_{t ≥ max(i,j)} inv[t][i] · inv[t][j].
        var hinv = [Double](repeating: 0, count: k * k)
        inv.withUnsafeBufferPointer { iv in
            hinv.withUnsafeMutableBufferPointer { hb in
                for t in 0..<k {
                    let row = iv.baseAddress! + t * k
                    for i in 0...t {
                        let a = row[i]
                        if a == 0 { continue }
                        let out = hb.baseAddress! + i * k
                        for j in i...t { out[j] += a * row[j] }
                    }
                }
            }
        }
        for i in 0..<k { for j in 0..<i { hinv[i * k + j] = hinv[j * k + i] } }
        guard let lc = cholesky(hinv, k) else { return nil }
        // U = Lcᵀ.
        var u = [Double](repeating: 0, count: k * k)
        for i in 0..<k { for j in 0...i { u[j * k + i] = lc[i * k + j] } }
        return u
    }

    /// Lower Cholesky factor of the symmetric positive-definite `a` (row-major k×k), or nil.
    static func cholesky(_ a: [Double], _ k: Int) -> [Double]? {
        var l = [Double](repeating: 0, count: k * k)
        var ok = true
        l.withUnsafeMutableBufferPointer { lb in
            let L = lb.baseAddress!
            for j in 0..<k {
                var d = a[j * k + j]
                for t in 0..<j { d -= L[j * k + t] * L[j * k + t] }
                guard d > 0, d.isFinite else { ok = false; return }
                let ljj = d.squareRoot()
                L[j * k + j] = ljj
                for i in (j + 1)..<max(j + 1, k) {
                    var s = a[i * k + j]
                    let ri = L + i * k, rj = L + j * k
                    for t in 0..<j { s -= ri[t] * rj[t] }
                    L[i * k + j] = s / ljj
                }
            }
        }
        return ok ? l : nil
    }
}
