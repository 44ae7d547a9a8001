import PocketSAMFormat

/// Storage precision for a whole file.
public enum Precision: String, Sendable, CaseIterable {
    case int8, fp16, fp32
}

/// Per-tensor quantization: symmetric int8 with one fp32 scale per output channel.
public enum Quantizer {
    /// Symmetric int8 along `axis` (the output-channel axis): `q = round(w / scale)` in −127…127 and
    /// `ŵ = q · scale`, with one scale per channel, or with `groupSize > 0` (axis 0 only) one scale per
    /// group of that many consecutive elements of a channel. Each scale is `α · max|w| / 127` over its
    /// channel or group, with the clipping factor α in 0.50…1.00 (steps of 0.01) that minimises the
    /// squared error `Σ (w − ŵ)²`; α = 1 is plain max-abs scaling. All-zero groups get scale 0.
    public static func int8PerChannel(_ w: [Float], shape: [Int], axis: Int,
                                      groupSize: Int = 0) -> (values: [Int8], scales: [Float]) {
        let outer = shape[..<axis].reduce(1, *)
        let channels = shape[axis]
        let inner = shape[(axis + 1)...].reduce(1, *)
        let g = groupSize == 0 ? inner : groupSize
        let groups = groupSize == 0 ? 1 : inner / groupSize
        precondition(groupSize == 0 || (axis == 0 && inner % groupSize == 0), "bad group size")
        var scales = [Float](repeating: 0, count: channels * groups)
        var q = [Int8](repeating: 0, count: w.count)
        // Element j of unit (channel c, group k) lives at index(c, k, j).
        @inline(__always) func index(_ c: Int, _ k: Int, _ j: Int) -> Int {
            if groupSize != 0 { return c * inner + k * g + j }
            let o = j / inner, i = j % inner
            return (o * channels + c) * inner + i
        }
        let unitCount = groupSize == 0 ? outer * inner : g
        var buf = [Float](repeating: 0, count: unitCount)
        for c in 0..<channels {
            for k in 0..<groups {
                var m: Float = 0
                for j in 0..<unitCount {
                    let v = w[index(c, k, j)]
                    buf[j] = v
                    m = max(m, abs(v))
                }
                guard m > 0 else { continue }
                let bestScale = bestScale(buf)
                scales[c * groups + k] = bestScale
                let inv = 1 / bestScale
                for j in 0..<unitCount {
                    let i = index(c, k, j)
                    q[i] = Int8(max(-127, min(127, (w[i] * inv).rounded(.toNearestOrEven))))
                }
            }
        }
        return (q, scales)
    }

    /// The scale `α · max|v| / 127` (α in 0.50…1.00, steps of 0.01) minimising `Σ (v − q·s)²`, as
    /// `int8PerChannel` chooses it; 0 for all-zero values.
    public static func bestScale(_ v: [Float]) -> Float {
        var m: Float = 0
        for x in v { m = max(m, abs(x)) }
        guard m > 0 else { return 0 }
        var best = Float.infinity, bestScale = m / 127
        for step in 0...50 {
            let s = m * (1 - Float(step) * 0.01) / 127
            let inv = 1 / s
            var err: Float = 0
            for x in v {
                let r = max(-127, min(127, (x * inv).rounded(.toNearestOrEven)))
                let d = x - r * s
                err += d * d
            }
            if err < best { best = err; bestScale = s }
        }
        return bestScale
    }

    public static func dequantize(_ q: [Int8], scales: [Float], shape: [Int], axis: Int, groupSize: Int = 0) -> [Float] {
        let channels = shape[axis]
        let inner = shape[(axis + 1)...].reduce(1, *)
        let groups = groupSize == 0 ? 1 : inner / groupSize
        let g = groupSize == 0 ? inner : groupSize
        return q.enumerated().map { i, v in
            Float(v) * scales[((i / inner) % channels) * groups + (i % inner) / g]
        }
    }

    /// `‖w − ŵ‖ / ‖w‖` (0 for an all-zero tensor), in double precision.
    public static func relativeRMSError(_ w: [Float], _ approx: [Float]) -> Double {
        var num = 0.0, den = 0.0
        for i in 0..<w.count {
            let d = Double(w[i]) - Double(approx[i])
            num += d * d
            den += Double(w[i]) * Double(w[i])
        }
        return den == 0 ? (num == 0 ? 0 : .infinity) : (num / den).squareRoot()
    }
}
