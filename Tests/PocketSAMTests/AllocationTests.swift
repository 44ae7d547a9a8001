import MallocCounter
import PocketSAM
import XCTest

/// After the first call, encoding an image and answering a prompt make no heap allocation: all
/// activations come from the session's arena, outputs go into the caller's reused buffers.
final class AllocationTests: XCTestCase {
    func testNoHeapAllocationAfterTheFirstCall() throws {
        let model = try XCTUnwrap(SessionTests.model, "the LiteMedSAM checkpoint is needed")
        for threads in [1, 2] {
            let s = Session(model: model, threads: threads)
            let (w, h) = (320, 240)
            let px = (0..<(w * h * 3)).map { UInt8(truncatingIfNeeded: $0 % 251) }
            let points = [PointPrompt(x: 100, y: 80)]
            let box = BoxPrompt(x0: 40, y0: 30, x1: 250, y1: 200)
            var result = Prediction()
            try px.withUnsafeBufferPointer { p in
                try s.setImage(pixels: p.baseAddress!, width: w, height: h)
                try s.predict(points: points, box: box, into: &result)
                try s.predict(points: points, box: box, multimask: true, into: &result)
                psam_test_malloc_counting(1)
                let before = psam_test_malloc_count()
                try s.setImage(pixels: p.baseAddress!, width: w, height: h)
                let afterEncode = psam_test_malloc_count()
                try s.predict(points: points, box: box, into: &result)
                try s.predict(points: points, box: box, multimask: true, into: &result)
                let afterPredict = psam_test_malloc_count()
                psam_test_malloc_counting(0)
                XCTAssertEqual(afterEncode - before, 0, "\(threads) threads: setImage allocated")
                XCTAssertEqual(afterPredict - afterEncode, 0, "\(threads) threads: predict allocated")
            }
            XCTAssertEqual(result.count, 3)
        }
    }

    /// The counter itself works: an Array allocation is seen.
    /// HQ-SAM (the small random HQ ViT): the early feature, the HQ features and the HQ mask come from the arena too, in a
    /// session over exactly the planned arena (so the plan covers the HQ path), with and without `hqTokenOnly`.
    func testHQSAMAllocatesNothingAfterTheFirstCall() throws {
        let model = try HQSAMParityTests.model("hq_vit_tiny.pth")
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: try model.plannedArenaBytes(), alignment: 64)
        defer { raw.deallocate() }
        let s = try Session(model: model, threads: 2, buffer: raw)
        let (w, h) = (300, 200)
        let px = (0..<(w * h * 3)).map { UInt8(truncatingIfNeeded: $0 % 241) }
        let box = BoxPrompt(x0: 40, y0: 30, x1: 250, y1: 180)
        var result = Prediction()
        try px.withUnsafeBufferPointer { p in
            try s.setImage(pixels: p.baseAddress!, width: w, height: h)
            try s.predict(box: box, multimask: true, into: &result)
            try s.predict(box: box, hqTokenOnly: true, into: &result)
            psam_test_malloc_counting(1)
            let before = psam_test_malloc_count()
            try s.setImage(pixels: p.baseAddress!, width: w, height: h)
            try s.predict(box: box, multimask: true, into: &result)
            try s.predict(box: box, hqTokenOnly: true, into: &result)
            let after = psam_test_malloc_count()
            psam_test_malloc_counting(0)
            XCTAssertEqual(after - before, 0, "the HQ path allocated")
        }
        XCTAssertEqual(result.count, 1)
    }

    func testTheCounterSeesAllocations() {
        psam_test_malloc_counting(1)
        let before = psam_test_malloc_count()
        let a = [Int](repeating: 1, count: 1000)
        let after = psam_test_malloc_count()
        psam_test_malloc_counting(0)
        XCTAssertEqual(a.count, 1000)
        XCTAssertGreaterThan(after - before, 0)
    }
}

/// The planning pass and sessions over a planned arena (the session's own or the caller's buffer).
final class ArenaPlanTests: XCTestCase {
    func testPlannedArenaFitsEveryCallAndMatchesAGrowingSession() throws {
        let model = try XCTUnwrap(SessionTests.model, "the LiteMedSAM checkpoint is needed")
        let need = try model.plannedArenaBytes()
        XCTAssertEqual(try model.plannedArenaBytes(), need, "cached")
        XCTAssertGreaterThan(need, 1 << 20)
        // A caller's buffer of exactly the planned size: images of other sizes and large prompts fit
        // (an overflow would trap), and the answers equal a growing session's.
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: need, alignment: 64)
        defer { raw.deallocate() }
        let fixed = try Session(model: model, threads: 2, buffer: raw)
        let growing = Session(model: model, threads: 1)
        for (w, h) in [(700, 300), (64, 900), (256, 256)] {
            let px = (0..<(w * h * 3)).map { UInt8(truncatingIfNeeded: $0 &* 7 % 253) }
            var a = Prediction(), b = Prediction()
            let pts = (0..<Session.maxPoints).map { PointPrompt(x: Float($0 % w), y: Float($0 % h), positive: $0 % 2 == 0) }
            for s in [fixed, growing] {
                try px.withUnsafeBufferPointer { try s.setImage(pixels: $0.baseAddress!, width: w, height: h) }
            }
            try fixed.predict(points: pts, box: BoxPrompt(x0: 0, y0: 0, x1: Float(w), y1: Float(h)), multimask: true, into: &a)
            try growing.predict(points: pts, box: BoxPrompt(x0: 0, y0: 0, x1: Float(w), y1: Float(h)), multimask: true, into: &b)
            XCTAssertTrue(a.masks == b.masks && a.iou == b.iou, "\(w)x\(h): fixed and growing arenas disagree")
            XCTAssertLessThanOrEqual(fixed.arenaPeakBytes, need)
        }
        // A buffer one byte short, or misaligned, is refused.
        let short = UnsafeMutableRawBufferPointer(start: raw.baseAddress, count: need - 1)
        XCTAssertThrowsError(try Session(model: model, buffer: short)) {
            XCTAssertEqual($0 as? PocketSAMError, .bufferTooSmall(needed: need, given: need - 1))
        }
        let big = UnsafeMutableRawBufferPointer.allocate(byteCount: need + 64, alignment: 64)
        defer { big.deallocate() }
        XCTAssertThrowsError(try Session(model: model, buffer: UnsafeMutableRawBufferPointer(start: big.baseAddress! + 8, count: need))) {
            XCTAssertEqual($0 as? PocketSAMError, .bufferMisaligned)
        }
        print("LiteMedSAM planned arena: \(need) bytes")
    }
}
