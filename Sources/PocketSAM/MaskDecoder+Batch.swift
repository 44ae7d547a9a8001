import PocketSAMKernels

#if canImport(Glibc)
import Glibc
#endif

/// Many prompts against one image embedding (automatic mask generation): the decoder of `run`, on a
/// batch of prompts that have the same number of sparse tokens and no mask input.
///
/// What is shared is computed once per image (`Shared`): the keys of the first layer (image embedding
/// plus the no-mask embedding) and their three projections that do not depend on the prompt (token→image
/// keys and values, image→token queries). Per batch, the token-side layers run on all prompts' tokens in
/// one GEMM, and attention per prompt.
///
/// The image-side projections are folded into the few tokens (the same algebra, fewer multiplies): with
/// a handful of tokens on one side, `q·(W_k x + b_k)` is `(W_kᵀ q)·x` plus a constant that softmax
/// cancels, `Σ p (W_v x + b_v)` is `W_v (Σ p x) + b_v`, and image→token attention's output projection
/// applies to the few values instead of every image token. So no projection of the 4096 image tokens
/// is ever computed per prompt: each attention costs two products of the image tokens with
/// `heads × tokens` vectors (about 2 × 59 MMAC at SAM's sizes instead of 270).
extension MaskDecoder {
    struct Shared {
        /// The first layer's keys for every prompt are the image embedding `[HW, D]` plus the no-mask embedding `[D]` on
        /// every row; made per block where needed (`DecoderImagePass`), not kept (4 MB at SAM's sizes).
        let image: UnsafePointer<Float>, noMask: UnsafePointer<Float>
        /// First layer's token→image keys and image→token queries, transposed (`[inner, HW]`, for
        /// `psam_scores_shared`), and token→image values `[HW, inner]`.
        let k0t, v0, q0t: UnsafeMutablePointer<Float>
        /// fp32 `[out, in]` weights of the image-side projections that the folding multiplies by
        /// (dequantized for an int8 model; a few hundred KB).
        let folded: [String: [Float]]
        /// The first upscaling convolution's input is the last layer's normalised keys, each layer's keys
        /// being the previous ones plus a rank-(heads × tokens) update, normalised per row. With
        /// `N_l = diag(γ_l) M_l`, `M_last = W` (the conv weights `[D, 4·D/4]`), `M_l = N_{l+1}`:
        /// `keys_l · M_l = r_l ⊙ (keys_{l−1} · N_l + P_l (V_l N_l) − μ_l (1ᵀ N_l)) + β_l M_l` (r, μ: the
        /// row's 1/σ and mean). So `src · W` is the shared `keys · N_0` plus two products with
        /// `heads × tokens` rows per layer: 125 instead of 268 MMAC per prompt at SAM's sizes.
        let upS: UnsafeMutablePointer<Float>
        /// Per layer: `N_l` `[D, 4·D/4]`, `1ᵀ N_l`, `β_l M_l`.
        let upN: [[Float]], upU: [[Float]], upV: [[Float]]
        /// The second upscaling convolution's weights transposed, `[4·D/8, D/4]` (row `s·D/8 + c` for output
        /// channel c at sub-pixel s), so that its GEMM gives channel rows along the pixels
        /// (`psam_upscale_masks_t`).
        let up3t: [Float]
    }

    /// The weights-only part of `Shared` (the same for every image; built on the heap, once per model or session).
    struct Folded {
        let folded: [String: [Float]]
        let upN: [[Float]], upU: [[Float]], upV: [[Float]]
        let up3t: [Float]
    }

    /// The prompt-independent part, in `arena` (kept until the caller resets past it); `folded` from `folded(model:)`
    /// (built here when not given).
    /// `noMask`: the no-mask dense embedding's row `[D]` (`PromptEncoder.noMask`); only the kept parts stay in the arena.
    func shared(image: UnsafePointer<Float>, pe: UnsafePointer<Float>, noMask: UnsafePointer<Float>, hw: Int,
                model: Model, folded given: Folded? = nil, arena: Arena) -> Shared {
        let D = c.transformerDim, inner = D / c.attentionDownsampleRate, n4 = 4 * (D / 4)
        let k0t = arena.alloc(hw * inner), v0 = arena.alloc(hw * inner), q0t = arena.alloc(hw * inner)
        let upS = arena.alloc(hw * n4)
        let mark = arena.mark()
        // The first layer's keys, image + no-mask embedding, for the products below only.
        let keys = arena.alloc(hw * D)
        for i in 0..<hw { psam_add_rows(keys + i * D, image + i * D, noMask, D) }
        let kpe = Self.sum(keys, pe, hw * D, arena)
        let L = layers[0]
        let k0 = arena.alloc(hw * inner), q0 = arena.alloc(hw * inner)
        Ops.linear(arena, kpe, L.t2i.k, k0, m: hw, n: inner, k: D)
        Ops.linear(arena, keys, L.t2i.v, v0, m: hw, n: inner, k: D)
        Ops.linear(arena, kpe, L.i2t.q, q0, m: hw, n: inner, k: D)
        psam_transpose(k0, hw, inner, inner, k0t, hw)
        psam_transpose(q0, hw, inner, inner, q0t, hw)
        let f = given ?? folded(model: model)
        f.upN[0].withUnsafeBufferPointer { Ops.matmul(arena, keys, $0.baseAddress!, upS, m: hw, n: n4, k: D, lda: D, ldb: n4, ldc: n4) }
        arena.reset(to: mark)
        return Shared(image: image, noMask: noMask, k0t: k0t, v0: v0, q0t: q0t, folded: f.folded, upS: upS, upN: f.upN, upU: f.upU,
                      upV: f.upV, up3t: f.up3t)
    }

    /// The fp32 weights the folded attentions multiply by and the upscaling fold's matrices (see `Shared`).
    func folded(model: Model) -> Folded {
        let D = c.transformerDim, inner = D / c.attentionDownsampleRate
        var folded: [String: [Float]] = [:]
        func keep(_ l: Lin, _ n: Int, _ k: Int) {
            if let w = l.w {
                folded[l.name] = Array(UnsafeBufferPointer(start: w, count: n * k))
            } else if let e = model.file.tensor(named: l.name) {
                folded[l.name] = model.file.floatValues(of: e)
            }
        }
        for (l, L) in layers.enumerated() {
            keep(L.i2t.out, D, inner)
            // The first layer's t2i keys/values and i2t queries are the shared projections above.
            guard l > 0 else { continue }
            keep(L.t2i.k, inner, D)
            keep(L.t2i.v, inner, D)
            keep(L.i2t.q, inner, D)
        }
        keep(finalAttn.k, inner, D)
        keep(finalAttn.v, inner, D)
        // The upscaling fold (see `Shared.upS`).
        // Columns in sub-pixel-major order (s·D/4 + c, not PyTorch's c·4 + s), so that each output pixel's
        // channels are contiguous for the norm (`psam_upscale_ln_gelu_row`).
        let n4 = 4 * (D / 4), d4 = D / 4
        var M = [Float](repeating: 0, count: D * n4)
        for i in 0..<D { for sp in 0..<4 { for c in 0..<d4 { M[i * n4 + sp * d4 + c] = up0.w[i * n4 + c * 4 + sp] } } }
        var upN = [[Float]](repeating: [], count: c.depth), upU = upN, upV = upN
        for l in stride(from: c.depth - 1, through: 0, by: -1) {
            let g = layers[l].norm4.w, b = layers[l].norm4.b
            var N = M, u = [Float](repeating: 0, count: n4), v = [Float](repeating: 0, count: n4)
            for i in 0..<D {
                for j in 0..<n4 {
                    N[i * n4 + j] = g[i] * M[i * n4 + j]
                    u[j] += N[i * n4 + j]
                    v[j] += b[i] * M[i * n4 + j]
                }
            }
            upN[l] = N
            upU[l] = u
            upV[l] = v
            M = N
        }
        let d8 = D / 8
        var up3t = [Float](repeating: 0, count: 4 * d8 * d4)
        for sp in 0..<4 { for c in 0..<d8 { for k in 0..<d4 { up3t[(sp * d8 + c) * d4 + k] = up3.w[k * 4 * d8 + c * 4 + sp] } } }
        return Folded(folded: folded, upN: upN, upU: upU, upV: upV, up3t: up3t)
    }

    /// Token self-attention per prompt: projected `q`, `k`, `v` (`nt` ≤ 64 rows per prompt, `stride` floats
    /// apart) into `o[B, nt, inner]`.
    private func selfAttentionCore(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, stride: Int,
                                   nt: Int, batch: Int, inner: Int, o: UnsafeMutablePointer<Float>, arena: Arena) {
        let h = c.numHeads, dh = inner / h, scale = 1 / Float(dh).squareRoot()
        for b in 0..<batch {
            Ops.attentionFewKeys(arena, q: q + b * stride, ldq: inner, k: k + b * stride, ldk: inner, v: v + b * stride, ldv: inner,
                                 nq: nt, nk: nt, heads: h, d: dh, scale: scale, out: o + b * nt * inner, ldo: inner)
        }
    }

    /// Decodes `batch` prompts: `sparse[B, ns, D]`. Writes the low-res logits (transposed: column-major) of mask tokens
    /// `first ..< first + count` to `masks[B, count, 4G, 4G]` and every token's predicted IoU to `iou[B, T]`.
    ///
    /// `parts`: the image tokens' passes and the upscaling run as that many independent parts on `arena`'s threads (one
    /// prompt on all of a session's threads). The token→image attention's online softmax keeps running maxima, sums and
    /// weighted sums per part, merged in part order at the end, so the result depends on `parts` (at rounding level)
    /// but never on the thread count. With 1 (many prompts, a prompt per thread) it is the single sequential pass.
    /// `rowExact`: each prompt's results are the bits of a `batch` 1 call (the token linears run per prompt).
    func runBatch(shared s: Shared, pe: UnsafePointer<Float>, grid g: Int, sparse: UnsafePointer<Float>, ns: Int,
                  batch B: Int, first: Int, count: Int, masks: UnsafeMutablePointer<Float>, iou: UnsafeMutablePointer<Float>,
                  parts P: Int = 1, rowExact: Bool = false, arena: Arena) {
        let D = c.transformerDim, T = c.numMaskTokens, nt = 1 + T + ns, hw = g * g, rows = B * nt
        let inner = D / c.attentionDownsampleRate
        let mark = arena.mark()
        /// A linear over every prompt's tokens: one GEMM, or with `rowExact` one per prompt, so that each prompt's
        /// rows are computed exactly as with `batch` 1 (OpenBLAS's small-GEMM paths round differently with the row
        /// count).
        func tokenLinear(_ x: UnsafePointer<Float>, _ l: Lin, _ y: UnsafeMutablePointer<Float>, n: Int, k: Int) {
            guard rowExact, B > 1 else { return Ops.linear(arena, x, l, y, m: rows, n: n, k: k) }
            for b in 0..<B { Ops.linear(arena, x + b * nt * k, l, y + b * nt * n, m: nt, n: n, k: k) }
        }
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
            tokenLinear(q, a.q, qp, n: D, k: D)
            tokenLinear(q, a.k, kp, n: D, k: D)
            tokenLinear(v, a.v, vp, n: D, k: D)
            selfAttentionCore(q: qp, k: kp, v: vp, stride: nt * D, nt: nt, batch: B, inner: D, o: o, arena: arena)
            let r = arena.alloc(rows * D)
            tokenLinear(o, a.out, r, n: D, k: D)
            if accumulate { Ops.add(queries, r, rows * D) } else { queries.update(from: r, count: rows * D) }
            arena.reset(to: m)
        }
        let heads = c.numHeads, dh = inner / heads, scale = 1 / Float(dh).squareRoot(), hk = heads * nt
        // Kept for the upscaling fold (`Shared.upS`): per prompt and layer, the image→token attention weights
        // P ([HW, nt·heads], token-major), V N_l [nt·heads, 4·D/4], and the row statistics of the keys before their norm.
        let n4 = 4 * (D / 4), depth = c.depth
        let pAll = arena.alloc(B * depth * hw * hk), qAll = arena.alloc(B * depth * hk * n4)
        let muAll = arena.alloc(B * depth * hw), rAll = arena.alloc(B * depth * hw)
        let blk = 64

        /// The first layer's token→image attention, against the shared keys (transposed) and values, per prompt
        /// and head.
        func tokenToImageShared(_ a: Attn) {
            let m = arena.mark()
            let q = Self.sum(queries, pePoints, rows * D, arena)
            let qp = arena.alloc(rows * inner), o = arena.alloc(rows * inner), r = arena.alloc(rows * D)
            tokenLinear(q, a.q, qp, n: inner, k: D)
            let sc = arena.alloc(nt * hw)
            arena.macs &+= 2 * B * heads * nt * hw * dh
            for b in 0..<B {
                for h in 0..<heads {
                    psam_scores_shared(qp + b * nt * inner + h * dh, inner, s.k0t + h * dh * hw, hw, nt, hw, dh, scale, sc, hw)
                    psam_softmax_rows(sc, nt, hw, hw)
                    psam_weighted_rows(sc, hw, s.v0 + h * dh, inner, nt, hw, dh, o + b * nt * inner + h * dh, inner)
                }
            }
            tokenLinear(o, a.out, r, n: D, k: inner)
            Ops.add(queries, r, rows * D)
            arena.reset(to: m)
        }

        func mlp(_ L: Layer) {
            let m = arena.mark()
            let hid = arena.alloc(rows * c.mlpDim), mo = arena.alloc(rows * D)
            tokenLinear(queries, L.lin1, hid, n: c.mlpDim, k: D)
            Ops.relu(hid, rows * c.mlpDim)
            tokenLinear(hid, L.lin2, mo, n: D, k: c.mlpDim)
            Ops.add(queries, mo, rows * D)
            arena.reset(to: m)
        }

        /// Image tokens attend to the prompt's tokens (layer `layer`'s image→token attention: the keys' update and
        /// norm4), and, on each block of image tokens as soon as it is updated, the next token→image attention
        /// (`next`: the next layer's, or the final one), so that each prompt's image tokens pass through the cache
        /// once for both.
        ///
        /// Image→token, folded: scores of every image token against `heads × nt` vectors, softmax per head, then
        /// the output projection applied to the values first. The scores are `[HW, nt·heads]`, token-major (column
        /// `i·heads + h`), so that the softmax over a head's nt tokens runs across vectors of the heads
        /// (`psam_softmax_lanes`). `kp`, `vp`: the layer's token keys and values (projected from the tokens as they
        /// were after its MLP).
        ///
        /// Token→image, folded (see the top), for the `used` tokens (the final attention's: the IoU token and the
        /// wanted mask tokens; the others' outputs are left zero) or all: scores against each block, an online
        /// softmax down the image tokens (`psam_softmax_online_cols`) and the weighted sums. `qp`: the projected
        /// queries. Writes the attention's output before its output projection to `o[rows, inner]`.
        ///
        /// `keepKeys`: the updated keys are written back for a later layer; otherwise (the last layer) they only pass
        /// through a block buffer. Keys + pe always stay in a block buffer (the next pass adds pe again).
        func fusedPass(i2t a: Attn, layer: Int, norm nrm: Norm, kp: UnsafePointer<Float>, vp: UnsafePointer<Float>,
                       next t: Attn, qp: UnsafePointer<Float>, used: Bool, keepKeys: Bool, o: UnsafeMutablePointer<Float>) {
            // With `used`: token 0 (IoU) and the wanted mask tokens 1 + first ..< 1 + first + count (no array: no heap).
            func token(_ u: Int) -> Int { used ? (u == 0 ? 0 : first + u) : u }
            let m = arena.mark()
            let wo = s.folded[a.out.name]!, wq = s.folded[a.q.name]
            let wk = s.folded[t.k.name]!, wv = s.folded[t.v.name]!
            let vt = arena.alloc(hk * D), kq = arena.alloc(hk * D), cq = arena.alloc(hk), kqt = arena.alloc(D * hk)
            let nu = used ? 1 + count : nt, hu = heads * nu
            let qu = arena.alloc(nu * inner), qk = arena.alloc(hu * D), qkt = arena.alloc(D * hu), ou = arena.alloc(nu * inner)
            // Per part: the online softmax's state (px, mx, sm) and the block buffers.
            let tmpP = arena.alloc(P * hk * blk)
            let pxP = arena.alloc(P * hu * D), mxP = arena.alloc(P * hu), smP = arena.alloc(P * hu), sbP = arena.alloc(P * blk * hu)
            let xsP = arena.alloc(P * blk * D), ksP = arena.alloc(P * blk * D), kiP = arena.alloc(P * blk * D)
            let px = pxP, sm = smP
            let nBlocks = (hw + blk - 1) / blk, perPart = (nBlocks + P - 1) / P
            if used { o.update(repeating: 0, count: rows * inner) }
            for b in 0..<B {
                let p = pAll + (b * depth + layer) * hw * hk
                let xb = keys + b * hw * D, kb = kp + b * nt * inner, vb = vp + b * nt * inner
                // Image→token setup.
                if layer > 0 {
                    // kq[h, i] = W_q,hᵀ k_h,i: image token j's score is kpe_j · kq[h, i] + b_q,h · k_h,i, kept
                    // transposed and token-major (column i·heads + h) as the GEMM's B, the constant as its bias.
                    // kq rows are written token-major (row i·heads + h) like vt below.
                    wq!.withUnsafeBufferPointer { w in
                        for h in 0..<heads {
                            Ops.matmul(arena, kb + h * dh, w.baseAddress! + h * dh * D, kq + h * D, m: nt, n: D, k: dh,
                                       lda: inner, ldb: D, ldc: heads * D)
                        }
                    }
                    psam_transpose(kq, hk, D, D, kqt, hk)
                    for h in 0..<heads {
                        for i in 0..<nt {
                            var acc: Float = 0
                            if let bq = a.q.b { for e in 0..<dh { acc += bq[h * dh + e] * kb[i * inner + h * dh + e] } }
                            cq[i * heads + h] = acc * scale
                        }
                    }
                }
                // vt[i, h] = W_o,h v_h,i (row i·heads + h, the scores' column order): the output projection of each
                // value, then every image token's output is a p-weighted sum of these. Each head's weights sum to
                // 1, so b_o / heads added to every vt row adds b_o to the output.
                wo.withUnsafeBufferPointer { w in
                    for h in 0..<heads {
                        Ops.matmul(arena, vb + h * dh, w.baseAddress! + h * dh, vt + h * D, m: nt, n: D, k: dh, lda: inner,
                                   ldb: inner, ldc: heads * D, transB: true)
                    }
                }
                if let bo = a.out.b {
                    for r in 0..<hk { for j in 0..<D { vt[r * D + j] += bo[j] / Float(heads) } }
                }
                s.upN[layer].withUnsafeBufferPointer {
                    Ops.matmul(arena, vt, $0.baseAddress!, qAll + (b * depth + layer) * hk * n4, m: hk, n: n4, k: D, lda: D, ldb: n4, ldc: n4)
                }
                // Token→image setup: qk[h, u] = W_k,hᵀ q_h,u for the used tokens (row h·nu + u), transposed as B.
                if used {
                    for u in 0..<nu { (qu + u * inner).update(from: qp + (b * nt + token(u)) * inner, count: inner) }
                } else {
                    qu.update(from: qp + b * nt * inner, count: nt * inner)
                }
                wk.withUnsafeBufferPointer { w in
                    for h in 0..<heads {
                        Ops.matmul(arena, qu + h * dh, w.baseAddress! + h * dh * D, qk + h * nu * D, m: nu, n: D, k: dh,
                                   lda: inner, ldb: D, ldc: D)
                    }
                }
                psam_transpose(qk, hu, D, D, qkt, hu)
                mxP.update(repeating: -.infinity, count: P * hu)
                smP.update(repeating: 0, count: P * hu)
                pxP.update(repeating: 0, count: P * hu * D)

                let mu = muAll + (b * depth + layer) * hw, rs = rAll + (b * depth + layer) * hw
                var pass = DecoderImagePass(layer: layer, heads: heads, dh: dh, inner: inner, D: D, hw: hw, nt: nt, hk: hk, hu: hu, blk: blk,
                                            perPart: perPart, scale: scale, keepKeys: keepKeys, p: p, xb: xb, kb: kb, pe: pe,
                                            image: s.image, noMask: s.noMask, q0t: s.q0t, kqt: kqt, cq: cq, vt: vt, qkt: qkt, normW: nrm.w, normB: nrm.b,
                                            mu: mu, rs: rs, tmp: tmpP, px: pxP, mx: mxP, sm: smP, sb: sbP, xs: xsP, ks: ksP, ki: kiP)
                arena.runParts(&pass, P, DecoderImagePass.thunk)
                // The parts' running states into part 0's, in part order: rescaled to the common maximum and summed.
                if P > 1 {
                    for r in 0..<hu {
                        var top = -Float.infinity
                        for q in 0..<P { top = max(top, mxP[q * hu + r]) }
                        let f0 = exp(mxP[r] - top)
                        var l = smP[r] * f0
                        let acc = pxP + r * D
                        for e in 0..<D { acc[e] *= f0 }
                        for q in 1..<P {
                            let f = exp(mxP[q * hu + r] - top), src = pxP + (q * hu + r) * D
                            l += smP[q * hu + r] * f
                            for e in 0..<D { acc[e] += f * src[e] }
                        }
                        smP[r] = l
                    }
                }
                arena.macs &+= hw * hk * (layer == 0 ? dh : D) + hw * hk * D + 2 * hu * hw * D
                // Σ_j p x_j (normalised), then W_v,h of it (+ b_v: the weights sum to 1).
                for r in 0..<hu {
                    let f = 1 / sm[r]
                    for e in 0..<D { px[r * D + e] *= f }
                }
                wv.withUnsafeBufferPointer { w in
                    for h in 0..<heads {
                        Ops.matmul(arena, px + h * nu * D, w.baseAddress! + h * dh * D, ou + h * dh, m: nu, n: dh, k: D,
                                   lda: D, ldb: D, ldc: inner, transB: true)
                    }
                }
                if let bv = t.v.b { for u in 0..<nu { Ops.add(ou + u * inner, bv, inner) } }
                for u in 0..<nu { (o + (b * nt + token(u)) * inner).update(from: ou + u * inner, count: inner) }
            }
            arena.reset(to: m)
        }

        // The first layer up to its MLP; then per layer its image→token attention fused with the next token→image
        // attention (the next layer's, or the final one), each followed by the rest of that layer.
        let L0 = layers[0]
        selfAttention(L0.selfAttn, q: queries, v: queries, accumulate: false)
        norm(L0.norm1, queries, rows)
        tokenToImageShared(L0.t2i)
        norm(L0.norm2, queries, rows)
        mlp(L0)
        norm(L0.norm3, queries, rows)
        for l in 0..<depth {
            let L = layers[l], last = l == depth - 1
            let scratch = arena.mark()
            // The image→token attention's token keys and values, from the tokens as this layer left them.
            let q = Self.sum(queries, pePoints, rows * D, arena)
            let kp = arena.alloc(rows * inner), vp = arena.alloc(rows * inner)
            tokenLinear(q, L.i2t.k, kp, n: inner, k: D)
            tokenLinear(queries, L.i2t.v, vp, n: inner, k: D)
            // The next layer's token self-attention only reads the tokens, so it runs before the image tokens are
            // updated.
            let next = last ? finalAttn : layers[l + 1].t2i
            if !last {
                let N = layers[l + 1]
                let q2 = Self.sum(queries, pePoints, rows * D, arena)
                selfAttention(N.selfAttn, q: q2, v: queries, accumulate: true)
                norm(N.norm1, queries, rows)
            }
            let q3 = Self.sum(queries, pePoints, rows * D, arena)
            let qp = arena.alloc(rows * inner), o = arena.alloc(rows * inner), r = arena.alloc(rows * D)
            tokenLinear(q3, next.q, qp, n: inner, k: D)
            // Only the IoU token and the wanted mask tokens are read after the final attention.
            fusedPass(i2t: L.i2t, layer: l, norm: L.norm4, kp: kp, vp: vp, next: next, qp: qp,
                      used: last, keepKeys: !last, o: o)
            tokenLinear(o, next.out, r, n: D, k: inner)
            Ops.add(queries, r, rows * D)
            if last {
                norm(normFinal, queries, rows)
            } else {
                let N = layers[l + 1]
                norm(N.norm2, queries, rows)
                mlp(N)
                norm(N.norm3, queries, rows)
            }
            arena.reset(to: scratch)
        }

        // IoU head on every prompt's IoU token.
        if rowExact {
            for b in 0..<B { iouHead(queries + b * nt * D, rows: 1, ld: nt * D, out: iou + b * T, arena: arena) }
        } else {
            iouHead(queries, rows: B, ld: nt * D, out: iou, arena: arena)
        }

        // Hypernetworks of the wanted mask tokens, all prompts at once: [B, count, D/8].
        let d4 = D / 4, d8 = D / 8, g2 = 2 * g
        let hyperOut = arena.alloc(B * count * d8)
        do {
            let scratch = arena.mark()
            let t1 = arena.alloc(B * D), t2 = arena.alloc(B * D), t3 = arena.alloc(B * d8)
            for j in 0..<count {
                let t = first + j, hw3 = hyper[t]
                // With `rowExact`, one prompt per GEMM (see `tokenLinear`).
                let nb = rowExact ? 1 : B  // no array of ranges: no heap allocation here
                for b0 in stride(from: 0, to: B, by: nb) {
                    Ops.linear(arena, queries + (b0 * nt + 1 + t) * D, hw3[0], t1 + b0 * D, m: nb, n: D, k: D, lda: nt * D)
                    Ops.relu(t1 + b0 * D, nb * D)
                    Ops.linear(arena, t1 + b0 * D, hw3[1], t2 + b0 * D, m: nb, n: D, k: D)
                    Ops.relu(t2 + b0 * D, nb * D)
                    Ops.linear(arena, t2 + b0 * D, hw3[2], t3 + b0 * d8, m: nb, n: d8, k: D)
                }
                for b in 0..<B { (hyperOut + (b * count + j) * d8).update(from: t3 + b * d8, count: d8) }
            }
            arena.reset(to: scratch)
        }
        // Upscaling and masks, one prompt at a time and one row of pixels at a time: each row's GEMM output
        // is finished (bias, norm, GELU, the hypernetwork products) while it is in cache.
        let mask = arena.mark()
        // Rows of the first stage per step: enough for full GEMM tiles, few enough that its output stays in L2
        // (chunk × 64 px × 256 floats, 256 KB at SAM's sizes).
        let chunk = 4
        // Each chunk of first-stage rows goes through the second stage at once (its 2·chunk output rows), so the
        // once-upscaled grid only ever exists one chunk at a time (in cache).
        let u1P = arena.alloc(P * 2 * chunk * g2 * d4), t1P = arena.alloc(P * chunk * g * d4 * 4)
        let t2P = arena.alloc(P * chunk * g2 * d8 * 4), u1tP = arena.alloc(P * chunk * g2 * d4), scP = arena.alloc(P * count * chunk * g2)
        // The upscaling fold's small tables in the arena (the job holds pointers).
        let upUV = arena.alloc(2 * depth * n4), up3t = arena.alloc(s.up3t.count)
        for l in 0..<depth {
            (upUV + l * n4).update(from: s.upU[l], count: n4)
            (upUV + (depth + l) * n4).update(from: s.upV[l], count: n4)
        }
        up3t.update(from: s.up3t, count: s.up3t.count)
        for b in 0..<B {
            var job = DecoderUpscale(g: g, g2: g2, d4: d4, d8: d8, n4: n4, hw: hw, hk: hk, depth: depth, chunk: chunk, parts: P,
                                     count: count, prompt: b, upS: s.upS, pAll: pAll, qAll: qAll, muAll: muAll, rAll: rAll,
                                     upU: upUV, upV: upUV + depth * n4, up3t: up3t, up0b: up0.b!, lnW: up1.w, lnB: up1.b, up3b: up3.b!,
                                     hyper: hyperOut, masks: masks, u1: u1P, t1: t1P, t2: t2P, u1t: u1tP, sc: scP)
            arena.runParts(&job, P, DecoderUpscale.thunk)
            arena.macs &+= hw * n4 * hk * depth + 4 * d8 * g2 * g2 * d4
        }
        arena.reset(to: mask)
        arena.reset(to: mark)
    }
}
