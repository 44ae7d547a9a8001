/// The published architectures, for tools that make models without a checkpoint (random weights for
/// benchmarks) and for documentation. The values are the official constructors'.
extension ModelConfig {
    public static let presetNames = ["mobilesam", "litemedsam", "sam_vit_b", "sam_vit_l", "sam_vit_h",
                                     "mobilesam_hq", "sam_vit_b_hq", "sam_vit_l_hq", "sam_vit_h_hq"]

    /// The configuration of a published model by name (`presetNames`), nil for an unknown name.
    public static func preset(_ name: String) -> ModelConfig? {
        // HQ-SAM (`segment_anything_hq`): the same encoder and decoder plus the HQ parts, the early feature where the
        // official builders take it (a ViT's first global block; Light HQ-SAM's TinyViT stage 1).
        if name.hasSuffix("_hq"), name != "litemedsam_hq", var c = preset(String(name.dropLast(3))) {
            switch c.encoder {
            case let .vit(v): c.decoder.hq = HQConfig(vitDim: v.embedDim, earlyLayer: v.globalAttnIndexes.min() ?? 0)
            case let .tinyViT(t): c.decoder.hq = HQConfig(vitDim: t.embedDims[2], earlyLayer: 1)
            }
            return c
        }
        let decoder = MaskDecoderConfig(transformerDim: 256, depth: 2, numHeads: 8, mlpDim: 2048, attentionDownsampleRate: 2,
                                        numMultimaskOutputs: 3, iouHeadDepth: 3, iouHeadHiddenDim: 256)
        func tiny(_ size: Int, kernel: Int, stride: Int, variant: ModelVariant, norm: Normalization) -> ModelConfig {
            let enc = TinyViTConfig(imageSize: size, embedDims: [64, 128, 160, 320], depths: [2, 2, 6, 2], numHeads: [0, 4, 5, 10],
                                    windowSizes: [0, 7, 14, 7], mlpHiddenDims: [0, 512, 640, 1280], mbconvHiddenDim: 256,
                                    patchEmbedKernel: kernel, patchEmbedStride: stride, mergeStrides: [2, 2, 1],
                                    localConvSize: 3, outChans: 256)
            return ModelConfig(variant: variant, encoder: .tinyViT(enc),
                               prompt: PromptEncoderConfig(embedDim: 256, embeddingSize: 64, inputImageSize: size, maskInChans: 16),
                               decoder: decoder, normalization: norm)
        }
        func vit(_ dim: Int, _ depth: Int, _ heads: Int, _ globals: [Int]) -> ModelConfig {
            let enc = ViTConfig(imageSize: 1024, patchSize: 16, embedDim: dim, depth: depth, numHeads: heads, mlpDim: 4 * dim,
                                windowSize: 14, globalAttnIndexes: globals, qkvBias: true, outChans: 256)
            return ModelConfig(variant: .sam, encoder: .vit(enc),
                               prompt: PromptEncoderConfig(embedDim: 256, embeddingSize: 64, inputImageSize: 1024, maskInChans: 16),
                               decoder: decoder, normalization: .imageNet)
        }
        switch name {
        case "mobilesam": return tiny(1024, kernel: 3, stride: 2, variant: .mobileSAM, norm: .imageNet)
        case "litemedsam": return tiny(256, kernel: 1, stride: 1, variant: .liteMedSAM, norm: .minMax)
        case "sam_vit_b": return vit(768, 12, 12, [2, 5, 8, 11])
        case "sam_vit_l": return vit(1024, 24, 16, [5, 11, 17, 23])
        case "sam_vit_h": return vit(1280, 32, 16, [7, 15, 23, 31])
        default: return nil
        }
    }
}
