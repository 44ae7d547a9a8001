import PocketSAMFormat
import XCTest

final class ModelConfigTests: XCTestCase {
    func testMetadataRoundTrip() throws {
        for c in [TestModels.vit, TestModels.tinyViT] {
            var m = Metadata()
            c.write(to: &m)
            XCTAssertEqual(try ModelConfig(metadata: m), c)
        }
    }

    func testSpecNamesAreUniqueAndShapesPositive() {
        for c in [TestModels.vit, TestModels.tinyViT] {
            let specs = c.tensorSpecs()
            XCTAssertEqual(Set(specs.map(\.name)).count, specs.count)
            XCTAssertTrue(specs.allSatisfy { $0.shape.allSatisfy { $0 > 0 } })
        }
    }

    /// The spec of SAM ViT-B must add up to exactly the official model's state-dict size, measured with
    /// segment-anything 1.0: `sum(v.numel() for v in sam_model_registry["vit_b"]().state_dict().values())`.
    func testViTBSpecMatchesThePublishedParameterCount() {
        let b = ModelConfig(
            variant: .sam,
            encoder: .vit(ViTConfig(imageSize: 1024, patchSize: 16, embedDim: 768, depth: 12, numHeads: 12, mlpDim: 3072,
                                    windowSize: 14, globalAttnIndexes: [2, 5, 8, 11], qkvBias: true, outChans: 256)),
            prompt: PromptEncoderConfig(embedDim: 256, embeddingSize: 64, inputImageSize: 1024, maskInChans: 16),
            decoder: MaskDecoderConfig(transformerDim: 256, depth: 2, numHeads: 8, mlpDim: 2048, attentionDownsampleRate: 2,
                                       numMultimaskOutputs: 3, iouHeadDepth: 3, iouHeadHiddenDim: 256),
            normalization: .imageNet)
        XCTAssertNoThrow(try b.check())
        let total = b.tensorSpecs().reduce(0) { $0 + $1.shape.reduce(1, *) }
        XCTAssertEqual(total, 93_735_728)
    }

    func testCheckRejectsInconsistentConfigs() {
        var c = TestModels.vit
        c.decoder.transformerDim = 24
        XCTAssertThrowsError(try c.check())
        c = TestModels.tinyViT
        if case var .tinyViT(t) = c.encoder {
            t.mergeStrides = [2, 2]
            c.encoder = .tinyViT(t)
        }
        XCTAssertThrowsError(try c.check())
        c = TestModels.vit
        c.normalization = .meanStd(mean: [1, 2, 3], std: [1, 0, 1])
        XCTAssertThrowsError(try c.check())
    }
}
