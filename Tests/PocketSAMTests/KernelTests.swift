import Foundation
import PocketSAMKernels
import XCTest

/// The C kernels' own test programs (`Tests/KernelTests/*_test.c`), built with the system C compiler and run
/// natively (every variant this CPU has against the scalar or generic body), and all of them cross-compiled for
/// aarch64 and run under qemu-aarch64 on three CPU models by `scripts/test-arm.sh`.
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

    /// Builds `Tests/KernelTests/<program>.c` with every kernel source into `output`.
    func build(_ program: String = "qgemm_test", compiler: String, output: String) throws {
        XCTAssertFalse(Self.sources.isEmpty)
        let args = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror",
                    "-I", Self.root.appendingPathComponent("Sources/PocketSAMKernels/include").path]
            + Self.sources + [Self.root.appendingPathComponent("Tests/KernelTests/\(program).c").path, "-o", output, "-lm", "-lpthread"]
        let r = try CABITests.run(compiler, args)
        XCTAssertEqual(r.status, 0, "\(compiler) failed:\n\(r.err)")
    }

    /// Builds a test program natively and runs it (nil when it did not build: the failure is recorded).
    func buildAndRun(_ program: String) throws -> CABITests.Run? {
        let cc = try XCTUnwrap(Self.which("cc") ?? Self.which("gcc"), "no C compiler")
        let exe = FileManager.default.temporaryDirectory.appendingPathComponent("\(program)-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: exe) }
        try build(program, compiler: cc, output: exe)
        guard FileManager.default.isExecutableFile(atPath: exe) else { return nil }
        return try CABITests.run(exe, [])
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
    /// `rowops_internal.h` declares each operation's bodies, the generic ones being the reference): every variant this
    /// CPU has (AVX2 + FMA, AVX-512) and the dispatched functions against the generic bodies on many shapes,
    /// quantization, GELU, add and resampling bit for bit, layer norm, softmax, attention and depthwise convolution to
    /// rounding; the fp16 and bf16 window attentions (AVX-512 FP16, AVX-512 BF16) against their scalar emulations.
    func testRowOpsEqualGenericReference() throws {
        guard let r = try buildAndRun("rowops_test") else { return }
        var expected = ["generic", "dispatched"]
        #if arch(x86_64)
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        if flags.contains(" avx2") && flags.contains(" fma") { expected.append("avx2") }
        if flags.contains(" avx512f") && flags.contains(" avx512bw") && flags.contains(" avx512vl") { expected.append("avx512") }
        #endif
        check(r, expecting: expected, minimumChecks: 3000)
        #if arch(x86_64)
        // The fp16 and bf16 window attentions' vector bodies run where the CPU has AVX-512 FP16 or BF16 (else only
        // their references).
        if flags.contains(" avx512_fp16") { XCTAssertTrue(r.out.contains("fp16 window attention (avx512fp16)"), r.out) }
        if flags.contains(" avx512_bf16") {
            XCTAssertTrue(r.out.contains("bf16 window attention (avx512bf16)"), r.out)
            XCTAssertTrue(r.out.contains("vit bf16 attention (avx512bf16)"), r.out)
        }
        if expected.contains("avx512") { XCTAssertTrue(r.out.contains("relpos_add: dispatched avx512"), r.out) }
        #endif
    }

    /// The mask decoder's post-processing (`Tests/KernelTests/maskpost_test.c`, linked with every kernel source;
    /// `maskpost_internal.h` declares each body): every variant this CPU has against the generic bodies, the upscale's
    /// mask bytes, counts and box bit for bit, the score and GELU products to rounding.
    func testMaskPostEqualGenericReference() throws {
        guard let r = try buildAndRun("maskpost_test") else { return }
        var expected = ["generic", "dispatched"]
        #if arch(x86_64)
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        if flags.contains(" avx2") && flags.contains(" fma") { expected.append("avx2") }
        #endif
        check(r, expecting: expected, minimumChecks: 500)
    }

    /// The in-place fp32 GEMM (`Tests/KernelTests/sgemm_test.c`, which compiles sgemm.c in): its reference
    /// loop, row body, AVX2 and AVX-512 tiles and the dispatched function against a double-precision triple
    /// loop on many shapes, natively (under qemu-aarch64: testKernelsUnderQEMUOnThreeARMCores).
    func testInPlaceGEMMAgainstTripleLoop() throws {
        let source = Self.root.appendingPathComponent("Tests/KernelTests/sgemm_test.c").path
        let include = Self.root.appendingPathComponent("Sources/PocketSAMKernels/include").path
        let kernels = Self.root.appendingPathComponent("Sources/PocketSAMKernels")
        let others = ["cpu.c", "portable.c", "sgemm_portable.c"].map { kernels.appendingPathComponent($0).path }
        let flags = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", include, source] + others + ["-lm"]
        let cc = try XCTUnwrap(Self.which("cc") ?? Self.which("gcc"), "no C compiler")
        let exe = FileManager.default.temporaryDirectory.appendingPathComponent("sgemm-test-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: exe) }
        let built = try CABITests.run(cc, flags + ["-o", exe])
        XCTAssertEqual(built.status, 0, "\(cc) failed:\n\(built.err)")
        guard built.status == 0 else { return }
        let expected = ["generic", "rows", "dispatched"] + Self.fp32VectorBodies
        check(try CABITests.run(exe, []), expecting: expected, minimumChecks: 4000)
    }

    /// The x86 fp32 bodies this CPU runs (`psam_cpu_avx2_fma`, `psam_cpu_avx512`), as the C tests name them.
    static var fp32VectorBodies: [String] {
        var bodies: [String] = []
        #if arch(x86_64)
        let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        if cpu.contains(" avx2") && cpu.contains(" fma") { bodies.append("avx2") }
        if cpu.contains(" avx512f") && cpu.contains(" avx512bw") && cpu.contains(" avx512vl") && cpu.contains(" avx512dq") {
            bodies.append("avx512")
        }
        #endif
        return bodies
    }

    /// The portable kernels the quantizer's calibration runs on (`Tests/KernelTests/portable_test.c`): every body of
    /// `psam_sgemm_portable` and `psam_moments_f64` equal bit for bit to the plain loops that define them, and the
    /// switch making the dispatched row operations and `psam_sgemm_inplace` run the portable code.
    func testPortableKernelsEqualTheirDefinitionBitForBit() throws {
        let r = try XCTUnwrap(try buildAndRun("portable_test"))
        let expected = ["generic"] + Self.fp32VectorBodies
        check(r, expecting: expected, minimumChecks: 1000)
    }

    /// The same bodies as the package compiles them (clang, the package's flags: a compiler that fused the AVX-512
    /// body's multiplies and adds would show here, not in the C test built with cc): each body this CPU has gives the
    /// generic body's bits for a linear's shapes (B = Wᵀ) and the moments of a layer's inputs.
    func testPortableBodiesAsBuiltGiveTheSameBits() throws {
        var bodies: [Int32] = [0]
        if psam_cpu_avx2_fma() != 0 { bodies.append(1) }
        if psam_cpu_avx512() != 0 { bodies.append(2) }
        var g = SystemRandomNumberGenerator()
        let m = 37, n = 70, k = 300
        let a = (0..<(m * k)).map { _ in Float.random(in: -2...2, using: &g) }
        let w = (0..<(n * k)).map { _ in Float.random(in: -1...1, using: &g) }
        let bias = (0..<n).map { _ in Float.random(in: -1...1, using: &g) }
        var results: [[Float]] = []
        for body in bodies {
            var c = [Float](repeating: 0, count: m * n)
            psam_sgemm_portable_with(body, a, k, 1, w, 1, k, &c, n, m, n, k, 1, bias, 0)
            results.append(c)
        }
        for (i, r) in results.enumerated() {
            XCTAssertEqual(r.map(\.bitPattern), results[0].map(\.bitPattern), "sgemm body \(bodies[i]) differs from the generic body")
        }
        var moments: [[Double]] = []
        for body in bodies {
            var h = [Double](repeating: 0, count: k * k)
            psam_moments_f64_with(body, a, k, m, k, &h, 0, 1)
            moments.append(h)
        }
        for (i, h) in moments.enumerated() {
            let upper = (0..<k).flatMap { r in (r..<k).map { h[r * k + $0].bitPattern } }
            let ref = (0..<k).flatMap { r in (r..<k).map { moments[0][r * k + $0].bitPattern } }
            XCTAssertEqual(upper, ref, "moments body \(bodies[i]) differs from the generic body")
        }
        XCTAssertGreaterThan(bodies.count, 1, "only the generic body on this CPU: nothing compared")
    }

    /// `scripts/test-arm.sh`: the kernel library and every kernel test program cross-compiled for aarch64 and run under
    /// qemu-aarch64 on cortex-a53 (ARMv8.0 NEON, no dot product), cortex-a76 (dot product, FP16) and max (I8MM, BF16),
    /// each run checked for the variants its CPU calls for (the ARMv8.0 NEON int8 GEMM on cortex-a53, the dot-product
    /// one on cortex-a76, I8MM on max; the NEON fp16 attention where FP16 arithmetic exists). A missing cross compiler
    /// or qemu is a failure, not a skip (scripts/install-deps.sh installs them).
    func testKernelsUnderQEMUOnThreeARMCores() throws {
        let script = Self.root.appendingPathComponent("scripts/test-arm.sh").path
        let r = try CABITests.run("/bin/bash", [script])
        print(r.out)
        XCTAssertEqual(r.status, 0, r.out + r.err)
        for cpu in ["cortex-a53", "cortex-a76", "max"] { XCTAssertTrue(r.out.contains("== \(cpu): ok"), "\(cpu) did not pass:\n\(r.out)") }
        XCTAssertTrue(r.out.contains("test-arm: 3 passed, 0 failed"), r.out)
        // Every kernel test program ran on every CPU model (a test that did not build or start would show no line).
        let programs = ((try? FileManager.default.contentsOfDirectory(atPath: Self.root.appendingPathComponent("Tests/KernelTests").path)) ?? [])
            .filter { $0.hasSuffix("_test.c") }.map { String($0.dropLast(2)) }
        XCTAssertGreaterThanOrEqual(programs.count, 3)
        for cpu in ["cortex-a53", "cortex-a76", "max"] {
            for p in programs { XCTAssertTrue(r.out.contains("== \(cpu) \(p) (exit 0)"), "\(p) on \(cpu):\n\(r.out)") }
        }
    }
}
