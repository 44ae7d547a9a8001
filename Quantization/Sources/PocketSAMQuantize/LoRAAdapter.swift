import Foundation
import PocketSAMFormat

/// How an adapter was set up: PEFT's `adapter_config.json` (a `LoraConfig`), or, for LoRA layers without one (inline
/// in a checkpoint, a bare weights file), what the command line says.
public struct LoRAConfig: Sendable {
    public enum Targets: Sendable, Equatable {
        /// Module names or name suffixes (after a dot), as PEFT matches a list.
        case names([String])
        /// A regular expression the whole module name must match (PEFT's string form).
        case regex(String)
    }
    /// The default rank (each layer's rank is its `lora_A`'s row count; they must agree).
    public var r: Int?
    public var alpha: Double
    public var useRSLoRA = false
    /// nil: the layers present are the layers adapted (no config to check them against).
    public var targets: Targets?
    public var exclude: Targets?
    public var layersToTransform: [Int]?
    public var layersPattern: [String]?
    /// PEFT's `modules_to_save`: modules trained whole (saved as plain tensors), never adapted.
    public var modulesToSave: [String] = []
    /// `auto_mapping.base_model_class`: "SamModel" (transformers) or "Sam" (segment_anything), when recorded.
    public var baseModelClass: String?
    public var rankPattern: [(String, Int)] = []
    public var alphaPattern: [(String, Double)] = []
    /// A scale that does not depend on rank and α (SAMed adds B·A unscaled).
    public var fixedScale: Double?

    public init(alpha: Double, useRSLoRA: Bool = false) {
        self.alpha = alpha
        self.useRSLoRA = useRSLoRA
    }

    /// PEFT's scale of B·A for a layer of rank r with α: α/r, or α/√r with rsLoRA.
    public func scale(rank: Int, alpha a: Double) -> Double {
        if let fixedScale { return fixedScale }
        return useRSLoRA ? a / Double(rank).squareRoot() : a / Double(rank)
    }

    /// Reads `adapter_config.json`; refuses what a plain LoRA merge would get wrong.
    public static func parse(_ json: [String: Any], path: String) throws(CheckpointError) -> LoRAConfig {
        func fail(_ why: String) -> CheckpointError { .adapter(path: path, reason: why) }
        let type = (json["peft_type"] as? String) ?? "LORA"
        guard type.uppercased() == "LORA" else {
            throw fail("peft_type '\(type)' is not supported (only LORA adapters are merged)")
        }
        if (json["use_dora"] as? Bool) == true {
            throw fail("use_dora: DoRA adapters (a per-column magnitude on top of LoRA) are not supported")
        }
        if (json["fan_in_fan_out"] as? Bool) == true {
            throw fail("fan_in_fan_out: true is for GPT-2-style Conv1D layers, which SAM has none of")
        }
        for key in ["alora_invocation_tokens", "velora_config", "monteclora_config", "arrow_config", "kasa_config"]
            where json[key] != nil && !(json[key] is NSNull) {
            throw fail("\(key): this LoRA variant is not supported (it is not a plain low-rank update that merges into W)")
        }
        for key in ["use_bdlora", "use_qalora"] where (json[key] as? Bool) == true {
            throw fail("\(key): this LoRA variant is not supported")
        }
        if let init_ = json["init_lora_weights"] as? String, !["gaussian", "eva", "orthogonal"].contains(init_) {
            throw fail("init_lora_weights '\(init_)' changes the base weights when the adapter is created, so merging onto the original checkpoint would be wrong; save the adapter with PEFT's path_initial_model_for_weight_conversion to get a plain LoRA")
        }
        if let tp = json["target_parameters"] as? [Any], !tp.isEmpty {
            throw fail("target_parameters (LoRA on raw parameters) is not supported")
        }
        guard let rN = json["r"] as? NSNumber, Double(rN.intValue) == rN.doubleValue else { throw fail("no integer 'r'") }
        guard rN.intValue > 0 else { throw fail("r = \(rN.intValue): a LoRA rank must be at least 1") }
        guard let aN = json["lora_alpha"] as? NSNumber, aN.doubleValue.isFinite else { throw fail("no finite 'lora_alpha'") }
        var c = LoRAConfig(alpha: aN.doubleValue, useRSLoRA: (json["use_rslora"] as? Bool) ?? false)
        c.r = rN.intValue
        func targets(_ key: String) throws(CheckpointError) -> Targets? {
            switch json[key] {
            case nil, is NSNull: return nil
            case let s as String:
                if s == "all-linear" { return .regex(".*") }
                guard (try? NSRegularExpression(pattern: s)) != nil else { throw fail("\(key) '\(s)' is not a valid regular expression") }
                return .regex(s)
            case let a as [Any]:
                let names = a.compactMap { $0 as? String }
                guard names.count == a.count else { throw fail("\(key) holds something other than names") }
                return .names(names)
            default: throw fail("\(key) is neither a name list nor a regular expression")
            }
        }
        c.targets = try targets("target_modules")
        guard c.targets != nil else { throw fail("no target_modules") }
        c.exclude = try targets("exclude_modules")
        switch json["modules_to_save"] {
        case nil, is NSNull: break
        case let a as [String]: c.modulesToSave = a
        default: throw fail("modules_to_save is not a list of names")
        }
        c.baseModelClass = (json["auto_mapping"] as? [String: Any])?["base_model_class"] as? String
        switch json["layers_to_transform"] {
        case nil, is NSNull: break
        case let n as NSNumber: c.layersToTransform = [n.intValue]
        case let a as [NSNumber]: c.layersToTransform = a.isEmpty ? nil : a.map(\.intValue)
        default: throw fail("layers_to_transform is neither an integer nor a list of integers")
        }
        switch json["layers_pattern"] {
        case nil, is NSNull: break
        case let s as String: c.layersPattern = s.isEmpty ? nil : [s]
        case let a as [String]: c.layersPattern = a.isEmpty ? nil : a
        default: throw fail("layers_pattern is neither a name nor a list of names")
        }
        for (key, v) in (json["rank_pattern"] as? [String: Any]) ?? [:] {
            guard let n = v as? NSNumber, n.intValue > 0 else { throw fail("rank_pattern['\(key)'] is not a positive rank") }
            c.rankPattern.append((key, n.intValue))
        }
        for (key, v) in (json["alpha_pattern"] as? [String: Any]) ?? [:] {
            guard let n = v as? NSNumber, n.doubleValue.isFinite else { throw fail("alpha_pattern['\(key)'] is not a number") }
            c.alphaPattern.append((key, n.doubleValue))
        }
        // PEFT tries the pattern keys in the JSON's order; dictionaries lose it, so the longest (most specific) first.
        c.rankPattern.sort { ($0.0.count, $0.0) > ($1.0.count, $1.0) }
        c.alphaPattern.sort { ($0.0.count, $0.0) > ($1.0.count, $1.0) }
        return c
    }

    /// Refuses a module that several pattern keys match with different values (PEFT takes the first in the JSON's
    /// order, which is lost here).
    public func checkPatterns(_ key: String, path: String) throws(CheckpointError) {
        func values<T: Equatable>(_ p: [(String, T)]) -> [T] {
            p.filter { Self.regexMatch("^(.*\\.)?(\($0.0))$", key, whole: false) }.map(\.1)
        }
        for (name, v) in [("rank_pattern", values(rankPattern).map(Double.init)), ("alpha_pattern", values(alphaPattern))]
            where Set(v).count > 1 {
            throw .adapter(path: path, reason: "'\(key)' is matched by several \(name) keys with different values \(v); make them exclusive")
        }
    }

    // MARK: PEFT's module selection (peft.tuners.tuners_utils.check_target_module_exists)

    static func regexMatch(_ pattern: String, _ s: String, whole: Bool) -> Bool {
        guard let re = try? NSRegularExpression(pattern: whole ? "^(?:\(pattern))$" : pattern) else { return false }
        return re.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil
    }

    static func matches(_ t: Targets, _ key: String) -> Bool {
        switch t {
        case let .regex(p): return regexMatch(p, key, whole: true)
        case let .names(n): return n.contains(key) || n.contains { key.hasSuffix("." + $0) }
        }
    }

    /// Whether PEFT would put an adapter on module `key` (named as in the model the adapter was made for).
    public func selects(_ key: String) -> Bool {
        guard let targets else { return true }
        if let exclude, Self.matches(exclude, key) { return false }
        if modulesToSave.contains(where: { Self.regexMatch("^(.*\\.)?\($0)(\\..*)?$", key, whole: false) }) { return false }
        guard Self.matches(targets, key) else { return false }
        guard case let .names(names) = targets, let layers = layersToTransform, !names.contains(key) else { return true }
        var index: Int?
        let patterns = layersPattern.map { $0.map { "(?:^|.*?\\.)\($0)\\.(\\d+)\\." } }
            ?? [".*?\\.[^.]*\\.(\\d+)\\."]
        for p in patterns {
            guard let re = try? NSRegularExpression(pattern: "^" + p),
                  let m = re.firstMatch(in: key, range: NSRange(key.startIndex..., in: key)),
                  let r = Range(m.range(at: 1), in: key) else { continue }
            index = Int(key[r])
            break
        }
        return index.map { layers.contains($0) } ?? false
    }

    /// PEFT's `get_pattern_key`: the first pattern key that matches the end of the module name.
    static func patternValue<T>(_ pattern: [(String, T)], _ key: String) -> T? {
        pattern.first { regexMatch("^(.*\\.)?(\($0.0))$", key, whole: false) }?.1
    }

    public func rank(for key: String) -> Int? { Self.patternValue(rankPattern, key) ?? r }
    public func alpha(for key: String) -> Double { Self.patternValue(alphaPattern, key) ?? alpha }
}

/// One low-rank update: W[rows] += scale · B·A, with A [r, in(, kh, kw)] and B [out', r(, 1, 1)].
public struct LoRALayer: Sendable {
    /// The adapted module, named as in the model the adapter was made for (no `base_model.model.`, no `.weight`).
    public var module: String
    public var a: SourceTensor
    public var b: SourceTensor
    /// lora_bias: B's bias, added (scaled) to the module's bias.
    public var bBias: SourceTensor?
    /// First output row of W the update covers (SAMed's q and v parts of a fused qkv); 0 for PEFT.
    public var rowOffset = 0
    /// The part of W it covers, for messages ("q", "v"); empty for PEFT.
    public var part = ""
    public var rank: Int { a.shape.first ?? 0 }
}

/// An adapter to merge: its layers, the tensors it replaces outright (PEFT's `modules_to_save`, trained biases), and
/// the settings its scale comes from.
public struct LoRAAdapter: @unchecked Sendable {
    public var source: String
    public var config: LoRAConfig
    public var layers: [LoRALayer]
    public var replacements: [SourceTensor]
    /// Whether its names are transformers' (`vision_encoder.…`) rather than the official layout's.
    public var transformersLayout: Bool
    /// SHA-256 of its weights file; nil for layers inline in the checkpoint.
    public var sha256: String?
    /// The weights file's mapping (keeps the tensors' storage alive).
    var file: Checkpoint?

    /// Reads an adapter: a PEFT directory (`adapter_config.json` + `adapter_model.safetensors` or `.bin`), or a weights
    /// file (its config from an `adapter_config.json` beside it; without one, `bareAlpha` must be given).
    public static func load(path: String, bareAlpha: Double?, bareRSLoRA: Bool) throws(CheckpointError) -> LoRAAdapter {
        guard let (found, dir) = CheckpointSet.locate(path, entries: ["adapter_model.safetensors", "adapter_model.bin"]) else {
            throw .adapter(path: path, reason: "no such file or directory")
        }
        guard let weights = found else {
            throw .adapter(path: path, reason: "a directory without adapter_model.safetensors or adapter_model.bin")
        }
        let configPath = dir + "/adapter_config.json"
        let config: LoRAConfig
        if FileManager.default.fileExists(atPath: configPath) {
            guard let data = FileManager.default.contents(atPath: configPath),
                  let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw .adapter(path: configPath, reason: "not a JSON object")
            }
            config = try LoRAConfig.parse(json, path: configPath)
        } else if let a = bareAlpha {
            config = LoRAConfig(alpha: a, useRSLoRA: bareRSLoRA)
        } else {
            throw .adapter(path: path, reason: "no adapter_config.json beside it, so its lora_alpha is unknown: give --lora-alpha")
        }
        let file: Checkpoint
        do {
            file = try Checkpoint(path: weights)
        } catch {
            throw .adapter(path: weights, reason: error.description)
        }
        let parsed = try parse(file.tensors, path: weights)
        guard !parsed.layers.isEmpty || !parsed.replacements.isEmpty else {
            throw .adapter(path: weights, reason: "holds no lora_A/lora_B weights")
        }
        var sha = SHA256()
        sha.update(file.file.bytes)
        let names = parsed.layers.map(\.module) + parsed.replacements.map(\.name)
        let layout = config.baseModelClass.map { $0 == "SamModel" } ?? TransformersSAM.isTransformersLayout(names)
        return LoRAAdapter(source: path, config: config, layers: parsed.layers, replacements: parsed.replacements,
                           transformersLayout: layout, sha256: sha.finalize(), file: file)
    }

    /// PEFT's saved names: `[base_model.model.]M.lora_A[.adapter].weight`, `M.lora_B[.adapter].weight` (and `.bias` with
    /// lora_bias); `M.modules_to_save[.adapter].P` or plain tensors replace the base tensor.
    static func parse(_ tensors: [SourceTensor], path: String) throws(CheckpointError) -> (layers: [LoRALayer], replacements: [SourceTensor]) {
        var a: [String: SourceTensor] = [:], b: [String: SourceTensor] = [:], bBias: [String: SourceTensor] = [:]
        var replacements: [SourceTensor] = []
        var adapterNames: Set<String> = []
        for t in tensors {
            let name = stripPrefixes(t.name)
            let s = name.split(separator: ".").map(String.init)
            if let i = s.firstIndex(where: { $0.hasPrefix("lora_") }) {
                let kind = s[i]
                guard kind == "lora_A" || kind == "lora_B" else {
                    if kind == "lora_magnitude_vector" { throw .adapter(path: path, reason: "'\(t.name)': DoRA adapters are not supported") }
                    if kind.hasPrefix("lora_embedding") { throw .adapter(path: path, reason: "'\(t.name)': LoRA on embeddings is not supported") }
                    throw .adapter(path: path, reason: "'\(t.name)': unknown LoRA tensor '\(kind)'")
                }
                let tail = Array(s[(i + 1)...])
                guard i > 0, tail.count == 1 || tail.count == 2, let last = tail.last, last == "weight" || (last == "bias" && kind == "lora_B") else {
                    throw .adapter(path: path, reason: "'\(t.name)' is not named M.\(kind)[.adapter].weight")
                }
                adapterNames.insert(tail.count == 2 ? tail[0] : "(unnamed)")
                let module = s[..<i].joined(separator: ".")
                guard adapterNames.count <= 1 else { break }
                if last == "bias" {
                    bBias[module] = t
                } else {
                    guard (kind == "lora_A" ? a : b)[module] == nil else { throw .adapter(path: path, reason: "'\(t.name)' appears twice") }
                    if kind == "lora_A" { a[module] = t } else { b[module] = t }
                }
            } else {
                var parts = s
                parts.removeAll { $0 == "base_layer" }  // a trained bias of an adapted layer (bias="lora_only"/"all")
                if let i = parts.firstIndex(of: "modules_to_save") {
                    parts.remove(at: i)
                    if i < parts.count - 1 { adapterNames.insert(parts[i]); parts.remove(at: i) }
                }
                if parts.contains("original_module") { continue }
                replacements.append(t.renamed(parts.joined(separator: ".")))
            }
        }
        guard adapterNames.count <= 1 else {
            throw .adapter(path: path, reason: "holds the adapters \(adapterNames.sorted().map { "'\($0)'" }.joined(separator: ", ")); merge one at a time")
        }
        var layers: [LoRALayer] = []
        for module in Set(a.keys).union(b.keys).sorted() {
            guard let ta = a[module] else { throw .adapter(path: path, reason: "'\(module)' has lora_B but no lora_A") }
            guard let tb = b[module] else { throw .adapter(path: path, reason: "'\(module)' has lora_A but no lora_B") }
            layers.append(LoRALayer(module: module, a: ta, b: tb, bBias: bBias[module]))
        }
        if let orphan = bBias.keys.sorted().first(where: { a[$0] == nil }) {
            throw .adapter(path: path, reason: "'\(orphan)' has a lora_B bias but no lora_A/lora_B")
        }
        return (layers, replacements)
    }

    static func stripPrefixes(_ name: String) -> String {
        var n = Substring(name)
        for p in ["module.", "base_model.model."] where n.hasPrefix(p) { n = n.dropFirst(p.count) }
        return String(n)
    }

    // MARK: LoRA layers inline in a checkpoint

    /// Splits a checkpoint that holds LoRA layers beside its weights into the plain weights and the layers:
    /// PEFT's (`M.base_layer.weight` with `M.lora_A.<adapter>.weight`, `M.lora_B.<adapter>.weight`; wrapped modules
    /// `M.original_module.*` dropped for `M.modules_to_save.<adapter>.*`) and SAMed's fused-qkv wrapper
    /// (`M.qkv.weight`/`.bias` the original linear, `M.linear_a_q`, `M.linear_b_q`, `M.linear_a_v`, `M.linear_b_v`
    /// updating its q and v rows, unscaled). `peftAlpha` nil with PEFT layers present: refused, the α is not in the file.
    public static func splitInline(_ tensors: [SourceTensor], path: String, peftAlpha: Double?, rsLoRA: Bool)
        throws(CheckpointError) -> (weights: [SourceTensor], adapters: [LoRAAdapter]) {
        let names = tensors.map(\.name)
        let hasPEFT = names.contains { $0.contains(".lora_A.") || $0.contains(".lora_B.") || $0.contains(".base_layer.") }
        let hasSAMed = names.contains { $0.hasSuffix(".linear_a_q.weight") || $0.hasSuffix(".linear_a_v.weight") }
        guard hasPEFT || hasSAMed else { return (tensors, []) }
        var weights: [SourceTensor] = []
        var adapters: [LoRAAdapter] = []
        if hasPEFT {
            var loraTensors: [SourceTensor] = []
            var rest: [SourceTensor] = []
            for t in tensors {
                let s = t.name.split(separator: ".")
                if s.contains(where: { $0.hasPrefix("lora_") }) || s.contains("modules_to_save") { loraTensors.append(t) } else { rest.append(t) }
            }
            let parsed = try parse(loraTensors, path: path)
            guard let alpha = peftAlpha ?? (parsed.layers.isEmpty ? 1 : nil) else {
                let ranks = Set(parsed.layers.map(\.rank)).sorted()
                throw .adapter(path: path, reason: "holds \(parsed.layers.count) PEFT LoRA layers inline (rank \(ranks.map(String.init).joined(separator: "/"))) but not their lora_alpha: give --lora-alpha (and --rslora if it was trained with use_rslora)")
            }
            for t in rest {
                // The base weights: PEFT's wrappers' inner names dropped (an adapted layer's base_layer, a trained
                // module's original_module, which its modules_to_save copy then replaces).
                var s = t.name.split(separator: ".").map(String.init)
                s.removeAll { $0 == "base_layer" || $0 == "original_module" }
                weights.append(t.renamed(s.joined(separator: ".")))
            }
            adapters.append(LoRAAdapter(source: path + " (PEFT layers inline)", config: LoRAConfig(alpha: alpha, useRSLoRA: rsLoRA),
                                        layers: parsed.layers, replacements: parsed.replacements,
                                        transformersLayout: TransformersSAM.isTransformersLayout(weights.map { stripPrefixes($0.name) }),
                                        sha256: nil, file: nil))
        } else {
            weights = tensors
        }
        if hasSAMed {
            var byName: [String: SourceTensor] = [:]
            for t in weights { byName[t.name] = t }
            var layers: [LoRALayer] = []
            var out: [SourceTensor] = []
            let parts = ["q", "v"]
            for t in weights {
                let n = t.name
                if let p = parts.first(where: { n.hasSuffix(".linear_a_\($0).weight") || n.hasSuffix(".linear_b_\($0).weight") }) {
                    guard n.hasSuffix(".linear_a_\(p).weight") else { continue }
                    let wrapper = String(n.dropLast(".linear_a_\(p).weight".count))
                    guard let tb = byName[wrapper + ".linear_b_\(p).weight"] else {
                        throw .adapter(path: path, reason: "'\(n)' has no '\(wrapper).linear_b_\(p).weight' beside it")
                    }
                    guard let base = byName[wrapper + ".qkv.weight"], base.shape.count == 2, base.shape[0] % 3 == 0 else {
                        throw .adapter(path: path, reason: "'\(n)': SAMed's wrapper keeps the fused linear as '\(wrapper).qkv.weight' [3·dim, dim], which is missing")
                    }
                    let dim = base.shape[0] / 3
                    layers.append(LoRALayer(module: wrapper, a: t, b: tb, bBias: nil, rowOffset: p == "q" ? 0 : 2 * dim, part: p))
                    continue
                }
                if n.hasSuffix(".qkv.qkv.weight") || n.hasSuffix(".qkv.qkv.bias") {
                    // SAMed's wrapper replaced attn.qkv by a module holding the original linear as .qkv.
                    out.append(t.renamed(String(n.dropLast(n.hasSuffix("weight") ? ".qkv.weight".count : ".qkv.bias".count))
                                         + (n.hasSuffix("weight") ? ".weight" : ".bias")))
                    continue
                }
                out.append(t)
            }
            for t in weights where t.name.hasSuffix(".linear_b_q.weight") || t.name.hasSuffix(".linear_b_v.weight") {
                let part = t.name.hasSuffix("_q.weight") ? "q" : "v"
                guard layers.contains(where: { t.name == $0.module + ".linear_b_\(part).weight" }) else {
                    throw .adapter(path: path, reason: "'\(t.name)' has no linear_a_\(part) beside it")
                }
            }
            weights = out
            var unscaled = LoRAConfig(alpha: 1)
            unscaled.fixedScale = 1
            adapters.append(LoRAAdapter(source: path + " (SAMed LoRA inline)", config: unscaled,
                                        layers: layers.sorted { ($0.module, $0.rowOffset) < ($1.module, $1.rowOffset) },
                                        replacements: [], transformersLayout: TransformersSAM.isTransformersLayout(out.map(\.name)),
                                        sha256: nil, file: nil))
        }
        return (weights, adapters)
    }
}
