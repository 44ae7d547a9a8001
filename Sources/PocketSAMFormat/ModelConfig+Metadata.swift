/// The metadata keys of a model configuration (docs/FORMAT.md lists them with their meaning).
extension ModelConfig {
    public init(metadata m: Metadata) throws(PSAMError) {
        let v = try m.string("model.variant")
        guard let variant = ModelVariant(rawValue: v) else { throw .invalidConfig("unknown model variant '\(v)'") }
        let family = try m.string("model.family")
        let encoder: EncoderConfig
        switch family {
        case "sam_vit":
            encoder = .vit(ViTConfig(
                imageSize: try m.int("vit.image_size"), patchSize: try m.int("vit.patch_size"),
                embedDim: try m.int("vit.embed_dim"), depth: try m.int("vit.depth"),
                numHeads: try m.int("vit.num_heads"), mlpDim: try m.int("vit.mlp_dim"),
                windowSize: try m.int("vit.window_size"), globalAttnIndexes: try m.ints("vit.global_attn_indexes"),
                qkvBias: try m.bool("vit.qkv_bias"), outChans: try m.int("vit.out_chans")))
        case "tinyvit":
            encoder = .tinyViT(TinyViTConfig(
                imageSize: try m.int("tinyvit.image_size"), embedDims: try m.ints("tinyvit.embed_dims"),
                depths: try m.ints("tinyvit.depths"), numHeads: try m.ints("tinyvit.num_heads"),
                windowSizes: try m.ints("tinyvit.window_sizes"), mlpHiddenDims: try m.ints("tinyvit.mlp_hidden_dims"),
                mbconvHiddenDim: try m.int("tinyvit.mbconv_hidden_dim"),
                patchEmbedKernel: try m.int("tinyvit.patch_embed_kernel"),
                patchEmbedStride: try m.int("tinyvit.patch_embed_stride"),
                mergeStrides: try m.ints("tinyvit.merge_strides"), localConvSize: try m.int("tinyvit.local_conv_size"),
                outChans: try m.int("tinyvit.out_chans")))
        default:
            throw .invalidConfig("unknown model family '\(family)'")
        }
        let prompt = PromptEncoderConfig(
            embedDim: try m.int("prompt.embed_dim"), embeddingSize: try m.int("prompt.embedding_size"),
            inputImageSize: try m.int("prompt.input_image_size"), maskInChans: try m.int("prompt.mask_in_chans"))
        var decoder = MaskDecoderConfig(
            transformerDim: try m.int("decoder.transformer_dim"), depth: try m.int("decoder.depth"),
            numHeads: try m.int("decoder.num_heads"), mlpDim: try m.int("decoder.mlp_dim"),
            attentionDownsampleRate: try m.int("decoder.attention_downsample_rate"),
            numMultimaskOutputs: try m.int("decoder.num_multimask_outputs"),
            iouHeadDepth: try m.int("decoder.iou_head_depth"), iouHeadHiddenDim: try m.int("decoder.iou_head_hidden_dim"))
        if m["decoder.hq_vit_dim"] != nil || m["decoder.hq_early_layer"] != nil {
            decoder.hq = HQConfig(vitDim: try m.int("decoder.hq_vit_dim"), earlyLayer: try m.int("decoder.hq_early_layer"))
        }
        let norm: Normalization
        switch try m.string("preprocess.normalization") {
        case "mean_std": norm = .meanStd(mean: try m.doubles("preprocess.pixel_mean"), std: try m.doubles("preprocess.pixel_std"))
        case "min_max": norm = .minMax
        case let other: throw .invalidConfig("unknown normalisation '\(other)'")
        }
        let imageSize = try m.int("preprocess.image_size")
        self.init(variant: variant, encoder: encoder, prompt: prompt, decoder: decoder, normalization: norm,
                  maskThreshold: try m.double("postprocess.mask_threshold"))
        guard imageSize == encoder.imageSize else {
            throw .invalidConfig("preprocess.image_size \(imageSize) != encoder image size \(encoder.imageSize)")
        }
        try check()
    }

    /// Writes the configuration's keys into `m` (in a fixed order).
    public func write(to m: inout Metadata) {
        func i(_ x: Int) -> MetadataValue { .int(Int64(x)) }
        func a(_ x: [Int]) -> MetadataValue { .ints(x.map { Int64($0) }) }
        m["model.family"] = .string(family)
        m["model.variant"] = .string(variant.rawValue)
        m["preprocess.image_size"] = i(encoder.imageSize)
        switch normalization {
        case let .meanStd(mean, std):
            m["preprocess.normalization"] = .string("mean_std")
            m["preprocess.pixel_mean"] = .doubles(mean)
            m["preprocess.pixel_std"] = .doubles(std)
        case .minMax:
            m["preprocess.normalization"] = .string("min_max")
        }
        m["postprocess.mask_threshold"] = .double(maskThreshold)
        switch encoder {
        case let .vit(v):
            m["vit.image_size"] = i(v.imageSize)
            m["vit.patch_size"] = i(v.patchSize)
            m["vit.embed_dim"] = i(v.embedDim)
            m["vit.depth"] = i(v.depth)
            m["vit.num_heads"] = i(v.numHeads)
            m["vit.mlp_dim"] = i(v.mlpDim)
            m["vit.window_size"] = i(v.windowSize)
            m["vit.global_attn_indexes"] = a(v.globalAttnIndexes)
            m["vit.qkv_bias"] = .bool(v.qkvBias)
            m["vit.out_chans"] = i(v.outChans)
        case let .tinyViT(t):
            m["tinyvit.image_size"] = i(t.imageSize)
            m["tinyvit.embed_dims"] = a(t.embedDims)
            m["tinyvit.depths"] = a(t.depths)
            m["tinyvit.num_heads"] = a(t.numHeads)
            m["tinyvit.window_sizes"] = a(t.windowSizes)
            m["tinyvit.mlp_hidden_dims"] = a(t.mlpHiddenDims)
            m["tinyvit.mbconv_hidden_dim"] = i(t.mbconvHiddenDim)
            m["tinyvit.patch_embed_kernel"] = i(t.patchEmbedKernel)
            m["tinyvit.patch_embed_stride"] = i(t.patchEmbedStride)
            m["tinyvit.merge_strides"] = a(t.mergeStrides)
            m["tinyvit.local_conv_size"] = i(t.localConvSize)
            m["tinyvit.out_chans"] = i(t.outChans)
        }
        m["prompt.embed_dim"] = i(prompt.embedDim)
        m["prompt.embedding_size"] = i(prompt.embeddingSize)
        m["prompt.input_image_size"] = i(prompt.inputImageSize)
        m["prompt.mask_in_chans"] = i(prompt.maskInChans)
        m["decoder.transformer_dim"] = i(decoder.transformerDim)
        m["decoder.depth"] = i(decoder.depth)
        m["decoder.num_heads"] = i(decoder.numHeads)
        m["decoder.mlp_dim"] = i(decoder.mlpDim)
        m["decoder.attention_downsample_rate"] = i(decoder.attentionDownsampleRate)
        m["decoder.num_multimask_outputs"] = i(decoder.numMultimaskOutputs)
        m["decoder.iou_head_depth"] = i(decoder.iouHeadDepth)
        m["decoder.iou_head_hidden_dim"] = i(decoder.iouHeadHiddenDim)
        if let hq = decoder.hq {
            m["decoder.hq_vit_dim"] = i(hq.vitDim)
            m["decoder.hq_early_layer"] = i(hq.earlyLayer)
        }
    }
}
