import Foundation
import PocketSAMFormat
import PocketSAMQuantize
import XCTest

/// Architecture detection on small random checkpoints made by the official code
/// (Tests/Reference/make_random_checkpoints.py), compared with the values they were built with.
final class DetectionTests: XCTestCase {
    func convert(_ file: String, _ precision: Precision = .int8) throws -> (Checkpoint, ConversionResult) {
        let c = try Checkpoint(path: Fixtures.checkpoint(file))
        return (c, try Converter.convert(c, options: .init(precision: precision)))
    }

    func decoder(_ e: [String: Any]) throws -> MaskDecoderConfig {
        let d = try XCTUnwrap(e["decoder"] as? [String: Any])
        func i(_ k: String) throws -> Int { try XCTUnwrap(d[k] as? Int, k) }
        return MaskDecoderConfig(transformerDim: try i("transformer_dim"), depth: try i("depth"), numHeads: try i("num_heads"),
                                 mlpDim: try i("mlp_dim"), attentionDownsampleRate: try i("attention_downsample_rate"),
                                 numMultimaskOutputs: try i("num_multimask_outputs"), iouHeadDepth: try i("iou_head_depth"),
                                 iouHeadHiddenDim: try i("iou_head_hidden_dim"))
    }

    func testSAMViTIsDetectedFromPthAndSafetensors() throws {
        let all = try Fixtures.expected()
        for file in ["vit_tiny.pth", "vit_tiny_bf16.safetensors"] {
            let e = try XCTUnwrap(all[file] as? [String: Any])
            let (ckpt, r) = try convert(file)
            XCTAssertEqual(ckpt.format, file.hasSuffix(".pth") ? .pytorchZip : .safetensors)
            guard case let .vit(v) = r.config.encoder else { return XCTFail("\(file): not a ViT") }
            XCTAssertEqual(r.config.variant, .sam)
            XCTAssertEqual(v.imageSize, e["image_size"] as? Int)
            XCTAssertEqual(v.patchSize, e["patch_size"] as? Int)
            XCTAssertEqual(v.embedDim, e["embed_dim"] as? Int)
            XCTAssertEqual(v.depth, e["depth"] as? Int)
            XCTAssertEqual(v.numHeads, e["num_heads"] as? Int)
            XCTAssertEqual(v.mlpDim, e["mlp_dim"] as? Int)
            XCTAssertEqual(v.windowSize, e["window_size"] as? Int)
            XCTAssertEqual(v.globalAttnIndexes, e["global_attn_indexes"] as? [Int], "one windowed and one global block at least")
            XCTAssertEqual(v.qkvBias, e["qkv_bias"] as? Bool)
            XCTAssertEqual(v.outChans, e["out_chans"] as? Int)
            XCTAssertEqual(r.config.prompt.embedDim, e["prompt_embed_dim"] as? Int)
            XCTAssertEqual(r.config.prompt.embeddingSize, e["grid"] as? Int)
            XCTAssertEqual(r.config.prompt.maskInChans, e["mask_in_chans"] as? Int)
            XCTAssertEqual(r.config.decoder, try decoder(e))
            XCTAssertEqual(r.config.normalization, .imageNet)
            XCTAssertTrue(r.ignored.isEmpty, "\(r.ignored)")
        }
        // bf16 is fp32 with the low 16 bits dropped (round to nearest even): the two files agree to 2⁻⁸.
        let f32 = try Checkpoint(path: Fixtures.checkpoint("vit_tiny.pth"))
        let b16 = try Checkpoint(path: Fixtures.checkpoint("vit_tiny_bf16.safetensors"))
        XCTAssertEqual(Set(f32.tensors.map(\.name)), Set(b16.tensors.map(\.name)))
        for t in f32.tensors {
            let a = try t.floats(), b = try XCTUnwrap(b16.byName[t.name]).floats()
            for (x, y) in zip(a, b) { XCTAssertLessThanOrEqual(abs(x - y), abs(x) / 256 + 1e-30, t.name) }
        }
    }

    func testMobileSAMTinyViTIsDetected() throws {
        let e = try XCTUnwrap(try Fixtures.expected()["mobilesam_tiny.pth"] as? [String: Any])
        let (ckpt, r) = try convert("mobilesam_tiny.pth")
        XCTAssertTrue(ckpt.tensors.contains { $0.dtype == .f16 }, "the fixture is saved in fp16")
        guard case let .tinyViT(t) = r.config.encoder else { return XCTFail("not a TinyViT") }
        XCTAssertEqual(r.config.variant, .mobileSAM)
        XCTAssertEqual(t.imageSize, e["image_size"] as? Int)
        XCTAssertEqual(t.embedDims, e["embed_dims"] as? [Int])
        XCTAssertEqual(t.depths, e["depths"] as? [Int])
        XCTAssertEqual(t.numHeads, e["num_heads"] as? [Int])
        XCTAssertEqual(t.windowSizes, e["window_sizes"] as? [Int])
        XCTAssertEqual(t.mlpHiddenDims, e["mlp_hidden_dims"] as? [Int])
        XCTAssertEqual(t.mbconvHiddenDim, e["mbconv_hidden_dim"] as? Int)
        XCTAssertEqual(t.patchEmbedKernel, e["patch_embed_kernel"] as? Int)
        XCTAssertEqual(t.patchEmbedStride, e["patch_embed_stride"] as? Int)
        XCTAssertEqual(t.mergeStrides, e["merge_strides"] as? [Int])
        XCTAssertEqual(t.localConvSize, e["local_conv_size"] as? Int)
        XCTAssertEqual(t.outChans, e["out_chans"] as? Int)
        XCTAssertEqual(t.outputSize, e["embedding_size"] as? Int)
        XCTAssertEqual(r.config.decoder, try decoder(e))
        XCTAssertEqual(r.config.normalization, .imageNet)
        // The classification head and BN counters are the only tensors left out.
        XCTAssertFalse(r.ignored.isEmpty)
        XCTAssertTrue(r.ignored.allSatisfy { $0.hasPrefix("image_encoder.head.") || $0.hasPrefix("image_encoder.norm_head.") || $0.hasSuffix(".num_batches_tracked") }, "\(r.ignored)")
        XCTAssertGreaterThan(r.foldedBatchNorms, 10)
    }

    /// Checkpoint → .psam at each precision → read back: every tensor bit-exact with what was written.
    func testEveryPrecisionRoundTripsThroughTheFile() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        for file in ["vit_tiny.pth", "mobilesam_tiny.pth"] {
            for p in Precision.allCases {
                let (_, r) = try convert(file, p)
                let path = dir.appendingPathComponent("\(file)-\(p).psam").path
                try r.writer.write(to: path)
                let f = try PSAMFile.open(path: path)
                XCTAssertEqual(f.config, r.config)
                XCTAssertEqual(f.metadata, r.writer.metadata)
                for (t, e) in zip(r.writer.tensors, f.tensors) {
                    XCTAssertEqual(e.name, t.name)
                    XCTAssertEqual(e.dtype, t.dtype)
                    XCTAssertEqual(Array(f.data(of: e)), t.data, "\(file) \(p) \(t.name)")
                    XCTAssertEqual(Array(f.scales(of: e)).map(\.bitPattern), t.scales.map(\.bitPattern))
                }
                if p == .fp16 { XCTAssertTrue(f.tensors.allSatisfy { $0.dtype == .f16 }) }
                if p == .fp32 { XCTAssertTrue(f.tensors.allSatisfy { $0.dtype == .f32 }) }
            }
        }
    }
    /// HQ-SAM (Tests/Reference/make_hq_fixtures.py's random HQ ViT): detected with its early feature where the official
    /// code takes it; a checkpoint with only part of the HQ layers, and metadata or configurations that do not fit, are
    /// refused with a message naming what is wrong.
    func testHQSAMIsDetectedAndPartialOrInconsistentHQIsRefused() throws {
        let ckpt = try Checkpoint(path: Fixtures.checkpoint("hq/hq_vit_tiny.pth"))
        var shapes: [String: [Int]] = [:]
        for t in ckpt.tensors { shapes[t.name] = t.shape }
        let config = try ArchitectureDetector.detect(shapes)
        XCTAssertEqual(config.decoder.hq, HQConfig(vitDim: 64, earlyLayer: 1), "the first global block of blocks [1, 3]")
        XCTAssertTrue(Converter.describe(config).contains("HQ-SAM"))

        var partial = shapes
        partial["mask_decoder.embedding_maskfeature.0.weight"] = nil
        XCTAssertThrowsError(try ArchitectureDetector.detect(partial)) {
            XCTAssertTrue("\($0)".contains("mask_decoder.embedding_maskfeature.0.weight"), "\($0)")
        }

        var wrongWidth = config
        wrongWidth.decoder.hq = HQConfig(vitDim: 48, earlyLayer: 1)
        XCTAssertThrowsError(try wrongWidth.check()) { XCTAssertTrue("\($0)".contains("early feature width"), "\($0)") }
        var wrongBlock = config
        wrongBlock.decoder.hq = HQConfig(vitDim: 64, earlyLayer: 4)
        XCTAssertThrowsError(try wrongBlock.check()) { XCTAssertTrue("\($0)".contains("early block"), "\($0)") }

        var m = Metadata()
        config.write(to: &m)
        XCTAssertEqual(try ModelConfig(metadata: m), config, "metadata round trip")
        m["decoder.hq_early_layer"] = nil
        XCTAssertThrowsError(try ModelConfig(metadata: m)) { XCTAssertTrue("\($0)".contains("decoder.hq_early_layer"), "\($0)") }
    }
}
