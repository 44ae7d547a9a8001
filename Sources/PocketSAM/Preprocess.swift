import PocketSAMFormat
import PocketSAMKernels

/// Image preprocessing exactly as SAM's `ResizeLongestSide.apply_image` (PIL's bilinear resize with
/// its antialiasing filter on uint8 RGB), then per-model normalisation and zero padding.
enum Preprocess {
    /// SAM's `get_preprocess_shape`: the size after resizing the longest side to `long`.
    static func resizedShape(h: Int, w: Int, long: Int) -> (h: Int, w: Int) {
        let scale = Double(long) / Double(max(h, w))
        return (Int(Double(h) * scale + 0.5), Int(Double(w) * scale + 0.5))
    }

    /// The most filter taps PIL's bilinear filter can need for one output sample.
    static func maxTaps(inSize: Int, outSize: Int) -> Int {
        Int((max(Double(inSize) / Double(outSize), 1) * 2).rounded(.up)) + 2
    }

    /// PIL's resampling coefficients for one axis (bilinear = triangle filter, widened by the scale
    /// when downsampling), normalised and converted to PIL's 22-bit fixed point, into `bounds`
    /// (`[outSize × 2]`: first tap, tap count) and `weights` (`[outSize × taps]`).
    static func coefficients(inSize: Int, outSize: Int, taps: Int, bounds: UnsafeMutablePointer<Int32>,
                             weights: UnsafeMutablePointer<Int32>) {
        let scale = Double(inSize) / Double(outSize)
        let filterscale = max(scale, 1)
        let support = 1.0 * filterscale
        let ss = 1 / filterscale
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            let xmin = max(Int(center - support + 0.5), 0)
            let xmax = min(min(Int(center + support + 0.5), inSize) - xmin, taps)
            var ww = 0.0
            for x in 0..<xmax {
                let t = abs((Double(x + xmin) - center + 0.5) * ss)
                ww += t < 1 ? 1 - t : 0
            }
            for x in 0..<xmax {
                let t = abs((Double(x + xmin) - center + 0.5) * ss)
                let k = ww == 0 ? 0 : (t < 1 ? 1 - t : 0) / ww
                let f = k * Double(1 << 22)
                weights[xx * taps + x] = Int32(f < 0 ? f - 0.5 : f + 0.5)
            }
            bounds[2 * xx] = Int32(xmin)
            bounds[2 * xx + 1] = Int32(max(xmax, 0))
        }
    }

    /// Resizes 8-bit gray or RGB `src` (`channels` 1 or 3, rows `stride` bytes apart) to RGB
    /// `[oh, ow, 3]` in `out`: horizontal pass then vertical, each rounded to uint8 as PIL does (gray
    /// is replicated to three equal channels first, which PIL's per-channel filter leaves equal). Each pass's
    /// rows in blocks on the session's threads (every output byte is computed the same way whatever the split).
    static func resizeRGB(_ src: UnsafePointer<UInt8>, h: Int, w: Int, channels: Int, stride: Int, oh: Int, ow: Int,
                          out: UnsafeMutablePointer<UInt8>, scratch: SessionScratch, arena: Arena) {
        let tmp = scratch.bytes.reserve(h * ow * 3)
        var job = PreprocessJob(phase: .horizontal, src: src, h: h, w: w, channels: channels, stride: stride, oh: oh, ow: ow, tmp: tmp,
                                out: out, bounds: nil, weights: nil, taps: 0, norm: .minMax, size: 0, input: nil, lo: 0, range: 1)
        if ow != w {
            let taps = maxTaps(inSize: w, outSize: ow)
            let b = scratch.bounds.reserve(2 * ow), k = scratch.weights.reserve(ow * taps)
            coefficients(inSize: w, outSize: ow, taps: taps, bounds: b, weights: k)
            (job.bounds, job.weights, job.taps) = (UnsafePointer(b), UnsafePointer(k), taps)
        } else {
            job.phase = .copy
        }
        job.blocks = min(16, h)
        Ops.runJob(arena, &job, kind: .preprocessBlock, blocks: job.blocks)
        if oh == h {
            out.update(from: tmp, count: h * ow * 3)
            return
        }
        let taps = maxTaps(inSize: h, outSize: oh)
        let b = scratch.bounds.reserve(2 * oh), k = scratch.weights.reserve(oh * taps)
        coefficients(inSize: h, outSize: oh, taps: taps, bounds: b, weights: k)
        (job.phase, job.bounds, job.weights, job.taps) = (.vertical, UnsafePointer(b), UnsafePointer(k), taps)
        job.blocks = min(16, oh)
        Ops.runJob(arena, &job, kind: .preprocessBlock, blocks: job.blocks)
    }

    /// Normalises `rgb` (`[h, w, 3]` uint8) per `norm` and pads to `[size, size, 3]` with zeros, rows in blocks on
    /// the session's threads (min-max: the image's extremes first, exact whatever the split).
    static func normalizeAndPad(_ rgb: UnsafePointer<UInt8>, h: Int, w: Int, size: Int, norm: Normalization,
                                out: UnsafeMutablePointer<Float>, scratch: SessionScratch, arena: Arena) {
        var job = PreprocessJob(phase: .extremes, src: rgb, h: h, w: w, channels: 3, stride: w * 3, oh: h, ow: w, tmp: nil, out: nil,
                                bounds: nil, weights: nil, taps: 0, norm: norm, size: size, input: out, lo: 0, range: 1)
        if case .minMax = norm {
            // Each block's lowest and highest byte, then the image's.
            job.blocks = min(16, h)
            let ext = scratch.bounds.reserve(2 * job.blocks)
            job.extremes = ext
            Ops.runJob(arena, &job, kind: .preprocessBlock, blocks: job.blocks)
            var lo: Int32 = 255, hi: Int32 = 0
            for b in 0..<job.blocks { lo = min(lo, ext[2 * b]); hi = max(hi, ext[2 * b + 1]) }
            job.lo = Float(lo)
            job.range = max(Float(hi) - Float(lo), 1e-8)
        }
        job.phase = .normalize
        job.blocks = min(16, size)
        Ops.runJob(arena, &job, kind: .preprocessBlock, blocks: job.blocks)
    }
}

/// One pass of `Preprocess` over a block of rows (`run(block:)` of `blocks` equal parts of the pass's rows).
struct PreprocessJob {
    enum Phase { case copy, horizontal, vertical, extremes, normalize }
    var phase: Phase
    let src: UnsafePointer<UInt8>, h: Int, w: Int, channels: Int, stride: Int, oh: Int, ow: Int
    let tmp: UnsafeMutablePointer<UInt8>?, out: UnsafeMutablePointer<UInt8>?
    var bounds: UnsafePointer<Int32>?, weights: UnsafePointer<Int32>?, taps: Int
    let norm: Normalization, size: Int
    let input: UnsafeMutablePointer<Float>?
    var lo: Float, range: Float
    /// Blocks the pass's rows are split into; `.extremes` writes block i's lowest and highest byte at 2i, 2i + 1.
    var blocks = 1
    var extremes: UnsafeMutablePointer<Int32>?

    func run(block i: Int) {
        let rows: Int
        switch phase {
        case .copy, .horizontal, .extremes: rows = h
        case .vertical: rows = oh
        case .normalize: rows = size
        }
        let r0 = rows * i / blocks, r1 = rows * (i + 1) / blocks
        switch phase {
        case .copy:
            guard let tmp else { return }
            for y in r0..<r1 {
                for x in 0..<w { for ch in 0..<3 { tmp[(y * w + x) * 3 + ch] = src[y * stride + x * channels + (channels == 3 ? ch : 0)] } }
            }
        case .horizontal:
            guard let tmp, let b = bounds, let k = weights else { return }
            psam_resample_rows_h(src, stride, channels, r0, r1, ow, b, k, taps, tmp)
        case .vertical:
            guard let tmp, let out, let b = bounds, let k = weights else { return }
            psam_resample_rows_v(tmp, ow * 3, r0, r1, b, k, taps, out)
        case .extremes:
            guard let extremes else { return }
            var lo: UInt8 = 255, hi: UInt8 = 0
            for j in (r0 * w * 3)..<(r1 * w * 3) { lo = min(lo, src[j]); hi = max(hi, src[j]) }
            extremes[2 * i] = Int32(lo)
            extremes[2 * i + 1] = Int32(hi)
        case .normalize:
            guard let o = input else { return }
            let rgb = src
            for y in r0..<r1 {
                let row = o + y * size * 3
                guard y < h else {
                    row.initialize(repeating: 0, count: size * 3)
                    continue
                }
                switch norm {
                case let .meanStd(mean, std):
                    let m0 = Float(mean[0]), m1 = Float(mean[1]), m2 = Float(mean[2])
                    let s0 = Float(std[0]), s1 = Float(std[1]), s2 = Float(std[2])
                    for x in 0..<w {
                        let i = (y * w + x) * 3
                        row[x * 3] = (Float(rgb[i]) - m0) / s0
                        row[x * 3 + 1] = (Float(rgb[i + 1]) - m1) / s1
                        row[x * 3 + 2] = (Float(rgb[i + 2]) - m2) / s2
                    }
                case .minMax:
                    for x in 0..<w { for c in 0..<3 { row[x * 3 + c] = (Float(rgb[(y * w + x) * 3 + c]) - lo) / range } }
                }
                (row + w * 3).initialize(repeating: 0, count: (size - w) * 3)
            }
        }
    }
}

/// Buffers a session keeps between calls for preprocessing.
final class SessionScratch {
    let bytes = Scratch<UInt8>()
    let resized = Scratch<UInt8>()
    let bounds = Scratch<Int32>()
    let weights = Scratch<Int32>()
    /// The mask post-processing's column taps (`MaskPostprocess`: as wide as the image, so not in the planned arena).
    let tapIndex = Scratch<Int32>()
    let tapWeight = Scratch<Float>()
}
