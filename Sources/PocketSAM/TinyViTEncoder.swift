import PocketSAMFormat

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

    /// `x`: the normalised, padded input `[S, S, 3]`. Returns the image embedding `[G·G, outChans]`.
    func run(_ x: UnsafePointer<Float>, arena: Arena) -> UnsafeMutablePointer<Float> {
        let s = c.patchEmbedStride, k = c.patchEmbedKernel, d0 = c.embedDims[0]
        var h = c.imageSize
        // Patch embedding: conv → GELU → conv.
        let h1 = (h + 2 * (k / 2) - k) / s + 1, h2 = (h1 + 2 * (k / 2) - k) / s + 1
        var cur = arena.alloc(h2 * h2 * d0)
        // The first conv's output is dead after the second: its place then holds stage 0's second buffer.
        let peMark = arena.mark()
        let t1 = arena.alloc(h1 * h1 * d0 / 2)
        Ops.conv2d(x, h: h, w: h, cin: 3, weight: pe0,
                   cout: d0 / 2, k: k, stride: s, pad: k / 2, out: t1, arena: arena, gelu: true)
        Ops.conv2d(t1, h: h1, w: h1, cin: d0 / 2, weight: pe2,
                   cout: d0, k: k, stride: s, pad: k / 2, out: cur, arena: arena)
        arena.reset(to: peMark)
        h = h2
        arena.tap?("patch_embed", cur, [h, h, d0])

        for st in 0..<c.stageCount {
            let d = c.embedDims[st]
            // The stage's second buffer: a block on integer kernels writes its output there (its input is read
            // around each pixel while the output is made), and the two swap.
            let first = cur, stageMark = arena.mark()
            var spare = arena.alloc(h * h * d)
            for b in 0..<c.depths[st] {
                let swapped = st == 0 ? mbconv(cur, into: spare, h: h, d: d, mbconvs[b], arena)
                                      : block(cur, into: spare, h: h, d: d, stage: st, blocks[st][b], arena)
                if swapped { swap(&cur, &spare) }
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
                cur = out
                h = ho
                arena.tap?("layers.\(st).downsample", cur, [h, h, o])
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

    /// MBConv: 1×1 → GELU → depthwise 3×3 → GELU → 1×1, + shortcut, GELU. Into `y` on integer kernels (returns true,
    /// the shortcut and GELU fused in `ExpandJob`), else in place on `x` (returns false).
    func mbconv(_ x: UnsafeMutablePointer<Float>, into y: UnsafeMutablePointer<Float>, h: Int, d: Int, _ wt: MBConv, _ arena: Arena) -> Bool {
        if arena.linearInputHook == nil,
           Ops.expandProjectTiled(arena, x, h: h, cin: d, hid: c.mbconvHiddenDim, cout: d, stride: 1, conv1: wt.conv1, conv2: wt.conv2,
                                  conv3: wt.conv3, out: y, residual: x) {
            return true
        }
        let n = h * h
        let mark = arena.mark()
        let o = arena.alloc(n * d)
        expandProject(x, h: h, cin: d, hid: c.mbconvHiddenDim, cout: d, stride: 1, wt.conv1, wt.conv2, wt.conv3, out: o, arena)
        Ops.add(arena, x, o, into: x, n * d, gelu: true)
        arena.reset(to: mark)
        return false
    }

    /// 1×1 conv `conv1` (GELU) → depthwise 3×3 `conv2` (stride, pad 1, GELU) → 1×1 conv `conv3`, from `x[h, h, cin]`
    /// into `out[ho, ho, cout]`. On integer kernels, in small tiles through per-thread scratch (`ExpandJob`); else
    /// (fp32 weights, the calibration hook, more threads than `Ops.windowSlots`) as follows. conv1's output is wide (at stage 0, `hid` channels at full resolution: 64 MB for
    /// LiteMedSAM's 256 × 256 × 256), so it is made for a band of output rows at a time (with the input rows the 3×3
    /// taps need, one-row halos computed twice) and used while it is in cache. Every value is the one the whole
    /// image at once gives: GEMM rows and depthwise pixels do not depend on the rows around them (per-row
    /// quantization, exact integer sums, the same taps in the same order), and bands are fixed by the shape.
    func expandProject(_ x: UnsafePointer<Float>, h: Int, cin: Int, hid: Int, cout: Int, stride: Int, _ conv1: Lin, _ conv2: Lin,
                       _ conv3: Lin, out: UnsafeMutablePointer<Float>, _ arena: Arena) {
        let ho = (h + 2 - 3) / stride + 1
        if arena.linearInputHook == nil,
           Ops.expandProjectTiled(arena, x, h: h, cin: cin, hid: hid, cout: cout, stride: stride, conv1: conv1, conv2: conv2,
                                  conv3: conv3, out: out) {
            return
        }
        let macs = arena.macs
        // Output rows per band: conv1's band about 8 MB, at least 4 rows (LiteMedSAM's and MobileSAM's stage 0: 32 of
        // 256 rows, 6% of conv1 recomputed for the halos). Measured on Zen 4 (32 MB L3): 2, 8 and 64 MB bands and no
        // banding run the encoder equally fast within noise; the 2 MB bands' 25% recomputation did not pay.
        // Calibration sees every input row once: no bands under its hook.
        let band = arena.linearInputHook != nil ? ho : min(ho, max(4, (8 << 20) / (stride * h * hid * 4)))
        let mark = arena.mark()
        let a = arena.alloc(min(h, stride * band + 2) * h * hid)
        // int8 conv3: the depthwise conv writes its quantized input directly; else fp32 rows for Ops.linear.
        let q = conv3.q.map { Ops.QuantizedRows(arena, m: band * ho, kp: $0.kp) }
        let f = q == nil ? arena.alloc(band * ho * hid) : nil
        var oy0 = 0
        while oy0 < ho {
            let oy1 = min(ho, oy0 + band)
            // The band's input rows [ya, yb): from the row above its first output row's taps (a multiple of the
            // stride, so the sub-image's output grid is the image's) to its last output row's last tap.
            let skip = oy0 > 0 ? 1 : 0
            let ya = stride * (oy0 - skip), yb = min(h, stride * (oy1 - 1) + 2)
            Ops.linear(arena, x + ya * h * cin, conv1, a, m: (yb - ya) * h, n: hid, k: cin, gelu: true)
            Ops.depthwiseConv(a, h: yb - ya, w: h, c: hid, weight: conv2.w, bias: conv2.b, k: 3, stride: stride, pad: 1,
                              out: f, quantizedInto: q, arena: arena, gelu: true, rows: skip..<(skip + oy1 - oy0))
            if let q {
                Ops.qgemm(arena, q, conv3, out + oy0 * ho * cout, m: (oy1 - oy0) * ho, n: cout, k: hid)
            } else if let f {
                Ops.linear(arena, f, conv3, out + oy0 * ho * cout, m: (oy1 - oy0) * ho, n: cout, k: hid)
            }
            oy0 = oy1
        }
        arena.reset(to: mark)
        // The model's MACs, not the halos' recomputation.
        arena.macs = macs &+ h * h * hid * cin &+ ho * ho * hid * 9 &+ ho * ho * cout * hid
    }

    /// TinyViT block: windowed attention (+ residual), depthwise local conv, MLP (+ residual). Into `y` on int8 MLP
    /// weights (returns true: the local conv reads `x` around each pixel while `y` is made), else in place on `x`.
    func block(_ x: UnsafeMutablePointer<Float>, into y: UnsafeMutablePointer<Float>, h: Int, d: Int, stage: Int, _ wt: Block,
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
        if arena.linearInputHook == nil,
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
