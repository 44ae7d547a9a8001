/// A binary mask as uncompressed COCO run-length encoding: pixels in column-major order (down each
/// column, columns left to right), `counts` alternating runs of 0s and 1s, starting with 0s (a mask
/// that starts with a 1 has a first count of 0). pycocotools reads it with `frPyObjects`.
public struct MaskRLE: Sendable, Equatable {
    public var height: Int
    public var width: Int
    public var counts: [UInt32]

    public init(height: Int, width: Int, counts: [UInt32]) {
        self.height = height
        self.width = width
        self.counts = counts
    }

    /// Encodes a row-major `height × width` mask (non-zero = inside), placed at (`x0`, `y0`) in a
    /// `fullHeight × fullWidth` frame that is 0 elsewhere (SAM's `uncrop_masks`).
    public init(mask: UnsafePointer<UInt8>, height h: Int, width w: Int, x0: Int = 0, y0: Int = 0,
                fullHeight: Int? = nil, fullWidth: Int? = nil) {
        self.init(mask, rowStride: w, columnStride: 1, height: h, width: w, x0: x0, y0: y0, fullHeight: fullHeight, fullWidth: fullWidth)
    }

    /// As `init(mask:…)` for a column-major mask (`mask[x·height + y]`).
    public init(columnMajor mask: UnsafePointer<UInt8>, height h: Int, width w: Int, x0: Int = 0, y0: Int = 0,
                fullHeight: Int? = nil, fullWidth: Int? = nil) {
        self.init(mask, rowStride: 1, columnStride: h, height: h, width: w, x0: x0, y0: y0, fullHeight: fullHeight, fullWidth: fullWidth)
    }

    private init(_ mask: UnsafePointer<UInt8>, rowStride: Int, columnStride: Int, height h: Int, width w: Int, x0: Int, y0: Int,
                 fullHeight: Int?, fullWidth: Int?) {
        let H = fullHeight ?? h, W = fullWidth ?? w
        precondition(x0 >= 0 && y0 >= 0 && x0 + w <= W && y0 + h <= H, "mask outside its frame")
        height = H
        width = W
        var counts: [UInt32] = []
        var run: UInt32 = 0
        var current: UInt8 = 0
        func put(_ v: UInt8, _ n: Int) {
            if v == current { run += UInt32(n); return }
            counts.append(run)
            current = v
            run = UInt32(n)
        }
        put(0, x0 * H)
        for x in 0..<w {
            put(0, y0)
            for y in 0..<h { put(mask[y * rowStride + x * columnStride] != 0 ? 1 : 0, 1) }
            put(0, H - y0 - h)
        }
        put(0, (W - x0 - w) * H)
        counts.append(run)
        self.counts = counts
    }

    /// Pixels inside (the sum of the runs of 1s).
    public var area: Int {
        var a = 0
        var i = 1
        while i < counts.count { a += Int(counts[i]); i += 2 }
        return a
    }

    /// Checks that the runs cover exactly `height × width` pixels.
    public var isValid: Bool {
        height >= 0 && width >= 0 && counts.reduce(0) { $0 + Int($1) } == height * width
    }

    /// Decodes into a row-major `height × width` mask of 0/1 bytes.
    public func decode(into out: UnsafeMutablePointer<UInt8>) {
        precondition(isValid, "RLE counts do not cover \(height)×\(width)")
        var p = 0
        var v: UInt8 = 0
        for c in counts {
            for i in p..<(p + Int(c)) { out[(i % height) * width + i / height] = v }
            p += Int(c)
            v ^= 1
        }
    }

    /// The mask as row-major 0/1 bytes.
    public func decoded() -> [UInt8] {
        var m = [UInt8](repeating: 0, count: height * width)
        m.withUnsafeMutableBufferPointer { decode(into: $0.baseAddress!) }
        return m
    }

    /// SAM's box of the mask, `(x0, y0, x1, y1)` with x1/y1 the last column/row inside (not one past);
    /// all zero for an empty mask (`batched_mask_to_box`).
    public var box: (x0: Int, y0: Int, x1: Int, y1: Int) {
        var x0 = Int.max, y0 = Int.max, x1 = -1, y1 = -1
        var p = 0
        for (i, c) in counts.enumerated() {
            if i % 2 == 1, c > 0 {
                let first = p, last = p + Int(c) - 1
                x0 = min(x0, first / height)
                x1 = max(x1, last / height)
                // A run spanning a column boundary covers every row.
                if first / height != last / height {
                    y0 = 0
                    y1 = height - 1
                } else {
                    y0 = min(y0, first % height)
                    y1 = max(y1, last % height)
                }
            }
            p += Int(c)
        }
        return x1 < 0 ? (0, 0, 0, 0) : (x0, y0, x1, y1)
    }
}
