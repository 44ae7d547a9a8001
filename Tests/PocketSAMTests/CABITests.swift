import Foundation
import PocketSAM
import PocketSAMIO
import PocketSAMQuantize
import XCTest

/// The C ABI as a C program uses it: `Examples/c-host` is built with the system C compiler against
/// `libPocketSAMC.a` (Swift runtime linked statically), run on the real LiteMedSAM model, and compared
/// with the Swift API; `abi_checks.c` drives every documented status; valgrind checks memory.
final class CABITests: XCTestCase {
    static let box = (x0: Float(355), y0: Float(300), x1: Float(500), y1: Float(448))

    /// The directory with the built products (`libPocketSAMC.a`, `pocketsam`, `swift-host`).
    static var productsDir: URL? {
        [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(), Bundle.main.bundleURL,
         Bundle.main.bundleURL.deletingLastPathComponent()]
            .first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("libPocketSAMC.a").path) }
    }

    struct SetupError: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    struct Run { let status: Int32; let out: String; let err: String }

    static func run(_ exe: String, _ args: [String], env: [String: String] = [:]) throws -> Run {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        var e = ProcessInfo.processInfo.environment
        for (k, v) in env { e[k] = v }
        p.environment = e
        let o = Pipe(), er = Pipe()
        p.standardOutput = o
        p.standardError = er
        try p.run()
        // Read stderr on another thread so neither pipe can fill up and block the child.
        nonisolated(unsafe) var errData = Data()
        let t = Thread { errData = er.fileHandleForReading.readDataToEndOfFile() }
        t.start()
        let od = o.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        while t.isExecuting || !t.isFinished { usleep(1000) }
        return Run(status: p.terminationStatus, out: String(decoding: od, as: UTF8.self),
                   err: String(decoding: errData, as: UTF8.self))
    }

    /// Builds the C examples once into a temporary folder; returns it with an int8 LiteMedSAM `.psam`.
    static let built: Result<(dir: URL, model: String), Error> = Result {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("psam-cabi-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        guard let products = productsDir else {
            throw SetupError("libPocketSAMC.a not built next to the tests (swift build --build-tests builds it)")
        }
        let make = try run("/usr/bin/make", ["-s", "-C", LiteMedSAMParityTests.root.appendingPathComponent("Examples/c-host").path,
                                             "ROOT=\(LiteMedSAMParityTests.root.path)", "BUILD=\(products.path)", "OUT=\(dir.path)"])
        guard make.status == 0 else { throw SetupError("make c-host failed: \(make.err)") }
        let model = dir.appendingPathComponent("lm8.psam").path
        let ckpt = try Checkpoint(path: try LiteMedSAMParityTests.asset("lite_medsam.pth"))
        try Converter.convert(ckpt).writer.write(to: model)
        return (dir, model)
    }

    /// The Swift API's mask for the box prompt on cell.png.
    func swiftMask(model path: String) throws -> (mask: [UInt8], width: Int, height: Int) {
        let session = Session(model: try Model(path: path), threads: 2)
        let img = try ImageIO.read(try LiteMedSAMParityTests.asset("images/cell.png"))
        try img.pixels.withUnsafeBufferPointer {
            try session.setImage(pixels: $0.baseAddress!, width: img.width, height: img.height, channels: img.channels)
        }
        let b = Self.box
        let p = try session.predict(box: BoxPrompt(x0: b.x0, y0: b.y0, x1: b.x1, y1: b.y1))
        return (p.masks, p.width, p.height)
    }

    static func readPGM(_ path: String) throws -> (pixels: [UInt8], width: Int, height: Int) {
        let d = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        // "P5\n<w> <h>\n255\n" then w·h bytes.
        var fields: [String] = [], cur = "", i = 0
        while fields.count < 4, i < d.count {
            let c = d[i]
            i += 1
            if c == 0x20 || c == 0x0A { if !cur.isEmpty { fields.append(cur); cur = "" } } else { cur.append(Character(UnicodeScalar(c))) }
        }
        guard fields.count == 4, fields[0] == "P5", let w = Int(fields[1]), let h = Int(fields[2]), d.count - i == w * h else {
            throw SetupError("not a binary PGM: \(path)")
        }
        return (Array(d[i...]), w, h)
    }

    func testCHostMaskEqualsSwiftAPI() throws {
        let (dir, model) = try Self.built.get()
        let pgm = dir.appendingPathComponent("mask.pgm").path
        let b = Self.box
        let r = try Self.run(dir.appendingPathComponent("c-host").path,
                             [model, try LiteMedSAMParityTests.asset("images/cell.png"), "\(b.x0)", "\(b.y0)", "\(b.x1)", "\(b.y1)", pgm])
        XCTAssertEqual(r.status, 0, r.err)
        let c = try Self.readPGM(pgm)
        let s = try swiftMask(model: model)
        XCTAssertEqual([c.width, c.height], [s.width, s.height])
        let area = s.mask.reduce(0) { $0 + Int($1) }
        XCTAssertGreaterThan(area, 5000, "the cell is ~10,000 px")
        XCTAssertEqual(c.pixels, s.mask.map { $0 * 255 }, "C and Swift masks differ")
        XCTAssertTrue(r.out.contains("mask: \(area) pixels"), r.out)
        // Bad arguments to the example itself: usage, and a clear message for a missing model.
        XCTAssertEqual(try Self.run(dir.appendingPathComponent("c-host").path, []).status, 64)
        let missing = try Self.run(dir.appendingPathComponent("c-host").path, ["/nonexistent.psam", pgm, "0", "0", "1", "1", pgm])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.err.contains("load:"), missing.err)
    }

    /// An HQ-SAM file through the C ABI (psam_prompt_default: hq_token_only 0) gives the Swift API's HQ + SAM mask (the
    /// small random HQ ViT of HQSAMParityTests, chelsea.png).
    func testCHostRunsHQSAM() throws {
        let (dir, _) = try Self.built.get()
        let model = dir.appendingPathComponent("hq_vit.psam").path
        try Converter.convert(try Checkpoint(path: HQSAMParityTests.dir.appendingPathComponent("hq_vit_tiny.pth").path)).writer.write(to: model)
        let image = try LiteMedSAMParityTests.asset("images/chelsea.png")
        let pgm = dir.appendingPathComponent("hq.pgm").path
        let r = try Self.run(dir.appendingPathComponent("c-host").path, [model, image, "150", "60", "330", "270", pgm])
        XCTAssertEqual(r.status, 0, r.err)
        let c = try Self.readPGM(pgm)
        let session = Session(model: try Model(path: model), threads: 2)
        let img = try ImageIO.read(image)
        try img.pixels.withUnsafeBufferPointer {
            try session.setImage(pixels: $0.baseAddress!, width: img.width, height: img.height, channels: img.channels)
        }
        let box = BoxPrompt(x0: 150, y0: 60, x1: 330, y1: 270)
        let both = try session.predict(box: box), hqOnly = try session.predict(box: box, hqTokenOnly: true)
        XCTAssertNotEqual(both.masks, hqOnly.masks, "the two HQ modes give the same mask here: the test would not tell them apart")
        XCTAssertEqual(c.pixels, both.masks.map { $0 * 255 }, "C and Swift HQ masks differ")
    }

    func testABIChecksEveryStatus() throws {
        let (dir, model) = try Self.built.get()
        let r = try Self.run(dir.appendingPathComponent("abi-checks").path, [model, try LiteMedSAMParityTests.asset("images/cell.png")])
        XCTAssertEqual(r.status, 0, r.err)
        let last = r.out.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertTrue(last.hasSuffix(" passed, 0 failed"), r.out + r.err)
        let passed = Int(last.split(separator: " ").first ?? "") ?? 0
        XCTAssertGreaterThanOrEqual(passed, 95, "abi-checks ran fewer checks than it has: \(last)")
    }

    /// No Swift shared library is needed at run time: the runtime is linked statically.
    func testCHostNeedsNoSwiftSharedLibraries() throws {
        let (dir, _) = try Self.built.get()
        let exe = dir.appendingPathComponent("c-host").path
        let r = try Self.run("/usr/bin/ldd", [exe])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertFalse(r.out.contains("libswift"), r.out)
        XCTAssertFalse(r.out.contains("libdispatch"), r.out)
        XCTAssertFalse(r.out.contains("libFoundation"), r.out)
        XCTAssertTrue(r.out.contains("libopenblas"), "ldd output unexpected: \(r.out)")
    }

    /// valgrind memcheck on the C host: no invalid access, no definite leak after all frees.
    /// valgrind 3.19 has no AVX-512, so OpenBLAS is told to use its Haswell kernels for this run.
    func testCHostIsCleanUnderValgrind() throws {
        let valgrind = ["/usr/bin/valgrind", "/usr/local/bin/valgrind"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let exe = try XCTUnwrap(valgrind, "valgrind not installed (scripts/install-deps.sh installs it)")
        let (dir, model) = try Self.built.get()
        let b = Self.box
        // valgrind 3.19 cannot read the DWARF 5 debug info of the Swift toolchain's static libraries
        // ("debuginfo reader: ensure_valid failed"): check a copy without debug info (same code).
        let stripped = dir.appendingPathComponent("c-host-nodebug").path
        let strip = try Self.run("/usr/bin/strip", ["--strip-debug", "-o", stripped, dir.appendingPathComponent("c-host").path])
        XCTAssertEqual(strip.status, 0, strip.err)
        let r = try Self.run(exe, ["--error-exitcode=9", "--leak-check=full", "--errors-for-leak-kinds=definite",
                                   stripped, model,
                                   try LiteMedSAMParityTests.asset("images/cell.png"), "\(b.x0)", "\(b.y0)", "\(b.x1)", "\(b.y1)",
                                   dir.appendingPathComponent("vg.pgm").path],
                             env: ["OPENBLAS_CORETYPE": "Haswell", "PSAM_KERNELS": "avx2"])
        XCTAssertEqual(r.status, 0, "valgrind reported errors:\n" + r.err.split(separator: "\n").suffix(40).joined(separator: "\n"))
        XCTAssertTrue(r.err.contains("ERROR SUMMARY: 0 errors"), r.err)
        XCTAssertTrue(r.err.contains("definitely lost: 0 bytes") || r.err.contains("no leaks are possible"), r.err)
        XCTAssertTrue(r.out.contains("mask:"), r.out)
    }

    func testSwiftHostWritesTheSameMask() throws {
        let (dir, model) = try Self.built.get()
        let exe = try XCTUnwrap(Self.productsDir?.appendingPathComponent("swift-host").path)
        let png = dir.appendingPathComponent("swift-host.png").path
        let b = Self.box
        let r = try Self.run(exe, [model, try LiteMedSAMParityTests.asset("images/cell.png"), "\(b.x0)", "\(b.y0)", "\(b.x1)", "\(b.y1)", png])
        XCTAssertEqual(r.status, 0, r.err)
        let img = try ImageIO.read(png)
        let s = try swiftMask(model: model)
        XCTAssertEqual(img.pixels, s.mask.map { $0 * 255 })
    }
}
