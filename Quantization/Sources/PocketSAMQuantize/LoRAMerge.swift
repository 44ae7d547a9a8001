/// What merging did to one weight.
public struct LoRAMergeReport: Sendable {
    /// The merged tensor, in the runtime's (official) names.
    public var tensor: String
    public var adapter: String
    public var rank: Int
    /// The multiplier of B·A: --lora-scale × α/r (α/√r with rsLoRA; 1 for SAMed).
    public var scale: Double
    /// ‖ΔW‖ / ‖W‖ (Frobenius, over the whole tensor).
    public var relativeChange: Double
    /// "lora", "lora q", "replaced" (modules_to_save or a trained bias).
    public var kind: String
}

/// W' = W + s·(α/r)·B·A for every adapter layer, into checkpoint tensors already in the official layout, before any
/// quantization (so int8 scales and calibration see the merged weights). Arithmetic in double, rounded once to fp32.
public enum LoRAMerge {
    public static func merge(_ adapters: [LoRAAdapter], into tensors: [SourceTensor], userScale: Double)
        throws(CheckpointError) -> (tensors: [SourceTensor], reports: [LoRAMergeReport]) {
        guard !adapters.isEmpty else { return (tensors, []) }
        var byName: [String: SourceTensor] = [:]
        for t in tensors { byName[t.name] = t }
        let depths = TransformersSAM.headDepths(tensors.map(\.name), transformers: false)
        var values: [String: [Float]] = [:]
        var reports: [LoRAMergeReport] = []
        func current(_ name: String) throws(CheckpointError) -> [Float] {
            if let v = values[name] { return v }
            return try byName[name]!.floats()
        }
        for adapter in adapters {
            let path = adapter.source
            func official(_ module: String) -> String? {
                adapter.transformersLayout ? TransformersSAM.officialName(module, headDepths: depths) : module
            }
            // The checkpoint's layers as the adapter's model names them: what PEFT's target_modules were matched against.
            var candidates: [String: String] = [:]
            for t in tensors where t.name.hasSuffix(".weight") && t.shape.count >= 2 {
                let m = String(t.name.dropLast(".weight".count))
                if let theirs = adapter.transformersLayout ? TransformersSAM.transformersName(m, headDepths: depths) : m {
                    candidates[theirs] = m
                }
            }
            var selected: Set<String>?
            if adapter.config.targets != nil {
                let s = Set(candidates.keys.filter { adapter.config.selects($0) })
                guard !s.isEmpty else {
                    throw .adapter(path: path, reason: "its target_modules\(adapter.config.layersToTransform.map { " (layers \($0))" } ?? "") select no layer of this checkpoint (an adapter for another model?)")
                }
                selected = s
            }
            for layer in adapter.layers {
                let aName = layer.a.name
                guard let module = official(layer.module), let base = byName[module + ".weight"] else {
                    throw .adapter(path: path, reason: "'\(aName)' adapts '\(layer.module)', which is not a layer of this checkpoint (an adapter for another architecture?)")
                }
                if let selected, !selected.contains(layer.module) {
                    throw .adapter(path: path, reason: "'\(aName)': its adapter_config's target_modules/layers_to_transform do not select '\(layer.module)'")
                }
                let r = layer.rank
                guard r >= 1 else { throw .adapter(path: path, reason: "'\(aName)' has rank 0 (shape \(layer.a.shape))") }
                try adapter.config.checkPatterns(layer.module, path: path)
                if layer.part.isEmpty, let cr = adapter.config.rank(for: layer.module), cr != r {
                    throw .adapter(path: path, reason: "'\(aName)' has rank \(r) but adapter_config gives r = \(cr)")
                }
                let w = base.shape
                // A linear's [out, in] or a conv's [out, in, kh, kw], every dimension non-zero.
                guard w.count >= 2, w.allSatisfy({ $0 > 0 }), base.elementCount <= 1 << 30 else {
                    throw .adapter(path: path, reason: "'\(aName)' adapts '\(module).weight' of shape \(w), which is not a linear or convolution weight")
                }
                let out = w[0], inner = base.elementCount / out
                guard r <= 1 << 14 else { throw .adapter(path: path, reason: "'\(aName)' has rank \(r) (at most 16384)") }
                // A: [r, in] for a linear, [r, in, kh, kw] for a conv (the base's kernel); B: [out, r] or [out, r, 1, 1].
                guard layer.a.shape.count == w.count, Array(layer.a.shape.dropFirst()) == Array(w.dropFirst()) else {
                    throw .adapter(path: path, reason: "'\(aName)' has shape \(layer.a.shape), which does not fit '\(module).weight' \(w) (needs [\(r)\(w.dropFirst().map { ", \($0)" }.joined())])")
                }
                let rowsOut = layer.b.shape.first ?? 0
                guard layer.b.shape.count == w.count, layer.b.shape.count >= 2, layer.b.shape[1] == r,
                      layer.b.shape.dropFirst(2).allSatisfy({ $0 == 1 }), rowsOut + layer.rowOffset <= out,
                      layer.part.isEmpty ? rowsOut == out : rowsOut == out / 3 else {
                    throw .adapter(path: path, reason: "'\(layer.b.name)' has shape \(layer.b.shape), which does not fit '\(module).weight' \(w) with rank \(r)")
                }
                let a = try layer.a.floats(), b = try layer.b.floats()
                guard a.allSatisfy(\.isFinite) else { throw .adapter(path: path, reason: "'\(aName)' contains NaN or infinity") }
                guard b.allSatisfy(\.isFinite) else { throw .adapter(path: path, reason: "'\(layer.b.name)' contains NaN or infinity") }
                let scale = userScale * adapter.config.scale(rank: r, alpha: adapter.config.alpha(for: layer.module))
                guard scale.isFinite else { throw .adapter(path: path, reason: "'\(aName)': scale \(scale)") }
                var wv = try current(module + ".weight")
                guard wv.allSatisfy(\.isFinite) else { throw .nonFinite(tensor: module + ".weight") }
                var baseNorm = 0.0, deltaNorm = 0.0
                for v in wv { baseNorm += Double(v) * Double(v) }
                var acc = [Double](repeating: 0, count: inner)
                for o in 0..<rowsOut {
                    for i in 0..<inner { acc[i] = 0 }
                    for k in 0..<r {
                        let bk = Double(b[o * r + k])
                        if bk == 0 { continue }
                        let row = k * inner
                        for i in 0..<inner { acc[i] += bk * Double(a[row + i]) }
                    }
                    let at = (o + layer.rowOffset) * inner
                    for i in 0..<inner {
                        let d = scale * acc[i]
                        deltaNorm += d * d
                        wv[at + i] = Float(Double(wv[at + i]) + d)
                    }
                }
                guard wv.allSatisfy(\.isFinite) else { throw .adapter(path: path, reason: "merging '\(aName)' overflows '\(module).weight'") }
                values[module + ".weight"] = wv
                if let bb = layer.bBias {
                    guard bb.shape == [rowsOut], byName[module + ".bias"]?.shape == [out] else {
                        throw .adapter(path: path, reason: "'\(bb.name)' does not fit a bias of '\(module)'")
                    }
                    var bv = try current(module + ".bias")
                    let add = try bb.floats()
                    guard add.allSatisfy(\.isFinite) else { throw .adapter(path: path, reason: "'\(bb.name)' contains NaN or infinity") }
                    for o in 0..<rowsOut { bv[o + layer.rowOffset] = Float(Double(bv[o + layer.rowOffset]) + scale * Double(add[o])) }
                    values[module + ".bias"] = bv
                }
                reports.append(LoRAMergeReport(tensor: module + ".weight", adapter: path, rank: r, scale: scale,
                                               relativeChange: (deltaNorm / max(baseNorm, .leastNonzeroMagnitude)).squareRoot(),
                                               kind: layer.part.isEmpty ? "lora" : "lora \(layer.part)"))
            }
            if let selected {
                let adapted = Set(adapter.layers.map(\.module))
                if let missing = selected.sorted().first(where: { !adapted.contains($0) }) {
                    throw .adapter(path: path, reason: "its adapter_config selects '\(missing)' but it holds no lora_A/lora_B for it (a truncated adapter?)")
                }
            }
            for t in adapter.replacements {
                guard let name = official(t.name), let base = byName[name] else {
                    throw .adapter(path: path, reason: "'\(t.name)' replaces a tensor this checkpoint does not have")
                }
                guard base.shape == t.shape else {
                    throw .adapter(path: path, reason: "'\(t.name)' has shape \(t.shape), the checkpoint's '\(name)' \(base.shape)")
                }
                let v = try t.floats()
                guard v.allSatisfy(\.isFinite) else { throw .adapter(path: path, reason: "'\(t.name)' contains NaN or infinity") }
                let old = try current(name)
                var num = 0.0, den = 0.0
                for (x, y) in zip(v, old) { num += Double(x - y) * Double(x - y); den += Double(y) * Double(y) }
                values[name] = v
                reports.append(LoRAMergeReport(tensor: name, adapter: path, rank: 0, scale: 1,
                                               relativeChange: (num / max(den, .leastNonzeroMagnitude)).squareRoot(), kind: "replaced"))
            }
        }
        let merged = tensors.map { t in values[t.name].map { SourceTensor(name: t.name, shape: t.shape, values: $0) } ?? t }
        return (merged, reports)
    }
}
