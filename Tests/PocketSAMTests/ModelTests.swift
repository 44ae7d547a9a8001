import Foundation
import PocketSAM
import PocketSAMFormat
import PocketSAMQuantize
import XCTest

/// Loading rules of `Model` that go beyond the file format's own checks: packed int8 weights must lie in
/// −127…127 with zero padding (the ARMv8.0 NEON kernel's 16-bit pair sums are exact only then), else the load fails
/// with an error that names the tensor, instead of a kernel silently computing something else.
final class ModelTests: XCTestCase {
    /// The real LiteMedSAM checkpoint converted to int8 (rounded to nearest: the values do not matter here).
    static let writer: Result<PSAMWriter, Error> = Result {
        let ckpt = try Checkpoint(path: try LiteMedSAMParityTests.asset("lite_medsam.pth"))
        return try Converter.convert(ckpt, options: ConversionOptions()).writer
    }

    /// The converted file with `edit` applied to the packed bytes of its first panels16x4 tensor (of `n` × `k`) that
    /// `where` accepts.
    func load(where accept: (_ n: Int, _ k: Int) -> Bool = { _, _ in true },
              editingFirstPanel edit: (inout [UInt8], _ n: Int, _ k: Int) -> Void) throws -> Model {
        let original = try Self.writer.get()
        var copy = PSAMWriter()
        copy.metadata = original.metadata
        var edited = false
        for var t in original.tensors {
            let n = t.shape[0], k = t.shape.dropFirst().reduce(1, *)
            if !edited, t.dtype == .i8, t.layout == .panels16x4, accept(n, k) {
                edit(&t.data, n, k)
                edited = true
            }
            try copy.add(t)
        }
        XCTAssertTrue(edited, "no packed int8 tensor of that kind in the converted file")
        return try Model(file: try PSAMFile(storage: ByteStorage(copying: try copy.serialize())))
    }

    func testConvertedInt8FileLoads() throws {
        let model = try load { _, _, _ in }
        XCTAssertGreaterThan(model.int8Layers, 40)
    }

    func testWeightMinus128IsRejected() throws {
        XCTAssertThrowsError(try load { bytes, _, k in
            bytes[PanelLayout.offset(n: 3, k: 1, kp: PanelLayout.paddedK(k))] = 0x80
        }) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("−128") && text.contains("(3, 1)"), text)
        }
    }

    func testNonzeroPaddingIsRejected() throws {
        // A padding column (k ≥ K) of a matrix whose K is not a multiple of 4, else a padding channel (n ≥ N).
        let padded = { (n: Int, k: Int) in PanelLayout.paddedK(k) > k || PanelLayout.paddedN(n) > n }
        XCTAssertThrowsError(try load(where: padded) { bytes, n, k in
            let kp = PanelLayout.paddedK(k)
            bytes[kp > k ? PanelLayout.offset(n: 0, k: k, kp: kp) : PanelLayout.offset(n: n, k: 0, kp: kp)] = 1
        }) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("padding byte at"), text)
        }
    }

    func testPanelValueCheck() {
        // 20 × 6: padded to 32 × 8, so both padding regions exist.
        let n = 20, k = 6, kp = PanelLayout.paddedK(k)
        var values = [UInt8](repeating: 0, count: n * k)
        for i in values.indices { values[i] = UInt8(bitPattern: Int8(i % 255 - 127)) }
        var packed = PanelLayout.pack(values, n: n, k: k)
        packed.withUnsafeBytes { XCTAssertNil(PanelLayout.firstInvalidValue($0, n: n, k: k)) }
        packed[PanelLayout.offset(n: 19, k: 5, kp: kp)] = 0x80
        packed.withUnsafeBytes { XCTAssertEqual(PanelLayout.firstInvalidValue($0, n: n, k: k), "weight (19, 5) is −128 (int8 weights are −127…127)") }
        packed[PanelLayout.offset(n: 19, k: 5, kp: kp)] = 0x7F
        packed[PanelLayout.offset(n: 2, k: 7, kp: kp)] = 1
        packed.withUnsafeBytes { XCTAssertEqual(PanelLayout.firstInvalidValue($0, n: n, k: k), "padding byte at (2, 7) is not zero") }
        packed[PanelLayout.offset(n: 2, k: 7, kp: kp)] = 0
        packed[PanelLayout.offset(n: 25, k: 0, kp: kp)] = 0xFF
        packed.withUnsafeBytes { XCTAssertEqual(PanelLayout.firstInvalidValue($0, n: n, k: k), "padding byte at (25, 0) is not zero") }
        packed.removeLast()
        packed.withUnsafeBytes { XCTAssertNotNil(PanelLayout.firstInvalidValue($0, n: n, k: k)) }
    }
}
