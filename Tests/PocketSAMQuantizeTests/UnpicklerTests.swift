import PocketSAMQuantize
import XCTest

final class UnpicklerTests: XCTestCase {
    func load(_ b: [UInt8]) throws -> PickleValue {
        try b.withUnsafeBytes { try Unpickler.load($0) }
    }

    func error(_ b: [UInt8]) -> CheckpointError? {
        do {
            _ = try load(b)
            return nil
        } catch let e as CheckpointError {
            return e
        } catch {
            return nil
        }
    }

    func testAStateDictPickle() throws {
        let p = TorchSave(tensors: [.init(name: "a.weight", shape: [2, 3], values: Array(repeating: 1, count: 6))]).pickle()
        guard case let .dict(d) = try load(p), case let .tensor(t)? = d.string("a.weight") else {
            return XCTFail("not a dict of tensors")
        }
        XCTAssertEqual(t.shape, [2, 3])
        XCTAssertEqual(t.strides, [3, 1])
        XCTAssertEqual(t.storage.dtype, .f32)
        XCTAssertEqual(t.storage.key, "0")
    }

    func testScalarsAndContainers() throws {
        // PROTO 2, MARK, BININT1 5, BININT -2, LONG1 2^40, NEWTRUE, NONE, BINFLOAT 1.5, SHORT_BINUNICODE "hé",
        // TUPLE, STOP
        var p: [UInt8] = [0x80, 0x02, 0x28, 0x4B, 5, 0x4A, 0xFE, 0xFF, 0xFF, 0xFF, 0x8A, 6, 0, 0, 0, 0, 0, 1, 0x88, 0x4E]
        p += [0x47, 0x3F, 0xF8, 0, 0, 0, 0, 0, 0]
        let s = Array("hé".utf8)
        p += [0x8C, UInt8(s.count)] + s + [0x74, 0x2E]
        guard case let .tuple(t) = try load(p) else { return XCTFail() }
        let items = t.items
        XCTAssertEqual(items.count, 7)
        if case let .int(v) = items[0] { XCTAssertEqual(v, 5) } else { XCTFail() }
        if case let .int(v) = items[1] { XCTAssertEqual(v, -2) } else { XCTFail() }
        if case let .int(v) = items[2] { XCTAssertEqual(v, 1 << 40) } else { XCTFail() }
        if case let .float(v) = items[5] { XCTAssertEqual(v, 1.5) } else { XCTFail() }
        if case let .string(v) = items[6] { XCTAssertEqual(v, "hé") } else { XCTFail() }
    }

    func testDisallowedGlobalIsNamed() {
        // The classic: cos\nsystem\n(S'echo pwned'\ntR.
        var p: [UInt8] = [0x80, 0x02] + TorchSave.global("os", "system") + [0x28]
        p += TorchSave.unicode("echo pwned") + [0x74, 0x52, 0x2E]
        XCTAssertEqual(error(p), .disallowedGlobal(module: "os", name: "system"))
        XCTAssertTrue(error(p)!.description.contains("os.system"))
        // Also through STACK_GLOBAL, and builtins.eval.
        let q: [UInt8] = [0x80, 0x04] + [0x8C, 8] + Array("builtins".utf8) + [0x8C, 4] + Array("eval".utf8) + [0x93, 0x2E]
        XCTAssertEqual(error(q), .disallowedGlobal(module: "builtins", name: "eval"))
    }

    func testOpcodesOutsideTheSubset() {
        // INST, OBJ, NEWOBJ, PERSID (text), EXT1, BINBYTES8, EMPTY_SET
        for (op, name) in [(UInt8(0x69), "INST"), (0x6F, "OBJ"), (0x81, "NEWOBJ"), (0x50, "PERSID"), (0x82, "EXT1"),
                           (0x8F, "EMPTY_SET"), (0xFF, "unknown")] {
            let e = error([0x80, 0x02, op, 0x2E])
            XCTAssertEqual(e, .unsupportedOpcode(opcode: op, name: name, offset: 2), name)
        }
    }

    func testMalformedPicklesFailCleanly() {
        let cases: [[UInt8]] = [
            [],  // empty
            [0x80, 0x02],  // no STOP
            [0x80, 0x09, 0x2E],  // protocol 9
            [0x80, 0x02, 0x2E],  // STOP on an empty stack
            [0x80, 0x02, 0x73, 0x2E],  // SETITEM on nothing
            [0x80, 0x02, 0x68, 7, 0x2E],  // BINGET of an unset memo
            [0x80, 0x02, 0x58, 0xFF, 0xFF, 0xFF, 0x7F, 0x2E],  // string longer than the input
            [0x80, 0x02, 0x8C, 2, 0xFF, 0xFE, 0x2E],  // invalid UTF-8
            [0x80, 0x02, 0x74, 0x2E],  // TUPLE with no MARK
            [0x80, 0x02, 0x4B, 1, 0x4B, 2, 0x2E],  // two values at STOP
            [0x80, 0x02, 0x63] + Array("torch\nFloatStorage".utf8),  // unterminated GLOBAL
            [0x80, 0x02, 0x63] + Array("torch\nFloatStorage\n".utf8) + [0x29, 0x52, 0x2E],  // call a storage type
            [0x80, 0x02, 0x28, 0x4B, 1, 0x74, 0x51, 0x2E],  // BINPERSID with a bad id
        ]
        for (i, c) in cases.enumerated() {
            XCTAssertNotNil(error(c), "case \(i) should fail")
        }
    }

    func testDeeplyNestedInputEndsWithoutCrashing() {
        // 100,000 nested lists (EMPTY_LIST ... APPEND): freeing them would recurse 100,000 deep and
        // overflow the stack, so nesting beyond 64 levels is refused.
        var p: [UInt8] = [0x80, 0x02]
        for _ in 0..<100_000 { p += [0x5D] }
        for _ in 0..<99_999 { p += [0x61] }
        p += [0x2E]
        guard case let .pickle(_, why)? = error(p) else { return XCTFail() }
        XCTAssertTrue(why.contains("nested deeper"), why)
        // The same with tuples (TUPLE1), and a list that contains itself (memo + APPEND).
        XCTAssertNotNil(error([0x80, 0x02, 0x4E] + [UInt8](repeating: 0x85, count: 100_000) + [0x2E]))
        XCTAssertNotNil(error([0x80, 0x02, 0x5D, 0x71, 0, 0x68, 0, 0x61, 0x2E]))
        // Nesting built inside out (a list appended into its parent before it gets its own child) is
        // refused too: a container may not change once it is inside another.
        // EMPTY_LIST BINPUT 0, EMPTY_LIST BINPUT 1, APPEND (1 into 0), BINGET 1, NONE, APPEND.
        XCTAssertNotNil(error([0x80, 0x02, 0x5D, 0x71, 0, 0x5D, 0x71, 1, 0x61, 0x68, 1, 0x4E, 0x61, 0x2E]))
        // 60 levels are fine.
        XCTAssertNoThrow(try load([0x80, 0x02, 0x4E] + [UInt8](repeating: 0x85, count: 60) + [0x2E]))
        // A million MARKs and then garbage.
        XCTAssertNotNil(error([0x80, 0x02] + [UInt8](repeating: 0x28, count: 1_000_000) + [0x2E]))
    }
}
