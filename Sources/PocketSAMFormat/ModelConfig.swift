/// Which published model a file holds. The family decides the encoder code; the variant decides
/// preprocessing defaults.
public enum ModelVariant: String, Sendable, CaseIterable {
    /// Segment Anything with a ViT image encoder (ViT-B/L/H and any other width or depth).
    case sam = "sam"
    /// MobileSAM: TinyViT at 1024 px, 3×3 stride-2 patch-embedding convolutions.
    case mobileSAM = "mobilesam"
    /// LiteMedSAM: TinyViT at 256 px, 1×1 stride-1 patch-embedding convolutions, min-max normalisation.
    case liteMedSAM = "litemedsam"
}

/// How pixels are normalised before the encoder.
public enum Normalization: Equatable, Sendable {
    /// `(pixel - mean) / std` per channel, in 0...255 units (SAM, MobileSAM).
    case meanStd(mean: [Double], std: [Double])
    /// Per image: `(x - min) / max(max - min, 1e-8)` over all channels, giving 0...1 (LiteMedSAM).
    case minMax

    public static let imageNet = Normalization.meanStd(mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375])
}

/// SAM's ViT image encoder (`ImageEncoderViT`). Layer norms use eps 1e-6.
public struct ViTConfig: Equatable, Sendable {
    public var imageSize: Int
    public var patchSize: Int
    public var embedDim: Int
    public var depth: Int
    public var numHeads: Int
    public var mlpDim: Int
    /// 0 when every block is global.
    public var windowSize: Int
    public var globalAttnIndexes: [Int]
    public var qkvBias: Bool
    public var outChans: Int

    public init(imageSize: Int, patchSize: Int, embedDim: Int, depth: Int, numHeads: Int, mlpDim: Int,
                windowSize: Int, globalAttnIndexes: [Int], qkvBias: Bool, outChans: Int) {
        self.imageSize = imageSize
        self.patchSize = patchSize
        self.embedDim = embedDim
        self.depth = depth
        self.numHeads = numHeads
        self.mlpDim = mlpDim
        self.windowSize = windowSize
        self.globalAttnIndexes = globalAttnIndexes
        self.qkvBias = qkvBias
        self.outChans = outChans
    }

    /// Side of the patch grid (= image embedding side).
    public var gridSize: Int { imageSize / patchSize }
    public var headDim: Int { embedDim / numHeads }
    public func isGlobal(_ block: Int) -> Bool { globalAttnIndexes.contains(block) || windowSize == 0 }
}

/// TinyViT image encoder (MobileSAM, LiteMedSAM). Stage 0 is a conv (MBConv) stage, the others
/// attention stages. Layer norms use eps 1e-5, the neck's LayerNorm2d 1e-6.
public struct TinyViTConfig: Equatable, Sendable {
    public var imageSize: Int
    public var embedDims: [Int]
    public var depths: [Int]
    /// Heads per stage; 0 for the conv stage.
    public var numHeads: [Int]
    /// Attention window per stage; 0 for the conv stage.
    public var windowSizes: [Int]
    /// Hidden width of each attention stage's MLP (= int(dim × mlp_ratio)); 0 for the conv stage.
    public var mlpHiddenDims: [Int]
    /// Hidden width of the MBConv blocks of stage 0 (= int(dim × expand_ratio)).
    public var mbconvHiddenDim: Int
    /// Kernel of both patch-embedding convolutions (3 for MobileSAM, 1 for LiteMedSAM).
    public var patchEmbedKernel: Int
    /// Stride of each of the two patch-embedding convolutions (2 for MobileSAM, 1 for LiteMedSAM).
    public var patchEmbedStride: Int
    /// Stride of the 3×3 depthwise conv in the patch merging after each stage but the last.
    public var mergeStrides: [Int]
    public var localConvSize: Int
    public var outChans: Int

    public init(imageSize: Int, embedDims: [Int], depths: [Int], numHeads: [Int], windowSizes: [Int],
                mlpHiddenDims: [Int], mbconvHiddenDim: Int, patchEmbedKernel: Int, patchEmbedStride: Int,
                mergeStrides: [Int], localConvSize: Int, outChans: Int) {
        self.imageSize = imageSize
        self.embedDims = embedDims
        self.depths = depths
        self.numHeads = numHeads
        self.windowSizes = windowSizes
        self.mlpHiddenDims = mlpHiddenDims
        self.mbconvHiddenDim = mbconvHiddenDim
        self.patchEmbedKernel = patchEmbedKernel
        self.patchEmbedStride = patchEmbedStride
        self.mergeStrides = mergeStrides
        self.localConvSize = localConvSize
        self.outChans = outChans
    }

    public var stageCount: Int { embedDims.count }

    /// Spatial side of each stage's input grid.
    public var stageResolutions: [Int] {
        var r = imageSize / (patchEmbedStride * patchEmbedStride)
        var out: [Int] = []
        for s in 0..<stageCount {
            out.append(r)
            if s < mergeStrides.count { r = (r - 1) / mergeStrides[s] + 1 }
        }
        return out
    }

    /// Side of the output grid (the image embedding).
    public var outputSize: Int {
        var r = imageSize / (patchEmbedStride * patchEmbedStride)
        for s in mergeStrides { r = (r - 1) / s + 1 }
        return r
    }
}

public enum EncoderConfig: Equatable, Sendable {
    case vit(ViTConfig)
    case tinyViT(TinyViTConfig)

    public var imageSize: Int {
        switch self {
        case let .vit(c): return c.imageSize
        case let .tinyViT(c): return c.imageSize
        }
    }

    public var outChans: Int {
        switch self {
        case let .vit(c): return c.outChans
        case let .tinyViT(c): return c.outChans
        }
    }

    public var embeddingSize: Int {
        switch self {
        case let .vit(c): return c.gridSize
        case let .tinyViT(c): return c.outputSize
        }
    }
}

/// SAM's `PromptEncoder`.
public struct PromptEncoderConfig: Equatable, Sendable {
    public var embedDim: Int
    /// Side of the image embedding grid (64 for the published models).
    public var embeddingSize: Int
    /// Side of the padded input image (1024 or 256).
    public var inputImageSize: Int
    public var maskInChans: Int

    public init(embedDim: Int, embeddingSize: Int, inputImageSize: Int, maskInChans: Int) {
        self.embedDim = embedDim
        self.embeddingSize = embeddingSize
        self.inputImageSize = inputImageSize
        self.maskInChans = maskInChans
    }
}

/// SAM's `MaskDecoder` with its `TwoWayTransformer`. Layer norms use eps 1e-5, LayerNorm2d 1e-6.
public struct MaskDecoderConfig: Equatable, Sendable {
    public var transformerDim: Int
    public var depth: Int
    public var numHeads: Int
    public var mlpDim: Int
    public var attentionDownsampleRate: Int
    public var numMultimaskOutputs: Int
    public var iouHeadDepth: Int
    public var iouHeadHiddenDim: Int

    public init(transformerDim: Int, depth: Int, numHeads: Int, mlpDim: Int, attentionDownsampleRate: Int,
                numMultimaskOutputs: Int, iouHeadDepth: Int, iouHeadHiddenDim: Int) {
        self.transformerDim = transformerDim
        self.depth = depth
        self.numHeads = numHeads
        self.mlpDim = mlpDim
        self.attentionDownsampleRate = attentionDownsampleRate
        self.numMultimaskOutputs = numMultimaskOutputs
        self.iouHeadDepth = iouHeadDepth
        self.iouHeadHiddenDim = iouHeadHiddenDim
    }

    public var numMaskTokens: Int { numMultimaskOutputs + 1 }

    /// HQ-SAM's additions (Ke et al. 2023, `segment_anything_hq`'s `MaskDecoderHQ`), nil for plain SAM.
    public var hq: HQConfig?
}

/// HQ-SAM: an HQ output token with its own hypernetwork MLP (`hf_token`, `hf_mlp`), and HQ features fused once per image
/// from the image embedding (`embedding_encoder`) and an early encoder feature (`compress_vit_feat`), refined per prompt
/// from the upscaled mask features (`embedding_maskfeature`).
public struct HQConfig: Equatable, Sendable {
    /// Channels of the early encoder feature (`vit_dim` in the official code).
    public var vitDim: Int
    /// Where the early feature is taken: for a ViT encoder the output of this block (the official code: the first
    /// global-attention block), for TinyViT the output of this stage, patch merging included (the official code: 1).
    public var earlyLayer: Int

    public init(vitDim: Int, earlyLayer: Int) {
        self.vitDim = vitDim
        self.earlyLayer = earlyLayer
    }
}

/// Everything the runtime needs to know about a model, stored in the file's metadata.
/// The runtime never guesses: it reads this and checks every tensor against `tensorSpecs()`.
public struct ModelConfig: Equatable, Sendable {
    public var variant: ModelVariant
    public var encoder: EncoderConfig
    public var prompt: PromptEncoderConfig
    public var decoder: MaskDecoderConfig
    public var normalization: Normalization
    public var maskThreshold: Double

    public init(variant: ModelVariant, encoder: EncoderConfig, prompt: PromptEncoderConfig,
                decoder: MaskDecoderConfig, normalization: Normalization, maskThreshold: Double = 0) {
        self.variant = variant
        self.encoder = encoder
        self.prompt = prompt
        self.decoder = decoder
        self.normalization = normalization
        self.maskThreshold = maskThreshold
    }

    public var family: String {
        switch encoder {
        case .vit: return "sam_vit"
        case .tinyViT: return "tinyvit"
        }
    }

    /// Checks that the numbers fit together (divisibility, sizes the code can run).
    public func check() throws(PSAMError) {
        func need(_ ok: Bool, _ why: @autoclosure () -> String) throws(PSAMError) {
            if !ok { throw .invalidConfig(why()) }
        }
        let limit = 1 << 16
        switch encoder {
        case let .vit(v):
            for (n, x) in [("image_size", v.imageSize), ("patch_size", v.patchSize), ("embed_dim", v.embedDim),
                           ("depth", v.depth), ("num_heads", v.numHeads), ("mlp_dim", v.mlpDim), ("out_chans", v.outChans)] {
                try need(x > 0 && x <= limit, "vit.\(n) = \(x) is out of range")
            }
            try need(v.imageSize % v.patchSize == 0, "image size \(v.imageSize) is not a multiple of patch \(v.patchSize)")
            try need(v.embedDim % v.numHeads == 0, "embed dim \(v.embedDim) is not divisible by \(v.numHeads) heads")
            try need(v.windowSize >= 0 && v.windowSize <= v.gridSize, "window size \(v.windowSize) for grid \(v.gridSize)")
            try need(v.globalAttnIndexes.allSatisfy { $0 >= 0 && $0 < v.depth }, "global block index out of range")
            try need(Set(v.globalAttnIndexes).count == v.globalAttnIndexes.count, "repeated global block index")
        case let .tinyViT(t):
            let n = t.stageCount
            try need(n >= 2 && n <= 8, "TinyViT needs 2 to 8 stages, not \(n)")
            try need([t.depths.count, t.numHeads.count, t.windowSizes.count, t.mlpHiddenDims.count].allSatisfy { $0 == n },
                     "TinyViT per-stage lists have different lengths")
            try need(t.mergeStrides.count == n - 1, "TinyViT needs \(n - 1) merge strides")
            try need(t.mergeStrides.allSatisfy { $0 == 1 || $0 == 2 }, "merge strides must be 1 or 2")
            try need(t.embedDims.allSatisfy { $0 > 0 && $0 <= limit } && t.embedDims[0] % 2 == 0, "bad TinyViT widths")
            try need(t.depths.allSatisfy { $0 >= 0 && $0 <= 256 }, "bad TinyViT depths")
            try need(t.imageSize > 0 && t.imageSize <= 8192, "image size \(t.imageSize)")
            try need([1, 2].contains(t.patchEmbedStride) && [1, 3].contains(t.patchEmbedKernel), "patch embedding")
            try need(t.imageSize % (t.patchEmbedStride * t.patchEmbedStride) == 0, "image size vs patch stride")
            try need(t.numHeads[0] == 0 && t.windowSizes[0] == 0, "stage 0 is a conv stage")
            for s in 1..<n {
                try need(t.numHeads[s] > 0 && t.embedDims[s] % t.numHeads[s] == 0, "stage \(s): width vs heads")
                try need(t.windowSizes[s] > 0 && t.windowSizes[s] <= 64, "stage \(s): window \(t.windowSizes[s])")
                try need(t.mlpHiddenDims[s] > 0 && t.mlpHiddenDims[s] <= limit, "stage \(s): mlp width")
            }
            try need(t.mbconvHiddenDim > 0 && t.mbconvHiddenDim <= limit, "MBConv width")
            try need(t.localConvSize % 2 == 1 && t.localConvSize <= 15, "local conv size")
            try need(t.outChans > 0 && t.outChans <= limit, "out chans")
        }
        try need(prompt.embedDim == encoder.outChans, "prompt embed dim \(prompt.embedDim) != encoder output \(encoder.outChans)")
        try need(prompt.embeddingSize == encoder.embeddingSize,
                 "prompt embedding size \(prompt.embeddingSize) != encoder grid \(encoder.embeddingSize)")
        try need(prompt.inputImageSize == encoder.imageSize, "prompt input size != encoder image size")
        try need(prompt.embedDim % 2 == 0 && prompt.maskInChans % 4 == 0 && prompt.maskInChans > 0, "prompt encoder widths")
        let d = decoder
        try need(d.transformerDim == prompt.embedDim, "decoder width \(d.transformerDim) != prompt width \(prompt.embedDim)")
        try need(d.transformerDim % 8 == 0, "decoder width must be a multiple of 8")
        try need(d.numHeads > 0 && d.attentionDownsampleRate > 0, "decoder heads / downsample rate")
        try need(d.transformerDim % d.attentionDownsampleRate == 0
                 && (d.transformerDim / d.attentionDownsampleRate) % d.numHeads == 0
                 && d.transformerDim % d.numHeads == 0, "decoder width not divisible by heads")
        try need(d.depth >= 1 && d.depth <= 64 && d.mlpDim > 0 && d.iouHeadDepth >= 1 && d.iouHeadHiddenDim > 0
                 && d.numMultimaskOutputs >= 1 && d.numMultimaskOutputs <= 16, "decoder sizes")
        if let hq = d.hq {
            switch encoder {
            case let .vit(v):
                try need(hq.earlyLayer >= 0 && hq.earlyLayer < v.depth, "HQ early block \(hq.earlyLayer) of \(v.depth)")
                try need(hq.vitDim == v.embedDim, "HQ early feature width \(hq.vitDim) != ViT width \(v.embedDim)")
            case let .tinyViT(t):
                try need(hq.earlyLayer >= 0 && hq.earlyLayer < t.stageCount - 1, "HQ early stage \(hq.earlyLayer) of \(t.stageCount)")
                try need(hq.vitDim == t.embedDims[hq.earlyLayer + 1],
                         "HQ early feature width \(hq.vitDim) != stage \(hq.earlyLayer)'s output width \(t.embedDims[hq.earlyLayer + 1])")
                try need(t.stageResolutions[hq.earlyLayer + 1] == prompt.embeddingSize,
                         "HQ early feature grid \(t.stageResolutions[hq.earlyLayer + 1]) != embedding grid \(prompt.embeddingSize)")
            }
        }
        try need(maskThreshold.isFinite, "mask threshold")
        if case let .meanStd(mean, std) = normalization {
            try need(mean.count == 3 && std.count == 3 && std.allSatisfy { $0 > 0 }, "normalisation mean/std")
        }
    }
}
