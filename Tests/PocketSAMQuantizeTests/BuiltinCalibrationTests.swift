import Foundation
import PocketSAMFormat
import PocketSAMQuantize
import XCTest

/// The built-in calibration images and the tool's calibration options.
final class BuiltinCalibrationTests: XCTestCase {
    /// The pixels are part of the file format's promise (the same checkpoint gives the same file): any change to the
    /// generators must bump `BuiltinCalibration.version`, and then this fingerprint. Recorded from version 1.
    func testBuiltinImagesAreFixedForTheirVersion() {
        XCTAssertEqual(BuiltinCalibration.version, 1, "the version changed: record the new fingerprint below")
        let images = BuiltinCalibration.images(size: 256)
        XCTAssertEqual(images.count, 8)
        XCTAssertEqual(BuiltinCalibration.fingerprint(images),
                       "450bff0926daf4f6582f77c3b2b9f6c6e116bfdbcca7b8b4c1df3383850488d6")
        // Two calls, the same pixels; different kinds, different pictures.
        XCTAssertEqual(BuiltinCalibration.fingerprint(BuiltinCalibration.images(size: 256)), BuiltinCalibration.fingerprint(images))
        XCTAssertEqual(Set(images.map { $0.image.pixels }).count, images.count)
    }

    /// Each image uses the byte range as photographs and scans do (neither flat nor saturated), and the grey kinds are grey.
    func testBuiltinImagesLookLikeImages() {
        for kind in BuiltinCalibration.Kind.allCases {
            let (name, img) = BuiltinCalibration.images(size: 128, kinds: [kind])[0]
            XCTAssertEqual(img.width, 128)
            XCTAssertEqual(img.pixels.count, 128 * 128 * 3)
            let values = img.pixels.map(Double.init)
            let mean = values.reduce(0, +) / Double(values.count)
            let sd = (values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count)).squareRoot()
            XCTAssertGreaterThan(sd, 15, "\(name): too flat (standard deviation \(sd))")
            let saturated = img.pixels.filter { $0 == 255 }.count
            XCTAssertLessThan(Double(saturated) / Double(img.pixels.count), 0.05, "\(name): \(saturated) saturated values")
            if [BuiltinCalibration.Kind.greyLeaves, .scan, .greyNoise].contains(kind) {
                var grey = true
                for p in stride(from: 0, to: img.pixels.count, by: 3) {
                    let r = img.pixels[p], g = img.pixels[p + 1], b = img.pixels[p + 2]
                    if r != g || r != b { grey = false }
                }
                XCTAssertTrue(grey, "\(name) is not grey")
            }
        }
    }

    func testCalibrationOptions() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let ckpt = try Fixtures.liteMedSAM()
        // --no-calibration: rounded to nearest, and said so.
        let plain = dir.appendingPathComponent("plain.psam").path
        var r = try QuantizeCommandTests.run([ckpt, "-o", plain, "--no-calibration"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(r.stderr.contains("calibrating"), r.stderr)
        let f = try PSAMFile.open(path: plain)
        XCTAssertTrue(try f.metadata.string("psam.calibration").hasPrefix("none"))
        XCTAssertNil(try? f.metadata.string("psam.calibration_sha256"))
        // Contradictions and misuse are refused before any work.
        r = try QuantizeCommandTests.run([ckpt, "-o", plain, "--no-calibration", "--calibrate", "x.png"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--no-calibration and --calibrate"), r.stderr)
        r = try QuantizeCommandTests.run([ckpt, "-o", plain, "--precision", "fp16", "--calibrate", "x.png"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--calibrate applies to int8"), r.stderr)
        // A calibration image that is not an image: a clear error, exit 1.
        let bogus = dir.appendingPathComponent("bogus.png").path
        try Data("not a png".utf8).write(to: URL(fileURLWithPath: bogus))
        r = try QuantizeCommandTests.run([ckpt, "-o", plain, "--calibrate", bogus])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("bogus.png"), r.stderr)
    }

    /// `--calibrate builtin` adds the built-in images to the user's; `--save-calibration-images` writes what was used.
    func testUserImagesWithTheBuiltinOnes() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let image = Fixtures.root.appendingPathComponent(".cache/images/calibration/moon.png").path
        let out = dir.appendingPathComponent("both.psam").path, saved = dir.appendingPathComponent("used").path
        let r = try QuantizeCommandTests.run([try Fixtures.liteMedSAM(), "-o", out, "--calibrate", image, "--calibrate", "builtin",
                                              "--save-calibration-images", saved])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("calibrating on 9 image(s)"), r.stderr)
        let note = try PSAMFile.open(path: out).metadata.string("psam.calibration")
        XCTAssertTrue(note.hasPrefix("GPTQ on moon.png and the built-in set v1"), note)
        let files = try FileManager.default.contentsOfDirectory(atPath: saved).filter { $0.hasSuffix(".png") }
        XCTAssertEqual(files.count, 9, "\(files)")
    }
}
