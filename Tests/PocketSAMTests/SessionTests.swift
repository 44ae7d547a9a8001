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
    /// The resize's byte-exact arithmetic against a plain Int64 transcription of PIL's antialiased bilinear resampling
    /// (ImagingResample: triangle filter widened by the scale, weights normalised to 22-bit fixed point, a horizontal
    /// pass then a vertical one, each rounded to bytes), on RGB and gray images of odd sizes, shrunk and enlarged.
    func testResizeIsPILsFixedPointResampling() throws {
        let s = try session(threads: 2)
        func coefficients(_ inSize: Int, _ outSize: Int) -> [(first: Int, weights: [Int64])] {
            let scale = Double(inSize) / Double(outSize), fs = max(scale, 1), ss = 1 / fs
            return (0..<outSize).map { o in
                let center = (Double(o) + 0.5) * scale
                let lo = max(Int(center - fs + 0.5), 0), hi = min(Int(center + fs + 0.5), inSize)
                let tri = (lo..<hi).map { x -> Double in let t = abs((Double(x) - center + 0.5) * ss); return t < 1 ? 1 - t : 0 }
                let sum = tri.reduce(0, +)
                return (lo, tri.map { let f = (sum == 0 ? 0 : $0 / sum) * Double(1 << 22); return Int64(f < 0 ? f - 0.5 : f + 0.5) })
            }
        }
        func byte(_ acc: Int64) -> UInt8 { UInt8(max(0, min(255, acc >> 22))) }
        var seed: UInt64 = 0x9E3779B97F4A7C15
        for (w, h, channels) in [(301, 173, 3), (97, 311, 1), (1000, 21, 3), (200, 130, 3)] {
            let px = (0..<(w * h * channels)).map { _ -> UInt8 in
                seed = seed &* 6364136223846793005 &+ 1442695040888963407
                return UInt8(truncatingIfNeeded: seed >> 56)
            }
            try px.withUnsafeBufferPointer { try s.setImage(pixels: $0.baseAddress!, width: w, height: h, channels: channels) }
            let long = 256, scale = Double(long) / Double(max(w, h))
            let oh = Int(Double(h) * scale + 0.5), ow = Int(Double(w) * scale + 0.5)
            // Horizontal pass (gray replicated to three channels), then vertical.
            let cx = coefficients(w, ow), cy = coefficients(h, oh)
            var tmp = [UInt8](repeating: 0, count: h * ow * 3), ref = [UInt8](repeating: 0, count: oh * ow * 3)
            for y in 0..<h {
                for xx in 0..<ow {
                    for c in 0..<3 {
                        var acc: Int64 = 1 << 21
                        for (t, k) in cx[xx].weights.enumerated() { acc += Int64(px[(y * w + cx[xx].first + t) * channels + (channels == 3 ? c : 0)]) * k }
                        tmp[(y * ow + xx) * 3 + c] = byte(acc)
                    }
                }
            }
            for yy in 0..<oh {
                for i in 0..<(ow * 3) {
                    var acc: Int64 = 1 << 21
                    for (t, k) in cy[yy].weights.enumerated() { acc += Int64(tmp[(cy[yy].first + t) * ow * 3 + i]) * k }
                    ref[yy * ow * 3 + i] = byte(acc)
                }
            }
            let got = s.resizedImage()
            XCTAssertEqual(got.count, ref.count, "\(w)×\(h)×\(channels)")
            XCTAssertTrue(got == ref, "\(w)×\(h)×\(channels): \(zip(got, ref).filter { $0 != $1 }.count) bytes differ")
        }
    }

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
