import PocketSAMFormat

/// SAM's mask decoder: two-way transformer, transposed-conv upscaling, hypernetwork MLPs, IoU head.
struct MaskDecoder {
    let c: MaskDecoderConfig
    static let p = "mask_decoder."

    struct Attn { let q, k, v, out: Lin }
    struct Layer { let selfAttn: Attn; let norm1: Norm; let t2i: Attn; let norm2: Norm; let lin1, lin2: Lin; let norm3, norm4: Norm; let i2t: Attn }
    let layers: [Layer]
    let finalAttn: Attn
    let normFinal: Norm
    let iouToken, maskTokens: UnsafePointer<Float>
    let up0: Lin, up1: Norm, up3: Lin
    let hyper: [[Lin]]
    let iouHead: [Lin]
    /// HQ-SAM's token and feature fusion (nil for plain SAM).
    let hq: MaskDecoderHQ?

    init(c: MaskDecoderConfig, m: Model) {
        self.c = c
        let p = Self.p
        func attn(_ n: String) -> Attn { Attn(q: m.lin(n + ".q_proj"), k: m.lin(n + ".k_proj"), v: m.lin(n + ".v_proj"), out: m.lin(n + ".out_proj")) }
        layers = (0..<c.depth).map { l in
            let t = p + "transformer.layers.\(l)."
            return Layer(selfAttn: attn(t + "self_attn"), norm1: m.norm(t + "norm1"), t2i: attn(t + "cross_attn_token_to_image"),
                         norm2: m.norm(t + "norm2"), lin1: m.lin(t + "mlp.lin1"), lin2: m.lin(t + "mlp.lin2"),
                         norm3: m.norm(t + "norm3"), norm4: m.norm(t + "norm4"), i2t: attn(t + "cross_attn_image_to_token"))
        }
        finalAttn = attn(p + "transformer.final_attn_token_to_image")
        normFinal = m.norm(p + "transformer.norm_final_attn")
        iouToken = m.w(p + "iou_token.weight")
        maskTokens = m.w(p + "mask_tokens.weight")
        up0 = m.lin(p + "output_upscaling.0", gemm: false)
        up1 = m.norm(p + "output_upscaling.1")
        up3 = m.lin(p + "output_upscaling.3", gemm: false)
        hyper = (0..<c.numMaskTokens).map { t in (0..<3).map { m.lin(p + "output_hypernetworks_mlps.\(t).layers.\($0)") } }
        iouHead = (0..<c.iouHeadDepth).map { m.lin(p + "iou_prediction_head.layers.\($0)") }
        hq = c.hq.map { MaskDecoderHQ(c: c, hq: $0, m: m) }
    }

    /// Masks `run` writes: every mask token's, then (HQ-SAM) the HQ token's.
    var outputMasks: Int { c.numMaskTokens + (hq == nil ? 0 : 1) }

    /// SAM's `Attention`: project q, k, v to the internal width, multi-head attention, project out.
    /// Adds the result into `out` when `accumulate`, else writes it.
    func attention(_ a: Attn, q: UnsafePointer<Float>, nq: Int, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                   nk: Int, inner: Int, out: UnsafeMutablePointer<Float>, accumulate: Bool, arena: Arena) {
        let D = c.transformerDim
        let mark = arena.mark()
        let qp = arena.alloc(nq * inner), kp = arena.alloc(nk * inner), vp = arena.alloc(nk * inner)
        Ops.linear(arena, q, a.q, qp, m: nq, n: inner, k: D)
        Ops.linear(arena, k, a.k, kp, m: nk, n: inner, k: D)
        Ops.linear(arena, v, a.v, vp, m: nk, n: inner, k: D)
        let h = c.numHeads, dh = inner / h
        let o = arena.alloc(nq * inner)
        Ops.attention(q: qp, k: kp, v: vp, nq: nq, nk: nk, heads: h, d: dh, dv: dh, ldq: inner, ldk: inner, ldv: inner,
                      qOff: { $0 * dh }, kOff: { $0 * dh }, vOff: { $0 * dh }, scale: 1 / Float(dh).squareRoot(),
                      out: o, arena: arena)
        let r = arena.alloc(nq * D)
        Ops.linear(arena, o, a.out, r, m: nq, n: D, k: inner)
        if accumulate { Ops.add(out, r, nq * D) } else { out.update(from: r, count: nq * D) }
        arena.reset(to: mark)
    }

    func norm(_ n: Norm, _ x: UnsafeMutablePointer<Float>, _ rows: Int) {
        Ops.layerNorm(x, x, m: rows, c: c.transformerDim, weight: n.w, bias: n.b, eps: 1e-5)
    }

    static func sum(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int, _ arena: Arena) -> UnsafeMutablePointer<Float> {
        let o = arena.alloc(n)
        Ops.sumInto(o, a, b, n)
        return o
    }

    /// The IoU head (MLP with ReLUs) on `rows` IoU tokens (row stride `ld`), one GEMM per layer, into
    /// `out[rows, T]`.
    func iouHead(_ tokens: UnsafePointer<Float>, rows: Int, ld: Int, out: UnsafeMutablePointer<Float>, arena: Arena) {
        let mark = arena.mark()
        var inp = tokens, width = c.transformerDim, lda = ld
        for l in 0..<c.iouHeadDepth {
            let last = l == c.iouHeadDepth - 1
            let outW = last ? c.numMaskTokens : c.iouHeadHiddenDim
            let o = last ? out : arena.alloc(rows * outW)
            Ops.linear(arena, inp, iouHead[l], o, m: rows, n: outW, k: width, lda: lda)
            if !last { Ops.relu(o, rows * outW) }
            inp = UnsafePointer(o)
            width = outW
            lda = outW
        }
        arena.reset(to: mark)
    }

    /// Runs the decoder for one prompt. `image`, `pe`, `dense`: `[HW, D]`; `sparse`: `[Ns, D]`.
    /// Writes all mask tokens' low-res logits `masks[outputMasks, 4G, 4G]` (HQ-SAM: the HQ mask last, from
    /// `hqFeatures`, the image's `MaskDecoderHQ.features`) and `iou[T]`.
    func run(image: UnsafePointer<Float>, pe: UnsafePointer<Float>, dense: UnsafePointer<Float>, grid g: Int,
             sparse: UnsafePointer<Float>, ns: Int, masks: UnsafeMutablePointer<Float>, iou: UnsafeMutablePointer<Float>,
             hqFeatures: UnsafePointer<Float>? = nil, arena: Arena) {
        let D = c.transformerDim, T = c.numMaskTokens, H = hq == nil ? 0 : 1, nt = 1 + T + H + ns, hw = g * g
        precondition((hq == nil) == (hqFeatures == nil), "HQ features are given exactly for an HQ decoder")
        let inner = D / c.attentionDownsampleRate
        let mark = arena.mark()
        // Tokens: [iou, mask tokens…, HQ token (HQ-SAM), sparse prompts…].
        let pePoints = arena.alloc(nt * D)
        pePoints.update(from: iouToken, count: D)
        (pePoints + D).update(from: maskTokens, count: T * D)
        if let hq { (pePoints + (1 + T) * D).update(from: hq.token, count: D) }
        (pePoints + (1 + T + H) * D).update(from: sparse, count: ns * D)
        let queries = arena.alloc(nt * D)
        queries.update(from: pePoints, count: nt * D)
        let keys = Self.sum(image, dense, hw * D, arena)

        for l in 0..<c.depth {
            let L = layers[l]
            let scratch = arena.mark()
            if l == 0 {
                attention(L.selfAttn, q: queries, nq: nt, k: queries, v: queries, nk: nt, inner: D, out: queries,
                          accumulate: false, arena: arena)
            } else {
                let q = Self.sum(queries, pePoints, nt * D, arena)
                attention(L.selfAttn, q: q, nq: nt, k: q, v: queries, nk: nt, inner: D, out: queries,
                          accumulate: true, arena: arena)
            }
            norm(L.norm1, queries, nt)
            var q = Self.sum(queries, pePoints, nt * D, arena)
            var k = Self.sum(keys, pe, hw * D, arena)
            attention(L.t2i, q: q, nq: nt, k: k, v: keys, nk: hw, inner: inner, out: queries,
                      accumulate: true, arena: arena)
            norm(L.norm2, queries, nt)
            let hid = arena.alloc(nt * c.mlpDim), mo = arena.alloc(nt * D)
            Ops.linear(arena, queries, L.lin1, hid, m: nt, n: c.mlpDim, k: D)
            Ops.relu(hid, nt * c.mlpDim)
            Ops.linear(arena, hid, L.lin2, mo, m: nt, n: D, k: c.mlpDim)
            Ops.add(queries, mo, nt * D)
            norm(L.norm3, queries, nt)
            q = Self.sum(queries, pePoints, nt * D, arena)
            k = Self.sum(keys, pe, hw * D, arena)
            attention(L.i2t, q: k, nq: hw, k: q, v: queries, nk: nt, inner: inner, out: keys,
                      accumulate: true, arena: arena)
            norm(L.norm4, keys, hw)
            arena.reset(to: scratch)
        }
        do {
            let scratch = arena.mark()
            let q = Self.sum(queries, pePoints, nt * D, arena)
            let k = Self.sum(keys, pe, hw * D, arena)
            attention(finalAttn, q: q, nq: nt, k: k, v: keys, nk: hw, inner: inner,
                      out: queries, accumulate: true, arena: arena)
            norm(normFinal, queries, nt)
            arena.reset(to: scratch)
        }
        arena.tap?("transformer.hs", queries, [nt, D])
        arena.tap?("transformer.src", keys, [hw, D])

        // Upscale the image tokens: convT → LayerNorm2d → GELU → convT → GELU, to [4G, 4G, D/8].
        let d4 = D / 4, d8 = D / 8, g2 = 2 * g, g4 = 4 * g
        let u1 = arena.alloc(g2 * g2 * d4)
        Ops.convTranspose2x2(keys, h: g, w: g, cin: D, weight: up0.w,
                             bias: up0.b!, cout: d4, out: u1, arena: arena)
        Ops.layerNormScalar(arena, u1, u1, m: g2 * g2, c: d4, up1, eps: 1e-6)
        Ops.gelu(u1, g2 * g2 * d4, arena)
        let u2 = arena.alloc(g4 * g4 * d8)
        Ops.convTranspose2x2(u1, h: g2, w: g2, cin: d4, weight: up3.w,
                             bias: up3.b!, cout: d8, out: u2, arena: arena)
        Ops.gelu(u2, g4 * g4 * d8, arena)
        arena.tap?("upscaled", u2, [g4, g4, d8])

        // Hypernetworks: one 3-layer MLP per mask token → [T, D/8]; masks = hyper · upscaledᵀ.
        let hyperOut = arena.alloc(T * d8), t1 = arena.alloc(D), t2 = arena.alloc(D)
        for t in 0..<T {
            let hw3 = hyper[t]
            Ops.linear(arena, queries + (1 + t) * D, hw3[0], t1, m: 1, n: D, k: D)
            Ops.relu(t1, D)
            Ops.linear(arena, t1, hw3[1], t2, m: 1, n: D, k: D)
            Ops.relu(t2, D)
            Ops.linear(arena, t2, hw3[2], hyperOut + t * d8, m: 1, n: d8, k: D)
        }
        Ops.matmul(arena, hyperOut, u2, masks, m: T, n: g4 * g4, k: d8, lda: d8, ldb: d8, ldc: g4 * g4, transB: true)
        if let hq, let hqFeatures {
            hq.mask(hqToken: queries + (1 + T) * D, upscaled: u2, features: hqFeatures, grid: g, out: masks + T * g4 * g4, arena: arena)
        }

        // IoU head on the IoU token.
        iouHead(queries, rows: 1, ld: D, out: iou, arena: arena)
        arena.tap?("iou_all", iou, [T])
        arena.reset(to: mark)
    }
}
