import PocketSAMFormat

/// SAM's mask decoder: two-way transformer, transposed-conv upscaling, hypernetwork MLPs, IoU head.
struct MaskDecoder {
    let c: MaskDecoderConfig
    let m: Model
    static let p = "mask_decoder."

    /// SAM's `Attention`: project q, k, v to the internal width, multi-head attention, project out.
    /// Adds the result into `out` when `accumulate`, else writes it.
    func attention(_ name: String, q: UnsafePointer<Float>, nq: Int, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                   nk: Int, inner: Int, out: UnsafeMutablePointer<Float>, accumulate: Bool, arena: Arena) {
        let D = c.transformerDim, p = Self.p + name
        let mark = arena.mark()
        let qp = arena.alloc(nq * inner), kp = arena.alloc(nk * inner), vp = arena.alloc(nk * inner)
        Ops.linear(arena, q, m.w(p + ".q_proj.weight"), m.w(p + ".q_proj.bias"), qp, m: nq, n: inner, k: D)
        Ops.linear(arena, k, m.w(p + ".k_proj.weight"), m.w(p + ".k_proj.bias"), kp, m: nk, n: inner, k: D)
        Ops.linear(arena, v, m.w(p + ".v_proj.weight"), m.w(p + ".v_proj.bias"), vp, m: nk, n: inner, k: D)
        let h = c.numHeads, dh = inner / h
        let o = arena.alloc(nq * inner)
        Ops.attention(q: qp, k: kp, v: vp, nq: nq, nk: nk, heads: h, d: dh, dv: dh, ldq: inner, ldk: inner, ldv: inner,
                      qOff: { $0 * dh }, kOff: { $0 * dh }, vOff: { $0 * dh }, scale: 1 / Float(dh).squareRoot(),
                      out: o, arena: arena)
        let r = arena.alloc(nq * D)
        Ops.linear(arena, o, m.w(p + ".out_proj.weight"), m.w(p + ".out_proj.bias"), r, m: nq, n: D, k: inner)
        if accumulate { Ops.add(out, r, nq * D) } else { out.update(from: r, count: nq * D) }
        arena.reset(to: mark)
    }

    func norm(_ name: String, _ x: UnsafeMutablePointer<Float>, _ n: Int) {
        Ops.layerNorm(x, x, m: n, c: c.transformerDim, weight: m.w(Self.p + name + ".weight"),
                      bias: m.w(Self.p + name + ".bias"), eps: 1e-5)
    }

    static func sum(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int, _ arena: Arena) -> UnsafeMutablePointer<Float> {
        let o = arena.alloc(n)
        for i in 0..<n { o[i] = a[i] + b[i] }
        return o
    }

    /// Runs the decoder for one prompt. `image`, `pe`, `dense`: `[HW, D]`; `sparse`: `[Ns, D]`.
    /// Writes all mask tokens' low-res logits `masks[T, 4G, 4G]` and `iou[T]`.
    func run(image: UnsafePointer<Float>, pe: UnsafePointer<Float>, dense: UnsafePointer<Float>, grid g: Int,
             sparse: UnsafePointer<Float>, ns: Int, masks: UnsafeMutablePointer<Float>, iou: UnsafeMutablePointer<Float>,
             arena: Arena) {
        let D = c.transformerDim, T = c.numMaskTokens, nt = 1 + T + ns, hw = g * g
        let inner = D / c.attentionDownsampleRate
        let mark = arena.mark()
        // Tokens: [iou, mask tokens…, sparse prompts…].
        let pePoints = arena.alloc(nt * D)
        pePoints.update(from: m.w(Self.p + "iou_token.weight"), count: D)
        (pePoints + D).update(from: m.w(Self.p + "mask_tokens.weight"), count: T * D)
        (pePoints + (1 + T) * D).update(from: sparse, count: ns * D)
        let queries = arena.alloc(nt * D)
        queries.update(from: pePoints, count: nt * D)
        let keys = Self.sum(image, dense, hw * D, arena)

        for l in 0..<c.depth {
            let p = "transformer.layers.\(l)."
            let scratch = arena.mark()
            if l == 0 {
                attention(p + "self_attn", q: queries, nq: nt, k: queries, v: queries, nk: nt, inner: D, out: queries,
                          accumulate: false, arena: arena)
            } else {
                let q = Self.sum(queries, pePoints, nt * D, arena)
                attention(p + "self_attn", q: q, nq: nt, k: q, v: queries, nk: nt, inner: D, out: queries,
                          accumulate: true, arena: arena)
            }
            norm(p + "norm1", queries, nt)
            var q = Self.sum(queries, pePoints, nt * D, arena)
            var k = Self.sum(keys, pe, hw * D, arena)
            attention(p + "cross_attn_token_to_image", q: q, nq: nt, k: k, v: keys, nk: hw, inner: inner, out: queries,
                      accumulate: true, arena: arena)
            norm(p + "norm2", queries, nt)
            let hid = arena.alloc(nt * c.mlpDim), mo = arena.alloc(nt * D)
            Ops.linear(arena, queries, m.w(Self.p + p + "mlp.lin1.weight"), m.w(Self.p + p + "mlp.lin1.bias"), hid, m: nt, n: c.mlpDim, k: D)
            Ops.relu(hid, nt * c.mlpDim)
            Ops.linear(arena, hid, m.w(Self.p + p + "mlp.lin2.weight"), m.w(Self.p + p + "mlp.lin2.bias"), mo, m: nt, n: D, k: c.mlpDim)
            Ops.add(queries, mo, nt * D)
            norm(p + "norm3", queries, nt)
            q = Self.sum(queries, pePoints, nt * D, arena)
            k = Self.sum(keys, pe, hw * D, arena)
            attention(p + "cross_attn_image_to_token", q: k, nq: hw, k: q, v: queries, nk: nt, inner: inner, out: keys,
                      accumulate: true, arena: arena)
            norm(p + "norm4", keys, hw)
            arena.reset(to: scratch)
        }
        do {
            let scratch = arena.mark()
            let q = Self.sum(queries, pePoints, nt * D, arena)
            let k = Self.sum(keys, pe, hw * D, arena)
            attention("transformer.final_attn_token_to_image", q: q, nq: nt, k: k, v: keys, nk: hw, inner: inner,
                      out: queries, accumulate: true, arena: arena)
            norm("transformer.norm_final_attn", queries, nt)
            arena.reset(to: scratch)
        }

        // Upscale the image tokens: convT → LayerNorm2d → GELU → convT → GELU, to [4G, 4G, D/8].
        let d4 = D / 4, d8 = D / 8, g2 = 2 * g, g4 = 4 * g
        let u1 = arena.alloc(g2 * g2 * d4)
        Ops.convTranspose2x2(keys, h: g, w: g, cin: D, weight: m.w(Self.p + "output_upscaling.0.weight"),
                             bias: m.w(Self.p + "output_upscaling.0.bias"), cout: d4, out: u1, arena: arena)
        Ops.layerNorm(u1, u1, m: g2 * g2, c: d4, weight: m.w(Self.p + "output_upscaling.1.weight"),
                      bias: m.w(Self.p + "output_upscaling.1.bias"), eps: 1e-6)
        Ops.gelu(u1, g2 * g2 * d4, arena)
        let u2 = arena.alloc(g4 * g4 * d8)
        Ops.convTranspose2x2(u1, h: g2, w: g2, cin: d4, weight: m.w(Self.p + "output_upscaling.3.weight"),
                             bias: m.w(Self.p + "output_upscaling.3.bias"), cout: d8, out: u2, arena: arena)
        Ops.gelu(u2, g4 * g4 * d8, arena)

        // Hypernetworks: one 3-layer MLP per mask token → [T, D/8]; masks = hyper · upscaledᵀ.
        let hyper = arena.alloc(T * d8), t1 = arena.alloc(D), t2 = arena.alloc(D)
        for t in 0..<T {
            let p = Self.p + "output_hypernetworks_mlps.\(t).layers."
            Ops.linear(arena, queries + (1 + t) * D, m.w(p + "0.weight"), m.w(p + "0.bias"), t1, m: 1, n: D, k: D)
            Ops.relu(t1, D)
            Ops.linear(arena, t1, m.w(p + "1.weight"), m.w(p + "1.bias"), t2, m: 1, n: D, k: D)
            Ops.relu(t2, D)
            Ops.linear(arena, t2, m.w(p + "2.weight"), m.w(p + "2.bias"), hyper + t * d8, m: 1, n: d8, k: D)
        }
        Ops.matmul(arena, hyper, u2, masks, m: T, n: g4 * g4, k: d8, lda: d8, ldb: d8, ldc: g4 * g4, transB: true)

        // IoU head on the IoU token.
        let hidden = c.iouHeadHiddenDim
        var inp = UnsafeMutablePointer(mutating: queries)
        var width = D
        for l in 0..<c.iouHeadDepth {
            let last = l == c.iouHeadDepth - 1
            let outW = last ? T : hidden
            let o = last ? iou : arena.alloc(outW)
            Ops.linear(arena, inp, m.w(Self.p + "iou_prediction_head.layers.\(l).weight"),
                       m.w(Self.p + "iou_prediction_head.layers.\(l).bias"), o, m: 1, n: outW, k: width)
            if !last { Ops.relu(o, outW) }
            inp = o
            width = outW
        }
        arena.reset(to: mark)
    }
}
