import PocketSAMFormat

/// Infers a `ModelConfig` from tensor names and shapes alone. It reads only the few shapes that
/// determine the hyper-parameters; `Converter` then checks every tensor against the full spec.
public enum ArchitectureDetector {
    /// Tensors a checkpoint may carry that the runtime does not use.
    public static func isIgnorable(_ name: String) -> Bool {
        name.hasSuffix(".num_batches_tracked") || name.hasPrefix("image_encoder.head.")
            || name.hasPrefix("image_encoder.norm_head.") || name == "pixel_mean" || name == "pixel_std"
    }

    /// SAM's decoder always uses 8 heads; it is not recorded in checkpoints.
    public static let samDecoderHeads = 8

    public static func detect(_ shapes: [String: [Int]]) throws(CheckpointError) -> ModelConfig {
        func shape(_ n: String, rank: Int) throws(CheckpointError) -> [Int] {
            guard let s = shapes[n] else { throw .missingTensor(name: n, needed: "architecture detection") }
            guard s.count == rank, s.allSatisfy({ $0 > 0 }) else {
                throw .unknownArchitecture("'\(n)' has shape \(s), expected a non-empty rank-\(rank) tensor")
            }
            return s
        }
        func count(_ prefix: String, _ suffix: String) -> Int {
            var n = 0
            while shapes[prefix + "\(n)" + suffix] != nil { n += 1 }
            return n
        }

        let e = "image_encoder."
        let encoder: EncoderConfig
        let variant: ModelVariant
        let normalization: Normalization
        if shapes[e + "pos_embed"] != nil || shapes[e + "blocks.0.attn.qkv.weight"] != nil {
            let pos = try shape(e + "pos_embed", rank: 4)
            let pe = try shape(e + "patch_embed.proj.weight", rank: 4)
            guard pos[1] == pos[2], pe[2] == pe[3], pe[1] == 3, pos[3] == pe[0] else {
                throw .unknownArchitecture("SAM ViT patch embedding \(pe) and position embedding \(pos) do not fit")
            }
            let grid = pos[1], E = pe[0], P = pe[2]
            let depth = count(e + "blocks.", ".norm1.weight")
            guard depth > 0 else { throw .unknownArchitecture("SAM ViT with no blocks") }
            var headDim = 0
            var window = 0
            var globals: [Int] = []
            for b in 0..<depth {
                let rp = e + "blocks.\(b).attn.rel_pos_h"
                guard shapes[rp] != nil else {
                    throw .unknownArchitecture("block \(b) has no relative-position table; the head count cannot be inferred (use_rel_pos=False is not a SAM checkpoint)")
                }
                let r = try shape(rp, rank: 2)
                guard r[0] % 2 == 1 else { throw .unknownArchitecture("'\(rp)' has even length \(r[0])") }
                if headDim == 0 { headDim = r[1] }
                guard r[1] == headDim, E % headDim == 0 else {
                    throw .unknownArchitecture("block \(b): relative-position width \(r[1]) does not divide \(E)")
                }
                let side = (r[0] + 1) / 2
                if side == grid {
                    globals.append(b)
                } else {
                    guard window == 0 || window == side else {
                        throw .unknownArchitecture("windowed blocks disagree on the window size (\(window) vs \(side))")
                    }
                    window = side
                }
            }
            let mlp = try shape(e + "blocks.0.mlp.lin1.weight", rank: 2)
            let neck = try shape(e + "neck.0.weight", rank: 4)
            encoder = .vit(ViTConfig(
                imageSize: grid * P, patchSize: P, embedDim: E, depth: depth, numHeads: E / headDim, mlpDim: mlp[0],
                windowSize: window, globalAttnIndexes: window == 0 ? [] : globals,
                qkvBias: shapes[e + "blocks.0.attn.qkv.bias"] != nil, outChans: neck[0]))
            variant = .sam
            normalization = .imageNet
        } else if shapes[e + "patch_embed.seq.0.c.weight"] != nil {
            let pe0 = try shape(e + "patch_embed.seq.0.c.weight", rank: 4)
            let pe2 = try shape(e + "patch_embed.seq.2.c.weight", rank: 4)
            let k = pe0[2]
            guard pe0[1] == 3, pe0[3] == k, pe2[2] == k, pe2[1] == pe0[0], pe2[0] == 2 * pe0[0] else {
                throw .unknownArchitecture("TinyViT patch embedding shapes \(pe0), \(pe2) do not fit")
            }
            let stride: Int
            switch k {
            case 3: stride = 2; variant = .mobileSAM; normalization = .imageNet
            case 1: stride = 1; variant = .liteMedSAM; normalization = .minMax
            default: throw .unknownArchitecture("TinyViT patch-embedding kernel \(k) (MobileSAM uses 3, LiteMedSAM 1)")
            }
            var dims = [pe2[0]]
            var stage = 0
            while shapes[e + "layers.\(stage).downsample.conv1.c.weight"] != nil {
                dims.append(try shape(e + "layers.\(stage).downsample.conv1.c.weight", rank: 4)[0])
                stage += 1
            }
            let n = dims.count
            guard n >= 2 else { throw .unknownArchitecture("TinyViT with a single stage") }
            var depths: [Int] = [], heads: [Int] = [], windows: [Int] = [], mlps: [Int] = []
            for s in 0..<n {
                let p = e + "layers.\(s).blocks."
                let d = s == 0 ? count(p, ".conv1.c.weight") : count(p, ".attn.qkv.weight")
                guard d > 0 else { throw .unknownArchitecture("TinyViT stage \(s) has no blocks") }
                depths.append(d)
                if s == 0 {
                    heads.append(0); windows.append(0); mlps.append(0)
                } else {
                    let ab = try shape(p + "0.attn.attention_biases", rank: 2)
                    var w = 1
                    while w * w < ab[1] { w += 1 }
                    guard w * w == ab[1] else {
                        throw .unknownArchitecture("stage \(s): \(ab[1]) attention offsets is not a square window")
                    }
                    heads.append(ab[0]); windows.append(w)
                    mlps.append(try shape(p + "0.mlp.fc1.weight", rank: 2)[0])
                }
            }
            let mb = try shape(e + "layers.0.blocks.0.conv1.c.weight", rank: 4)
            let local = try shape(e + "layers.1.blocks.0.local_conv.c.weight", rank: 4)
            let neck = try shape(e + "neck.0.weight", rank: 4)
            // TinyViT's PatchMerging uses stride 1 when its output width is 320, 448 or 576 (the
            // published SAM variants), else 2; its forward pass hard-codes a 64×64 output grid.
            let merges = dims.dropFirst().map { [320, 448, 576].contains($0) ? 1 : 2 }
            let grid = 64
            let imageSize = grid * stride * stride * merges.reduce(1, *)
            encoder = .tinyViT(TinyViTConfig(
                imageSize: imageSize, embedDims: dims, depths: depths, numHeads: heads, windowSizes: windows,
                mlpHiddenDims: mlps, mbconvHiddenDim: mb[0], patchEmbedKernel: k, patchEmbedStride: stride,
                mergeStrides: Array(merges), localConvSize: local[2], outChans: neck[0]))
        } else {
            let sample = shapes.keys.sorted().prefix(5).joined(separator: ", ")
            throw .unknownArchitecture("found neither a SAM ViT ('image_encoder.pos_embed') nor a TinyViT ('image_encoder.patch_embed.seq.0.c.weight') image encoder; first tensor names: \(sample)")
        }

        let pe = "prompt_encoder."
        let noMask = try shape(pe + "no_mask_embed.weight", rank: 2)
        let maskIn = try shape(pe + "mask_downscaling.3.weight", rank: 4)
        let prompt = PromptEncoderConfig(embedDim: noMask[1], embeddingSize: encoder.embeddingSize,
                                         inputImageSize: encoder.imageSize, maskInChans: maskIn[0])

        let md = "mask_decoder."
        let D = try shape(md + "iou_token.weight", rank: 2)[1]
        let depth = count(md + "transformer.layers.", ".norm1.weight")
        guard depth > 0 else { throw .unknownArchitecture("mask decoder with no transformer layers") }
        let mlp = try shape(md + "transformer.layers.0.mlp.lin1.weight", rank: 2)[0]
        let inner = try shape(md + "transformer.layers.0.cross_attn_token_to_image.q_proj.weight", rank: 2)[0]
        guard D % inner == 0 else { throw .unknownArchitecture("decoder cross-attention width \(inner) does not divide \(D)") }
        let tokens = try shape(md + "mask_tokens.weight", rank: 2)[0]
        guard tokens >= 2 else { throw .unknownArchitecture("decoder has \(tokens) mask tokens") }
        let iouDepth = count(md + "iou_prediction_head.layers.", ".weight")
        guard iouDepth >= 1 else { throw .unknownArchitecture("decoder has no IoU head") }
        let iouHidden = iouDepth > 1 ? try shape(md + "iou_prediction_head.layers.0.weight", rank: 2)[0] : D
        var decoder = MaskDecoderConfig(
            transformerDim: D, depth: depth, numHeads: samDecoderHeads, mlpDim: mlp, attentionDownsampleRate: D / inner,
            numMultimaskOutputs: tokens - 1, iouHeadDepth: iouDepth, iouHeadHiddenDim: iouHidden)
        // HQ-SAM (segment_anything_hq's MaskDecoderHQ): its HQ token and fusion layers. The early feature is where the official
        // encoders take it: a ViT's first global-attention block (block 0 when every block is global), TinyViT's stage 1.
        let hqNames = ["hf_token.weight", "hf_mlp.layers.0.weight", "compress_vit_feat.0.weight", "embedding_encoder.0.weight",
                       "embedding_maskfeature.0.weight"]
        let hqFound = hqNames.filter { shapes[md + $0] != nil }
        if !hqFound.isEmpty {
            guard hqFound.count == hqNames.count else {
                let missing = hqNames.filter { shapes[md + $0] == nil }.map { md + $0 }
                throw .unknownArchitecture("an HQ-SAM decoder needs \(missing.joined(separator: ", ")) as well (found \(hqFound.map { md + $0 }.joined(separator: ", ")))")
            }
            let vitDim = try shape(md + "compress_vit_feat.0.weight", rank: 4)[0]
            let early: Int
            switch encoder {
            case let .vit(v): early = v.globalAttnIndexes.min() ?? 0
            case .tinyViT: early = 1
            }
            decoder.hq = HQConfig(vitDim: vitDim, earlyLayer: early)
        }

        let config = ModelConfig(variant: variant, encoder: encoder, prompt: prompt, decoder: decoder,
                                 normalization: normalization, maskThreshold: 0)
        do {
            try config.check()
        } catch {
            throw .unknownArchitecture("the detected configuration does not hold together: \(error)")
        }
        return config
    }
}
