import PocketSAMFormat

#if canImport(Glibc)
import Glibc
#endif

/// TinyViT image encoder (MobileSAM, LiteMedSAM), fp32, channels-last.
struct TinyViTEncoder {
    let c: TinyViTConfig
    static let eps: Float = 1e-5

    struct MBConv { let conv1, conv2, conv3: Lin }
    struct Block { let biases: UnsafePointer<Float>; let norm: Norm; let qkv, proj: Lin; let mlpNorm: Norm; let fc1, fc2, local: Lin }
    struct Merge { let conv1, conv2, conv3: Lin }

    let pe0, pe2: Lin
    let mbconvs: [MBConv]
    let blocks: [[Block]]
    let merges: [Merge]
    let neck0: Lin, neck1: Norm, neck2: Lin, neck3: Norm
    /// Per stage, for query i and key j of a window (`i · win² + j`): the offset `|yi − yj| · win + |xi − xj|` into a
    /// head's attention biases.
    let biasIndex: [[Int32]]

    init(c: TinyViTConfig, m: Model) {
        self.c = c
        let e = "image_encoder."
        pe0 = m.lin(e + "patch_embed.seq.0")
        pe2 = m.lin(e + "patch_embed.seq.2")
        mbconvs = (0..<c.depths[0]).map { b in
            let p = e + "layers.0.blocks.\(b)."
            return MBConv(conv1: m.lin(p + "conv1"), conv2: m.lin(p + "conv2", gemm: false), conv3: m.lin(p + "conv3"))
        }
        blocks = (0..<c.stageCount).map { st in
            st == 0 ? [] : (0..<c.depths[st]).map { b in
                let p = e + "layers.\(st).blocks.\(b)."
                return Block(biases: m.w(p + "attn.attention_biases"), norm: m.norm(p + "attn.norm"), qkv: m.lin(p + "attn.qkv"),
                             proj: m.lin(p + "attn.proj"), mlpNorm: m.norm(p + "mlp.norm"), fc1: m.lin(p + "mlp.fc1"),
                             fc2: m.lin(p + "mlp.fc2"), local: m.lin(p + "local_conv", gemm: false))
            }
        }
        merges = (0..<(c.stageCount - 1)).map { st in
            let p = e + "layers.\(st).downsample."
            return Merge(conv1: m.lin(p + "conv1"), conv2: m.lin(p + "conv2", gemm: false), conv3: m.lin(p + "conv3"))
        }
        neck0 = m.lin(e + "neck.0", bias: false)
        neck1 = m.norm(e + "neck.1")
        neck2 = m.lin(e + "neck.2", bias: false)
        neck3 = m.norm(e + "neck.3")
        biasIndex = c.windowSizes.map { win in
            let wn = win * win
            return (0..<(wn * wn)).map { t in
                let i = t / wn, j = t % wn
                return Int32(abs(i / win - j / win) * win + abs(i % win - j % win))
            }
        }
    }

    /// `x`: the normalised, padded input `[S, S, 3]`; `inputMark`, when given, is the arena mark `x` was allocated at
    /// (its last allocation): the input's place is then given back once the patch embedding has read it. Returns the
    /// image embedding `[G·G, outChans]`.
    /// `early` (HQ-SAM): receives the output of stage `early.stage` (its patch merging included), `[G·G, C]`.
    func run(_ x: UnsafePointer<Float>, arena: Arena, inputMark: Arena.Mark? = nil,
             early: (stage: Int, into: UnsafeMutablePointer<Float>)? = nil) -> UnsafeMutablePointer<Float> {
        let d0 = c.embedDims[0]
        // `cur` sits at `curMark` with nothing live below it but what was there before the encoder ran.
        var curMark = arena.mark()
        var (cur, h) = patchEmbed(x, arena: arena)
        if let inputMark {
            // The input is dead: the patch embedding's output moves down into its place.
            cur = Self.moveDown(cur, count: h * h * d0, to: inputMark, arena)
            curMark = inputMark
        }
        arena.tap?("patch_embed", cur, [h, h, d0])

        for st in 0..<c.stageCount {
            let d = c.embedDims[st]
            // The stage's second buffer, where a block on integer kernels writes its output (its input is read
            // around each pixel while the output is made), and the two swap. Blocks that work in place get none.
            let first = cur, stageMark = arena.mark()
            var spare = stageWritesApart(st, arena) ? arena.alloc(h * h * d) : nil
            for b in 0..<c.depths[st] {
                let swapped = st == 0 ? mbconv(cur, into: spare, h: h, d: d, mbconvs[b], arena)
                                      : block(cur, into: spare, h: h, d: d, stage: st, blocks[st][b], arena)
                if swapped, let y = spare { spare = cur; cur = y }
                arena.tap?("layers.\(st).blocks.\(b)", cur, [h, h, d])
            }
            // The stage's output back in its first buffer (already there after an even number of swaps), the
            // second one freed.
            if cur != first { first.update(from: cur, count: h * h * d) }
            cur = first
            arena.reset(to: stageMark)
            if st < c.stageCount - 1 {
                let mg = merges[st]
                let o = c.embedDims[st + 1], stride = c.mergeStrides[st]
                let ho = (h + 2 - 3) / stride + 1
                let out = arena.alloc(ho * ho * o)
                expandProject(cur, h: h, cin: d, hid: o, cout: o, stride: stride, mg.conv1, mg.conv2, mg.conv3, out: out, arena)
                // The stage's input is dead: the next stage's moves down into its place.
                cur = Self.moveDown(out, count: ho * ho * o, to: curMark, arena)
                h = ho
                arena.tap?("layers.\(st).downsample", cur, [h, h, o])
                if let early, early.stage == st { early.into.update(from: cur, count: h * h * o) }
            }
        }
        // Neck: conv1×1 → LayerNorm2d → conv3×3 → LayerNorm2d (ε 1e-6).
        let dl = c.embedDims[c.stageCount - 1], oc = c.outChans
        let n1 = arena.alloc(h * h * oc)
        Ops.linear(arena, cur, neck0, n1, m: h * h, n: oc, k: dl)
        Ops.layerNormScalar(arena, n1, n1, m: h * h, c: oc, neck1, eps: 1e-6)
        let n2 = arena.alloc(h * h * oc)
        Ops.conv2d(n1, h: h, w: h, cin: oc, weight: neck2, cout: oc, k: 3, stride: 1, pad: 1,
                   out: n2, arena: arena)
        Ops.layerNormScalar(arena, n2, n2, m: h * h, c: oc, neck3, eps: 1e-6)
        arena.tap?("neck", n2, [h, h, oc])
        return n2
    }

    /// Patch embedding: conv → GELU → conv, both with stride `patchEmbedStride`. The first conv's output (twice the
    /// area of the second's at half its channels: 33.5 MB for a 1024-px input) is made a band of rows at a time, just
    /// the rows the second conv's next band of output rows reads, so it never exists whole. Under the calibration hook
    /// one band covers the image, so the hook sees each layer's rows in one call as before.
    func patchEmbed(_ x: UnsafePointer<Float>, arena: Arena) -> (out: UnsafeMutablePointer<Float>, h: Int) {
        let s = c.patchEmbedStride, k = c.patchEmbedKernel, pad = k / 2, d0 = c.embedDims[0], c1 = d0 / 2
        let h = c.imageSize
        let h1 = (h + 2 * pad - k) / s + 1, h2 = (h1 + 2 * pad - k) / s + 1
        let out = arena.alloc(h2 * h2 * d0)
        let mark = arena.mark()
        let band = arena.linearInputHook == nil ? min(h2, 32) : h2
        let t1 = arena.alloc(min(h1, (band - 1) * s + k) * h1 * c1)
        var o0 = 0
        while o0 < h2 {
            let o1 = min(h2, o0 + band)
            // The first conv's rows the second reads for output rows [o0, o1).
            let r0 = max(0, o0 * s - pad), r1 = min(h1, (o1 - 1) * s - pad + k)
            Ops.conv2d(x, h: h, w: h, cin: 3, weight: pe0, cout: c1, k: k, stride: s, pad: pad, out: t1, arena: arena,
                       gelu: true, pixels: (r0 * h1)..<(r1 * h1))
            Ops.conv2d(t1 - r0 * h1 * c1, h: h1, w: h1, cin: c1, weight: pe2, cout: d0, k: k, stride: s, pad: pad,
                       out: out + o0 * h2 * d0, arena: arena, pixels: (o0 * h2)..<(o1 * h2))
            o0 = o1
        }
        arena.reset(to: mark)
        return (out, h2)
    }

    /// Gives back the arena above `mark` and moves the `count` floats at `p` (allocated above the mark) down to the
    /// mark's place (memmove: the two may overlap).
    static func moveDown(_ p: UnsafeMutablePointer<Float>, count: Int, to mark: Arena.Mark, _ arena: Arena) -> UnsafeMutablePointer<Float> {
        arena.reset(to: mark)
        let q = arena.alloc(count)
        if q != p { memmove(q, p, count * 4) }
        return q
    }

    /// Whether some block of stage `st` writes its output apart from its input (and so needs the stage's second
    /// buffer): MBConvs on the tiled integer path, attention blocks with int8 MLPs. Only memory depends on this: a block
    /// given no second buffer works in place.
    func stageWritesApart(_ st: Int, _ arena: Arena) -> Bool {
        guard arena.linearInputHook == nil else { return false }
        if st == 0 { return mbconvs.contains { Ops.expandProjectTiles(arena, conv1: $0.conv1, conv3: $0.conv3, stride: 1) } }
        return blocks[st].contains { Ops.localMLPTiles(arena, fc1: $0.fc1, fc2: $0.fc2) }
    }

    /// MBConv: 1×1 → GELU → depthwise 3×3 → GELU → 1×1, + shortcut, GELU. Into `y` on integer kernels (returns true,
    /// the shortcut and GELU fused in `ExpandJob`), else (or when `y` is nil) in place on `x` (returns false).
    func mbconv(_ x: UnsafeMutablePointer<Float>, into y: UnsafeMutablePointer<Float>?, h: Int, d: Int, _ wt: MBConv, _ arena: Arena) -> Bool {
        if let y, arena.linearInputHook == nil,
           Ops.expandProjectTiled(arena, x, h: h, cin: d, hid: c.mbconvHiddenDim, cout: d, stride: 1, conv1: wt.conv1, conv2: wt.conv2,
                                  conv3: wt.conv3, out: y, residual: x) {
            return true
        }
        expandProject(x, h: h, cin: d, hid: c.mbconvHiddenDim, cout: d, stride: 1, wt.conv1, wt.conv2, wt.conv3, out: x, arena,
                      residualInPlace: true)
        return false
    }

    /// 1×1 conv `conv1` (GELU) → depthwise 3×3 `conv2` (stride, pad 1, GELU) → 1×1 conv `conv3`, from `x[h, h, cin]`
    /// into `out[ho, ho, cout]`. On integer kernels, in small tiles through per-thread scratch (`ExpandJob`); else
    /// (fp32 weights, the calibration hook, more threads than `Ops.windowSlots`) as follows. conv1's output is wide (at
    /// stage 0, `hid` channels at full resolution: 64 MB for LiteMedSAM's 256 × 256 × 256), so it is made for a band of
    /// output rows at a time (with the input rows the 3×3 taps need, the halo rows kept from the band before) and used
    /// while it is in cache. Bands are fixed by the shape, never by the thread count. On integer conv1s every value is
    /// the one the whole image at once gives (per-row quantization, exact integer sums, the same taps in the same
    /// order); an fp32 conv1 goes through OpenBLAS, whose rounding of a row depends on how many rows one call has (4%
    /// of the values differ in their last bits between 34·256 and 8·256 rows of LiteMedSAM's stage 0), so there the
    /// band size is part of the result.
    /// With `residualInPlace` (MBConv: `out` is `x`, stride 1, cin = cout) the result is GELU(x + expandProject(x)), made
    /// in place: each band's output waits in one of two band buffers until the next band, which reads the rows above
    /// its first, has been made, then is added into `x`; no whole-image output buffer (16 MB at LiteMedSAM's stage 0).
    func expandProject(_ x: UnsafePointer<Float>, h: Int, cin: Int, hid: Int, cout: Int, stride: Int, _ conv1: Lin, _ conv2: Lin,
                       _ conv3: Lin, out: UnsafeMutablePointer<Float>, _ arena: Arena, residualInPlace: Bool = false) {
        let ho = (h + 2 - 3) / stride + 1
        precondition(!residualInPlace || (stride == 1 && cin == cout && UnsafePointer(out) == x), "in-place expansion needs out = x")
        if !residualInPlace, arena.linearInputHook == nil,
           Ops.expandProjectTiled(arena, x, h: h, cin: cin, hid: hid, cout: cout, stride: stride, conv1: conv1, conv2: conv2,
                                  conv3: conv3, out: out) {
            return
        }
        // Output rows per band: conv1's band about 2 MB, at least 4 rows (LiteMedSAM's and MobileSAM's stage 0: 8 of 256
        // rows). The rows a band shares with the one before (the taps' halo) are kept, not recomputed: each band moves
        // them to the front of `a` and computes only its new rows. Small bands then cost nothing extra, and they bound
        // the stage's peak memory (8 MB bands were 10.7 MB of scratch at LiteMedSAM's stage 0 and its first merge, the
        // encoder's peak). Calibration sees every input row once: no bands under its hook.
        let band = arena.linearInputHook != nil ? ho : min(ho, max(4, (2 << 20) / (stride * h * hid * 4)))
        let mark = arena.mark()
        let a = arena.alloc(min(h, stride * band + 2) * h * hid)
        // int8 conv3: the depthwise conv writes its quantized input directly; else fp32 rows for Ops.linear.
        let q = conv3.q.map { Ops.QuantizedRows(arena, m: band * ho, kp: $0.kp) }
        let f = q == nil ? arena.alloc(band * ho * hid) : nil
        let pending = residualInPlace ? arena.alloc(2 * band * ho * cout) : nil
        var waiting: (rows: Range<Int>, at: UnsafeMutablePointer<Float>)?
        func addWaiting() {
            guard let (rows, at) = waiting else { return }
            let p = out + rows.lowerBound * ho * cout
            Ops.add(arena, p, at, into: p, rows.count * ho * cout, gelu: true)
        }
        var oy0 = 0, bandIndex = 0
        var held = 0..<0  // input rows whose conv1 output is in `a`
        while oy0 < ho {
            let oy1 = min(ho, oy0 + band)
            let dst = pending.map { $0 + (bandIndex % 2) * band * ho * cout } ?? out + oy0 * ho * cout
            // The band's input rows [ya, yb): from the row above its first output row's taps (a multiple of the
            // stride, so the sub-image's output grid is the image's) to its last output row's last tap.
            let skip = oy0 > 0 ? 1 : 0
            let ya = stride * (oy0 - skip), yb = min(h, stride * (oy1 - 1) + 2)
            // conv1 for the rows not held from the band before (those moved to the front).
            var y0 = ya
            if held.contains(ya) {
                memmove(a, a + (ya - held.lowerBound) * h * hid, (held.upperBound - ya) * h * hid * 4)
                y0 = held.upperBound
            }
            if y0 < yb {
                Ops.linear(arena, x + y0 * h * cin, conv1, a + (y0 - ya) * h * hid, m: (yb - y0) * h, n: hid, k: cin, gelu: true)
            }
            held = ya..<yb
            Ops.depthwiseConv(a, h: yb - ya, w: h, c: hid, weight: conv2.w, bias: conv2.b, k: 3, stride: stride, pad: 1,
                              out: f, quantizedInto: q, arena: arena, gelu: true, rows: skip..<(skip + oy1 - oy0))
            if let q {
                Ops.qgemm(arena, q, conv3, dst, m: (oy1 - oy0) * ho, n: cout, k: hid)
            } else if let f {
                Ops.linear(arena, f, conv3, dst, m: (oy1 - oy0) * ho, n: cout, k: hid)
            }
            if residualInPlace {
                // The band before this one is no longer read: its rows take their result.
                addWaiting()
                waiting = (oy0..<oy1, dst)
            }
            oy0 = oy1
            bandIndex += 1
        }
        addWaiting()
        arena.reset(to: mark)
    }

    /// TinyViT block: windowed attention (+ residual), depthwise local conv, MLP (+ residual). Into `y` on int8 MLP
    /// weights (returns true: the local conv reads `x` around each pixel while `y` is made), else in place on `x`.
    func block(_ x: UnsafeMutablePointer<Float>, into y: UnsafeMutablePointer<Float>?, h: Int, d: Int, stage: Int, _ wt: Block,
               _ arena: Arena) -> Bool {
        let heads = c.numHeads[stage], win = c.windowSizes[stage], kd = d / heads
        let n = h * h, wn = win * win
        let mark = arena.mark()
        // The attention bias of a window does not depend on the window: expand it once per block,
        // bias[h][i][j] = attention_biases[h, |yi − yj| · win + |xi − xj|].
        let biases = wt.biases
        let bias = arena.alloc(heads * wn * wn)
        biasIndex[stage].withUnsafeBufferPointer { idx in
            for hd in 0..<heads {
                let src = biases + hd * wn, dst = bias + hd * wn * wn
                for t in 0..<(wn * wn) { dst[t] = src[Int(idx[t])] }
            }
        }
        // int8 qkv and projection: a few windows at a time in cache (the calibration hook sees whole layers).
        if arena.linearInputHook != nil
            || !Ops.windowAttentionInt8(arena, x, h: h, d: d, win: win, heads: heads, kd: kd, norm: wt.norm, eps: Self.eps,
                                        qkv: wt.qkv, proj: wt.proj, bias: bias) {
            attention(x, h: h, d: d, stage: stage, wt, bias: bias, arena)
        }
        arena.reset(to: mark)
        // Local depthwise conv (folded BN), no residual, then the MLP with its own LayerNorm, + residual:
        // x = lc + MLP(lc). On int8 weights a few rows at a time into `y`.
        let hid = c.mlpHiddenDims[stage], ks = c.localConvSize
        if let y, arena.linearInputHook == nil,
           Ops.localMLPInt8(arena, x, into: y, h: h, d: d, hid: hid, local: wt.local, k: ks, norm: wt.mlpNorm, eps: Self.eps,
                            fc1: wt.fc1, fc2: wt.fc2) {
            return true
        }
        let lc = arena.alloc(n * d)
        Ops.depthwiseConv(x, h: h, w: h, c: d, weight: wt.local.w, bias: wt.local.b, k: ks,
                          stride: 1, pad: ks / 2, out: lc, arena: arena)
        let t = arena.alloc(n * d), a = arena.alloc(n * hid), o = arena.alloc(n * d)
        Ops.layerNorm(arena, lc, t, m: n, c: d, wt.mlpNorm, eps: Self.eps)
        Ops.linear(arena, t, wt.fc1, a, m: n, n: hid, k: d, gelu: true)
        Ops.linear(arena, a, wt.fc2, o, m: n, n: d, k: hid)
        Ops.add(arena, lc, o, into: x, n * d)
        arena.reset(to: mark)
        return false
    }

    /// The attention half of `block` as whole-image steps (fp32 weights, or under the calibration hook, which sees
    /// each layer's whole input): gather the windows, layer norm, qkv, window attention, projection, add back.
    /// All windows go through each step together (one GEMM for every window's qkv, one for the projection), so
    /// the GEMMs are large and every step runs on all threads.
    func attention(_ x: UnsafeMutablePointer<Float>, h: Int, d: Int, stage: Int, _ wt: Block, bias: UnsafePointer<Float>, _ arena: Arena) {
        let heads = c.numHeads[stage], win = c.windowSizes[stage], kd = d / heads
        let nw = (h + win - 1) / win, wn = win * win, windows = nw * nw, T = windows * wn
        let mark = arena.mark()
        // Gather the windows (zero rows where one hangs over the padded border), as PyTorch pads
        // before the attention's own LayerNorm.
        let tok = arena.alloc(T * d), qkv = arena.alloc(T * 3 * d)
        Ops.gatherWindows(arena, x, h: h, d: d, win: win, into: tok)
        if let q = wt.qkv.q, arena.linearInputHook == nil {
            // int8: the layer norm writes the qkv GEMM's quantized input directly.
            let qin = Ops.QuantizedRows(arena, m: T, kp: q.kp)
            Ops.layerNormQuantized(arena, tok, m: T, c: d, wt.norm, eps: Self.eps, into: qin)
            Ops.qgemm(arena, qin, wt.qkv, qkv, m: T, n: 3 * d, k: d)
        } else {
            Ops.layerNorm(arena, tok, tok, m: T, c: d, wt.norm, eps: Self.eps)
            Ops.linear(arena, tok, wt.qkv, qkv, m: T, n: 3 * d, k: d)
        }
        // Per head the qkv columns are [q | k | v], each kd wide (attn_ratio 1). The output reuses `tok`. With int8
        // projections (an int8 model), in fp16 or bf16 where the CPU has it.
        Ops.windowAttention(arena, qkv: qkv, lda: 3 * d, windows: windows, wn: wn, heads: heads, kd: kd,
                            scale: 1 / Float(kd).squareRoot(), bias: bias, out: tok, ldo: d,
                            halfPrecision: wt.qkv.q != nil)
        Ops.linear(arena, tok, wt.proj, qkv, m: T, n: d, k: d)
        Ops.scatterAddWindows(arena, qkv, h: h, d: d, win: win, into: x)
        arena.reset(to: mark)
    }
}
