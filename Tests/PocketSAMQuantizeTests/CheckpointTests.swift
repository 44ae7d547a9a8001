import Foundation
import PocketSAMFormat
import PocketSAMQuantize
import XCTest

final class CheckpointTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = try Fixtures.temporaryDirectory()
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    func write(_ bytes: [UInt8], _ name: String) throws -> String {
        let url = dir.appendingPathComponent(name)
        try writeFile(bytes, url)
        return url.path
    }

    func openError(_ path: String) -> CheckpointError? {
        do {
            _ = try Checkpoint(path: path)
            return nil
        } catch {
            return error  // typed throws: a CheckpointError
        }
    }

    func testReadsATorchSaveZip() throws {
        let values = (0..<12).map { Float($0) * 0.5 }
        let save = TorchSave(tensors: [.init(name: "x", shape: [3, 4], values: values),
                                       .init(name: "s", shape: [], values: [3])], wrapper: "model")
        let ckpt = try Checkpoint(path: try write(save.bytes(), "a.pth"))
        XCTAssertEqual(ckpt.format, .pytorchZip)
        XCTAssertEqual(ckpt.tensors.map(\.name), ["x", "s"])
        XCTAssertEqual(try ckpt.byName["x"]!.floats(), values)
        XCTAssertEqual(try ckpt.byName["s"]!.floats(), [3])
    }

    func testStorageShorterThanTheShapeNeeds() throws {
        var save = TorchSave(tensors: [.init(name: "w", shape: [4, 4], values: Array(repeating: 1, count: 10))])
        XCTAssertEqual(openError(try write(save.bytes(), "short.pth")),
                       .storageTooShort(tensor: "w", neededBytes: 64, availableBytes: 40))
        // The storage record declares 16 elements but holds 10.
        save.tensors[0].storageElements = 16
        XCTAssertEqual(openError(try write(save.bytes(), "short2.pth")),
                       .storageTooShort(tensor: "w", neededBytes: 64, availableBytes: 40))
    }

    func testDisallowedGlobalInACheckpoint() throws {
        var save = TorchSave(tensors: [.init(name: "w", shape: [1], values: [1])])
        save.inject = TorchSave.global("os", "system") + [0x30]  // GLOBAL then POP
        XCTAssertEqual(openError(try write(save.bytes(), "evil.pth")), .disallowedGlobal(module: "os", name: "system"))
    }

    func testUnsupportedOpcodeInACheckpoint() throws {
        var save = TorchSave(tensors: [.init(name: "w", shape: [1], values: [1])])
        save.inject = [0x69]  // INST
        guard case .unsupportedOpcode(0x69, "INST", _)? = openError(try write(save.bytes(), "inst.pth")) else {
            return XCTFail()
        }
    }

    func testMissingStorageRecordAndWrongRoot() throws {
        var z = TorchSave(tensors: [.init(name: "w", shape: [2], values: [1, 2])]).zip()
        z.entries.removeAll { $0.name == "archive/data/0" }
        guard case .badTensor("w", _)? = openError(try write(z.bytes(), "nostorage.pth")) else { return XCTFail() }
        // A pickle whose root is a list, not a dict.
        let listRoot = TestZip(entries: [("archive/data.pkl", [0x80, 0x02, 0x5D, 0x2E])])
        guard case .notAStateDict? = openError(try write(listRoot.bytes(), "list.pth")) else { return XCTFail() }
        // No data.pkl at all.
        let empty = TestZip(entries: [("archive/version", [0x33])])
        guard case .notAStateDict? = openError(try write(empty.bytes(), "empty.pth")) else { return XCTFail() }
    }

    func testNotACheckpointAtAll() throws {
        XCTAssertEqual(openError(try write(Array("hello world".utf8), "x.txt")),
                       .unknownFormat(path: dir.appendingPathComponent("x.txt").path))
        guard case .cannotOpen? = openError("/nonexistent.pth") else { return XCTFail() }
    }

    func testSafetensors() throws {
        let ok = SafetensorsWriter.bytes([("a", [2, 2], [1, 2, 3, 4]), ("b", [3], [5, 6, 7])])
        let ckpt = try Checkpoint(path: try write(ok, "ok.safetensors"))
        XCTAssertEqual(ckpt.format, .safetensors)
        XCTAssertEqual(try ckpt.byName["a"]!.floats(), [1, 2, 3, 4])
        XCTAssertEqual(try ckpt.byName["b"]!.floats(), [5, 6, 7])
        // Truncated: data offsets past the end.
        guard case .safetensors? = openError(try write(Array(ok.dropLast(8)), "trunc.safetensors")) else {
            return XCTFail()
        }
        // A header length past the end of the file is not recognised as safetensors.
        var bad = ok
        bad[7] = 0x10
        guard case .unknownFormat? = openError(try write(bad, "len.safetensors")) else { return XCTFail() }
    }
}
