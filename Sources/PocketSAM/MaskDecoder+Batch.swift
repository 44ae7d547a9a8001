/// Many prompts against one image embedding (automatic mask generation): the decoder of `run`, on a
/// batch of prompts that have the same number of sparse tokens and no mask input.
///
/// What is shared is computed once per image (`Shared`): the keys of the first layer (image embedding
/// plus the no-mask embedding) and their three projections that do not depend on the prompt (token→image
/// keys and values, image→token queries). Per batch, the token-side layers run on all prompts' tokens in
/// one GEMM, the image-side GEMMs on all prompts' image tokens at once, and attention per prompt.
extension MaskDecoder {
    struct Shared {
        /// `[HW, D]`: image embedding + no-mask embedding (the first layer's keys for every prompt).
        let keys: UnsafeMutablePointer<Float>
        /// `[HW, inner]`: first layer's token→image key and value projections, image→token queries.
        let k0, v0, q0: UnsafeMutablePointer<Float>
    }

    /// The prompt-independent part, in `arena` (kept until the caller resets past it).
    func shared(image: UnsafePointer<Float>, pe: UnsafePointer<Float>, dense: UnsafePointer<Float>, hw: Int,
                arena: Arena) -> Shared {
        let D = c.transformerDim, inner = D / c.attentionDownsampleRate
        let keys = Self.sum(image, dense, hw * D, arena)
        let k0 = arena.alloc(hw * inner), v0 = arena.alloc(hw * inner), q0 = arena.alloc(hw * inner)
        let mark = arena.mark()
        let kpe = Self.sum(keys, pe, hw * D, arena)
        let L = layers[0]
        Ops.linear(arena, kpe, L.t2i.k, k0, m: hw, n: inner, k: D)
        Ops.linear(arena, keys, L.t2i.v, v0, m: hw, n: inner, k: D)
        Ops.linear(arena, kpe, L.i2t.q, q0, m: hw, n: inner, k: D)
        arena.reset(to: mark)
        return Shared(keys: keys, k0: k0, v0: v0, q0: q0)
    }

    /// Attention core per prompt: projected `q` (`nq` rows per prompt), `k`, `v` (`nk` rows per prompt;
    /// stride 0 between prompts when shared), into `o[B, nq, inner]`.
    private func core(q: UnsafePointer<Float>, qStride: Int, k: UnsafePointer<Float>, v: UnsafePointer<Float>, kvStride: Int,
                      nq: Int, nk: Int, batch: Int, inner: Int, o: UnsafeMutablePointer<Float>, arena: Arena) {
        let h = c.numHeads, dh = inner / h, scale = 1 / Float(dh).squareRoot()
        for b in 0..<batch {
            let qb = q + b * qStride, kb = k + b * kvStride, vb = v + b * kvStride, ob = o + b * nq * inner
            if nk <= 64 {
                Ops.attentionFewKeys(arena, q: qb, ldq: inner, k: kb, ldk: inner, v: vb, ldv: inner, nq: nq, nk: nk,
                                     heads: h, d: dh, scale: scale, out: ob, ldo: inner)
            } else {
                Ops.attention(q: qb, k: kb, v: vb, nq: nq, nk: nk, heads: h, d: dh, dv: dh, ldq: inner, ldk: inner, ldv: inner,
                              qOff: { $0 * dh }, kOff: { $0 * dh }, vOff: { $0 * dh }, scale: scale, out: ob, arena: arena)
            }
        }
    }

    /// Decodes `batch` prompts: `sparse[B, ns, D]`. Writes the low-res logits of mask tokens
    /// `first ..< first + count` to `masks[B, count, 4G, 4G]` and every token's predicted IoU to `iou[B, T]`.
    func runBatch(shared s: Shared, pe: UnsafePointer<Float>, grid g: Int, sparse: UnsafePointer<Float>, ns: Int,
                  batch B: Int, first: Int, count: Int, masks: UnsafeMutablePointer<Float>, iou: UnsafeMutablePointer<Float>,
                  arena: Arena) {
        let D = c.transformerDim, T = c.numMaskTokens, nt = 1 + T + ns, hw = g * g, rows = B * nt
        let inner = D / c.attentionDownsampleRate
        let mark = arena.mark()
        let pePoints = arena.alloc(rows * D)
        for b in 0..<B {
            let t = pePoints + b * nt * D
            t.update(from: iouToken, count: D)
            (t + D).update(from: maskTokens, count: T * D)
            (t + (1 + T) * D).update(from: sparse + b * ns * D, count: ns * D)
        }
        let queries = arena.alloc(rows * D)
        queries.update(from: pePoints, count: rows * D)
        let keys = arena.alloc(B * hw * D)

        /// Token self-attention (all prompts' projections in one GEMM each).
        func selfAttention(_ a: Attn, q: UnsafePointer<Float>, v: UnsafePointer<Float>, accumulate: Bool) {
            let m = arena.mark()
            let qp = arena.alloc(rows * D), kp = arena.alloc(rows * D), vp = arena.alloc(rows * D), o = arena.alloc(rows * D)
            Ops.linear(arena, q, a.q, qp, m: rows, n: D, k: D)
            Ops.linear(arena, q, a.k, kp, m: rows, n: D, k: D)
            Ops.linear(arena, v, a.v, vp, m: rows, n: D, k: D)
            core(q: qp, qStride: nt * D, k: kp, v: vp, kvStride: nt * D, nq: nt, nk: nt, batch: B, inner: D, o: o, arena: arena)
            let r = arena.alloc(rows * D)
            Ops.linear(arena, o, a.out, r, m: rows, n: D, k: D)
            if accumulate { Ops.add(queries, r, rows * D) } else { queries.update(from: r, count: rows * D) }
            arena.reset(to: m)
        }
        /// Tokens attend to image tokens: `k0`/`v0` given (shared) or projected from `keys + pe` / `keys`.
        func tokenToImage(_ a: Attn, shared: (k: UnsafePointer<Float>, v: UnsafePointer<Float>)?) {
            let m = arena.mark()
            let q = Self.sum(queries, pePoints, rows * D, arena)
            let qp = arena.alloc(rows * inner), o = arena.alloc(rows * inner), r = arena.alloc(rows * D)
            Ops.linear(arena, q, a.q, qp, m: rows, n: inner, k: D)
            if let shared {
                core(q: qp, qStride: nt * inner, k: shared.k, v: shared.v, kvStride: 0, nq: nt, nk: hw, batch: B, inner: inner,
                     o: o, arena: arena)
            } else {
                let kpe = arena.alloc(B * hw * D)
                for b in 0..<B { Ops.sumInto(kpe + b * hw * D, keys + b * hw * D, pe, hw * D) }
                let kp = arena.alloc(B * hw * inner), vp = arena.alloc(B * hw * inner)
                Ops.linear(arena, kpe, a.k, kp, m: B * hw, n: inner, k: D)
                Ops.linear(arena, keys, a.v, vp, m: B * hw, n: inner, k: D)
                core(q: qp, qStride: nt * inner, k: kp, v: vp, kvStride: hw * inner, nq: nt, nk: hw, batch: B, inner: inner,
                     o: o, arena: arena)
            }
            Ops.linear(arena, o, a.out, r, m: rows, n: D, k: inner)
            Ops.add(queries, r, rows * D)
            arena.reset(to: m)
        }

        for l in 0..<c.depth {
            let L = layers[l]
            let scratch = arena.mark()
            if l == 0 {
                selfAttention(L.selfAttn, q: queries, v: queries, accumulate: false)
            } else {
                let q = Self.sum(queries, pePoints, rows * D, arena)
                selfAttention(L.selfAttn, q: q, v: queries, accumulate: true)
            }
            norm(L.norm1, queries, rows)
            tokenToImage(L.t2i, shared: l == 0 ? (UnsafePointer(s.k0), UnsafePointer(s.v0)) : nil)
            norm(L.norm2, queries, rows)
            let hid = arena.alloc(rows * c.mlpDim), mo = arena.alloc(rows * D)
            Ops.linear(arena, queries, L.lin1, hid, m: rows, n: c.mlpDim, k: D)
            Ops.relu(hid, rows * c.mlpDim)
            Ops.linear(arena, hid, L.lin2, mo, m: rows, n: D, k: c.mlpDim)
            Ops.add(queries, mo, rows * D)
            norm(L.norm3, queries, rows)
            // Image tokens attend to the prompt's tokens (few keys).
            let q = Self.sum(queries, pePoints, rows * D, arena)
            let kp = arena.alloc(rows * inner), vp = arena.alloc(rows * inner)
            Ops.linear(arena, q, L.i2t.k, kp, m: rows, n: inner, k: D)
            Ops.linear(arena, queries, L.i2t.v, vp, m: rows, n: inner, k: D)
            let o = arena.alloc(B * hw * inner)
            if l == 0 {
                core(q: s.q0, qStride: 0, k: kp, v: vp, kvStride: nt * inner, nq: hw, nk: nt, batch: B, inner: inner, o: o, arena: arena)
            } else {
                let kpe = arena.alloc(B * hw * D), qp = arena.alloc(B * hw * inner)
                for b in 0..<B { Ops.sumInto(kpe + b * hw * D, keys + b * hw * D, pe, hw * D) }
                Ops.linear(arena, kpe, L.i2t.q, qp, m: B * hw, n: inner, k: D)
                core(q: qp, qStride: hw * inner, k: kp, v: vp, kvStride: nt * inner, nq: hw, nk: nt, batch: B, inner: inner, o: o,
                     arena: arena)
            }
            if l == 0 {
                Ops.linear(arena, o, L.i2t.out, keys, m: B * hw, n: D, k: inner)
                for b in 0..<B { Ops.add(keys + b * hw * D, s.keys, hw * D) }
            } else {
                let r = arena.alloc(B * hw * D)
                Ops.linear(arena, o, L.i2t.out, r, m: B * hw, n: D, k: inner)
                Ops.add(keys, r, B * hw * D)
            }
            Ops.layerNorm(arena, keys, keys, m: B * hw, c: D, L.norm4, eps: 1e-5)
            arena.reset(to: scratch)
        }
        do {
            let scratch = arena.mark()
            tokenToImage(finalAttn, shared: nil)
            norm(normFinal, queries, rows)
            arena.reset(to: scratch)
        }

        // IoU head on every prompt's IoU token, one GEMM per layer.
        do {
            let scratch = arena.mark()
            let hidden = c.iouHeadHiddenDim
            var inp = UnsafePointer(queries), width = D, ld = nt * D
            for l in 0..<c.iouHeadDepth {
                let last = l == c.iouHeadDepth - 1
                let outW = last ? T : hidden
                let o = last ? iou : arena.alloc(B * outW)
                Ops.linear(arena, inp, iouHead[l], o, m: B, n: outW, k: width, lda: ld)
                if !last { Ops.relu(o, B * outW) }
                inp = UnsafePointer(o)
                width = outW
                ld = outW
            }
            arena.reset(to: scratch)
        }

        // Hypernetworks of the wanted mask tokens, all prompts at once: [B, count, D/8].
        let d4 = D / 4, d8 = D / 8, g2 = 2 * g, g4 = 4 * g
        let hyperOut = arena.alloc(B * count * d8)
        do {
            let scratch = arena.mark()
            let t1 = arena.alloc(B * D), t2 = arena.alloc(B * D), t3 = arena.alloc(B * d8)
            for j in 0..<count {
                let t = first + j, hw3 = hyper[t]
                Ops.linear(arena, queries + (1 + t) * D, hw3[0], t1, m: B, n: D, k: D, lda: nt * D)
                Ops.relu(t1, B * D)
                Ops.linear(arena, t1, hw3[1], t2, m: B, n: D, k: D)
                Ops.relu(t2, B * D)
                Ops.linear(arena, t2, hw3[2], t3, m: B, n: d8, k: D)
                for b in 0..<B { (hyperOut + (b * count + j) * d8).update(from: t3 + b * d8, count: d8) }
            }
            arena.reset(to: scratch)
        }
        // Upscaling and masks, one prompt at a time (the upscaled maps are large).
        for b in 0..<B {
            let scratch = arena.mark()
            let u1 = arena.alloc(g2 * g2 * d4)
            Ops.convTranspose2x2(keys + b * hw * D, h: g, w: g, cin: D, weight: up0.w, bias: up0.b!, cout: d4, out: u1, arena: arena)
            Ops.layerNorm(arena, u1, u1, m: g2 * g2, c: d4, up1, eps: 1e-6)
            Ops.gelu(u1, g2 * g2 * d4, arena)
            let u2 = arena.alloc(g4 * g4 * d8)
            Ops.convTranspose2x2(u1, h: g2, w: g2, cin: d4, weight: up3.w, bias: up3.b!, cout: d8, out: u2, arena: arena)
            Ops.gelu(u2, g4 * g4 * d8, arena)
            Ops.matmul(arena, hyperOut + b * count * d8, u2, masks + b * count * g4 * g4, m: count, n: g4 * g4, k: d8, lda: d8,
                       ldb: d8, ldc: g4 * g4, transB: true)
            arena.reset(to: scratch)
        }
        arena.reset(to: mark)
    }
}
