import PocketSAMFormat
import PocketSAMKernels

/// An int8 weight matrix `[n, k]` in the kernels' panel layout, read in place from the mapped file,
/// with its scales and per-group weight sums laid out group-major for the kernels (small tables built
/// at load: `groups · n` values each).
struct QWeight {
    let data: UnsafePointer<Int8>
    /// `[groups][np]`, zero past `n`.
    let scales: UnsafePointer<Float>
    /// `[groups][np]`: Σ of the int8 weights over each group (the zero-point correction).
    let sums: UnsafePointer<Int32>
    let n: Int, k: Int, kp: Int, group: Int
}

extension QWeight {
    /// The int8 GEMM on the calling thread, every column: `m` rows of `a` quantized per row (`scale`, `zero`; stride
    /// `kp`) into `c` (stride `ldc`), bias and GELU (`gelu`'s mode) fused.
    func gemm(_ a: UnsafePointer<UInt8>, scale: UnsafePointer<Float>, zero: UnsafePointer<Int32>, m: Int, bias: UnsafePointer<Float>?,
              into c: UnsafeMutablePointer<Float>, ldc: Int, gelu: Int32 = 0) {
        let p = psam_qgemm_args(a: a, lda: kp, a_scale: scale, a_zero: zero, w: data, w_scale: scales, w_sum: sums, bias: bias, c: c,
                                ldc: ldc, m: m, n: n, kp: kp, group: group, gelu: gelu)
        withUnsafePointer(to: p) { psam_qgemm($0, 0, n) }
    }
}

/// An int16 weight matrix `[n, k]` (panels16x2, see `psam_s16gemm_args`) with one scale per channel, built at load
/// from an fp16 weight an int8 model keeps at higher precision, where `psam_s16gemm_fast()`: there the int16 GEMM
/// runs those layers about twice as fast as fp32, with every |w| within `psam_s16_weight_limit(kp)` (14 to 15 bits
/// of the channel's largest weight for the short dot products these layers have).
struct S16Weight {
    let data: UnsafePointer<Int16>
    /// `[np]`, zero past `n`.
    let scales: UnsafePointer<Float>
    let n: Int, k: Int, kp: Int

    /// Packs `w[n][k]` (fp32) into `data` (`np · kp` values) and `scales` (`np` values), both zeroed here first.
    static func pack(_ w: UnsafePointer<Float>, n: Int, k: Int, data: UnsafeMutablePointer<Int16>,
                     scales: UnsafeMutablePointer<Float>) -> S16Weight {
        let kp = (k + 1) & ~1, np = PanelLayout.paddedN(n)
        data.initialize(repeating: 0, count: np * kp)
        scales.initialize(repeating: 0, count: np)
        let limit = Float(psam_s16_weight_limit(kp))
        for c in 0..<n {
            let row = w + c * k
            var amax: Float = 0
            for j in 0..<k { amax = max(amax, abs(row[j])) }
            guard amax > 0, amax.isFinite else { continue }
            let s = amax / limit
            scales[c] = s
            for j in 0..<k {
                let v = (row[j] / s).rounded()
                data[psam_panel16_offset(c, j, kp)] = Int16(min(max(v, -limit), limit))
            }
        }
        return S16Weight(data: data, scales: scales, n: n, k: k, kp: kp)
    }
}

extension S16Weight {
    /// The int16 GEMM on the calling thread, every column: `m` rows of `a` quantized per row (`scale`; stride `kp`)
    /// into `c` (stride `ldc`), bias and GELU (`gelu`'s mode) fused.
    func gemm(_ a: UnsafePointer<Int16>, scale: UnsafePointer<Float>, m: Int, bias: UnsafePointer<Float>?,
              into c: UnsafeMutablePointer<Float>, ldc: Int, gelu: Int32 = 0) {
        let p = psam_s16gemm_args(a: a, lda: kp, a_scale: scale, w: data, w_scale: scales, bias: bias, c: c, ldc: ldc, m: m, n: n,
                                  kp: kp, gelu: gelu)
        withUnsafePointer(to: p) { psam_s16gemm($0, 0, n) }
    }
}

/// Weight pointers resolved once at load, so inference never looks a tensor up by name (which would
/// build strings on the heap). Every name here is in the configuration's spec, validated at load.
/// A linear or conv weight is either fp32 (`w`) or packed int8 (`q`, then `w` is nil); an fp32 one can also have
/// an int16 form (`s`), which the runtime uses when it is there.
struct Lin {
    let w: UnsafePointer<Float>!
    let b: UnsafePointer<Float>?
    let q: QWeight?
    var s: S16Weight? = nil
    /// The weight tensor's name (for calibration hooks).
    let name: String
}

struct Norm {
    let w: UnsafePointer<Float>
    let b: UnsafePointer<Float>
}

extension Model {
    /// `gemm: false` for layers that do not run through `Ops.linear` (depthwise and transposed convolutions):
    /// they get no int16 form.
    func lin(_ p: String, bias: Bool = true, gemm: Bool = true) -> Lin {
        Lin(w: qweights[p + ".weight"] == nil ? w(p + ".weight") : nil, b: bias ? w(p + ".bias") : nil, q: qweights[p + ".weight"],
            s: gemm ? int16Form(p + ".weight") : nil, name: p + ".weight")
    }
    func norm(_ p: String) -> Norm { Norm(w: w(p + ".weight"), b: w(p + ".bias")) }
}
