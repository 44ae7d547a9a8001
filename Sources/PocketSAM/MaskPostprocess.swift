/// SamPredictor's mask post-processing of one low-res mask, in row blocks on the session's threads: upscale to the
/// encoder's input size, keep the resized image's part (`rh × rw`), upscale that to the image (`h × w`), threshold,
/// and count the pixels above threshold ± 1 for the stability score. Only the kept part of the first upscale is
/// computed (each value is the whole resize's there). Stage 0 fills `up` (its rows in `blocks` blocks), stage 1 the
/// mask and each block's counts; integer counts summed by the caller, so nothing depends on who ran which block.
struct MaskPostprocess {
    let low: CPtr, lowRes: Int, size: Int, rh: Int, rw: Int, h: Int, w: Int, threshold: Float
    let up: FPtr
    let mask: UnsafeMutablePointer<UInt8>
    /// `[blocks][2]`: pixels above threshold + 1, above threshold − 1.
    let counts: UnsafeMutablePointer<Int>
    let blocks: Int
    var stage = 0
    /// Column taps (`Ops.bilinearTaps`) of the first upscale (`rw` columns) and of the second (`w` columns).
    let taps0: (x0: UnsafePointer<Int32>, x1: UnsafePointer<Int32>, l: CPtr)
    let taps1: (x0: UnsafePointer<Int32>, x1: UnsafePointer<Int32>, l: CPtr)

    static let thunk: @convention(c) (UnsafeMutableRawPointer, Int) -> Void = { ctx, i in
        ctx.assumingMemoryBound(to: MaskPostprocess.self).pointee.run(part: i)
    }

    /// Blocks of rows: fixed by the shape.
    static let defaultBlocks = 8

    func rows(_ part: Int, of n: Int) -> Range<Int> {
        let per = (n + blocks - 1) / blocks
        return min(n, part * per)..<min(n, (part + 1) * per)
    }

    func run(part: Int) {
        if stage == 0 {
            let up = self.up, rw = self.rw
            Ops.bilinearRows(low, h: lowRes, w: lowRes, ho: size, rows: rows(part, of: rh), cols: rw, x0: taps0.x0, x1: taps0.x1,
                             lx: taps0.l) { y, x, v in
                up[y * rw + x] = v
            }
            return
        }
        var inter = 0, union = 0
        let dst = mask, w = self.w, thr = threshold
        Ops.bilinearRows(up, h: rh, w: rw, ho: h, rows: rows(part, of: h), cols: w, x0: taps1.x0, x1: taps1.x1, lx: taps1.l) { y, x, v in
            dst[y * w + x] = v > thr ? 1 : 0
            if v > thr + 1 { inter += 1 }
            if v > thr - 1 { union += 1 }
        }
        counts[2 * part] = inter
        counts[2 * part + 1] = union
    }
}
