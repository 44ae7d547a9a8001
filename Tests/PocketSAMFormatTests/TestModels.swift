import PocketSAMFormat

/// Small configurations that hold together, for format tests that need a whole model.
enum TestModels {
    static let vit = ModelConfig(
        variant: .sam,
        encoder: .vit(ViTConfig(imageSize: 64, patchSize: 16, embedDim: 16, depth: 2, numHeads: 2, mlpDim: 32,
                                windowSize: 3, globalAttnIndexes: [1], qkvBias: true, outChans: 16)),
        prompt: PromptEncoderConfig(embedDim: 16, embeddingSize: 4, inputImageSize: 64, maskInChans: 8),
        decoder: MaskDecoderConfig(transformerDim: 16, depth: 1, numHeads: 2, mlpDim: 8, attentionDownsampleRate: 2,
                                   numMultimaskOutputs: 3, iouHeadDepth: 2, iouHeadHiddenDim: 8),
        normalization: .imageNet)

    static let tinyViT = ModelConfig(
        variant: .liteMedSAM,
        encoder: .tinyViT(TinyViTConfig(imageSize: 256, embedDims: [8, 16, 24, 320], depths: [1, 1, 1, 1],
                                        numHeads: [0, 2, 3, 10], windowSizes: [0, 7, 14, 7],
                                        mlpHiddenDims: [0, 32, 48, 64], mbconvHiddenDim: 32, patchEmbedKernel: 1,
                                        patchEmbedStride: 1, mergeStrides: [2, 2, 1], localConvSize: 3, outChans: 16)),
        prompt: PromptEncoderConfig(embedDim: 16, embeddingSize: 64, inputImageSize: 256, maskInChans: 8),
        decoder: MaskDecoderConfig(transformerDim: 16, depth: 1, numHeads: 2, mlpDim: 8, attentionDownsampleRate: 2,
                                   numMultimaskOutputs: 3, iouHeadDepth: 1, iouHeadHiddenDim: 8),
        normalization: .minMax)

    /// A writer holding every tensor of `config` with deterministic values, at the given precision:
    /// matrices as i8 (or f16) where the role allows it, everything else f32.
    static func writer(_ config: ModelConfig, int8: Bool = true, f16: Bool = false, seed: UInt64 = 1) throws -> PSAMWriter {
        var w = PSAMWriter()
        config.write(to: &w.metadata)
        var state = seed
        func next() -> Float {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Int64(bitPattern: state >> 11) % 2001 - 1000) / 1000
        }
        for spec in config.tensorSpecs() {
            let n = spec.shape.reduce(1, *)
            let values = (0..<n).map { _ in next() }
            if int8, let axis = spec.role.int8ScaleAxis {
                let q = values.map { Int8(max(-127, min(127, ($0 * 127).rounded()))) }
                try w.addI8(spec.name, shape: spec.shape, values: q, scaleAxis: axis,
                            scales: (0..<spec.shape[axis]).map { Float($0 + 1) / 128 }, packed: axis == 0 && spec.shape.count >= 2)
            } else if f16 {
                try w.addF16(spec.name, shape: spec.shape, values: values.map { Float16($0) })
            } else {
                try w.addF32(spec.name, shape: spec.shape, values: values)
            }
        }
        return w
    }
}
