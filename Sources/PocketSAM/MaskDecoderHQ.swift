import PocketSAMFormat

/// HQ-SAM's additions to the mask decoder (`segment_anything_hq`'s `MaskDecoderHQ`): the HQ output token and its
/// hypernetwork MLP, the HQ features fused once per image from the image embedding and an early encoder feature, and
/// their per-prompt refinement from the upscaled mask features. The HQ token runs through the two-way transformer with
/// the others (`MaskDecoder.run`); what it predicts is a mask on the HQ features instead of SAM's upscaled ones.
struct MaskDecoderHQ {
    let token: UnsafePointer<Float>
    let mlp: [Lin]
    /// `compress_vit_feat`: convT(vit_dim → D) → LayerNorm2d → GELU → convT(D → D/8).
    let compress0: Lin, compress1: Norm, compress3: Lin
    /// `embedding_encoder`: convT(D → D/4) → LayerNorm2d → GELU → convT(D/4 → D/8).
    let encoder0: Lin, encoder1: Norm, encoder3: Lin
    /// `embedding_maskfeature`: conv3×3(D/8 → D/4) → LayerNorm2d → GELU → conv3×3(D/4 → D/8). The last conv is only
    /// ever multiplied by the HQ token's hypernetwork output, so it is kept as fp32 `[D/8, D/4, 3, 3]` (dequantized
    /// for an int8 file) for the fold in `mask`.
    let feature0: Lin, feature1: Norm
    let feature3: [Float], feature3Bias: UnsafePointer<Float>
    let c: MaskDecoderConfig
    let hq: HQConfig

    init(c: MaskDecoderConfig, hq: HQConfig, m: Model) {
        self.c = c
        self.hq = hq
        let p = MaskDecoder.p
        token = m.w(p + "hf_token.weight")
        mlp = (0..<3).map { m.lin(p + "hf_mlp.layers.\($0)") }
        compress0 = m.lin(p + "compress_vit_feat.0", gemm: false)
        compress1 = m.norm(p + "compress_vit_feat.1")
        compress3 = m.lin(p + "compress_vit_feat.3", gemm: false)
        encoder0 = m.lin(p + "embedding_encoder.0", gemm: false)
        encoder1 = m.norm(p + "embedding_encoder.1")
        encoder3 = m.lin(p + "embedding_encoder.3", gemm: false)
        feature0 = m.lin(p + "embedding_maskfeature.0")
        feature1 = m.norm(p + "embedding_maskfeature.1")
        let w3 = p + "embedding_maskfeature.3.weight"
        guard let e = m.file.tensor(named: w3) else { preconditionFailure("tensor \(w3) missing after validation") }
        feature3 = m.file.floatValues(of: e)
        feature3Bias = m.w(p + "embedding_maskfeature.3.bias")
    }

    /// Two transposed 2×2 convolutions with a LayerNorm2d (ε 1e-6) and GELU between: `x[g, g, cin]` → `out[4g, 4g, D/8]`,
    /// added into `out` when `accumulate`.
    private func upscale(_ x: UnsafePointer<Float>, g: Int, cin: Int, mid: Int, _ first: Lin, _ norm: Norm, _ second: Lin,
                         out: UnsafeMutablePointer<Float>, accumulate: Bool, arena: Arena) {
        let d8 = c.transformerDim / 8, g2 = 2 * g, g4 = 4 * g
        let mark = arena.mark()
        let u = arena.alloc(g2 * g2 * mid)
        Ops.convTranspose2x2(x, h: g, w: g, cin: cin, weight: first.w, bias: first.b!, cout: mid, out: u, arena: arena)
        Ops.layerNormScalar(arena, u, u, m: g2 * g2, c: mid, norm, eps: 1e-6)
        Ops.gelu(u, g2 * g2 * mid, arena)
        if accumulate {
            let v = arena.alloc(g4 * g4 * d8)
            Ops.convTranspose2x2(u, h: g2, w: g2, cin: mid, weight: second.w, bias: second.b!, cout: d8, out: v, arena: arena)
            Ops.add(out, v, g4 * g4 * d8)
        } else {
            Ops.convTranspose2x2(u, h: g2, w: g2, cin: mid, weight: second.w, bias: second.b!, cout: d8, out: out, arena: arena)
        }
        arena.reset(to: mark)
    }

    /// The HQ features of an image, `[4g, 4g, D/8]` channels-last, into `out`: `embedding_encoder(embedding) +
    /// compress_vit_feat(early)`, as the official decoder computes them at every prompt (here once per image).
    /// `embedding`: `[g·g, D]`; `early`: `[g·g, vit_dim]`.
    func features(embedding: UnsafePointer<Float>, early: UnsafePointer<Float>, grid g: Int, out: UnsafeMutablePointer<Float>,
                  arena: Arena) {
        let D = c.transformerDim
        upscale(embedding, g: g, cin: D, mid: D / 4, encoder0, encoder1, encoder3, out: out, accumulate: false, arena: arena)
        upscale(early, g: g, cin: hq.vitDim, mid: D, compress0, compress1, compress3, out: out, accumulate: true, arena: arena)
    }

    /// HQ-SAM's predictor on the decoder's outputs (`MaskDecoder.run`: `masks[T + 1, n]` with the HQ mask last, `iou[T]`):
    /// SAM's token 0, or with `multimask` the best-scored of tokens 1…T−1 (ties to the lower, as torch.max), is added
    /// into the HQ mask unless `hqTokenOnly`. Returns the SAM token whose IoU the answer reports; the answer is
    /// `masks + T·n`.
    static func combine(masks: UnsafeMutablePointer<Float>, iou: UnsafePointer<Float>, tokens T: Int, n: Int, multimask: Bool,
                        hqTokenOnly: Bool) -> Int {
        var chosen = multimask ? 1 : 0
        if multimask {
            for t in 2..<T where iou[t] > iou[chosen] { chosen = t }
        }
        if !hqTokenOnly { Ops.add(masks + T * n, masks + chosen * n, n) }
        return chosen
    }

    /// The HQ mask's low-res logits `mask[4g·4g]` (row-major) of one prompt: the HQ token's hypernetwork output `h`
    /// times (`embedding_maskfeature(upscaled) + features`). `hqToken`: the transformer's output for the HQ token `[D]`;
    /// `upscaled`: SAM's upscaled mask features `[4g, 4g, D/8]`.
    ///
    /// The last 3×3 conv is linear and only its product with `h` is used, so it folds into one 3×3 conv from D/4
    /// channels to one, `G[tap, c'] = Σ_c h[c] W[c, c', tap]` (bias `h · b`): 9·D/4 instead of 9·D/4·D/8 multiply-adds
    /// a pixel (38 MMAC instead of 1.2 GMAC a prompt at SAM's sizes), and the HQ features' term is `features · h`.
    func mask(hqToken: UnsafePointer<Float>, upscaled: UnsafePointer<Float>, features: UnsafePointer<Float>, grid g: Int,
              out: UnsafeMutablePointer<Float>, arena: Arena) {
        let D = c.transformerDim, d4 = D / 4, d8 = D / 8, g4 = 4 * g, n = g4 * g4
        let mark = arena.mark()
        let f = arena.alloc(n * d4)
        Ops.conv2d(upscaled, h: g4, w: g4, cin: d8, weight: feature0, cout: d4, k: 3, stride: 1, pad: 1, out: f, arena: arena)
        Ops.layerNormScalar(arena, f, f, m: n, c: d4, feature1, eps: 1e-6)
        Ops.gelu(f, n * d4, arena)
        let t1 = arena.alloc(D), t2 = arena.alloc(D), h = arena.alloc(d8)
        Ops.linear(arena, hqToken, mlp[0], t1, m: 1, n: D, k: D)
        Ops.relu(t1, D)
        Ops.linear(arena, t1, mlp[1], t2, m: 1, n: D, k: D)
        Ops.relu(t2, D)
        Ops.linear(arena, t2, mlp[2], h, m: 1, n: d8, k: D)
        // The folded conv's weights, tap-major [9, D/4], and bias.
        let G = arena.alloc(9 * d4)
        var beta: Float = 0
        for ch in 0..<d8 { beta += h[ch] * feature3Bias[ch] }
        for t in 0..<9 {
            for ci in 0..<d4 {
                var acc: Float = 0
                for ch in 0..<d8 { acc += h[ch] * feature3[(ch * d4 + ci) * 9 + t] }
                G[t * d4 + ci] = acc
            }
        }
        // P[p, tap] = f[p] · G[tap]; out[p] = β + features[p] · h + Σ_tap P[p + offset(tap), tap] (zero outside).
        let P = arena.alloc(n * 9)
        Ops.matmul(arena, f, G, P, m: n, n: 9, k: d4, lda: d4, ldb: d4, ldc: 9, transB: true)
        Ops.matmul(arena, features, h, out, m: n, n: 1, k: d8, lda: d8, ldb: d8, ldc: 1, transB: true)
        for y in 0..<g4 {
            for x in 0..<g4 {
                var acc = beta
                for ky in 0..<3 {
                    let yy = y + ky - 1
                    guard yy >= 0, yy < g4 else { continue }
                    for kx in 0..<3 {
                        let xx = x + kx - 1
                        guard xx >= 0, xx < g4 else { continue }
                        acc += P[(yy * g4 + xx) * 9 + ky * 3 + kx]
                    }
                }
                out[y * g4 + x] += acc
            }
        }
        arena.reset(to: mark)
    }
}
