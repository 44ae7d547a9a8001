import Foundation
import PocketSAMFormat
import PocketSAMQuantize
import XCTest

/// Hugging Face transformers' SamModel layout: a small random SamModel saved by `save_pretrained` (single file and
/// sharded), the same weights as `.bin` shards and renamed into the official layout (Tests/Reference/make_hf_fixtures.py).
final class TransformersLayoutTests: XCTestCase {
    static let dir = Fixtures.root.appendingPathComponent("Tests/Fixtures/hf")
    static func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    static func manifest() throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("manifest.json"))) as? [String: Any])
    }

    static let sourceKeys = ["psam.source_format", "psam.source_sha256", "psam.source_layout", "psam.lora"]

    /// The `.psam` bytes with the recorded source blanked (what may differ between layouts of the same weights).
    static func bytesWithoutSource(_ checkpoint: String, precision: Precision, lora: LoRAOptions = LoRAOptions()) throws -> [UInt8] {
        var r = try Converter.convert(try PreparedCheckpoint.open(checkpoint, lora: lora), options: .init(precision: precision))
        for k in sourceKeys where r.writer.metadata[k] != nil { r.writer.metadata[k] = .string("-") }
        return try r.writer.serialize()
    }

    /// The single-file, sharded safetensors, sharded .bin and official-layout checkpoints of one model give the same
    /// `.psam` bytes but for the recorded source, in fp32 and int8.
    func testEveryLayoutGivesTheSameFile() throws {
        let sources = ["sam_tiny", "sam_tiny_sharded", "sam_tiny_bin_sharded", "sam_tiny_sharded/model.safetensors.index.json",
                       "sam_tiny/model.safetensors", "sam_tiny_official.pth"]
        for precision in [Precision.fp32, .int8] {
            let reference = try Self.bytesWithoutSource(Self.path("sam_tiny_official.pth"), precision: precision)
            for s in sources {
                let b = try Self.bytesWithoutSource(Self.path(s), precision: precision)
                XCTAssertTrue(b == reference, "\(s) \(precision): the .psam differs from the official layout's beyond the recorded source")
            }
        }
        let hf = try PreparedCheckpoint.open(Self.path("sam_tiny_sharded"))
        XCTAssertEqual(hf.layout, "transformers")
        XCTAssertEqual(hf.set.format, "safetensors, 4 shards")
        XCTAssertEqual(hf.set.files.count, 4)
        XCTAssertTrue(hf.notes.contains { $0.contains("agrees with the tensors") }, "\(hf.notes)")
        let bin = try PreparedCheckpoint.open(Self.path("sam_tiny_bin_sharded"))
        XCTAssertEqual(bin.set.format, "pytorch-zip, 4 shards")
        let official = try PreparedCheckpoint.open(Self.path("sam_tiny_official.pth"))
        XCTAssertEqual(official.layout, "segment_anything")
        let r = try Converter.convert(hf, options: .init(precision: .fp32))
        XCTAssertEqual(r.writer.metadata["psam.source_layout"], .string("transformers"))
        XCTAssertEqual(r.writer.metadata["psam.source_sha256"], .string(hf.set.sha256))
    }

    /// Our renaming agrees with the fixture script's own table (written independently from transformers' and
    /// segment_anything's module trees, and checked there by loading the renamed dict strictly), both ways.
    func testRenamingMatchesTheFixtureTable() throws {
        let rename = try XCTUnwrap((try Self.manifest()["official_rename"] as? [String: Any])?["map"] as? [String: String])
        XCTAssertEqual(rename.count, 203)
        let depths = TransformersSAM.headDepths(rename.keys, transformers: true)
        XCTAssertEqual(depths, TransformersSAM.headDepths(rename.values, transformers: false))
        for (hf, official) in rename {
            XCTAssertEqual(TransformersSAM.officialName(hf, headDepths: depths), official, hf)
            if hf != "prompt_encoder.shared_embedding.positional_embedding" {
                XCTAssertEqual(TransformersSAM.transformersName(official, headDepths: depths), hf, official)
            }
        }
        XCTAssertNil(TransformersSAM.officialName("vision_encoder.layers.x.attn.qkv.weight", headDepths: depths))
        XCTAssertNil(TransformersSAM.officialName("vision_encoder.layers.0.attn.qkv.extra.weight", headDepths: depths))
        XCTAssertNil(TransformersSAM.officialName("mask_decoder.iou_prediction_head.proj_in.x.weight", headDepths: depths))
        // A two-layer head has no `layers.N` in transformers' names (proj_in, proj_out only).
        let two = ["mask_decoder.iou_prediction_head.proj_in.weight", "mask_decoder.iou_prediction_head.proj_out.weight"]
        let d2 = TransformersSAM.headDepths(two, transformers: true)
        XCTAssertEqual(d2["mask_decoder.iou_prediction_head"], 2)
        XCTAssertEqual(TransformersSAM.officialName(two[1], headDepths: d2), "mask_decoder.iou_prediction_head.layers.1.weight")
        // Decoder-only names are recognised as transformers' too (an adapter of the decoder alone).
        XCTAssertTrue(TransformersSAM.isTransformersLayout(["mask_decoder.transformer.layers.0.layer_norm1.weight"]))
        XCTAssertFalse(TransformersSAM.isTransformersLayout(rename.values))
        XCTAssertNil(TransformersSAM.officialName("mask_decoder.iou_prediction_head.layers.5.weight", headDepths: depths))
    }

    func copyFixture(_ name: String) throws -> URL {
        let tmp = try Fixtures.temporaryDirectory()
        addTeardownBlock { try? FileManager.default.removeItem(at: tmp) }
        let dst = tmp.appendingPathComponent(name)
        try FileManager.default.copyItem(at: Self.dir.appendingPathComponent(name), to: dst)
        return dst
    }

    func editJSON(_ url: URL, _ edit: (inout [String: Any]) -> Void) throws {
        var j = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        edit(&j)
        try JSONSerialization.data(withJSONObject: j).write(to: url)
    }

    func assertRefused(_ path: String, lora: LoRAOptions = LoRAOptions(), _ expected: [String], file: StaticString = #filePath,
                       line: UInt = #line) {
        do {
            _ = try PreparedCheckpoint.open(path, lora: lora)
            XCTFail("accepted; expected an error containing \(expected)", file: file, line: line)
        } catch {
            for e in expected { XCTAssertTrue(error.description.contains(e), "'\(error)' lacks '\(e)'", file: file, line: line) }
        }
    }

    /// config.json is the first word on the architecture: a field the tensors contradict is an error naming it.
    func testConfigJSONMustAgreeWithTheTensors() throws {
        let edits: [(String, (inout [String: Any]) -> Void, [String])] = [
            ("window", { j in var v = j["vision_config"] as! [String: Any]; v["window_size"] = 7; j["vision_config"] = v },
             ["vision_config.window_size is 7", "6"]),
            ("globals", { j in var v = j["vision_config"] as! [String: Any]; v["global_attn_indexes"] = [0, 3]; j["vision_config"] = v },
             ["global_attn_indexes is [0, 3]", "[1, 3]"]),
            ("heads", { j in var v = j["vision_config"] as! [String: Any]; v["num_attention_heads"] = 4; j["vision_config"] = v },
             ["vision_config.num_attention_heads is 4"]),
            ("absent width", { j in var v = j["vision_config"] as! [String: Any]; v["hidden_size"] = nil; j["vision_config"] = v },
             ["vision_config.hidden_size is 768"]),
            ("decoder", { j in var v = j["mask_decoder_config"] as! [String: Any]; v["mlp_dim"] = 2048; j["mask_decoder_config"] = v },
             ["mask_decoder_config.mlp_dim is 2048", "64"]),
            ("mask channels", { j in var v = j["prompt_encoder_config"] as! [String: Any]; v["mask_input_channels"] = 8; j["prompt_encoder_config"] = v },
             ["prompt_encoder_config.mask_input_channels is 8"]),
            ("hq", { j in j["model_type"] = "sam_hq" }, ["sam_hq", "not supported"]),
            ("other", { j in j["model_type"] = "sam2" }, ["'sam2' is not transformers' SamModel"]),
            ("not int", { j in var v = j["vision_config"] as! [String: Any]; v["patch_size"] = "16"; j["vision_config"] = v },
             ["'patch_size' is not an integer"]),
        ]
        for (what, edit, expected) in edits {
            let d = try copyFixture("sam_tiny")
            try editJSON(d.appendingPathComponent("config.json"), edit)
            assertRefused(d.path, expected + ["config.json"])
            _ = what
        }
        let d = try copyFixture("sam_tiny")
        try Data("{not json".utf8).write(to: d.appendingPathComponent("config.json"))
        assertRefused(d.path, ["config.json", "not a JSON object"])
        // The same file given by name also reads the config beside it.
        let e = try copyFixture("sam_tiny")
        try editJSON(e.appendingPathComponent("config.json")) { j in var v = j["vision_config"] as! [String: Any]; v["output_channels"] = 256; j["vision_config"] = v }
        assertRefused(e.appendingPathComponent("model.safetensors").path, ["vision_config.output_channels is 256"])
    }

    /// A shard index that does not match its shards, or points outside its directory, is refused.
    func testShardIndexProblemsAreRefused() throws {
        let index = "model.safetensors.index.json"
        func edited(_ edit: @escaping (inout [String: String]) -> Void) throws -> URL {
            let d = try copyFixture("sam_tiny_sharded")
            try editJSON(d.appendingPathComponent(index)) { j in
                var m = j["weight_map"] as! [String: String]
                edit(&m)
                j["weight_map"] = m
            }
            return d
        }
        let name = "vision_encoder.layers.0.attn.qkv.weight"
        var d = try edited { m in m[name] = "../model.safetensors" }
        assertRefused(d.path, ["not a plain file name", name])
        d = try edited { m in m[name] = nil }
        assertRefused(d.path, ["the weight map does not list", name])
        d = try edited { m in m[name] = m[name] == "model-00001-of-00004.safetensors" ? "model-00002-of-00004.safetensors" : "model-00001-of-00004.safetensors" }
        assertRefused(d.path, [name])
        d = try edited { m in m["vision_encoder.layers.9.attn.qkv.weight"] = "model-00001-of-00004.safetensors" }
        assertRefused(d.path, ["vision_encoder.layers.9.attn.qkv.weight", "is not in its shard"])
        d = try copyFixture("sam_tiny_sharded")
        try FileManager.default.removeItem(at: d.appendingPathComponent("model-00003-of-00004.safetensors"))
        assertRefused(d.path, ["model-00003-of-00004.safetensors"])
        d = try copyFixture("sam_tiny_sharded")
        try Data("[]".utf8).write(to: d.appendingPathComponent(index))
        assertRefused(d.path, ["not a JSON object"])
        assertRefused(Self.path("lora_hf"), ["LoRA adapter", "--lora"])
        assertRefused(Self.dir.path, ["a directory without model.safetensors"])
    }

    /// A transformers tensor the layout does not have, and tied positional copies that differ, are refused by name.
    func testUnknownOrInconsistentTransformersTensors() throws {
        let base = try Checkpoint(path: Self.path("sam_tiny/model.safetensors"))
        func write(_ tensors: [SourceTensor]) throws -> String {
            let d = try Fixtures.temporaryDirectory()
            addTeardownBlock { try? FileManager.default.removeItem(at: d) }
            let url = d.appendingPathComponent("model.safetensors")
            try writeFile(SafetensorsWriter.bytes(try tensors.map { ($0.name, $0.shape, try $0.floats()) }), url)
            return url.path
        }
        var extra = base.tensors
        extra.append(SourceTensor(name: "vision_encoder.layers.0.attn.extra_gate", shape: [4], values: [1, 2, 3, 4]))
        assertRefused(try write(extra), ["vision_encoder.layers.0.attn.extra_gate", "SamModel"])
        let pos = try XCTUnwrap(base.byName["shared_image_embedding.positional_embedding"])
        var tied = base.tensors
        tied.append(SourceTensor(name: "prompt_encoder.shared_embedding.positional_embedding", shape: pos.shape,
                                 values: try pos.floats().map { $0 + 1 }))
        assertRefused(try write(tied), ["prompt_encoder.shared_embedding.positional_embedding", "ties"])
        // Equal copies are one tensor.
        tied.removeLast()
        tied.append(pos.renamed("prompt_encoder.shared_embedding.positional_embedding"))
        XCTAssertNoThrow(try PreparedCheckpoint.open(try write(tied)))
    }
}
