import PocketSAMQuantize
import XCTest

final class ZipArchiveTests: XCTestCase {
    func zipError(_ b: [UInt8]) -> CheckpointError? {
        do {
            _ = try b.withUnsafeBytes { try ZipArchive($0) }
            return nil
        } catch let e as CheckpointError {
            return e
        } catch {
            return nil
        }
    }

    func testReadsStoredEntries() throws {
        let z = TestZip(entries: [("a/data.pkl", [1, 2, 3]), ("a/data/0", Array(repeating: 7, count: 100))]).bytes()
        try z.withUnsafeBytes { raw in
            let zip = try ZipArchive(raw)
            XCTAssertEqual(zip.names, ["a/data.pkl", "a/data/0"])
            let e = try XCTUnwrap(zip.entries["a/data/0"])
            XCTAssertEqual(Array(try zip.data(e)), Array(repeating: 7, count: 100))
        }
    }

    func testTruncatedZip() throws {
        let z = TestZip(entries: [("a/data.pkl", Array(repeating: 1, count: 50))]).bytes()
        for n in [0, 10, 21, z.count / 2, z.count - 1] {
            guard case .zip? = zipError(Array(z[0..<n])) else { return XCTFail("length \(n) should fail") }
        }
    }

    func testEntryPointingPastTheEnd() throws {
        var z = TestZip(entries: [("a/data.pkl", Array(repeating: 1, count: 50))]).bytes()
        // The central directory record's size fields are at +20 and +24 from its signature.
        let cd = try XCTUnwrap((0..<(z.count - 4)).last { z[$0] == 0x50 && z[$0 + 1] == 0x4B && z[$0 + 2] == 1 && z[$0 + 3] == 2 })
        for off in [20, 24] { z[cd + off] = 0xF0; z[cd + off + 1] = 0xFF; z[cd + off + 2] = 0xFF; z[cd + off + 3] = 0x0F }
        let e = zipError(z)
        guard case let .zip(why)? = e else { return XCTFail("\(String(describing: e))") }
        XCTAssertTrue(why.contains("runs past the end"), why)
        // A local-header offset past the end.
        var y = TestZip(entries: [("a/data.pkl", [1])]).bytes()
        let cd2 = try XCTUnwrap((0..<(y.count - 4)).last { y[$0] == 0x50 && y[$0 + 1] == 0x4B && y[$0 + 2] == 1 && y[$0 + 3] == 2 })
        y[cd2 + 42] = 0xFF; y[cd2 + 43] = 0xFF; y[cd2 + 44] = 0xFF; y[cd2 + 45] = 0x0F
        guard case .zip? = zipError(y) else { return XCTFail() }
    }

    func testCompressedEntryAndCRCMismatch() throws {
        var z = TestZip(entries: [("a/data.pkl", [1, 2, 3])]).bytes()
        z[8] = 8  // local header method: deflate
        let cd = try XCTUnwrap((0..<(z.count - 4)).last { z[$0] == 0x50 && z[$0 + 1] == 0x4B && z[$0 + 2] == 1 && z[$0 + 3] == 2 })
        z[cd + 10] = 8  // central directory method: deflate
        guard case let .zip(why)? = zipError(z) else { return XCTFail() }
        XCTAssertTrue(why.contains("compressed"))

        var c = TestZip(entries: [("a/data.pkl", [1, 2, 3])]).bytes()
        c[30 + "a/data.pkl".utf8.count] ^= 0xFF  // first data byte
        try c.withUnsafeBytes { raw in
            let zip = try ZipArchive(raw)
            XCTAssertThrowsError(try zip.data(zip.entries["a/data.pkl"]!)) {
                guard case let CheckpointError.zip(why) = $0 else { return XCTFail() }
                XCTAssertTrue(why.contains("CRC"))
            }
        }
    }
}
