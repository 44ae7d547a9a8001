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
    /// `embedding_maskfeature`: conv3×3(D/8 → D/4) → LayerNorm2d → GELU → conv3×3(D/4 → D/8).
    let feature0: Lin, feature1: Norm, feature3: Lin
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
        feature3 = m.lin(p + "embedding_maskfeature.3")
    }

    /// Two transposed 2×2 convolutions with a LayerNorm2d (ε 1e-6) and GELU between: `x[g, g, cin]` → `out[4g, 4g, D/8]`,
    /// added into `out` when `accumulate`.
    private func upscale(_ x: UnsafePointer<Float>, g: Int, cin: Int, mid: Int, _ first: Lin, _ norm: Norm, _ second: Lin,
                         out: UnsafeMutablePointer<Float>, accumulate: Bool, arena: Arena) {
        let d8 = c.transformerDim / 8, g2 = 2 * g, g4 = 4 * g
        let mark = arena.mark()
        let u = arena.alloc(g2 * g2 * mid)
        Ops.convTranspose2x2(x, h: g, w: g, cin: cin, weight: first.w, bias: first.b!, cout: mid, out: u, arena: arena)
        Ops.layerNorm(u, u, m: g2 * g2, c: mid, weight: norm.w, bias: norm.b, eps: 1e-6)
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

    /// The HQ mask's low-res logits `mask[4g·4g]` (row-major) of one prompt: the HQ token's hypernetwork output times
    /// (`embedding_maskfeature(upscaled) + features`). `hqToken`: the transformer's output for the HQ token `[D]`;
    /// `upscaled`: SAM's upscaled mask features `[4g, 4g, D/8]`.
    func mask(hqToken: UnsafePointer<Float>, upscaled: UnsafePointer<Float>, features: UnsafePointer<Float>, grid g: Int,
              out: UnsafeMutablePointer<Float>, arena: Arena) {
        let D = c.transformerDim, d4 = D / 4, d8 = D / 8, g4 = 4 * g, n = g4 * g4
        let mark = arena.mark()
        let f = arena.alloc(n * d4), r = arena.alloc(n * d8)
        Ops.conv2d(upscaled, h: g4, w: g4, cin: d8, weight: feature0, cout: d4, k: 3, stride: 1, pad: 1, out: f, arena: arena)
        Ops.layerNorm(f, f, m: n, c: d4, weight: feature1.w, bias: feature1.b, eps: 1e-6)
        Ops.gelu(f, n * d4, arena)
        Ops.conv2d(f, h: g4, w: g4, cin: d4, weight: feature3, cout: d8, k: 3, stride: 1, pad: 1, out: r, arena: arena)
        Ops.add(r, features, n * d8)
        arena.tap?("hq.upscaled", r, [g4, g4, d8])
        let t1 = arena.alloc(D), t2 = arena.alloc(D), h = arena.alloc(d8)
        Ops.linear(arena, hqToken, mlp[0], t1, m: 1, n: D, k: D)
        Ops.relu(t1, D)
        Ops.linear(arena, t1, mlp[1], t2, m: 1, n: D, k: D)
        Ops.relu(t2, D)
        Ops.linear(arena, t2, mlp[2], h, m: 1, n: d8, k: D)
        Ops.matmul(arena, h, r, out, m: 1, n: n, k: d8, lda: d8, ldb: d8, ldc: n, transB: true)
        arena.reset(to: mark)
    }
}
