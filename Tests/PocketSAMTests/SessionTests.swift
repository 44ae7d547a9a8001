import Foundation
import PocketSAM
import PocketSAMFormat
import PocketSAMIO
import XCTest

/// Input validation and determinism of `Session`, on the real LiteMedSAM model (fp32).
final class SessionTests: XCTestCase {
    static let model: Model? = try? LiteMedSAMParityTests.fp32Model()

    func session(threads: Int = 1) throws -> Session {
        Session(model: try XCTUnwrap(Self.model, "the LiteMedSAM checkpoint is needed (scripts/fetch-assets.sh)"), threads: threads)
    }

    func gradient(_ w: Int, _ h: Int) -> [UInt8] { (0..<(w * h * 3)).map { UInt8(truncatingIfNeeded: $0 / 3 % w + $0 / (3 * w)) } }

    func testBadImagesAreRejected() throws {
        let s = try session()
        let px = [UInt8](repeating: 7, count: 64)
        try px.withUnsafeBufferPointer { p in
            for (w, h) in [(0, 0), (1, 1), (1, 5), (5, 0)] {
                XCTAssertThrowsError(try s.setImage(pixels: p.baseAddress!, width: w, height: h)) {
                    guard case PocketSAMError.invalidImage = $0 else { return XCTFail("\($0)") }
                }
            }
            XCTAssertThrowsError(try s.setImage(pixels: p.baseAddress!, width: 20_000, height: 2))
            XCTAssertThrowsError(try s.setImage(pixels: p.baseAddress!, width: 4, height: 4, channels: 4))
            XCTAssertThrowsError(try s.setImage(pixels: p.baseAddress!, width: 4, height: 4, stride: 3))
        }
        // Corrupt files.
        let dir = FileManager.default.temporaryDirectory
        let png = dir.appendingPathComponent("bad-\(UUID()).png"), jpg = dir.appendingPathComponent("bad-\(UUID()).jpg")
        try Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 1, 2, 3]).write(to: png)
        try Data([0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, 1, 2, 3]).write(to: jpg)
        defer { try? FileManager.default.removeItem(at: png); try? FileManager.default.removeItem(at: jpg) }
        for f in [png, jpg] {
            XCTAssertThrowsError(try ImageIO.read(f.path)) {
                guard case ImageIOError.corrupt = $0 else { return XCTFail("\($0)") }
            }
        }
        XCTAssertThrowsError(try ImageIO.read("/nonexistent.png"))
    }

    func testBadPromptsAreRejected() throws {
        let s = try session()
        XCTAssertThrowsError(try s.predict(box: BoxPrompt(x0: 1, y0: 1, x1: 5, y1: 5))) {
            XCTAssertEqual($0 as? PocketSAMError, .noImage)
        }
        let (w, h) = (120, 80)
        let px = gradient(w, h)
        try px.withUnsafeBufferPointer { try s.setImage(pixels: $0.baseAddress!, width: w, height: h) }
        let bad: [(String, () throws -> Prediction)] = [
            ("no prompt", { try s.predict() }),
            ("NaN point", { try s.predict(points: [PointPrompt(x: .nan, y: 3)]) }),
            ("infinite point", { try s.predict(points: [PointPrompt(x: 3, y: .infinity)]) }),
            ("point outside", { try s.predict(points: [PointPrompt(x: 130, y: 3)]) }),
            ("negative point", { try s.predict(points: [PointPrompt(x: -1, y: 3)]) }),
            ("inverted box", { try s.predict(box: BoxPrompt(x0: 50, y0: 10, x1: 20, y1: 40)) }),
            ("box outside", { try s.predict(box: BoxPrompt(x0: 10, y0: 10, x1: 200, y1: 40)) }),
            ("NaN box", { try s.predict(box: BoxPrompt(x0: .nan, y0: 10, x1: 20, y1: 40)) }),
            ("mask input size", { try s.predict(box: BoxPrompt(x0: 1, y0: 1, x1: 9, y1: 9), maskInput: [Float](repeating: 0, count: 100)) }),
            ("NaN mask input", { try s.predict(box: BoxPrompt(x0: 1, y0: 1, x1: 9, y1: 9), maskInput: [Float](repeating: .nan, count: 256 * 256)) }),
        ]
        for (what, call) in bad {
            XCTAssertThrowsError(try call(), what) {
                guard case PocketSAMError.invalidPrompt = $0 else { return XCTFail("\(what): \($0)") }
            }
        }
        // A good prompt still works after all that.
        let p = try s.predict(box: BoxPrompt(x0: 10, y0: 10, x1: 60, y1: 50))
        XCTAssertEqual(p.masks.count, w * h)
    }

    /// Results do not depend on the thread count (work is split by output columns; every element is the
    /// same dot product in the same order).
    func testOneAndTwoThreadsGiveTheSameAnswer() throws {
        let (w, h) = (300, 200)
        let px = gradient(w, h)
        var results: [Prediction] = []
        var embeddings: [[Float]] = []
        for t in [1, 2] {
            let s = try session(threads: t)
            try px.withUnsafeBufferPointer { try s.setImage(pixels: $0.baseAddress!, width: w, height: h) }
            embeddings.append(try s.imageEmbedding())
            results.append(try s.predict(points: [PointPrompt(x: 100, y: 50)], box: BoxPrompt(x0: 40, y0: 20, x1: 200, y1: 150)))
        }
        XCTAssertTrue(embeddings[0] == embeddings[1], "embeddings differ between 1 and 2 threads")
        XCTAssertTrue(results[0].masks == results[1].masks, "masks differ")
        XCTAssertEqual(results[0].iou, results[1].iou)
        XCTAssertTrue(results[0].lowResLogits == results[1].lowResLogits, "low-res logits differ")
    }
}
