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
