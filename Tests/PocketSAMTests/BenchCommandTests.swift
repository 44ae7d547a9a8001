import Foundation
import PocketSAMQuantize
import XCTest

/// `pocketsam bench --json`: every figure in one JSON object that a script can read, consistent with the text above it.
final class BenchCommandTests: XCTestCase {
    func testBenchJSONHasEveryFigure() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("psam-bench-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = dir.appendingPathComponent("lm.psam").path
        try Converter.convert(try Checkpoint(path: try LiteMedSAMParityTests.asset("lite_medsam.pth"))).writer.write(to: model)
        let r = try SegmentCommandTests.run(["bench", "--model", model, "--image", try LiteMedSAMParityTests.asset("images/cell.png"),
                                             "--runs", "1", "--prompts", "3", "--multimask", "--json"])
        XCTAssertEqual(r.status, 0, r.err)
        let last = try XCTUnwrap(r.out.split(separator: "\n").last)
        let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any], "last line is not a JSON object")
        XCTAssertEqual(o["threads"] as? Int, 2)
        XCTAssertEqual(o["masks_per_prompt"] as? Int, 3)
        XCTAssertGreaterThan(o["peak_rss_bytes"] as? Int ?? 0, 0)
        let m = try XCTUnwrap((o["models"] as? [[String: Any]])?.first)
        for key in ["encoder_ms", "decoder_ms_per_prompt"] {
            let s = try XCTUnwrap(m[key] as? [String: Double], key)
            let (lo, med, hi) = (s["min"] ?? -1, s["median"] ?? -1, s["max"] ?? -1)
            XCTAssert(lo > 0 && lo <= med && med <= hi, "\(key): \(s)")
        }
        // The same encoder MACs as LiteMedSAM's encoder has (37.47 GMAC at 1024 px), and a decoder's per prompt.
        XCTAssertEqual(m["encoder_gmac"] as? Double ?? 0, 37.47, accuracy: 0.01)
        XCTAssertGreaterThan(m["decoder_mmac_per_prompt"] as? Double ?? 0, 100)
        XCTAssertGreaterThan(m["decoder_setup_ms"] as? Double ?? 0, 0)
        XCTAssertGreaterThan(m["planned_arena_bytes"] as? Int ?? 0, 0)
        XCTAssertGreaterThan(m["int8_layers"] as? Int ?? 0, 0)
        XCTAssert(r.out.contains("decoder setup (once per image"), r.out)
    }
}
