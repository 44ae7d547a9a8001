import Foundation
import XCTest

/// `make install` into a temporary prefix, then the C example built against that prefix only (no path into .build),
/// with pkg-config and with CMake's find_package(PocketSAM): its masks equal the Swift API's on the real LiteMedSAM
/// model. Also the nm check of the installed libpocketsam.a, the installed tools without Swift libraries, the
/// version in one place, DESTDIR staging and `make uninstall`. Processes, the model and the Swift mask come from
/// CABITests.
final class InstallTests: XCTestCase {
    static let root = LiteMedSAMParityTests.root
    static let installed = [
        "include/pocketsam.h", "lib/libpocketsam.a", "lib/pkgconfig/pocketsam.pc", "lib/cmake/PocketSAM/PocketSAMConfig.cmake",
        "lib/cmake/PocketSAM/PocketSAMConfigVersion.cmake", "bin/pocketsam", "bin/pocketsam-quantize",
    ]

    /// The root Makefile on the built products. NO_SWIFT_BUILD=1: `swift test` holds the lock on .build, so SwiftPM
    /// run from here would wait for ever; `swift build --build-tests` has built the products, and make only assembles
    /// libpocketsam.a and the static tools from them (when out of date) and copies.
    static func make(_ args: [String]) throws -> CABITests.Run {
        guard let products = CABITests.productsDir else {
            throw CABITests.SetupError("libPocketSAMC.a not built next to the tests (swift build --build-tests builds it)")
        }
        return try CABITests.run("/usr/bin/make", ["-s", "-C", root.path, "BUILD=\(products.path)", "NO_SWIFT_BUILD=1"] + args)
    }

    /// A tool found on PATH (cmake, pkg-config, cc); exit 127 with a hint when it is missing.
    static func tool(_ name: String, _ args: [String], env: [String: String] = [:]) throws -> CABITests.Run {
        let r = try CABITests.run("/usr/bin/env", [name] + args, env: env)
        if r.status == 127 {
            throw CABITests.SetupError("\(name) not found (scripts/install-deps.sh installs it; make test runs that): \(r.err)")
        }
        return r
    }

    /// One `make install` into a fresh prefix for the whole class; returns the folder that holds `prefix/`.
    static let setup: Result<URL, Error> = Result {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("psam-install-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let r = try make(["install", "PREFIX=\(dir.appendingPathComponent("prefix").path)"])
        guard r.status == 0 else { throw CABITests.SetupError("make install failed (\(r.status)):\n\(r.out)\n\(r.err)") }
        return dir
    }

    /// The Swift API's mask for CABITests' box on cell.png, with the model CABITests converts; once.
    static let swiftMask: Result<(model: String, mask: [UInt8], width: Int, height: Int), Error> = Result {
        let (_, model) = try CABITests.built.get()
        // swiftMask is an instance method of CABITests: an instance made only to call it.
        let s = try CABITests(name: "swiftMask", testClosure: { _ in }).swiftMask(model: model)
        return (model, s.mask, s.width, s.height)
    }

    /// Runs a C host built against the prefix on cell.png and compares its mask with the Swift API's.
    func checkMaskEqualsSwiftAPI(host: URL, file: StaticString = #filePath, line: UInt = #line) throws {
        let s = try Self.swiftMask.get()
        let pgm = host.deletingLastPathComponent().appendingPathComponent("\(host.lastPathComponent)-mask.pgm").path
        let b = CABITests.box
        let r = try CABITests.run(host.path, [s.model, try LiteMedSAMParityTests.asset("images/cell.png"),
                                              "\(b.x0)", "\(b.y0)", "\(b.x1)", "\(b.y1)", pgm])
        XCTAssertEqual(r.status, 0, r.err, file: file, line: line)
        let c = try CABITests.readPGM(pgm)
        XCTAssertEqual([c.width, c.height], [s.width, s.height], file: file, line: line)
        XCTAssertGreaterThan(s.mask.reduce(0) { $0 + Int($1) }, 5000, "the cell is ~10,000 px", file: file, line: line)
        XCTAssertEqual(c.pixels, s.mask.map { $0 * 255 }, "the installed library's mask differs from the Swift API's",
                       file: file, line: line)
    }

    func testInstallsEveryFile() throws {
        let prefix = try Self.setup.get().appendingPathComponent("prefix")
        for f in Self.installed {
            XCTAssertTrue(FileManager.default.fileExists(atPath: prefix.appendingPathComponent(f).path), "\(f) not installed")
        }
    }

    /// scripts/check-static-lib.sh on the installed archive: every psam_ function of the installed header defined,
    /// nothing else global, every undefined symbol from the system libraries.
    func testInstalledLibraryPassesNMCheck() throws {
        let prefix = try Self.setup.get().appendingPathComponent("prefix")
        let r = try CABITests.run(Self.root.appendingPathComponent("scripts/check-static-lib.sh").path,
                                  [prefix.appendingPathComponent("lib/libpocketsam.a").path,
                                   prefix.appendingPathComponent("include/pocketsam.h").path])
        XCTAssertEqual(r.status, 0, r.out + r.err)
        XCTAssertTrue(r.out.hasSuffix(": ok\n"), r.out)
    }

    /// `cc main.c $(pkg-config --cflags --libs --static pocketsam)` with PKG_CONFIG_PATH on the prefix alone.
    func testPkgConfigBuildMatchesSwiftAPI() throws {
        let dir = try Self.setup.get()
        let env = ["PKG_CONFIG_PATH": dir.appendingPathComponent("prefix/lib/pkgconfig").path]
        let pc = try Self.tool("pkg-config", ["--cflags", "--libs", "--static", "pocketsam"], env: env)
        XCTAssertEqual(pc.status, 0, pc.err)
        let flags = pc.out.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
        XCTAssertFalse(flags.contains { $0.contains("/.build") }, "pkg-config points into the build tree: \(flags)")
        XCTAssertTrue(flags.contains("-I" + dir.appendingPathComponent("prefix/include").path), "\(flags)")
        let host = dir.appendingPathComponent("c-host-pkg-config")
        let cc = try Self.tool("cc", ["-O2", "-std=c11", "-Wall", "-Wextra", "-o", host.path,
                                      Self.root.appendingPathComponent("Examples/c-host/main.c").path] + flags)
        XCTAssertEqual(cc.status, 0, cc.err)
        try checkMaskEqualsSwiftAPI(host: host)

        // The version is in one place: pkg-config's, CMake's and psam_version()'s are the same.
        let version = try Self.tool("pkg-config", ["--modversion", "pocketsam"], env: env).out
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let cmakeVersion = try String(contentsOf: dir.appendingPathComponent("prefix/lib/cmake/PocketSAM/PocketSAMConfigVersion.cmake"),
                                      encoding: .utf8)
        XCTAssertTrue(cmakeVersion.contains("set(PACKAGE_VERSION \"\(version)\")"), cmakeVersion)
        let src = dir.appendingPathComponent("version.c")
        try "#include <pocketsam.h>\n#include <stdio.h>\nint main(void) { puts(psam_version()); return 0; }\n"
            .write(to: src, atomically: true, encoding: .utf8)
        let exe = dir.appendingPathComponent("version")
        let ccv = try Self.tool("cc", ["-std=c11", "-o", exe.path, src.path] + flags)
        XCTAssertEqual(ccv.status, 0, ccv.err)
        XCTAssertEqual(try CABITests.run(exe.path, []).out, version + "\n")
    }

    /// Examples/c-host/CMakeLists.txt (find_package(PocketSAM), PocketSAM::pocketsam) against the prefix alone:
    /// c-host's mask, and abi-checks' every status.
    func testCMakeBuildMatchesSwiftAPI() throws {
        let dir = try Self.setup.get()
        let build = dir.appendingPathComponent("cmake-build")
        let configure = try Self.tool("cmake", ["-S", Self.root.appendingPathComponent("Examples/c-host").path, "-B", build.path,
                                                "-DCMAKE_PREFIX_PATH=\(dir.appendingPathComponent("prefix").path)"])
        XCTAssertEqual(configure.status, 0, configure.out + configure.err)
        let make = try Self.tool("cmake", ["--build", build.path])
        XCTAssertEqual(make.status, 0, make.out + make.err)
        let link = try String(contentsOf: build.appendingPathComponent("CMakeFiles/c-host.dir/link.txt"), encoding: .utf8)
        XCTAssertFalse(link.contains("/.build"), "CMake links from the build tree: \(link)")
        XCTAssertTrue(link.contains(dir.appendingPathComponent("prefix/lib/libpocketsam.a").path), link)
        try checkMaskEqualsSwiftAPI(host: build.appendingPathComponent("c-host"))

        let checks = try CABITests.run(build.appendingPathComponent("abi-checks").path,
                                       [try Self.swiftMask.get().model, try LiteMedSAMParityTests.asset("images/cell.png")])
        XCTAssertEqual(checks.status, 0, checks.err)
        XCTAssertTrue((checks.out.split(separator: "\n").last ?? "").hasSuffix(" passed, 0 failed"), checks.out + checks.err)
    }

    /// A program with its own Swift runtime (a Swift program linked with -static-stdlib) links the installed archive too:
    /// the runtime inside is private (local symbols, no COMDAT groups, its own metadata sections), so nothing clashes;
    /// the program uses its runtime (a Set, a dynamic cast) and the C host's code gives the Swift API's mask.
    func testSwiftProgramWithItsOwnRuntimeLinksTheArchive() throws {
        let dir = try Self.setup.get()
        let work = dir.appendingPathComponent("swift-program")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let prefix = dir.appendingPathComponent("prefix")
        let hostObject = work.appendingPathComponent("host.o").path
        let cc = try Self.tool("cc", ["-O2", "-std=c11", "-Dmain=c_host_main", "-I", prefix.appendingPathComponent("include").path,
                                      "-c", Self.root.appendingPathComponent("Examples/c-host/main.c").path, "-o", hostObject])
        XCTAssertEqual(cc.status, 0, cc.err)
        let main = work.appendingPathComponent("main.swift")
        try """
            import Glibc
            @_silgen_name("c_host_main") func cHostMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32
            struct Tag: Hashable { let name: String }
            let tags: Set<Tag> = [Tag(name: "a"), Tag(name: "b"), Tag(name: "a")]
            let value: Any = Tag(name: "c")
            print("own runtime:", tags.count, value is any Hashable)
            var argv: [UnsafeMutablePointer<CChar>?] = CommandLine.arguments.map { strdup($0) } + [nil]
            exit(cHostMain(Int32(CommandLine.arguments.count), &argv))
            """.write(to: main, atomically: true, encoding: .utf8)
        let exe = work.appendingPathComponent("swift-program")
        let swiftc = try Self.tool("swiftc", ["-O", "-static-stdlib", "-o", exe.path, main.path, hostObject,
                                              prefix.appendingPathComponent("lib/libpocketsam.a").path,
                                              "-lopenblas", "-lturbojpeg", "-lpng16", "-lstdc++"])
        XCTAssertEqual(swiftc.status, 0, swiftc.err)
        try checkMaskEqualsSwiftAPI(host: exe)
        XCTAssertTrue(try CABITests.run(exe.path, []).out.hasPrefix("own runtime: 2 true\n"))
    }

    /// The installed tools are linked with the Swift runtime static: ldd lists no Swift library, and they run.
    func testInstalledToolsNeedNoSwiftLibraries() throws {
        let bin = try Self.setup.get().appendingPathComponent("prefix/bin")
        for tool in ["pocketsam", "pocketsam-quantize"] {
            let exe = bin.appendingPathComponent(tool).path
            let ldd = try CABITests.run("/usr/bin/ldd", [exe])
            XCTAssertEqual(ldd.status, 0, ldd.err)
            for lib in ["libswift", "libFoundation", "libdispatch", "libBlocksRuntime", "/swift/"] {
                XCTAssertFalse(ldd.out.contains(lib), "\(tool) needs \(lib): \(ldd.out)")
            }
            XCTAssertEqual(try CABITests.run(exe, ["--help"]).status, 0, tool)
        }
        let info = try CABITests.run(bin.appendingPathComponent("pocketsam").path, ["info", try Self.swiftMask.get().model])
        XCTAssertEqual(info.status, 0, info.err)
        XCTAssertTrue(info.out.contains("litemedsam"), info.out)
    }

    /// DESTDIR stages the files under the prefix they name; `make uninstall` removes every one.
    func testDestdirAndUninstall() throws {
        let stage = try Self.setup.get().appendingPathComponent("stage")
        let prefix = "/opt/pocketsam-test"
        let install = try Self.make(["install", "PREFIX=\(prefix)", "DESTDIR=\(stage.path)"])
        XCTAssertEqual(install.status, 0, install.err)
        let staged = stage.appendingPathComponent(String(prefix.dropFirst()))
        for f in Self.installed {
            XCTAssertTrue(FileManager.default.fileExists(atPath: staged.appendingPathComponent(f).path), "\(f) not staged")
        }
        let pc = try String(contentsOf: staged.appendingPathComponent("lib/pkgconfig/pocketsam.pc"), encoding: .utf8)
        XCTAssertTrue(pc.contains("prefix=\(prefix)\n"), pc)
        XCTAssertFalse(FileManager.default.fileExists(atPath: prefix), "DESTDIR ignored: \(prefix) was written")

        let uninstall = try Self.make(["uninstall", "PREFIX=\(prefix)", "DESTDIR=\(stage.path)"])
        XCTAssertEqual(uninstall.status, 0, uninstall.err)
        let left = FileManager.default.enumerator(atPath: stage.path)?.compactMap { $0 as? String }.filter {
            var isDir: ObjCBool = false
            return FileManager.default.fileExists(atPath: stage.appendingPathComponent($0).path, isDirectory: &isDir) && !isDir.boolValue
        } ?? []
        XCTAssertEqual(left, [], "make uninstall left files")
    }
}
