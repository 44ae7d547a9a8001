import PocketSAMFormat

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

    @inline(__always) static func clip8(_ acc: Int64) -> UInt8 {
        UInt8(max(0, min(255, acc >> 22)))
    }

    /// Resizes 8-bit gray or RGB `src` (`channels` 1 or 3, rows `stride` bytes apart) to RGB
    /// `[oh, ow, 3]` in `out`: horizontal pass then vertical, each rounded to uint8 as PIL does (gray
    /// is replicated to three equal channels first, which PIL's per-channel filter leaves equal).
    static func resizeRGB(_ src: UnsafePointer<UInt8>, h: Int, w: Int, channels: Int, stride: Int, oh: Int, ow: Int,
                          out: UnsafeMutablePointer<UInt8>, scratch: SessionScratch) {
        let tmp = scratch.bytes.reserve(h * ow * 3)
        if ow != w {
            let taps = maxTaps(inSize: w, outSize: ow)
            let b = scratch.bounds.reserve(2 * ow), k = scratch.weights.reserve(ow * taps)
            coefficients(inSize: w, outSize: ow, taps: taps, bounds: b, weights: k)
            for y in 0..<h {
                let row = src + y * stride
                for xx in 0..<ow {
                    let xmin = Int(b[2 * xx]), n = Int(b[2 * xx + 1])
                    let kk = k + xx * taps
                    for ch in 0..<3 {
                        let c = channels == 3 ? ch : 0
                        var acc: Int64 = 1 << 21
                        for x in 0..<n { acc += Int64(row[(xmin + x) * channels + c]) * Int64(kk[x]) }
                        tmp[(y * ow + xx) * 3 + ch] = clip8(acc)
                    }
                }
            }
        } else {
            for y in 0..<h {
                for x in 0..<w { for ch in 0..<3 { tmp[(y * w + x) * 3 + ch] = src[y * stride + x * channels + (channels == 3 ? ch : 0)] } }
            }
        }
        if oh == h {
            out.update(from: tmp, count: h * ow * 3)
            return
        }
        let taps = maxTaps(inSize: h, outSize: oh)
        let b = scratch.bounds.reserve(2 * oh), k = scratch.weights.reserve(oh * taps)
        coefficients(inSize: h, outSize: oh, taps: taps, bounds: b, weights: k)
        for yy in 0..<oh {
            let ymin = Int(b[2 * yy]), n = Int(b[2 * yy + 1])
            let kk = k + yy * taps
            for i in 0..<(ow * 3) {
                var acc: Int64 = 1 << 21
                for y in 0..<n { acc += Int64(tmp[(ymin + y) * ow * 3 + i]) * Int64(kk[y]) }
                out[yy * ow * 3 + i] = clip8(acc)
            }
        }
    }

    /// Normalises `rgb` (`[h, w, 3]` uint8) per `norm` and pads to `[size, size, 3]` with zeros.
    static func normalizeAndPad(_ rgb: UnsafePointer<UInt8>, h: Int, w: Int, size: Int, norm: Normalization,
                                out: UnsafeMutablePointer<Float>) {
        out.initialize(repeating: 0, count: size * size * 3)
        switch norm {
        case let .meanStd(mean, std):
            let m0 = Float(mean[0]), m1 = Float(mean[1]), m2 = Float(mean[2])
            let s0 = Float(std[0]), s1 = Float(std[1]), s2 = Float(std[2])
            for y in 0..<h { for x in 0..<w {
                let i = (y * w + x) * 3, o = (y * size + x) * 3
                out[o] = (Float(rgb[i]) - m0) / s0
                out[o + 1] = (Float(rgb[i + 1]) - m1) / s1
                out[o + 2] = (Float(rgb[i + 2]) - m2) / s2
            } }
        case .minMax:
            var lo: UInt8 = 255, hi: UInt8 = 0
            for i in 0..<(h * w * 3) { lo = min(lo, rgb[i]); hi = max(hi, rgb[i]) }
            let l = Float(lo), range = max(Float(hi) - Float(lo), 1e-8)
            for y in 0..<h { for x in 0..<w { for c in 0..<3 {
                out[(y * size + x) * 3 + c] = (Float(rgb[(y * w + x) * 3 + c]) - l) / range
            } } }
        }
    }
}

/// Buffers a session keeps between calls for preprocessing.
final class SessionScratch {
    let bytes = Scratch<UInt8>()
    let resized = Scratch<UInt8>()
    let bounds = Scratch<Int32>()
    let weights = Scratch<Int32>()
}
