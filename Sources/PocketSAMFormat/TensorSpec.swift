/// What a tensor is for; decides how the quantizer may store it and how the runtime reads it.
public enum TensorRole: String, Sendable {
    /// `nn.Linear` weight `[out, in]`.
    case linear
    /// Dense `nn.Conv2d` weight `[out, in, kh, kw]`.
    case conv
    /// Depthwise `nn.Conv2d` weight `[channels, 1, kh, kw]`.
    case depthwiseConv
    /// `nn.ConvTranspose2d` weight `[in, out, kh, kw]`: the output channel is axis 1.
    case convTranspose
    /// Bias of a linear or conv layer (after BatchNorm folding, every Conv2d_BN has one).
    case bias
    /// Layer-norm weight or bias.
    case norm
    /// Learned embeddings (tokens, point labels, no-mask).
    case embedding
    /// Positional tables: absolute position embedding, relative-position tables, Fourier matrix.
    case positional
    /// TinyViT's learned attention biases `[heads, offsets]`.
    case attentionBias

    /// Whether int8 per-output-channel storage is allowed, and along which axis the scales run.
    public var int8ScaleAxis: Int? {
        switch self {
        case .linear, .conv: return 0
        case .convTranspose: return 1
        default: return nil
        }
    }
}

/// One tensor a model configuration requires: its name in the `.psam` file, shape and role.
public struct TensorSpec: Equatable, Sendable {
    public var name: String
    public var shape: [Int]
    public var role: TensorRole

    public init(_ name: String, _ shape: [Int], _ role: TensorRole) {
        self.name = name
        self.shape = shape
        self.role = role
    }
}

extension ModelConfig {
    /// Every tensor of the model, in a fixed order. Names follow the PyTorch state dict, except that a
    /// folded `Conv2d_BN` named `X` becomes `X.weight` and `X.bias` (no `.c.`/`.bn.`).
    public func tensorSpecs() -> [TensorSpec] {
        var s: [TensorSpec] = []
        func lin(_ p: String, _ out: Int, _ inp: Int, bias: Bool = true) {
            s.append(TensorSpec(p + ".weight", [out, inp], .linear))
            if bias { s.append(TensorSpec(p + ".bias", [out], .bias)) }
        }
        func norm(_ p: String, _ c: Int) {
            s.append(TensorSpec(p + ".weight", [c], .norm))
            s.append(TensorSpec(p + ".bias", [c], .norm))
        }
        func conv(_ p: String, _ out: Int, _ inp: Int, _ k: Int, bias: Bool = true) {
            s.append(TensorSpec(p + ".weight", [out, inp, k, k], .conv))
            if bias { s.append(TensorSpec(p + ".bias", [out], .bias)) }
        }
        func dwconv(_ p: String, _ c: Int, _ k: Int) {
            s.append(TensorSpec(p + ".weight", [c, 1, k, k], .depthwiseConv))
            s.append(TensorSpec(p + ".bias", [c], .bias))
        }
        func neck(_ e: String, _ inp: Int, _ out: Int) {
            conv(e + "neck.0", out, inp, 1, bias: false)
            norm(e + "neck.1", out)
            conv(e + "neck.2", out, out, 3, bias: false)
            norm(e + "neck.3", out)
        }

        let e = "image_encoder."
        switch encoder {
        case let .vit(v):
            let E = v.embedDim
            conv(e + "patch_embed.proj", E, 3, v.patchSize)
            s.append(TensorSpec(e + "pos_embed", [1, v.gridSize, v.gridSize, E], .positional))
            for b in 0..<v.depth {
                let p = e + "blocks.\(b)."
                norm(p + "norm1", E)
                lin(p + "attn.qkv", 3 * E, E, bias: v.qkvBias)
                lin(p + "attn.proj", E, E)
                let side = v.isGlobal(b) ? v.gridSize : v.windowSize
                s.append(TensorSpec(p + "attn.rel_pos_h", [2 * side - 1, v.headDim], .positional))
                s.append(TensorSpec(p + "attn.rel_pos_w", [2 * side - 1, v.headDim], .positional))
                norm(p + "norm2", E)
                lin(p + "mlp.lin1", v.mlpDim, E)
                lin(p + "mlp.lin2", E, v.mlpDim)
            }
            neck(e, E, v.outChans)
        case let .tinyViT(t):
            let k = t.patchEmbedKernel
            let d0 = t.embedDims[0]
            conv(e + "patch_embed.seq.0", d0 / 2, 3, k)
            conv(e + "patch_embed.seq.2", d0, d0 / 2, k)
            for st in 0..<t.stageCount {
                let d = t.embedDims[st]
                for b in 0..<t.depths[st] {
                    let p = e + "layers.\(st).blocks.\(b)."
                    if st == 0 {
                        conv(p + "conv1", t.mbconvHiddenDim, d, 1)
                        dwconv(p + "conv2", t.mbconvHiddenDim, 3)
                        conv(p + "conv3", d, t.mbconvHiddenDim, 1)
                    } else {
                        let w = t.windowSizes[st]
                        s.append(TensorSpec(p + "attn.attention_biases", [t.numHeads[st], w * w], .attentionBias))
                        norm(p + "attn.norm", d)
                        lin(p + "attn.qkv", 3 * d, d)
                        lin(p + "attn.proj", d, d)
                        norm(p + "mlp.norm", d)
                        lin(p + "mlp.fc1", t.mlpHiddenDims[st], d)
                        lin(p + "mlp.fc2", d, t.mlpHiddenDims[st])
                        dwconv(p + "local_conv", d, t.localConvSize)
                    }
                }
                if st < t.stageCount - 1 {
                    let p = e + "layers.\(st).downsample."
                    let o = t.embedDims[st + 1]
                    conv(p + "conv1", o, d, 1)
                    dwconv(p + "conv2", o, 3)
                    conv(p + "conv3", o, o, 1)
                }
            }
            neck(e, t.embedDims[t.stageCount - 1], t.outChans)
        }

        let pe = "prompt_encoder."
        let C = prompt.embedDim, m = prompt.maskInChans
        s.append(TensorSpec(pe + "pe_layer.positional_encoding_gaussian_matrix", [2, C / 2], .positional))
        for i in 0..<4 { s.append(TensorSpec(pe + "point_embeddings.\(i).weight", [1, C], .embedding)) }
        s.append(TensorSpec(pe + "not_a_point_embed.weight", [1, C], .embedding))
        conv(pe + "mask_downscaling.0", m / 4, 1, 2)
        norm(pe + "mask_downscaling.1", m / 4)
        conv(pe + "mask_downscaling.3", m, m / 4, 2)
        norm(pe + "mask_downscaling.4", m)
        conv(pe + "mask_downscaling.6", C, m, 1)
        s.append(TensorSpec(pe + "no_mask_embed.weight", [1, C], .embedding))

        let md = "mask_decoder."
        let D = decoder.transformerDim, I = D / decoder.attentionDownsampleRate
        func attn(_ p: String, _ inner: Int) {
            lin(p + ".q_proj", inner, D)
            lin(p + ".k_proj", inner, D)
            lin(p + ".v_proj", inner, D)
            lin(p + ".out_proj", D, inner)
        }
        for l in 0..<decoder.depth {
            let p = md + "transformer.layers.\(l)."
            attn(p + "self_attn", D)
            norm(p + "norm1", D)
            attn(p + "cross_attn_token_to_image", I)
            norm(p + "norm2", D)
            lin(p + "mlp.lin1", decoder.mlpDim, D)
            lin(p + "mlp.lin2", D, decoder.mlpDim)
            norm(p + "norm3", D)
            norm(p + "norm4", D)
            attn(p + "cross_attn_image_to_token", I)
        }
        attn(md + "transformer.final_attn_token_to_image", I)
        norm(md + "transformer.norm_final_attn", D)
        s.append(TensorSpec(md + "iou_token.weight", [1, D], .embedding))
        s.append(TensorSpec(md + "mask_tokens.weight", [decoder.numMaskTokens, D], .embedding))
        s.append(TensorSpec(md + "output_upscaling.0.weight", [D, D / 4, 2, 2], .convTranspose))
        s.append(TensorSpec(md + "output_upscaling.0.bias", [D / 4], .bias))
        norm(md + "output_upscaling.1", D / 4)
        s.append(TensorSpec(md + "output_upscaling.3.weight", [D / 4, D / 8, 2, 2], .convTranspose))
        s.append(TensorSpec(md + "output_upscaling.3.bias", [D / 8], .bias))
        for t in 0..<decoder.numMaskTokens {
            let p = md + "output_hypernetworks_mlps.\(t).layers."
            lin(p + "0", D, D)
            lin(p + "1", D, D)
            lin(p + "2", D / 8, D)
        }
        let H = decoder.iouHeadHiddenDim
        for l in 0..<decoder.iouHeadDepth {
            let inp = l == 0 ? D : H
            let out = l == decoder.iouHeadDepth - 1 ? decoder.numMaskTokens : H
            lin(md + "iou_prediction_head.layers.\(l)", out, inp)
        }
        if let hq = decoder.hq {
            func convT(_ p: String, _ inp: Int, _ out: Int) {
                s.append(TensorSpec(p + ".weight", [inp, out, 2, 2], .convTranspose))
                s.append(TensorSpec(p + ".bias", [out], .bias))
            }
            s.append(TensorSpec(md + "hf_token.weight", [1, D], .embedding))
            lin(md + "hf_mlp.layers.0", D, D)
            lin(md + "hf_mlp.layers.1", D, D)
            lin(md + "hf_mlp.layers.2", D / 8, D)
            convT(md + "compress_vit_feat.0", hq.vitDim, D)
            norm(md + "compress_vit_feat.1", D)
            convT(md + "compress_vit_feat.3", D, D / 8)
            convT(md + "embedding_encoder.0", D, D / 4)
            norm(md + "embedding_encoder.1", D / 4)
            convT(md + "embedding_encoder.3", D / 4, D / 8)
            conv(md + "embedding_maskfeature.0", D / 4, D / 8, 3)
            norm(md + "embedding_maskfeature.1", D / 4)
            conv(md + "embedding_maskfeature.3", D / 8, D / 4, 3)
        }
        return s
    }

    /// Checks a file's tensor table against this configuration: every required tensor is present with
    /// the right shape and a dtype its role allows, and nothing else is there.
    public func validate(tensors: [TensorEntry]) throws(PSAMError) {
        var byName: [String: TensorEntry] = [:]
        for t in tensors { byName[t.name] = t }
        let specs = tensorSpecs()
        for spec in specs {
            guard let t = byName.removeValue(forKey: spec.name) else { throw .tensorMissing(name: spec.name) }
            guard t.shape == spec.shape else {
                throw .tensorShapeMismatch(name: spec.name, expected: spec.shape, found: t.shape)
            }
            if t.dtype == .i8 {
                guard let axis = spec.role.int8ScaleAxis, t.scaleAxis == axis else {
                    throw .tensorDTypeNotAllowed(name: spec.name, dtype: t.dtype)
                }
            }
        }
        if let extra = byName.keys.sorted().first { throw .unexpectedTensor(name: extra) }
    }
}
