import Foundation
import PocketSAMIO
import PocketSAMQuantize
import XCTest

/// `pocketsam` as a user runs it: outputs, exit codes, messages.
final class SegmentCommandTests: XCTestCase {
    static var binary: String? {
        [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(), Bundle.main.bundleURL,
         Bundle.main.bundleURL.deletingLastPathComponent()]
            .map { $0.appendingPathComponent("pocketsam").path }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    func run(_ args: [String]) throws -> (status: Int32, out: String, err: String) { try Self.run(args) }

    static func run(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try XCTUnwrap(binary, "pocketsam not built next to the tests"))
        p.arguments = args
        let o = Pipe(), e = Pipe()
        p.standardOutput = o
        p.standardError = e
        try p.run()
        let od = o.fileHandleForReading.readDataToEndOfFile(), ed = e.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: od, as: UTF8.self), String(decoding: ed, as: UTF8.self))
    }

    func testSegmentWritesMasksOverlayLogitsAndScores() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("psam-seg-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = dir.appendingPathComponent("lm.psam").path
        let ckpt = try Checkpoint(path: try LiteMedSAMParityTests.asset("lite_medsam.pth"))
        try Converter.convert(ckpt).writer.write(to: model)
        let image = try LiteMedSAMParityTests.asset("images/cell.png")
        let out = dir.appendingPathComponent("out").path
        let r = try run(["segment", "--model", model, "--image", image, "--box", "355,300,500,448", "--point", "428,372,1",
                         "--out", out])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("overlay: \(out)/overlay.png"), r.out)
        let mask = try ImageIO.read(out + "/mask_0.png")
        XCTAssertEqual([mask.width, mask.height, mask.channels], [550, 660, 1])
        let area = mask.pixels.filter { $0 == 255 }.count
        XCTAssertGreaterThan(area, 5000, "the cell is ~10,000 px")
        XCTAssertLessThan(area, 20000)
        XCTAssertEqual(try ImageIO.read(out + "/overlay.png").channels, 3)
        let low = try NPY.decode(try ImageIO.readFile(out + "/lowres.npy"))
        XCTAssertEqual(low.shape, [1, 256, 256])
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/result.json"))) as? [String: Any])
        XCTAssertEqual((json["area"] as? [Int])?.first, area)
        // Refinement from the low-res logits.
        let r2 = try run(["segment", "--model", model, "--image", image, "--box", "355,300,500,448", "--mask-input",
                          out + "/lowres.npy", "--out", out + "2"])
        XCTAssertEqual(r2.status, 0, r2.err)
        // Bad prompts, image, model: clear message, meaningful exit code.
        for (args, code, needle) in [
            (["--point", "10,10,2"], Int32(64), "label must be 0 or 1"),
            (["--box", "500,300,355,448"], 1, "inverted"),
            (["--point", "nan,3"], 1, "not finite"),
            (["--box", "1,2,3"], 64, "4 comma-separated numbers"),
        ] as [([String], Int32, String)] {
            let b = try run(["segment", "--model", model, "--image", image, "--out", out + "3"] + args)
            XCTAssertEqual(b.status, code, "\(args): \(b.err)")
            XCTAssertTrue(b.err.contains(needle), "\(args): \(b.err)")
        }
        let badImage = dir.appendingPathComponent("bad.png").path
        try Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0]).write(to: URL(fileURLWithPath: badImage))
        let bi = try run(["segment", "--model", model, "--image", badImage, "--box", "1,1,5,5", "--out", out + "4"])
        XCTAssertEqual(bi.status, 3, bi.err)
        let bm = try run(["segment", "--model", image, "--image", image, "--box", "1,1,5,5", "--out", out + "5"])
        XCTAssertEqual(bm.status, 2, bm.err)
        XCTAssertTrue(bm.err.contains("not a .psam file"), bm.err)
        let info = try run(["info", model])
        XCTAssertEqual(info.status, 0)
        XCTAssertTrue(info.out.contains("model.variant = \"litemedsam\""), info.out)
    }
}
