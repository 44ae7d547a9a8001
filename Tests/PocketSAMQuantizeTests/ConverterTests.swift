import Foundation
#if canImport(Glibc)
import Glibc
#endif
import PocketSAMFormat
import PocketSAMQuantize
import XCTest

/// The real LiteMedSAM checkpoint, end to end through the quantizer.
final class LiteMedSAMConversionTests: XCTestCase {
    static let expected = ModelConfig(
        variant: .liteMedSAM,
        encoder: .tinyViT(TinyViTConfig(
            imageSize: 256, embedDims: [64, 128, 160, 320], depths: [2, 2, 6, 2], numHeads: [0, 4, 5, 10],
            windowSizes: [0, 7, 14, 7], mlpHiddenDims: [0, 512, 640, 1280], mbconvHiddenDim: 256, patchEmbedKernel: 1,
            patchEmbedStride: 1, mergeStrides: [2, 2, 1], localConvSize: 3, outChans: 256)),
        prompt: PromptEncoderConfig(embedDim: 256, embeddingSize: 64, inputImageSize: 256, maskInChans: 16),
        decoder: MaskDecoderConfig(transformerDim: 256, depth: 2, numHeads: 8, mlpDim: 2048, attentionDownsampleRate: 2,
                                   numMultimaskOutputs: 3, iouHeadDepth: 3, iouHeadHiddenDim: 256),
        normalization: .minMax)

    func testDetectsQuantizesAndRoundTrips() throws {
        let ckpt = try Checkpoint(path: try Fixtures.liteMedSAM())
        XCTAssertEqual(ckpt.tensors.count, 435)
        let int8 = try Converter.convert(ckpt, options: ConversionOptions(precision: .int8))
        XCTAssertEqual(int8.config, Self.expected)
        XCTAssertEqual(int8.sourceSHA256, "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76")
        XCTAssertEqual(int8.foldedBatchNorms, 27)
        XCTAssertEqual(int8.ignored.count, 27, "num_batches_tracked of each BatchNorm")

        let bytes = try int8.writer.serialize()
        XCTAssertLessThanOrEqual(bytes.count, 11_000_000, "int8 LiteMedSAM must fit in 11 MB")
        let file = try PSAMFile(storage: ByteStorage(copying: bytes))
        XCTAssertEqual(file.config, Self.expected, "configuration round-trips through the metadata")
        XCTAssertEqual(file.metadata, int8.writer.metadata)
        XCTAssertEqual(try file.metadata.string("psam.source_sha256"), int8.sourceSHA256)

        // Every stored tensor against the fp32 conversion of the same checkpoint.
        let fp32 = try PSAMFile(storage: ByteStorage(copying: try Converter.convert(ckpt, options: .init(precision: .fp32))
            .writer.serialize()))
        var worst = (name: "", error: 0.0)
        var int8Count = 0
        for e in file.tensors {
            let ref = fp32.floatValues(of: try XCTUnwrap(fp32.tensor(named: e.name)))
            let err = Quantizer.relativeRMSError(ref, file.floatValues(of: e))
            XCTAssertLessThan(err, 0.01, "\(e.name) (\(e.dtype))")
            if e.dtype == .i8 { int8Count += 1 }
            if err > worst.error { worst = (e.name, err) }
        }
        // Every linear and dense-conv weight with at least 1024 elements is int8, except the sensitive layers
        // kept fp16 by default (`Converter.defaultKeepFP16`), which the file records.
        let matrices = Self.expected.tensorSpecs().filter { $0.role.int8ScaleAxis != nil && $0.shape.reduce(1, *) >= 1024 }
        let keep = Converter.defaultKeepFP16(Self.expected)
        let kept = matrices.filter { spec in keep.contains { fnmatch($0, spec.name, 0) == 0 } }
        XCTAssertEqual(kept.count, 9, "patch embedding, stage 0's two conv1, the three downsamplings' conv1 and conv3")
        for spec in kept { XCTAssertEqual(file.tensor(named: spec.name)?.dtype, .f16, spec.name) }
        XCTAssertEqual(int8Count, matrices.count - kept.count)
        XCTAssertEqual(try file.metadata.string("psam.keep_fp16"), keep.joined(separator: " "))
        print("LiteMedSAM int8: \(bytes.count) bytes, \(int8Count) int8 tensors, worst relative RMS error \(worst.error) in \(worst.name)")
    }

    func testConversionIsDeterministic() throws {
        let ckpt = try Checkpoint(path: try Fixtures.liteMedSAM())
        let a = try Converter.convert(ckpt).writer.serialize()
        let b = try Converter.convert(try Checkpoint(path: try Fixtures.liteMedSAM())).writer.serialize()
        XCTAssertEqual(a, b)
    }

    func testMissingTensorIsNamed() throws {
        let ckpt = try Checkpoint(path: try Fixtures.liteMedSAM())
        let dropped = "mask_decoder.transformer.layers.1.mlp.lin1.weight"
        XCTAssertThrowsError(try Converter.convert(tensors: ckpt.tensors.filter { $0.name != dropped }, format: .pytorchZip,
                                                   sourceSHA256: "")) {
            XCTAssertEqual($0 as? CheckpointError, .missingTensor(name: dropped, needed: "the detected tinyvit model"))
        }
        // A BatchNorm statistic.
        let bn = "image_encoder.layers.2.blocks.3.local_conv.bn.running_var"
        XCTAssertThrowsError(try Converter.convert(tensors: ckpt.tensors.filter { $0.name != bn }, format: .pytorchZip,
                                                   sourceSHA256: "")) {
            XCTAssertEqual($0 as? CheckpointError, .missingTensor(name: bn, needed: "the detected tinyvit model"))
        }
    }

    func testUnknownArchitecture() throws {
        let ckpt = try Checkpoint(path: try Fixtures.liteMedSAM())
        // Only the decoder: no image encoder at all.
        let decoderOnly = ckpt.tensors.filter { !$0.name.hasPrefix("image_encoder.") }
        XCTAssertThrowsError(try Converter.convert(tensors: decoderOnly, format: .pytorchZip, sourceSHA256: "")) {
            guard case CheckpointError.unknownArchitecture? = $0 as? CheckpointError else { return XCTFail("\($0)") }
        }
    }

    func testKeepFP32AndFP16Options() throws {
        let ckpt = try Checkpoint(path: try Fixtures.liteMedSAM())
        var o = ConversionOptions(precision: .int8)
        o.keepFP32 = ["mask_decoder.*"]
        let r = try Converter.convert(ckpt, options: o)
        XCTAssertTrue(r.reports.filter { $0.name.hasPrefix("mask_decoder.") }.allSatisfy { $0.dtype == .f32 })
        XCTAssertTrue(r.reports.contains { $0.name.hasPrefix("image_encoder.") && $0.dtype == .i8 })
        // --keep-fp16: the given patterns instead of the defaults; none at all.
        o.keepFP16 = ["image_encoder.layers.3.*.fc2.weight"]
        let k = try Converter.convert(ckpt, options: o)
        XCTAssertEqual(k.reports.filter { $0.dtype == .f16 }.map(\.name),
                       ["image_encoder.layers.3.blocks.0.mlp.fc2.weight", "image_encoder.layers.3.blocks.1.mlp.fc2.weight"])
        o.keepFP16 = []
        let none = try Converter.convert(ckpt, options: o)
        XCTAssertFalse(none.reports.contains { $0.dtype == .f16 })
        XCTAssertNil(none.writer.metadata["psam.keep_fp16"])
        let h = try Converter.convert(ckpt, options: .init(precision: .fp16))
        XCTAssertTrue(h.reports.allSatisfy { $0.dtype == .f16 })
        let bytes = try h.writer.serialize()
        XCTAssertLessThan(bytes.count, 20_000_000)
        XCTAssertNoThrow(try PSAMFile(storage: ByteStorage(copying: bytes)))
    }
}
