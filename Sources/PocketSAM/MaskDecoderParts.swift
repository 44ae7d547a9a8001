import PocketSAMKernels

/// One layer's pass over the image tokens of one prompt in `MaskDecoder.runBatch`, as `parts` independent parts of
/// whole 64-token blocks (block `jb` of part `p` for jb in p·perPart ..< (p + 1)·perPart), each with its own block
/// buffers and its own running state of the token→image online softmax (merged by the caller). See
/// `runBatch`'s `fusedPass` for the steps.
struct DecoderImagePass {
    let layer: Int, heads: Int, dh: Int, inner: Int, D: Int, hw: Int, nt: Int, hk: Int, hu: Int, blk: Int, perPart: Int
    let scale: Float
    let keepKeys: Bool
    /// Attention weights `[HW, hk]`, the keys `[HW, D]`, the prompt's projected token keys, pe, the image embedding and
    /// no-mask row (the shared first-layer keys, `Shared.image`/`noMask`) and the transposed first-layer queries (layer 0),
    /// the folded i2t queries (`kqt`, `cq`: later layers), vt, qkt.
    let p: FPtr, xb: FPtr, kb: CPtr, pe: CPtr, image: CPtr, noMask: CPtr, q0t: CPtr, kqt: CPtr, cq: CPtr, vt: CPtr, qkt: CPtr
    let normW: CPtr, normB: CPtr
    /// Row statistics of the keys before their norm (for the upscaling fold).
    let mu: FPtr, rs: FPtr
    /// Per part: block buffers and the online softmax's state.
    let tmp: FPtr, px: FPtr, mx: FPtr, sm: FPtr, sb: FPtr, xs: FPtr, ks: FPtr, ki: FPtr

    static let thunk: @convention(c) (UnsafeMutableRawPointer, Int) -> Void = { ctx, i in
        ctx.assumingMemoryBound(to: DecoderImagePass.self).pointee.run(part: i)
    }

    func run(part: Int) {
        let tmp = self.tmp + part * hk * blk, px = self.px + part * hu * D, mx = self.mx + part * hu, sm = self.sm + part * hu
        let sb = self.sb + part * blk * hu, xs = self.xs + part * blk * D, ks = self.ks + part * blk * D, ki = self.ki + part * blk * D
        let nBlocks = (hw + blk - 1) / blk
        for jb in (part * perPart)..<min(nBlocks, (part + 1) * perPart) {
            let j0 = jb * blk
            let nr = min(blk, hw - j0), pj = p + j0 * hk
            // Image→token: scores, softmax over each head's tokens.
            if layer == 0 {
                // Queries W_q(x + pe) + b_q are the same for every prompt (`Shared.q0t`): scores per head
                // (row i·heads + h of [nt·heads, nr]), transposed to token-major.
                for h in 0..<heads {
                    psam_scores_shared(kb + h * dh, inner, q0t + h * dh * hw + j0, hw, nt, nr, dh, scale, tmp + h * blk, heads * blk)
                }
                psam_transpose(tmp, hk, nr, blk, pj, hk)
            } else {
                // keys + pe of the block (not kept from the previous pass: adding pe again costs less memory
                // traffic than writing and reading it back).
                Ops.sumInto(ki, xb + j0 * D, pe + j0 * D, nr * D)
                psam_sgemm_inplace(ki, D, 1, kqt, hk, pj, hk, nr, hk, D, scale, cq, 0)
            }
            psam_softmax_lanes(pj, nr, hk, nt, heads)
            // keys += p · vt (the first layer's keys are the shared ones: p · vt, then + keys in the norm), then
            // norm4, keeping the row statistics for the upscaling fold, and keys + pe.
            let xd = keepKeys ? xb + j0 * D : xs, kd = ks
            if !keepKeys && layer > 0 { xs.update(from: xb + j0 * D, count: nr * D) }
            psam_sgemm_inplace(pj, hk, 1, vt, D, xd, D, nr, D, hk, 1, nil, layer > 0 ? 1 : 0)
            if layer == 0 {
                // The block's shared keys (image + no-mask row) into `ki`, free in the first layer.
                for r in 0..<nr { psam_add_rows(ki + r * D, image + (j0 + r) * D, noMask, D) }
            }
            psam_keys_norm(xd, layer == 0 ? ki : nil, nr, D, normW, normB, 1e-5, mu + j0, rs + j0, pe + j0 * D, kd)
            // Token→image on the updated block: scores, online softmax, weighted sums.
            psam_sgemm_inplace(kd, D, 1, qkt, hu, sb, hu, nr, hu, D, scale, nil, 0)
            psam_softmax_online_cols(sb, nr, hu, hu, mx, sm, px, D, D)
            psam_sgemm_inplace(sb, 1, hu, xd, D, px, D, hu, D, nr, 1, nil, 1)
        }
    }
}

/// The upscaling and masks of one prompt in `MaskDecoder.runBatch`, chunks of `chunk` embedding rows, chunk
/// part, part + parts, … per part, each through its part's buffers (every chunk's values are the same whoever runs
/// it). See `runBatch` for the steps.
struct DecoderUpscale {
    let g: Int, g2: Int, d4: Int, d8: Int, n4: Int, hw: Int, hk: Int, depth: Int, chunk: Int, parts: Int, count: Int, prompt: Int
    /// `Shared.upS`, the attention weights and `V N_l` products of every layer, the keys' row statistics.
    let upS: CPtr, pAll: CPtr, qAll: CPtr, muAll: CPtr, rAll: CPtr
    /// `[depth][n4]` each (copies of `Shared.upU`, `upV`), `[4·D/8, D/4]` (`Shared.up3t`).
    let upU: CPtr, upV: CPtr, up3t: CPtr
    let up0b: CPtr, lnW: CPtr, lnB: CPtr, up3b: CPtr
    let hyper: CPtr, masks: FPtr
    /// Per part.
    let u1: FPtr, t1: FPtr, t2: FPtr, u1t: FPtr, sc: FPtr

    static let thunk: @convention(c) (UnsafeMutableRawPointer, Int) -> Void = { ctx, i in
        ctx.assumingMemoryBound(to: DecoderUpscale.self).pointee.run(part: i)
    }

    func run(part: Int) {
        let u1 = self.u1 + part * 2 * chunk * g2 * d4, t1 = self.t1 + part * chunk * g * d4 * 4, t2 = self.t2 + part * chunk * g2 * d8 * 4
        let u1t = self.u1t + part * chunk * g2 * d4, sc = self.sc + part * count * chunk * g2
        let b = prompt, chunks = (g + chunk - 1) / chunk
        for ci in stride(from: part, to: chunks, by: parts) {
            let y0 = ci * chunk, n = min(chunk, g - y0)
            // src · W from the shared part and each layer's low-rank update (see `Shared.upS`).
            let rows0 = y0 * g, nr = n * g
            t1.update(from: upS + rows0 * n4, count: nr * n4)
            for l in 0..<depth {
                let o = b * depth + l
                psam_sgemm_inplace(pAll + (o * hw + rows0) * hk, hk, 1, qAll + o * hk * n4, n4, t1, n4, nr, n4, hk, 1, nil, 1)
                psam_rows_affine(t1, nr, n4, muAll + o * hw + rows0, rAll + o * hw + rows0, upU + l * n4, upV + l * n4)
            }
            // Rows 2·y0 … 2·(y0 + n) − 1 of the once-upscaled grid, at rows 0 … 2n − 1 of u1.
            for y in y0..<(y0 + n) {
                psam_upscale_ln_gelu_row(t1 + (y - y0) * g * d4 * 4, g, d4, y - y0, up0b, lnW, lnB, 1e-6, u1)
            }
            for z0 in stride(from: 2 * y0, to: 2 * (y0 + n), by: chunk) {
                let m2 = min(chunk, 2 * (y0 + n) - z0), np = m2 * g2
                // The chunk's pixels transposed ([D/4, np], 128 KB at SAM's sizes) as the in-place GEMM's B.
                psam_transpose(u1 + (z0 - 2 * y0) * g2 * d4, np, d4, d4, u1t, np)
                psam_sgemm_inplace(up3t, d4, 1, u1t, np, t2, np, 4 * d8, np, d4, 1, nil, 0)
                psam_upscale_masks_t(t2, np, m2, g2, d8, z0, up3b, hyper + b * count * d8, count, masks + b * count * 4 * g * 4 * g, sc)
            }
        }
    }
}

extension Arena {
    /// Runs `job`'s parts 0 ..< `parts` on the session's threads through `thunk` (its type's `run(part:)`).
    func runParts<J>(_ job: inout J, _ parts: Int, _ thunk: @convention(c) (UnsafeMutableRawPointer, Int) -> Void) {
        withUnsafeMutablePointer(to: &job) { jp in
            var t = ColumnTask(kind: .callback, a: nil, b: nil, c: alloc(0), bias: nil, m: 0, n: 0, k: 0, lda: 0, ldb: 0, ldc: 0)
            t.callback = thunk
            t.context = UnsafeMutableRawPointer(jp)
            parallelBlocks(&t, blocks: parts)
        }
    }
}
