/// LoRA to merge while converting.
public struct LoRAOptions: Sendable {
    /// PEFT adapter directories or weight files, merged in order.
    public var adapters: [String] = []
    /// `--lora-scale`: multiplies every adapter's α/r (and SAMed's unscaled updates).
    public var scale: Double = 1
    /// α of LoRA layers that come without an adapter_config.json (PEFT layers inline in a checkpoint, a bare weights
    /// file); nil refuses such layers.
    public var alpha: Double?
    /// rsLoRA (α/√r) for those layers.
    public var rsLoRA = false

    public init(adapters: [String] = [], scale: Double = 1, alpha: Double? = nil, rsLoRA: Bool = false) {
        self.adapters = adapters
        self.scale = scale
        self.alpha = alpha
        self.rsLoRA = rsLoRA
    }
}

/// A checkpoint made ready for `Converter`: read (one file or shards), wrapper prefixes stripped, LoRA layers held inline
/// taken out, renamed into the official layout, every adapter merged, `config.json` checked against the tensors.
public struct PreparedCheckpoint: @unchecked Sendable {
    public var set: CheckpointSet
    /// The weights in the official layout, merged.
    public var tensors: [SourceTensor]
    /// `segment_anything` (the official layout, also MobileSAM/LiteMedSAM/HQ-SAM) or `transformers`.
    public var layout: String
    public var adapters: [LoRAAdapter]
    public var merges: [LoRAMergeReport]
    /// What was checked or assumed, for the user.
    public var notes: [String]
    /// `LoRAOptions.scale`.
    public var loraScale: Double

    public static func open(_ path: String, lora: LoRAOptions = LoRAOptions()) throws(CheckpointError) -> PreparedCheckpoint {
        let set = try CheckpointSet.open(path)
        var tensors = set.tensors
        for prefix in ["module.", "base_model.model."] where !tensors.isEmpty && tensors.allSatisfy({ $0.name.hasPrefix(prefix) }) {
            tensors = tensors.map { $0.renamed(String($0.name.dropFirst(prefix.count))) }
        }
        let inline = try LoRAAdapter.splitInline(tensors, path: path, peftAlpha: lora.alpha, rsLoRA: lora.rsLoRA)
        tensors = inline.weights
        var notes: [String] = []
        var seen: Set<String> = []
        for t in tensors where !seen.insert(t.name).inserted {
            throw .notAStateDict("'\(t.name)' appears twice once LoRA wrappers are unwrapped (base_layer, original_module, SAMed's qkv.qkv)")
        }
        let transformers = TransformersSAM.isTransformersLayout(tensors.map(\.name))
        if transformers { tensors = try TransformersSAM.toOfficial(tensors) }
        var adapters = inline.adapters
        for a in lora.adapters {
            adapters.append(try LoRAAdapter.load(path: a, bareAlpha: lora.alpha, bareRSLoRA: lora.rsLoRA))
        }
        let merged = try LoRAMerge.merge(adapters, into: tensors, userScale: lora.scale)
        if lora.alpha != nil || lora.rsLoRA, !adapters.contains(where: { $0.config.targets == nil && $0.config.fixedScale == nil }) {
            notes.append("--lora-alpha/--rslora unused: every adapter has its adapter_config.json (or is SAMed's, unscaled)")
        }
        tensors = merged.tensors
        if let json = set.configJSON, let configPath = set.configPath {
            if transformers {
                var shapes: [String: [Int]] = [:]
                for t in tensors { shapes[t.name] = t.shape }
                let config = try ArchitectureDetector.detect(shapes)
                try TransformersSAM.check(config: json, path: configPath, against: config)
                notes.append("\(configPath) agrees with the tensors")
            } else {
                notes.append("\(configPath) ignored: the checkpoint is in the official layout, not transformers'")
            }
        } else if transformers {
            notes.append("no config.json beside the weights: the architecture comes from the tensors alone")
        }
        return PreparedCheckpoint(set: set, tensors: tensors, layout: transformers ? "transformers" : "segment_anything",
                                  adapters: adapters, merges: merged.reports, notes: notes, loraScale: lora.scale)
    }

    /// What the `.psam` records of where its weights came from.
    public var sourceMetadata: [(String, String)] {
        var m = [("psam.source_layout", layout)]
        if !adapters.isEmpty {
            let parts = adapters.map { a -> String in
                let name = a.source.split(separator: "/").last.map(String.init) ?? a.source
                let layers = merges.filter { $0.adapter == a.source }
                let ranks = Set(layers.filter { $0.rank > 0 }.map(\.rank)).sorted().map(String.init).joined(separator: "/")
                var s = "\(name): \(layers.filter { $0.rank > 0 }.count) layers merged"
                if !ranks.isEmpty { s += ", rank \(ranks)" }
                if let f = a.config.fixedScale { s += ", unscaled (×\(f))" } else {
                    s += ", alpha \(a.config.alpha)" + (a.config.useRSLoRA ? " (rsLoRA)" : "")
                }
                let replaced = layers.filter { $0.rank == 0 }.count
                if replaced > 0 { s += ", \(replaced) tensors replaced" }
                if let sha = a.sha256 { s += ", sha256 \(sha)" }
                return s
            }
            m.append(("psam.lora", "scale \(loraScale) × " + parts.joined(separator: "; ")))
        }
        return m
    }
}
