import Foundation
import PocketSAMFormat
import PocketSAMQuantize
import XCTest

/// LoRA merged at conversion, against PEFT's own `merge_and_unload()` weights (Tests/Reference/make_hf_fixtures.py):
/// adapters on the transformers and the official layout (rsLoRA and layers_to_transform among them, one on a conv),
/// PEFT layers inline in a checkpoint and SAMed's qkv wrapper; and every adapter we refuse.
final class LoRAMergeTests: XCTestCase {
    static func path(_ name: String) -> String { TransformersLayoutTests.path(name) }

    /// The merged tensors of a prepared checkpoint against a file of expected weights (transformers or official names):
    /// max |ours − PEFT| ≤ 1e-6 × max |PEFT| per tensor; every other tensor unchanged from `base`.
    func checkMerge(_ checkpoint: String, lora: LoRAOptions, expected file: String, base: String, count: Int) throws {
        let p = try PreparedCheckpoint.open(Self.path(checkpoint), lora: lora)
        let ours = Dictionary(uniqueKeysWithValues: p.tensors.map { ($0.name, $0) })
        let ref = try Checkpoint(path: Self.path(file))
        let depths = TransformersSAM.headDepths(p.tensors.map(\.name), transformers: false)
        var changed: Set<String> = []
        var worst = 0.0
        for t in ref.tensors {
            let name = TransformersSAM.officialName(t.name, headDepths: depths) ?? t.name
            let mine = try XCTUnwrap(ours[name], "\(checkpoint): no \(name)").floats()
            let want = try t.floats()
            let scale = Double(want.map(abs).max() ?? 1)
            let d = Double(zip(mine, want).map { abs($0 - $1) }.max() ?? .infinity)
            worst = max(worst, d / scale)
            XCTAssertLessThanOrEqual(d, 1e-6 * scale, "\(checkpoint) + \(lora.adapters): \(name)")
            changed.insert(name)
        }
        XCTAssertEqual(ref.tensors.count, count, file)
        XCTAssertEqual(Set(p.merges.map(\.tensor)), changed, "\(checkpoint): the merged tensors are PEFT's")
        XCTAssertTrue(p.merges.allSatisfy { $0.relativeChange > 1e-3 }, "\(p.merges.map(\.relativeChange))")
        let plain = Dictionary(uniqueKeysWithValues: try PreparedCheckpoint.open(Self.path(base)).tensors.map { ($0.name, $0) })
        for t in p.tensors where !changed.contains(t.name) {
            XCTAssertEqual(try t.floats(), try XCTUnwrap(plain[t.name]).floats(), "\(checkpoint): \(t.name) changed")
        }
        print("LoRA \(checkpoint) + \(lora.adapters): \(p.merges.count) tensors merged, worst relative difference to PEFT \(worst)")
    }

    func testMergesEqualPEFT() throws {
        try checkMerge("sam_tiny", lora: LoRAOptions(adapters: [Self.path("lora_hf")]), expected: "lora_hf_merged.safetensors",
                       base: "sam_tiny", count: 16)
        try checkMerge("sam_tiny_sharded", lora: LoRAOptions(adapters: [Self.path("lora_hf_rslora")]),
                       expected: "lora_hf_rslora_merged.safetensors", base: "sam_tiny", count: 2)
        try checkMerge("sam_tiny_official.pth", lora: LoRAOptions(adapters: [Self.path("lora_official")]),
                       expected: "lora_official_merged.safetensors", base: "sam_tiny", count: 9)
        // An adapter made on the transformers model merges into the official layout of the same weights.
        try checkMerge("sam_tiny_official.pth", lora: LoRAOptions(adapters: [Self.path("lora_hf/adapter_model.safetensors")]),
                       expected: "lora_hf_merged.safetensors", base: "sam_tiny", count: 16)
        try checkMerge("sam_tiny_peft_inline.pth", lora: LoRAOptions(alpha: 8), expected: "lora_hf_merged.safetensors",
                       base: "sam_tiny", count: 16)
        try checkMerge("sam_tiny_samed_inline.pth", lora: LoRAOptions(), expected: "samed_merged.safetensors",
                       base: "sam_tiny", count: 4)
    }

    /// Which modules PEFT's target_modules / layers_to_transform select, as the fixture recorded them.
    func testTargetSelectionIsPEFTs() throws {
        let adapters = try XCTUnwrap(try TransformersLayoutTests.manifest()["adapters"] as? [String: Any])
        for name in ["lora_hf", "lora_hf_rslora", "lora_official"] {
            let a = try XCTUnwrap(adapters[name] as? [String: Any])
            let want = Set(try XCTUnwrap(a["adapted_modules"] as? [String]))
            let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.path(name + "/adapter_config.json")))) as? [String: Any])
            let config = try LoRAConfig.parse(json, path: name)
            let checkpoint = name == "lora_official" ? "sam_tiny_official.pth" : "sam_tiny"
            let names = try CheckpointSet.open(Self.path(checkpoint)).tensors.filter { $0.shape.count >= 2 && $0.name.hasSuffix(".weight") }
                .map { String($0.name.dropLast(7)) }
            XCTAssertEqual(Set(names.filter(config.selects)), want, name)
        }
        var c = LoRAConfig(alpha: 8)
        c.targets = .regex(#"vision_encoder\.layers\.[01]\.attn\.qkv"#)
        XCTAssertTrue(c.selects("vision_encoder.layers.1.attn.qkv"))
        XCTAssertFalse(c.selects("vision_encoder.layers.2.attn.qkv"))
        c.targets = .names(["lin1"])
        c.layersToTransform = [1]
        XCTAssertTrue(c.selects("mask_decoder.transformer.layers.1.mlp.lin1"))
        XCTAssertFalse(c.selects("vision_encoder.layers.0.mlp.lin1"))
        c.layersPattern = ["blocks"]
        XCTAssertFalse(c.selects("vision_encoder.layers.1.mlp.lin1"))
        XCTAssertTrue(c.selects("image_encoder.blocks.1.mlp.lin1"))
        var saved = c
        saved.modulesToSave = ["blocks.1"]  // PEFT never adapts inside a module trained whole
        XCTAssertFalse(saved.selects("image_encoder.blocks.1.mlp.lin1"))
        c.exclude = .names(["mlp.lin1"])
        XCTAssertFalse(c.selects("image_encoder.blocks.1.mlp.lin1"))
        c.rankPattern = [("lin1", 8)]
        c.r = 4
        XCTAssertEqual(c.rank(for: "image_encoder.blocks.1.mlp.lin1"), 8)
        XCTAssertEqual(c.rank(for: "image_encoder.blocks.1.mlp.lin2"), 4)
    }

    /// --lora-scale multiplies ΔW: 0 gives the base weights, 2 twice the update.
    func testLoRAScale() throws {
        let base = try PreparedCheckpoint.open(Self.path("sam_tiny"))
        let b = Dictionary(uniqueKeysWithValues: base.tensors.map { ($0.name, $0) })
        let one = try PreparedCheckpoint.open(Self.path("sam_tiny"), lora: LoRAOptions(adapters: [Self.path("lora_hf")]))
        let two = try PreparedCheckpoint.open(Self.path("sam_tiny"), lora: LoRAOptions(adapters: [Self.path("lora_hf")], scale: 2))
        let zero = try PreparedCheckpoint.open(Self.path("sam_tiny"), lora: LoRAOptions(adapters: [Self.path("lora_hf")], scale: 0))
        for (m1, m2) in zip(one.merges, two.merges) {
            XCTAssertEqual(m2.scale, 2 * m1.scale)
            XCTAssertEqual(m2.relativeChange, 2 * m1.relativeChange, accuracy: 1e-9 * m1.relativeChange)
        }
        XCTAssertEqual(one.merges.first?.scale, 2)  // α 8 / r 4
        for t in zero.tensors { XCTAssertEqual(try t.floats(), try XCTUnwrap(b[t.name]).floats(), t.name) }
    }

    // MARK: refusals

    var tmp: URL!
    override func setUpWithError() throws { tmp = try Fixtures.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

    /// A copy of an adapter directory with its config and tensors edited.
    func adapter(_ name: String = "lora_hf", config: ((inout [String: Any]) -> Void)? = nil,
                 tensors: ((inout [(name: String, shape: [Int], values: [Float])]) -> Void)? = nil) throws -> String {
        let d = tmp.appendingPathComponent("\(name)-\(UUID().uuidString)")
        try FileManager.default.copyItem(at: URL(fileURLWithPath: Self.path(name)), to: d)
        if let config {
            let url = d.appendingPathComponent("adapter_config.json")
            var j = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
            config(&j)
            try JSONSerialization.data(withJSONObject: j).write(to: url)
        }
        if let tensors {
            let url = d.appendingPathComponent("adapter_model.safetensors")
            var list = try Checkpoint(path: url.path).tensors.map { (name: $0.name, shape: $0.shape, values: try $0.floats()) }
            tensors(&list)
            try writeFile(SafetensorsWriter.bytes(list), url)
        }
        return d.path
    }

    /// Every refusal, through the command line: exit code 1, a message naming the tensor or field, no file written.
    func testBadAdaptersAreRefused() throws {
        let qkvA = "base_model.model.vision_encoder.layers.1.attn.qkv.lora_A.weight"
        let cases: [(String, [String], String, [String])] = [
            ("shape", ["--lora", try adapter(tensors: { l in
                let i = l.firstIndex { $0.name == qkvA }!
                l[i].shape = [4, 16]; l[i].values = Array(l[i].values.prefix(64)) })], "sam_tiny", [qkvA, "does not fit", "[4, 32]"]),
            ("transposed", ["--lora", try adapter(tensors: { l in
                let i = l.firstIndex { $0.name == qkvA }!
                l[i].shape = [l[i].shape[1], l[i].shape[0]] })], "sam_tiny", [qkvA, "rank 32"]),
            ("rank mismatch", ["--lora", try adapter(config: { $0["r"] = 8 })], "sam_tiny", ["has rank 4 but adapter_config gives r = 8"]),
            ("r = 0", ["--lora", try adapter(config: { $0["r"] = 0 })], "sam_tiny", ["r = 0"]),
            ("empty rank", ["--lora", try adapter(tensors: { l in
                let i = l.firstIndex { $0.name == qkvA }!
                l[i].shape = [0, 32]; l[i].values = []
                let j = l.firstIndex { $0.name == qkvA.replacingOccurrences(of: "lora_A", with: "lora_B") }!
                l[j].shape = [96, 0]; l[j].values = [] })], "sam_tiny", [qkvA, "rank 0"]),
            ("nothing selected", ["--lora", try adapter(config: { $0["target_modules"] = ["q_conv"] })], "sam_tiny",
             ["target_modules", "select no layer"]),
            ("not selected", ["--lora", try adapter(config: { $0["layers_to_transform"] = [0]; $0["layers_pattern"] = "layers" })],
             "sam_tiny", ["do not select", "layers.1"]),
            ("selected, missing", ["--lora", try adapter(tensors: { l in l.removeAll { $0.name.contains("layers.3.mlp.lin2") } })],
             "sam_tiny", ["vision_encoder.layers.3.mlp.lin2", "holds no lora_A/lora_B"]),
            ("NaN", ["--lora", try adapter(tensors: { l in
                let j = l.firstIndex { $0.name == qkvA.replacingOccurrences(of: "lora_A", with: "lora_B") }!
                l[j].values[5] = .nan })], "sam_tiny", ["lora_B", "NaN"]),
            ("infinity", ["--lora", try adapter(tensors: { l in
                let i = l.firstIndex { $0.name == qkvA }!
                l[i].values[0] = .infinity })], "sam_tiny", [qkvA, "NaN or infinity"]),
            ("another architecture", ["--lora", Self.path("lora_hf")], Fixtures.checkpoint("mobilesam_tiny.pth"),
             ["vision_encoder.layers", "another"]),
            ("DoRA", ["--lora", try adapter(config: { $0["use_dora"] = true })], "sam_tiny", ["DoRA"]),
            ("DoRA tensor", ["--lora", try adapter(config: { _ in }, tensors: { l in
                l.append((name: "base_model.model.vision_encoder.layers.0.attn.qkv.lora_magnitude_vector", shape: [96], values: .init(repeating: 1, count: 96))) })],
             "sam_tiny", ["lora_magnitude_vector", "DoRA"]),
            ("LoHa", ["--lora", try adapter(config: { $0["peft_type"] = "LOHA" })], "sam_tiny", ["LOHA", "not supported"]),
            ("PiSSA", ["--lora", try adapter(config: { $0["init_lora_weights"] = "pissa" })], "sam_tiny", ["pissa"]),
            ("no alpha", ["--lora", try adapter(config: { $0["lora_alpha"] = nil })], "sam_tiny", ["lora_alpha"]),
            ("bad regex", ["--lora", try adapter(config: { $0["target_modules"] = "(qkv" })], "sam_tiny", ["regular expression"]),
            ("orphan A", ["--lora", try adapter(tensors: { l in l.removeAll { $0.name == qkvA.replacingOccurrences(of: "lora_A", with: "lora_B") } })],
             "sam_tiny", ["vision_encoder.layers.1.attn.qkv", "no lora_B"]),
            ("two adapters", ["--lora", try adapter(tensors: { l in
                let i = l.firstIndex { $0.name == qkvA }!
                l.append((name: qkvA.replacingOccurrences(of: "lora_A.weight", with: "lora_A.other.weight"), shape: l[i].shape, values: l[i].values)) })],
             "sam_tiny", ["'other'", "one at a time"]),
            ("bare file", ["--lora", try { () throws -> String in
                let f = tmp.appendingPathComponent("bare.safetensors")
                try FileManager.default.copyItem(at: URL(fileURLWithPath: Self.path("lora_hf/adapter_model.safetensors")), to: f)
                return f.path }()], "sam_tiny", ["no adapter_config.json", "--lora-alpha"]),
            ("no such adapter", ["--lora", tmp.appendingPathComponent("nope").path], "sam_tiny", ["nope", "no such file"]),
            ("inline without alpha", [], "sam_tiny_peft_inline.pth", ["16 PEFT LoRA layers inline", "--lora-alpha"]),
        ]
                for (what, args, checkpoint, expected) in cases {
            let out = tmp.appendingPathComponent("out.psam")
            let input = checkpoint.hasPrefix("/") ? checkpoint : Self.path(checkpoint)
            let r = try QuantizeCommandTests.run([input, "-o", out.path, "--precision", "fp32"] + args)
            XCTAssertEqual(r.status, 1, "\(what): \(r.stderr)")
            for e in expected { XCTAssertTrue(r.stderr.contains(e), "\(what): '\(r.stderr)' lacks '\(e)'") }
            XCTAssertFalse(FileManager.default.fileExists(atPath: out.path), "\(what): a file was written")
        }
    }

    /// PEFT's other saved tensors: a plain tensor (modules_to_save, a trained bias) replaces the base one; lora_bias adds
    /// scale · B's bias to the layer's bias; alpha_pattern sets a layer's α.
    func testReplacementsLoRABiasAndAlphaPattern() throws {
        let qkv = "base_model.model.vision_encoder.layers.1.attn.qkv"
        let token = [Float](repeating: 0.25, count: 32)
        let bBias = (0..<96).map { Float($0) / 96 }
        let d = try adapter(config: { $0["alpha_pattern"] = ["layers.2.attn.qkv": 16] }, tensors: { l in
            l.append((name: "base_model.model.mask_decoder.iou_token.weight", shape: [1, 32], values: token))
            l.append((name: qkv + ".lora_B.bias", shape: [96], values: bBias))
            // A trained bias of an adapted layer, as PEFT saves it with bias="lora_only".
            l.append((name: "base_model.model.vision_encoder.layers.0.attn.proj.base_layer.bias", shape: [32], values: token))
        })
        let base = Dictionary(uniqueKeysWithValues: try PreparedCheckpoint.open(Self.path("sam_tiny")).tensors.map { ($0.name, $0) })
        let plain = try PreparedCheckpoint.open(Self.path("sam_tiny"), lora: LoRAOptions(adapters: [Self.path("lora_hf")]))
        let p = try PreparedCheckpoint.open(Self.path("sam_tiny"), lora: LoRAOptions(adapters: [d]))
        let t = Dictionary(uniqueKeysWithValues: p.tensors.map { ($0.name, $0) })
        XCTAssertEqual(try XCTUnwrap(t["mask_decoder.iou_token.weight"]).floats(), token)
        let bias = try XCTUnwrap(t["image_encoder.blocks.1.attn.qkv.bias"]).floats()
        let was = try XCTUnwrap(base["image_encoder.blocks.1.attn.qkv.bias"]).floats()
        for i in 0..<96 { XCTAssertEqual(bias[i], was[i] + 2 * bBias[i], accuracy: 1e-6) }
        XCTAssertEqual(p.merges.first { $0.tensor == "image_encoder.blocks.2.attn.qkv.weight" }?.scale, 4)  // 16 / 4
        XCTAssertEqual(p.merges.first { $0.tensor == "image_encoder.blocks.1.attn.qkv.weight" }?.scale, 2)
        XCTAssertEqual(Set(p.merges.filter { $0.kind == "replaced" }.map(\.tensor)),
                       ["mask_decoder.iou_token.weight", "image_encoder.blocks.0.attn.proj.bias"])
        XCTAssertEqual(try XCTUnwrap(t["image_encoder.blocks.0.attn.proj.bias"]).floats(), token)
        XCTAssertEqual(plain.merges.count + 2, p.merges.count)
    }

    /// A checkpoint whose adapted weight is a scalar, or has a zero-sized or too-short bias, is refused, not a crash.
    func testHostileBaseTensorsAreRefused() throws {
        let base = try Checkpoint(path: Self.path("sam_tiny/model.safetensors"))
        let qkv = "vision_encoder.layers.1.attn.qkv"
        for (what, replace, expected) in [
            ("scalar weight", (name: qkv + ".weight", shape: [Int](), values: [Float(1)]), "vision_encoder.layers.1.attn.qkv"),
            ("empty weight", (name: qkv + ".weight", shape: [96, 0], values: [Float]()), "not a linear or convolution weight"),
            ("short bias", (name: qkv + ".bias", shape: [3], values: [Float](repeating: 0, count: 3)), "bias"),
        ] {
            var list = try base.tensors.map { (name: $0.name, shape: $0.shape, values: try $0.floats()) }
            let i = try XCTUnwrap(list.firstIndex { $0.name == replace.name })
            list[i] = replace
            let d = tmp.appendingPathComponent("base-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
            try writeFile(SafetensorsWriter.bytes(list), d.appendingPathComponent("model.safetensors"))
            let adapter = try adapter(tensors: { l in
                let b = l.firstIndex { $0.name.hasSuffix("layers.1.attn.qkv.lora_B.weight") }!
                l.append((name: l[b].name.replacingOccurrences(of: ".weight", with: ".bias"), shape: [96], values: .init(repeating: 0.5, count: 96)))
            })
            XCTAssertThrowsError(try PreparedCheckpoint.open(d.path, lora: LoRAOptions(adapters: [adapter])), what) {
                XCTAssertTrue("\($0)".contains(expected), "\(what): \($0)")
            }
        }
    }

    /// The report lists each merged layer with its rank, scale and relative change; the file records the adapter.
    func testReportAndMetadata() throws {
        let out = tmp.appendingPathComponent("m.psam").path
        let r = try QuantizeCommandTests.run([Self.path("sam_tiny"), "-o", out, "--lora", Self.path("lora_hf_rslora"),
                                                "--lora-scale", "0.5", "--report"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("LoRA-merged tensor"), r.stdout)
        for b in [0, 2] {
            let line = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.hasPrefix("image_encoder.blocks.\(b).attn.qkv.weight ") && $0.contains("lora_hf_rslora") })
            XCTAssertTrue(line.contains(" 4 ") && line.contains("2.0"), String(line))  // rank 4, 0.5 × 8/√4
        }
        XCTAssertTrue(r.stderr.contains("merged \(Self.path("lora_hf_rslora")): 2 LoRA layers"), r.stderr)
        let f = try PSAMFile.open(path: out)
        let lora = try f.metadata.string("psam.lora")
        XCTAssertTrue(lora.contains("lora_hf_rslora: 2 layers merged, rank 4, alpha 8.0 (rsLoRA)") && lora.contains("scale 0.5"), lora)
        XCTAssertEqual(try f.metadata.string("psam.source_layout"), "transformers")
    }

    /// Seeded mutations of adapter configs and tensors (shapes, values, names, truncated files) never crash: each is
    /// merged or refused with an error.
    func testFuzzedAdaptersNeverCrash() throws {
        var rng = SplitMix64(seed: 2222)
        let baseList = try Checkpoint(path: Self.path("lora_hf/adapter_model.safetensors")).tensors
            .map { (name: $0.name, shape: $0.shape, values: try $0.floats()) }
        let configValues: [Any] = [0, -3, 1, 4, 1 << 40, 2.5, "x", NSNull(), [1, 2], ["qkv"], "qkv|lin1", true, Double.greatestFiniteMagnitude]
        let keys = ["r", "lora_alpha", "use_rslora", "target_modules", "layers_to_transform", "layers_pattern", "rank_pattern",
                    "alpha_pattern", "peft_type", "exclude_modules", "fan_in_fan_out"]
        var refused = 0, merged = 0
        for i in 0..<120 {
            let d = tmp.appendingPathComponent("fuzz\(i)")
            try FileManager.default.copyItem(at: URL(fileURLWithPath: Self.path("lora_hf")), to: d)
            let cfgURL = d.appendingPathComponent("adapter_config.json")
            var j = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: cfgURL)) as? [String: Any])
            if rng.next() % 2 == 0 {
                let k = keys[Int(rng.next() % UInt64(keys.count))]
                let v = configValues[Int(rng.next() % UInt64(configValues.count))]
                j[k] = k.hasSuffix("_pattern") && rng.next() % 2 == 0 ? ["qkv": v] : v
            }
            try JSONSerialization.data(withJSONObject: j).write(to: cfgURL)
            var list = baseList
            let t = Int(rng.next() % UInt64(list.count))
            switch rng.next() % 7 {
            case 0: list[t].shape[Int(rng.next() % UInt64(list[t].shape.count))] = Int(rng.next() % 7)
                list[t].values = [Float](repeating: 0.5, count: list[t].shape.reduce(1, *))
            case 1: list[t].values[Int(rng.next() % UInt64(list[t].values.count))] = [Float.nan, .infinity, 1e38][Int(rng.next() % 3)]
            case 2: list[t].name = ["x", "lora_A.weight", "a.lora_B.x.y.weight", "base_model.model.lora_A", ""][Int(rng.next() % 5)]
            case 3: list[t].shape = [list[t].values.count]
            case 4:  // degenerate and huge shapes (no data, or more elements than any allocation)
                list[t].shape = [[], [0, 1 << 39, 1 << 39], [1 << 20, 1 << 20], [4, 0], [0]][Int(rng.next() % 5)]
                list[t].values = list[t].shape.isEmpty ? [1] : []
            default: break
            }
            var bytes = SafetensorsWriter.bytes(list)
            if rng.next() % 5 == 0 { bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count)))) }
            try writeFile(bytes, d.appendingPathComponent("adapter_model.safetensors"))
            do {
                _ = try PreparedCheckpoint.open(Self.path("sam_tiny"), lora: LoRAOptions(adapters: [d.path]))
                merged += 1
            } catch {
                refused += 1
                XCTAssertFalse(error.description.isEmpty)
            }
        }
        print("LoRA fuzz: \(merged) merged, \(refused) refused")
        XCTAssertGreaterThan(refused, 30)
    }
}
