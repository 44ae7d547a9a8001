import PocketSAMFormat
import XCTest

final class CRC32Tests: XCTestCase {
    func testKnownVectors() {
        XCTAssertEqual(CRC32.checksum(Array("123456789".utf8)), 0xCBF4_3926)
        XCTAssertEqual(CRC32.checksum([UInt8]()), 0)
        XCTAssertEqual(CRC32.checksum(Array("The quick brown fox jumps over the lazy dog".utf8)), 0x414F_A339)
    }

    /// The eight-byte path must agree with a plain bitwise CRC on every length and split.
    func testMatchesBitwiseReferenceOnManyLengths() {
        func bitwise(_ b: [UInt8]) -> UInt32 {
            var c: UInt32 = 0xFFFF_FFFF
            for x in b {
                c ^= UInt32(x)
                for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0xEDB8_8320 : c >> 1 }
            }
            return ~c
        }
        var g = SystemRandomNumberGenerator()
        for n in 0..<200 {
            let b = (0..<n).map { _ in UInt8.random(in: 0...255, using: &g) }
            XCTAssertEqual(CRC32.checksum(b), bitwise(b), "length \(n)")
            let cut = n / 3
            var inc = CRC32()
            inc.update(Array(b[..<cut]))
            inc.update(Array(b[cut...]))
            XCTAssertEqual(inc.value, bitwise(b), "split at \(cut) of \(n)")
        }
    }
}
