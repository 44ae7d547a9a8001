import Foundation
import XCTest

/// The C kernels' own test program (`Tests/KernelTests/qgemm_test.c`), built with the system C
/// compiler and run natively (scalar, AVX2, AVX-512 VNNI: every variant this CPU has against the
/// scalar kernel, bit for bit, and the scalar kernel against a triple loop), then cross-compiled for
/// aarch64 and run under qemu-aarch64 (scalar and NEON dot-product). scripts/install-deps.sh installs
/// the cross compiler and qemu; a missing one is a failure, not a skip. The fp32 row operations have
/// their own program (`Tests/KernelTests/rowops_test.c`), run natively.
final class KernelTests: XCTestCase {
    static let root = LiteMedSAMParityTests.root
    static let sources: [String] = {
        let dir = root.appendingPathComponent("Sources/PocketSAMKernels")
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return files.filter { $0.hasSuffix(".c") }.sorted().map { dir.appendingPathComponent($0).path }
    }()

    static func which(_ name: String) -> String? {
        ["/usr/bin/", "/usr/local/bin/", "/bin/"].map { $0 + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    func build(compiler: String, output: String) throws {
        XCTAssertFalse(Self.sources.isEmpty)
        let args = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror",
                    "-I", Self.root.appendingPathComponent("Sources/PocketSAMKernels/include").path]
            + Self.sources + [Self.root.appendingPathComponent("Tests/KernelTests/qgemm_test.c").path, "-o", output, "-lm", "-lpthread"]
        let r = try CABITests.run(compiler, args)
        XCTAssertEqual(r.status, 0, "\(compiler) failed:\n\(r.err)")
    }

    func check(_ r: CABITests.Run, expecting isas: [String], minimumChecks: Int = 5000) {
        XCTAssertEqual(r.status, 0, r.out + r.err)
        let lines = r.out.split(separator: "\n").map(String.init)
        let tested = (lines.first { $0.hasPrefix("tested:") } ?? "").split(separator: " ").dropFirst().map(String.init)
        for isa in isas { XCTAssertTrue(tested.contains(isa), "\(isa) was not tested: \(lines.first ?? "")") }
        XCTAssertTrue(lines.last?.hasSuffix(" passed, 0 failed") ?? false, r.out + r.err)
        let passed = Int(lines.last?.split(separator: " ").first ?? "") ?? 0
        XCTAssertGreaterThan(passed, minimumChecks, "too few checks ran: \(lines.last ?? "")")
    }

    func testNativeKernelsEqualScalarReference() throws {
        let cc = try XCTUnwrap(Self.which("cc") ?? Self.which("gcc"), "no C compiler")
        let exe = FileManager.default.temporaryDirectory.appendingPathComponent("qgemm-test-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: exe) }
        try build(compiler: cc, output: exe)
        #if arch(x86_64)
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        var expected = ["scalar"]
        if flags.contains(" avx2") { expected.append("avx2") }
        if flags.contains(" avx512_vnni") { expected.append("avx512vnni") }
        check(try CABITests.run(exe, []), expecting: expected)
        // The AVX2 path is what machines without AVX-512 run: also check it end to end as the best choice.
        let capped = try CABITests.run(exe, [], env: ["PSAM_KERNELS": "avx2"])
        XCTAssertTrue(capped.out.contains("best: avx2") || !flags.contains(" avx2"), capped.out)
        #else
        check(try CABITests.run(exe, []), expecting: ["scalar"])
        #endif
    }

    /// The fp32 row operations' test program (`Tests/KernelTests/rowops_test.c`, linked with every kernel source;
    /// `rowops_internal.h` declares each operation's bodies, the generic ones being the reference): every variant this CPU has (AVX2 + FMA, AVX-512) and the
    /// dispatched functions against the generic bodies on many shapes, quantization and GELU bit for bit,
    /// layer norm, softmax, attention and depthwise convolution to rounding; the fp16 and bf16 window attentions
    /// (AVX-512 FP16, AVX-512 BF16) against their scalar emulations.
    func testRowOpsEqualGenericReference() throws {
        let cc = try XCTUnwrap(Self.which("cc") ?? Self.which("gcc"), "no C compiler")
        let exe = FileManager.default.temporaryDirectory.appendingPathComponent("rowops-test-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: exe) }
        let args = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror",
                    "-I", Self.root.appendingPathComponent("Sources/PocketSAMKernels/include").path,
                    Self.root.appendingPathComponent("Tests/KernelTests/rowops_test.c").path] + Self.sources + ["-o", exe, "-lm", "-lpthread"]
        let built = try CABITests.run(cc, args)
        XCTAssertEqual(built.status, 0, "\(cc) failed:\n\(built.err)")
        guard built.status == 0 else { return }
        var expected = ["generic", "dispatched"]
        #if arch(x86_64)
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        if flags.contains(" avx2") && flags.contains(" fma") { expected.append("avx2") }
        if flags.contains(" avx512f") && flags.contains(" avx512bw") && flags.contains(" avx512vl") { expected.append("avx512") }
        #endif
        let r = try CABITests.run(exe, [])
        check(r, expecting: expected, minimumChecks: 3000)
        #if arch(x86_64)
        // The fp16 and bf16 window attentions' vector bodies run where the CPU has AVX-512 FP16 or BF16 (else only
        // their references).
        if flags.contains(" avx512_fp16") { XCTAssertTrue(r.out.contains("fp16 window attention (avx512fp16)"), r.out) }
        if flags.contains(" avx512_bf16") { XCTAssertTrue(r.out.contains("bf16 window attention (avx512bf16)"), r.out) }
        #endif
    }

    /// The in-place fp32 GEMM (`Tests/KernelTests/sgemm_test.c`, which compiles sgemm.c in): its reference
    /// loop, row body, AVX2 and AVX-512 tiles and the dispatched function against a double-precision triple
    /// loop on many shapes, natively and (reference, row body, dispatched) under qemu-aarch64.
    func testInPlaceGEMMAgainstTripleLoop() throws {
        let source = Self.root.appendingPathComponent("Tests/KernelTests/sgemm_test.c").path
        let include = Self.root.appendingPathComponent("Sources/PocketSAMKernels/include").path
        let cpuSource = Self.root.appendingPathComponent("Sources/PocketSAMKernels/cpu.c").path
        let flags = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", include, source, cpuSource, "-lm"]
        let cc = try XCTUnwrap(Self.which("cc") ?? Self.which("gcc"), "no C compiler")
        let exe = FileManager.default.temporaryDirectory.appendingPathComponent("sgemm-test-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: exe) }
        let built = try CABITests.run(cc, flags + ["-o", exe])
        XCTAssertEqual(built.status, 0, "\(cc) failed:\n\(built.err)")
        guard built.status == 0 else { return }
        var expected = ["generic", "rows", "dispatched"]
        #if arch(x86_64)
        let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        if cpu.contains(" avx2") && cpu.contains(" fma") { expected.append("avx2") }
        if cpu.contains(" avx512f") && cpu.contains(" avx512bw") && cpu.contains(" avx512vl") && cpu.contains(" avx512dq") {
            expected.append("avx512")
        }
        #endif
        check(try CABITests.run(exe, []), expecting: expected, minimumChecks: 4000)

        let armcc = try XCTUnwrap(Self.which("aarch64-linux-gnu-gcc"), "aarch64-linux-gnu-gcc missing (scripts/install-deps.sh installs it)")
        let qemu = try XCTUnwrap(Self.which("qemu-aarch64") ?? Self.which("qemu-aarch64-static"), "qemu-aarch64 missing")
        let arm = exe + "-arm"
        defer { try? FileManager.default.removeItem(atPath: arm) }
        let armBuilt = try CABITests.run(armcc, flags + ["-o", arm])
        XCTAssertEqual(armBuilt.status, 0, "\(armcc) failed:\n\(armBuilt.err)")
        guard armBuilt.status == 0 else { return }
        check(try CABITests.run(qemu, ["-L", "/usr/aarch64-linux-gnu", arm]), expecting: ["generic", "rows", "dispatched"],
              minimumChecks: 4000)
    }

    func testNEONKernelsUnderQEMU() throws {
        let cc = try XCTUnwrap(Self.which("aarch64-linux-gnu-gcc"), "aarch64-linux-gnu-gcc missing (scripts/install-deps.sh installs gcc-aarch64-linux-gnu)")
        let qemu = try XCTUnwrap(Self.which("qemu-aarch64") ?? Self.which("qemu-aarch64-static"), "qemu-aarch64 missing (scripts/install-deps.sh installs qemu-user)")
        let exe = FileManager.default.temporaryDirectory.appendingPathComponent("qgemm-test-arm-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: exe) }
        try build(compiler: cc, output: exe)
        let r = try CABITests.run(qemu, ["-L", "/usr/aarch64-linux-gnu", exe])
        check(r, expecting: ["scalar", "neondot"])
        XCTAssertTrue(r.out.contains("best: neondot"), r.out)
    }
}
