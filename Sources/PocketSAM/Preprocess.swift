import PocketSAMFormat

/// Image preprocessing exactly as SAM's `ResizeLongestSide.apply_image` (PIL's bilinear resize with
/// its antialiasing filter on uint8 RGB), then per-model normalisation and zero padding.
enum Preprocess {
    /// SAM's `get_preprocess_shape`: the size after resizing the longest side to `long`.
    static func resizedShape(h: Int, w: Int, long: Int) -> (h: Int, w: Int) {
        let scale = Double(long) / Double(max(h, w))
        return (Int(Double(h) * scale + 0.5), Int(Double(w) * scale + 0.5))
    }

    /// PIL's resampling coefficients for one axis (bilinear = triangle filter, widened by the scale
    /// when downsampling), in PIL's 22-bit fixed point.
    static func coefficients(inSize: Int, outSize: Int) -> (bounds: [(Int, Int)], weights: [[Int32]]) {
        let scale = Double(inSize) / Double(outSize)
        let filterscale = max(scale, 1)
        let support = 1.0 * filterscale
        let ss = 1 / filterscale
        var bounds: [(Int, Int)] = []
        var weights: [[Int32]] = []
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            let xmin = max(Int(center - support + 0.5), 0)
            let xmax = min(Int(center + support + 0.5), inSize) - xmin
            var k: [Double] = []
            var ww = 0.0
            for x in 0..<xmax {
                let t = abs((Double(x + xmin) - center + 0.5) * ss)
                let w = t < 1 ? 1 - t : 0
                k.append(w)
                ww += w
            }
            let fixed: [Int32] = k.map { v in
                let n = ww == 0 ? 0 : v / ww
                let f = n * Double(1 << 22)
                return Int32(f < 0 ? f - 0.5 : f + 0.5)
            }
            bounds.append((xmin, xmax))
            weights.append(fixed)
        }
        return (bounds, weights)
    }

    /// Resizes 8-bit RGB `src` (`[h, w, 3]`, row stride `stride` bytes) to `[oh, ow, 3]`, horizontal
    /// pass then vertical, each rounded to uint8 as PIL does.
    static func resizeRGB(_ src: UnsafePointer<UInt8>, h: Int, w: Int, stride: Int, oh: Int, ow: Int) -> [UInt8] {
        var tmp: [UInt8]
        let th = h
        if ow != w {
            let (b, k) = coefficients(inSize: w, outSize: ow)
            tmp = [UInt8](repeating: 0, count: th * ow * 3)
            for y in 0..<th {
                let row = src + y * stride
                for xx in 0..<ow {
                    let (xmin, n) = b[xx]
                    for ch in 0..<3 {
                        var acc: Int64 = 1 << 21
                        for x in 0..<n { acc += Int64(row[(xmin + x) * 3 + ch]) * Int64(k[xx][x]) }
                        tmp[(y * ow + xx) * 3 + ch] = clip8(acc)
                    }
                }
            }
        } else {
            tmp = [UInt8](repeating: 0, count: th * w * 3)
            for y in 0..<th { for i in 0..<(w * 3) { tmp[y * w * 3 + i] = src[y * stride + i] } }
        }
        if oh == h { return tmp }
        let (b, k) = coefficients(inSize: h, outSize: oh)
        var out = [UInt8](repeating: 0, count: oh * ow * 3)
        for yy in 0..<oh {
            let (ymin, n) = b[yy]
            for i in 0..<(ow * 3) {
                var acc: Int64 = 1 << 21
                for y in 0..<n { acc += Int64(tmp[(ymin + y) * ow * 3 + i]) * Int64(k[yy][y]) }
                out[yy * ow * 3 + i] = clip8(acc)
            }
        }
        return out
    }

    @inline(__always) static func clip8(_ acc: Int64) -> UInt8 {
        let v = acc >> 22
        return UInt8(max(0, min(255, v)))
    }

    /// Normalises `rgb` (`[h, w, 3]` uint8) per `norm` and pads to `[size, size, 3]` with zeros.
    static func normalizeAndPad(_ rgb: [UInt8], h: Int, w: Int, size: Int, norm: Normalization,
                                out: UnsafeMutablePointer<Float>) {
        out.initialize(repeating: 0, count: size * size * 3)
        switch norm {
        case let .meanStd(mean, std):
            let m = mean.map(Float.init), s = std.map(Float.init)
            for y in 0..<h { for x in 0..<w { for c in 0..<3 {
                out[(y * size + x) * 3 + c] = (Float(rgb[(y * w + x) * 3 + c]) - m[c]) / s[c]
            } } }
        case .minMax:
            let lo = Float(rgb.min() ?? 0), hi = Float(rgb.max() ?? 0)
            let range = max(hi - lo, 1e-8)
            for y in 0..<h { for x in 0..<w { for c in 0..<3 {
                out[(y * size + x) * 3 + c] = (Float(rgb[(y * w + x) * 3 + c]) - lo) / range
            } } }
        }
    }
}
