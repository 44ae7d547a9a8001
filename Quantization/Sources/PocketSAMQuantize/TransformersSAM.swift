import Foundation
import PocketSAMFormat

/// Hugging Face transformers' `SamModel` layout (`vision_encoder.layers.N…`, `mask_embed.conv1`, `proj_in`/`proj_out`…)
/// and the official `segment_anything` layout the runtime's tensor specs use, renamed both ways. The two hold the same
/// tensors with the same shapes; transformers keeps the prompt encoder's random positional matrix once at the top
/// (`shared_image_embedding`) and again, tied, inside the prompt encoder.
public enum TransformersSAM {
    /// Whether names are transformers' (a name only that layout has).
    public static func isTransformersLayout<S: Sequence>(_ names: S) -> Bool where S.Element == String {
        names.contains { $0.split(separator: ".").contains(where: transformersOnly.contains) }
    }

    /// Name parts only transformers' layout has (the official one says blocks/norm1/neck.0/mask_downscaling/…), so that
    /// a part of a model (an adapter of the decoder alone, say) is recognised too.
    static let transformersOnly: Set<Substring> = [
        "vision_encoder", "shared_image_embedding", "shared_embedding", "proj_in", "proj_out", "upscale_conv1",
        "upscale_conv2", "upscale_layer_norm", "mask_embed", "point_embed", "layer_norm1", "layer_norm2", "layer_norm3",
        "layer_norm4", "layer_norm_final_attn",
    ]

    static let positional = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"

    /// (transformers prefix, official prefix): dot-separated segments, `#` a layer number carried across; the rest of the
    /// name follows unchanged. Ordered so that the first match is the right one.
    static let rules: [(hf: [Substring], official: [Substring])] = [
        ("shared_image_embedding.positional_embedding", positional),
        ("prompt_encoder.shared_embedding.positional_embedding", positional),
        ("vision_encoder.pos_embed", "image_encoder.pos_embed"),
        ("vision_encoder.patch_embed.projection", "image_encoder.patch_embed.proj"),
        ("vision_encoder.layers.#.layer_norm1", "image_encoder.blocks.#.norm1"),
        ("vision_encoder.layers.#.layer_norm2", "image_encoder.blocks.#.norm2"),
        ("vision_encoder.layers.#.attn", "image_encoder.blocks.#.attn"),
        ("vision_encoder.layers.#.mlp", "image_encoder.blocks.#.mlp"),
        ("vision_encoder.neck.conv1", "image_encoder.neck.0"),
        ("vision_encoder.neck.layer_norm1", "image_encoder.neck.1"),
        ("vision_encoder.neck.conv2", "image_encoder.neck.2"),
        ("vision_encoder.neck.layer_norm2", "image_encoder.neck.3"),
        ("prompt_encoder.point_embed.#", "prompt_encoder.point_embeddings.#"),
        ("prompt_encoder.not_a_point_embed", "prompt_encoder.not_a_point_embed"),
        ("prompt_encoder.no_mask_embed", "prompt_encoder.no_mask_embed"),
        ("prompt_encoder.mask_embed.conv1", "prompt_encoder.mask_downscaling.0"),
        ("prompt_encoder.mask_embed.layer_norm1", "prompt_encoder.mask_downscaling.1"),
        ("prompt_encoder.mask_embed.conv2", "prompt_encoder.mask_downscaling.3"),
        ("prompt_encoder.mask_embed.layer_norm2", "prompt_encoder.mask_downscaling.4"),
        ("prompt_encoder.mask_embed.conv3", "prompt_encoder.mask_downscaling.6"),
        ("mask_decoder.iou_token", "mask_decoder.iou_token"),
        ("mask_decoder.mask_tokens", "mask_decoder.mask_tokens"),
        ("mask_decoder.transformer.layers.#.layer_norm1", "mask_decoder.transformer.layers.#.norm1"),
        ("mask_decoder.transformer.layers.#.layer_norm2", "mask_decoder.transformer.layers.#.norm2"),
        ("mask_decoder.transformer.layers.#.layer_norm3", "mask_decoder.transformer.layers.#.norm3"),
        ("mask_decoder.transformer.layers.#.layer_norm4", "mask_decoder.transformer.layers.#.norm4"),
        ("mask_decoder.transformer.layers.#.self_attn", "mask_decoder.transformer.layers.#.self_attn"),
        ("mask_decoder.transformer.layers.#.cross_attn_token_to_image", "mask_decoder.transformer.layers.#.cross_attn_token_to_image"),
        ("mask_decoder.transformer.layers.#.cross_attn_image_to_token", "mask_decoder.transformer.layers.#.cross_attn_image_to_token"),
        ("mask_decoder.transformer.layers.#.mlp", "mask_decoder.transformer.layers.#.mlp"),
        ("mask_decoder.transformer.final_attn_token_to_image", "mask_decoder.transformer.final_attn_token_to_image"),
        ("mask_decoder.transformer.layer_norm_final_attn", "mask_decoder.transformer.norm_final_attn"),
        ("mask_decoder.upscale_conv1", "mask_decoder.output_upscaling.0"),
        ("mask_decoder.upscale_layer_norm", "mask_decoder.output_upscaling.1"),
        ("mask_decoder.upscale_conv2", "mask_decoder.output_upscaling.3"),
    ].map { ($0.0.split(separator: "."), $0.1.split(separator: ".")) }

    /// The decoder's MLP heads: transformers names their layers `proj_in`, `layers.0…`, `proj_out`; the official code
    /// `layers.0…layers.(depth−1)`.
    static func headPrefix(_ s: [Substring]) -> Int? {
        if s.count >= 3, s[0] == "mask_decoder", s[1] == "output_hypernetworks_mlps", Int(s[2]) != nil { return 3 }
        if s.count >= 2, s[0] == "mask_decoder", s[1] == "iou_prediction_head" { return 2 }
        return nil
    }

    /// The depth of each decoder MLP head, by head prefix, counted in names of either layout.
    public static func headDepths<S: Sequence>(_ names: S, transformers: Bool) -> [String: Int] where S.Element == String {
        var layers: [String: Set<Int>] = [:]
        for n in names {
            let s = n.split(separator: ".")
            guard let p = headPrefix(s), s.count > p else { continue }
            let head = s[0..<p].joined(separator: ".")
            if s[p] == "proj_in" || s[p] == "proj_out" { layers[head, default: []] = layers[head] ?? [] }
            guard s.count > p + 1, s[p] == "layers", let i = Int(s[p + 1]) else { continue }
            layers[head, default: []].insert(i)
        }
        return layers.mapValues { transformers ? $0.count + 2 : $0.count }
    }

    /// The official name of a transformers name (also of a module name, without `.weight`); nil when it has none.
    public static func officialName(_ name: String, headDepths: [String: Int]) -> String? {
        rename(name, toOfficial: true, headDepths: headDepths)
    }

    /// The transformers name of an official name; nil when it has none.
    public static func transformersName(_ name: String, headDepths: [String: Int]) -> String? {
        if name == positional { return "shared_image_embedding.positional_embedding" }
        return rename(name, toOfficial: false, headDepths: headDepths)
    }

    static func rename(_ name: String, toOfficial: Bool, headDepths: [String: Int]) -> String? {
        let s = name.split(separator: ".", omittingEmptySubsequences: false)
        if let p = headPrefix(s) {
            let head = s[0..<p].joined(separator: ".")
            guard let depth = headDepths[head], depth >= 2, s.count > p else { return nil }
            let rest: ArraySlice<Substring>
            let index: Int
            guard s.count <= p + 3 else { return nil }
            if toOfficial {
                switch s[p] {
                case "proj_in": index = 0; rest = s[(p + 1)...]
                case "proj_out": index = depth - 1; rest = s[(p + 1)...]
                case "layers":
                    guard s.count > p + 1, let i = Int(s[p + 1]), i + 1 < depth - 1 else { return nil }
                    index = i + 1; rest = s[(p + 2)...]
                default: return nil
                }
                guard rest.count <= 1, rest.allSatisfy({ $0 == "weight" || $0 == "bias" }) else { return nil }
                return ([head, "layers", String(index)] + rest.map(String.init)).joined(separator: ".")
            }
            guard s[p] == "layers", s.count > p + 1, let j = Int(s[p + 1]), j < depth else { return nil }
            rest = s[(p + 2)...]
            guard rest.count <= 1, rest.allSatisfy({ $0 == "weight" || $0 == "bias" }) else { return nil }
            let layer = j == 0 ? "proj_in" : j == depth - 1 ? "proj_out" : "layers.\(j - 1)"
            return ([head, layer] + rest.map(String.init)).joined(separator: ".")
        }
        for rule in rules {
            let from = toOfficial ? rule.hf : rule.official, to = toOfficial ? rule.official : rule.hf
            guard s.count >= from.count else { continue }
            var number: Substring?
            var ok = true
            for (a, b) in zip(s, from) {
                if b == "#" {
                    guard Int(a) != nil else { ok = false; break }
                    number = a
                } else if a != b { ok = false; break }
            }
            guard ok else { continue }
            let tail = s[from.count...]
            guard isKnownTail(tail) else { return nil }
            let head = to.map { $0 == "#" ? (number ?? "") : $0 }
            return (head + tail).joined(separator: ".")
        }
        return nil
    }

    /// What may follow a rule's prefix: nothing (a parameter, or a module name), a parameter, or a linear layer's.
    static func isKnownTail(_ t: ArraySlice<Substring>) -> Bool {
        let leaves: Set<Substring> = ["weight", "bias", "rel_pos_h", "rel_pos_w"]
        let linears: Set<Substring> = ["qkv", "proj", "lin1", "lin2", "q_proj", "k_proj", "v_proj", "out_proj"]
        switch t.count {
        case 0: return true
        case 1: return leaves.contains(t[t.startIndex]) || linears.contains(t[t.startIndex])
        case 2: return linears.contains(t[t.startIndex]) && ["weight", "bias"].contains(t[t.startIndex + 1])
        default: return false
        }
    }

    /// Renames a transformers state dict into the official layout; the tied positional matrix is kept once (its copies
    /// must be equal).
    public static func toOfficial(_ tensors: [SourceTensor]) throws(CheckpointError) -> [SourceTensor] {
        let depths = headDepths(tensors.map(\.name), transformers: true)
        var out: [SourceTensor] = []
        var positionalCopy: SourceTensor?
        for t in tensors {
            guard let name = officialName(t.name, headDepths: depths) else {
                throw .layout(tensor: t.name, reason: "not a tensor of transformers' SamModel that this tool can place in the SAM model")
            }
            if name == positional {
                if let first = positionalCopy {
                    guard first.shape == t.shape, try first.floats() == t.floats() else {
                        throw .layout(tensor: t.name, reason: "differs from '\(first.name)'; transformers ties the two (one positional matrix)")
                    }
                    continue
                }
                positionalCopy = t
            }
            out.append(t.renamed(name))
        }
        return out
    }

    // MARK: config.json

    /// Checks `config.json` (transformers' `SamConfig`) against the configuration the tensors give: every field that
    /// sets the architecture, with transformers' defaults where a field is absent.
    public static func check(config json: [String: Any], path: String, against c: ModelConfig) throws(CheckpointError) {
        if let type = json["model_type"] as? String, type != "sam" {
            if type == "sam_hq" {
                throw .config(path: path, reason: "model_type 'sam_hq' (transformers' SamHQModel) is not supported; convert the official HQ-SAM checkpoint (segment_anything_hq layout) instead")
            }
            throw .config(path: path, reason: "model_type '\(type)' is not transformers' SamModel ('sam')")
        }
        guard case let .vit(v) = c.encoder else {
            throw .config(path: path, reason: "a transformers SamModel config, but the tensors are not a SAM ViT")
        }
        func section(_ key: String) throws(CheckpointError) -> [String: Any] {
            guard let s = json[key] else { return [:] }
            guard let d = s as? [String: Any] else { throw .config(path: path, reason: "'\(key)' is not an object") }
            return d
        }
        func int(_ d: [String: Any], _ key: String, _ fallback: Int) throws(CheckpointError) -> Int {
            guard let x = d[key], !(x is NSNull) else { return fallback }
            guard let n = x as? NSNumber, Double(n.intValue) == n.doubleValue else {
                throw .config(path: path, reason: "'\(key)' is not an integer")
            }
            return n.intValue
        }
        func expect(_ section: String, _ key: String, _ declared: Int, _ found: Int, _ what: String) throws(CheckpointError) {
            guard declared == found else {
                throw .config(path: path, reason: "\(section).\(key) is \(declared) but the tensors give \(found) (\(what))")
            }
        }
        let vc = try section("vision_config")
        let hidden = try int(vc, "hidden_size", 768)
        try expect("vision_config", "hidden_size", hidden, v.embedDim, "patch embedding width")
        try expect("vision_config", "num_hidden_layers", try int(vc, "num_hidden_layers", 12), v.depth, "encoder blocks")
        try expect("vision_config", "num_attention_heads", try int(vc, "num_attention_heads", 12), v.numHeads,
                   "width / relative-position table width")
        try expect("vision_config", "image_size", try int(vc, "image_size", 1024), v.imageSize, "position-embedding grid × patch")
        try expect("vision_config", "patch_size", try int(vc, "patch_size", 16), v.patchSize, "patch-embedding kernel")
        try expect("vision_config", "output_channels", try int(vc, "output_channels", 256), v.outChans, "neck width")
        try expect("vision_config", "num_channels", try int(vc, "num_channels", 3), 3, "patch-embedding input channels")
        var mlpDim = try int(vc, "mlp_dim", -1)
        if mlpDim == -1 {
            // transformers' default: hidden_size × mlp_ratio.
            let ratio = (vc["mlp_ratio"] as? NSNumber)?.doubleValue ?? 4
            guard ratio.isFinite, ratio > 0, ratio <= 1024 else { throw .config(path: path, reason: "vision_config.mlp_ratio \(ratio)") }
            mlpDim = Int(Double(hidden) * ratio)
        }
        try expect("vision_config", "mlp_dim", mlpDim, v.mlpDim, "MLP width")
        let globals = v.windowSize == 0 ? Array(0..<v.depth) : v.globalAttnIndexes
        if v.windowSize != 0 {
            try expect("vision_config", "window_size", try int(vc, "window_size", 14), v.windowSize, "windowed blocks' relative-position tables")
        }
        var declaredGlobals = [2, 5, 8, 11]
        if let g = vc["global_attn_indexes"] {
            guard let a = g as? [NSNumber] else { throw .config(path: path, reason: "'global_attn_indexes' is not a list of integers") }
            declaredGlobals = a.map(\.intValue)
        }
        guard declaredGlobals.sorted() == globals.sorted() else {
            throw .config(path: path, reason: "vision_config.global_attn_indexes is \(declaredGlobals) but the tensors' relative-position tables make blocks \(globals) global")
        }
        for (key, found) in [("qkv_bias", v.qkvBias), ("use_rel_pos", true), ("use_abs_pos", true)] {
            let declared = (vc[key] as? NSNumber)?.boolValue ?? true
            guard declared == found else {
                throw .config(path: path, reason: "vision_config.\(key) is \(declared) but the tensors say \(found)")
            }
        }
        let pc = try section("prompt_encoder_config")
        try expect("prompt_encoder_config", "hidden_size", try int(pc, "hidden_size", 256), c.prompt.embedDim, "prompt embeddings")
        try expect("prompt_encoder_config", "image_size", try int(pc, "image_size", 1024), c.prompt.inputImageSize, "encoder input")
        try expect("prompt_encoder_config", "mask_input_channels", try int(pc, "mask_input_channels", 16), c.prompt.maskInChans,
                   "mask downscaling")
        let md = try section("mask_decoder_config")
        let d = c.decoder
        try expect("mask_decoder_config", "hidden_size", try int(md, "hidden_size", 256), d.transformerDim, "decoder tokens")
        try expect("mask_decoder_config", "num_hidden_layers", try int(md, "num_hidden_layers", 2), d.depth, "two-way transformer layers")
        try expect("mask_decoder_config", "num_attention_heads", try int(md, "num_attention_heads", 8), d.numHeads, "the runtime's SAM decoder")
        try expect("mask_decoder_config", "mlp_dim", try int(md, "mlp_dim", 2048), d.mlpDim, "decoder MLP width")
        try expect("mask_decoder_config", "attention_downsample_rate", try int(md, "attention_downsample_rate", 2),
                   d.attentionDownsampleRate, "cross-attention width")
        try expect("mask_decoder_config", "num_multimask_outputs", try int(md, "num_multimask_outputs", 3), d.numMultimaskOutputs,
                   "mask tokens − 1")
        try expect("mask_decoder_config", "iou_head_depth", try int(md, "iou_head_depth", 3), d.iouHeadDepth, "IoU head layers")
        try expect("mask_decoder_config", "iou_head_hidden_dim", try int(md, "iou_head_hidden_dim", 256), d.iouHeadHiddenDim,
                   "IoU head width")
    }
}
