import Foundation
import PocketSAMFormat
import XCTest

/// The command-line tool as a user runs it: exit codes and messages.
final class QuantizeCommandTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = try Fixtures.temporaryDirectory()
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    static var binary: String? {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(),
            Bundle.main.bundleURL,
            Bundle.main.bundleURL.deletingLastPathComponent(),
        ].map { $0.appendingPathComponent("pocketsam-quantize").path }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    func run(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) { try Self.run(args) }

    /// Runs the tool with `args`; `environment` entries are set (or, with nil values, removed) on top of this process's.
    static func run(_ args: [String], environment: [String: String?] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
        let exe = try XCTUnwrap(binary, "pocketsam-quantize was not built next to the tests")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        if !environment.isEmpty {
            var env = ProcessInfo.processInfo.environment
            for (k, v) in environment { env[k] = v }
            p.environment = env
        }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    func testQuantizesLiteMedSAMWithAReport() throws {
        let out = dir.appendingPathComponent("lm.psam").path
        let r = try run([try Fixtures.liteMedSAM(), "-o", out, "--report"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("tinyvit.embed_dims = [64, 128, 160, 320]"), r.stdout)
        XCTAssertTrue(r.stdout.contains("image_encoder.neck.2.weight"))
        XCTAssertTrue(r.stderr.contains("wrote \(out)"), r.stderr)
        let f = try PSAMFile.open(path: out)
        XCTAssertEqual(f.config?.variant, .liteMedSAM)
        XCTAssertEqual(try f.metadata.string("psam.precision"), "int8")
    }

    func testHostileInputsExitNonZeroWithAClearMessage() throws {
        let out = dir.appendingPathComponent("x.psam").path
        var evil = TorchSave(tensors: [.init(name: "w", shape: [1], values: [1])])
        evil.inject = TorchSave.global("posix", "system") + [0x30]
        let evilPath = dir.appendingPathComponent("evil.pth")
        try writeFile(evil.bytes(), evilPath)
        let good = TorchSave(tensors: [.init(name: "w", shape: [4], values: [1, 2, 3, 4])]).bytes()
        let truncPath = dir.appendingPathComponent("trunc.pth")
        try writeFile(Array(good[0..<(good.count / 2)]), truncPath)
        let unknownPath = dir.appendingPathComponent("unknown.pth")
        try writeFile(good, unknownPath)
        for (path, needle) in [(evilPath.path, "posix.system"), (truncPath.path, "corrupt zip"),
                               (unknownPath.path, "unknown architecture"), ("/nonexistent.pth", "cannot open")] {
            let r = try run([path, "-o", out, "-q"])
            XCTAssertEqual(r.status, 1, "\(path): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(needle), "\(path): \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), "no output on failure")
        }
        // A usage error.
        let u = try run([evilPath.path])
        XCTAssertNotEqual(u.status, 0)
        XCTAssertTrue(u.stderr.contains("--output"), u.stderr)
        // --keep-fp16 with a precision that has no int8 tensors.
        let k = try run([evilPath.path, "-o", out, "--precision", "fp32", "--keep-fp16", "*"])
        XCTAssertNotEqual(k.status, 0)
        XCTAssertTrue(k.stderr.contains("--keep-fp16 applies to int8"), k.stderr)
    }

    /// `--random ARCH`: a model of the published architecture that reads back with exactly the preset's
    /// configuration, the same bytes for the same seed, different weights for another; bad use refused.
    func testRandomArchitecture() throws {
        let a = dir.appendingPathComponent("a.psam").path, b = dir.appendingPathComponent("b.psam").path
        let c = dir.appendingPathComponent("c.psam").path
        for (path, seed) in [(a, "1"), (b, "1"), (c, "2")] {
            let r = try run(["--random", "litemedsam", "--seed", seed, "-o", path, "-q"])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let file = try PSAMFile.open(path: a)
        XCTAssertEqual(file.config, ModelConfig.preset("litemedsam"))
        XCTAssertEqual(file.metadata["psam.source_format"], .string("random"))
        let bytes = { (p: String) in try Data(contentsOf: URL(fileURLWithPath: p)) }
        XCTAssertEqual(try bytes(a), try bytes(b))
        XCTAssertNotEqual(try bytes(a), try bytes(c))
        for args in [["--random", "sam_vit_x", "-o", a], ["--random", "mobilesam", "x.pth", "-o", a], ["-o", a]] {
            let r = try run(args)
            XCTAssertNotEqual(r.status, 0, args.joined(separator: " "))
        }
        for name in ModelConfig.presetNames {
            let cfg = try XCTUnwrap(ModelConfig.preset(name))
            XCTAssertNoThrow(try cfg.check(), name)
        }
    }
}
