import Foundation
import PocketSAMFormat
import PocketSAMQuantize
import XCTest

/// The same checkpoint and flags give the same file on any machine (issue 24): the calibration's arithmetic must not
/// depend on the BLAS kernel, the CPU or the thread count. Each conversion runs `pocketsam-quantize` as a user does,
/// with OpenBLAS's SkylakeX (AVX-512), Haswell (AVX2) and Prescott (SSE3) kernels and with 1 and 2 threads (ours and
/// OpenBLAS's); the files must be equal byte for byte. Before the calibration ran on the portable kernels, the
/// SkylakeX and Haswell conversions of `make demo`'s command differed (from byte 73 on: GPTQ's discrete rounding
/// turns last-bit differences of the activations into different weights).
final class DeterminismTests: XCTestCase {
    static var calibrationImages: [String] {
        ["motorcycle_right.png", "moon.png"].map { Fixtures.root.appendingPathComponent(".cache/images/calibration/" + $0).path }
    }

    /// One conversion; the Haswell runs also cap our int8 kernels at AVX2 (`PSAM_KERNELS`), as on an AVX2-only CPU: the
    /// layer-precision search runs the int8 model, and its measurements must not depend on the int8 kernels either.
    func convert(_ extra: [String], coreType: String, threads: Int, into dir: URL, name: String) throws -> Data {
        let out = dir.appendingPathComponent(name).path
        let r = try QuantizeCommandTests.run([try Fixtures.liteMedSAM(), "-o", out, "-q", "--threads", "\(threads)"] + extra,
                                             environment: ["OPENBLAS_CORETYPE": coreType, "OPENBLAS_NUM_THREADS": "\(threads)",
                                                           "PSAM_KERNELS": coreType == "Haswell" ? "avx2" : nil])
        XCTAssertEqual(r.status, 0, r.stderr)
        return try Data(contentsOf: URL(fileURLWithPath: out))
    }

    func testCalibratedConversionWithMeasuredPrecisionsIsTheSameBytesWithEveryBLASKernelAndThreadCount() throws {
        for path in Self.calibrationImages {
            XCTAssertTrue(FileManager.default.fileExists(atPath: path), "\(path): run scripts/fetch-assets.sh (make test does)")
        }
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        // With the layer-precision search, whose int8 measuring runs must not depend on the CPU either.
        let flags = Self.calibrationImages.flatMap { ["--calibrate", $0] } + ["--max-slowdown", "1.15"]
        let reference = try convert(flags, coreType: "SkylakeX", threads: 2, into: dir, name: "a.psam")
        XCTAssertGreaterThan(reference.count, 1_000_000)
        for (core, threads) in [("Haswell", 1), ("Prescott", 2)] {
            let other = try convert(flags, coreType: core, threads: threads, into: dir, name: "\(core).psam")
            XCTAssertTrue(other == reference, "--calibrate with OPENBLAS_CORETYPE=\(core), \(threads) thread(s): not the SkylakeX bytes")
        }
    }

    /// No flags: calibrated on the built-in images, the same bytes everywhere too; the file says what it was
    /// calibrated on, with the images' fingerprint.
    func testBuiltinCalibratedConversionIsTheSameBytesWithEveryBLASKernelAndThreadCount() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let reference = try convert([], coreType: "SkylakeX", threads: 2, into: dir, name: "a.psam")
        for (core, threads) in [("Haswell", 1), ("Prescott", 2)] {
            let other = try convert([], coreType: core, threads: threads, into: dir, name: "\(core).psam")
            XCTAssertTrue(other == reference, "no flags with OPENBLAS_CORETYPE=\(core), \(threads) thread(s): not the SkylakeX bytes")
        }
        let f = try PSAMFile.open(path: dir.appendingPathComponent("a.psam").path)
        let note = try f.metadata.string("psam.calibration")
        XCTAssertTrue(note.hasPrefix("GPTQ on the built-in set v\(BuiltinCalibration.version) (8 images of 256 px"), note)
        XCTAssertEqual(try f.metadata.string("psam.calibration_sha256"),
                       BuiltinCalibration.fingerprint(BuiltinCalibration.images(size: 256)))
    }
}
