import Foundation
import PocketSAMFormat
import XCTest

final class PSAMFileTests: XCTestCase {
    /// `replace` keeps the tensor's place (the file stays a pure function of its inputs), refuses an unknown name, and
    /// leaves the writer as it was when the new tensor is refused.
    func testWriterReplacesATensorInPlace() throws {
        var w = PSAMWriter()
        try w.addF32("a", shape: [2], values: [1, 2])
        try w.addF32("b", shape: [2], values: [3, 4])
        try w.addF32("c", shape: [1], values: [5])
        try w.replace(PSAMWriter.f16Tensor(name: "b", shape: [2], values: [3, 4]))
        XCTAssertEqual(w.tensors.map(\.name), ["a", "b", "c"])
        XCTAssertEqual(w.tensors[1].dtype, .f16)
        XCTAssertThrowsError(try w.replace(PSAMWriter.f16Tensor(name: "d", shape: [1], values: [1])))
        XCTAssertThrowsError(try w.replace(PSAMWriter.f16Tensor(name: "c", shape: [2], values: [1])))  // 1 value, shape [2]
        XCTAssertEqual(w.tensors.map(\.name), ["a", "b", "c"])
        XCTAssertEqual(w.tensors[2].dtype, .f32)
    }

    func open(_ bytes: [UInt8], _ options: PSAMFile.Options = .init()) throws -> PSAMFile {
        try PSAMFile(storage: ByteStorage(copying: bytes), options: options)
    }

    func assertThrows(_ bytes: [UInt8], _ options: PSAMFile.Options = .init(), file: StaticString = #filePath,
                      line: UInt = #line, _ check: (PSAMError) -> Bool) {
        do {
            _ = try open(bytes, options)
            XCTFail("expected an error", file: file, line: line)
        } catch let e as PSAMError {
            XCTAssertTrue(check(e), "unexpected error: \(e)", file: file, line: line)
            XCTAssertFalse(e.description.isEmpty)
        } catch {
            XCTFail("not a PSAMError: \(error)", file: file, line: line)
        }
    }

    // MARK: round trip

    func testRoundTripIsBitExactForAllPrecisions() throws {
        for (label, int8, f16) in [("int8", true, false), ("fp16", false, true), ("fp32", false, false)] {
            for config in [TestModels.vit, TestModels.tinyViT] {
                var w = try TestModels.writer(config, int8: int8, f16: f16)
                w.metadata["psam.precision"] = .string(label)
                let bytes = try w.serialize()
                let f = try open(bytes)
                XCTAssertEqual(f.config, config, label)
                XCTAssertEqual(f.metadata, w.metadata, label)
                XCTAssertEqual(f.tensors.count, w.tensors.count)
                for (t, e) in zip(w.tensors, f.tensors) {
                    XCTAssertEqual(e.name, t.name)
                    XCTAssertEqual(e.dtype, t.dtype)
                    XCTAssertEqual(e.shape, t.shape)
                    XCTAssertEqual(Array(f.data(of: e)), t.data, "\(label) \(t.name) data")
                    XCTAssertEqual(Array(f.scales(of: e)).map(\.bitPattern), t.scales.map(\.bitPattern), "\(t.name) scales")
                    XCTAssertEqual(Int(e.dataOffset + UInt64(f.dataOffset)) % 64, 0, "aligned in the file")
                }
                // Rebuilding a writer from what was read gives the same bytes.
                var again = PSAMWriter()
                again.metadata = f.metadata
                for e in f.tensors {
                    try again.add(.init(name: e.name, dtype: e.dtype, shape: e.shape, data: Array(f.data(of: e)),
                                        scaleAxis: e.scaleAxis, groupSize: e.groupSize, scales: Array(f.scales(of: e)), layout: e.layout))
                }
                XCTAssertEqual(try again.serialize(), bytes, "\(label): re-serialised bytes differ")
                // The same through a file on disk (memory-mapped).
                let dir = FileManager.default.temporaryDirectory.appendingPathComponent("psam-\(UUID().uuidString).psam")
                try w.write(to: dir.path)
                defer { try? FileManager.default.removeItem(at: dir) }
                XCTAssertEqual(Array(try Data(contentsOf: dir)), bytes)
                let mapped = try PSAMFile.open(path: dir.path)
                XCTAssertEqual(mapped.tensors, f.tensors)
            }
        }
    }

    func testMetadataValuesRoundTrip() throws {
        var w = PSAMWriter()
        w.metadata["a.int"] = .int(-42)
        w.metadata["a.big"] = .int(Int64.max)
        w.metadata["b.double"] = .double(-0.125)
        w.metadata["c.true"] = .bool(true)
        w.metadata["c.false"] = .bool(false)
        w.metadata["d.string"] = .string("Grüße, 世界")
        w.metadata["d.empty"] = .string("")
        w.metadata["e.ints"] = .ints([1, -2, 3])
        w.metadata["e.none"] = .ints([])
        w.metadata["f.doubles"] = .doubles([0.5, 1e-300, -7])
        let f = try open(try w.serialize(), .init(validateModel: false))
        XCTAssertEqual(f.metadata, w.metadata)
        XCTAssertEqual(f.metadata.keys, w.metadata.keys, "order is kept")
        XCTAssertEqual(try f.metadata.int("a.int"), -42)
        XCTAssertThrowsError(try f.metadata.int("d.string"))
        XCTAssertThrowsError(try f.metadata.string("missing"))
    }

    func testGroupedScalesDequantize() throws {
        var w = PSAMWriter()
        // 2 channels × 8 elements, groups of 4: scales c0g0, c0g1, c1g0, c1g1.
        let q: [Int8] = [1, 2, 3, 4, 1, 2, 3, 4, -1, -2, -3, -4, 5, 6, 7, 8]
        try w.addI8("w", shape: [2, 8], values: q, scaleAxis: 0, groupSize: 4, scales: [1, 10, 100, 1000])
        let f = try open(try w.serialize(), .init(validateModel: false))
        let e = try XCTUnwrap(f.tensor(named: "w"))
        XCTAssertEqual(e.groupSize, 4)
        XCTAssertEqual(e.scaleCount, 4)
        XCTAssertEqual(f.floatValues(of: e), [1, 2, 3, 4, 10, 20, 30, 40, -100, -200, -300, -400, 5000, 6000, 7000, 8000])
        // Per-channel scales along axis 1 (a transposed convolution's output axis).
        var w2 = PSAMWriter()
        try w2.addI8("t", shape: [2, 3, 1, 1], values: [1, 1, 1, 2, 2, 2], scaleAxis: 1, scales: [1, 2, 3])
        let f2 = try open(try w2.serialize(), .init(validateModel: false))
        XCTAssertEqual(f2.floatValues(of: f2.tensors[0]), [1, 2, 3, 2, 4, 6])
    }

    /// The kernels' panel layout: every element lands where `PanelLayout.offset` says, padding is zero,
    /// and the reader dequantizes it back to the row-major values (odd N and K, groups).
    func testPackedPanelsRoundTrip() throws {
        for (n, k, group) in [(1, 1, 0), (17, 7, 0), (33, 64, 0), (20, 12, 4), (5, 256, 64)] {
            var w = PSAMWriter()
            let q = (0..<(n * k)).map { Int8(truncatingIfNeeded: ($0 * 37) % 255 - 127) }
            let groups = group == 0 ? 1 : k / group
            let scales = (0..<(n * groups)).map { Float($0 + 1) / 64 }
            try w.addI8("w", shape: [n, k], values: q, scaleAxis: 0, groupSize: group, scales: scales, packed: true)
            let f = try open(try w.serialize(), .init(validateModel: false))
            let e = try XCTUnwrap(f.tensor(named: "w"))
            XCTAssertEqual(e.layout, .panels16x4)
            XCTAssertEqual(Int(e.dataLength), PanelLayout.paddedN(n) * PanelLayout.paddedK(k))
            let raw = f.data(of: e)
            let kp = PanelLayout.paddedK(k)
            var placed = Set<Int>()
            for r in 0..<n {
                for c in 0..<k {
                    let o = PanelLayout.offset(n: r, k: c, kp: kp)
                    XCTAssertEqual(Int8(bitPattern: raw[o]), q[r * k + c])
                    placed.insert(o)
                }
            }
            XCTAssertEqual(placed.count, n * k, "two elements share a byte")
            for o in 0..<raw.count where !placed.contains(o) { XCTAssertEqual(raw[o], 0, "padding byte \(o)") }
            let g = group == 0 ? k : group
            XCTAssertEqual(f.floatValues(of: e), (0..<(n * k)).map { Float(q[$0]) * scales[($0 / k) * groups + ($0 % k) / g] })
        }
        // Packing needs scale axis 0 and groups of a multiple of 4.
        var w = PSAMWriter()
        XCTAssertThrowsError(try w.addI8("t", shape: [2, 3, 1, 1], values: [1, 1, 1, 2, 2, 2], scaleAxis: 1, scales: [1, 2, 3], packed: true))
        XCTAssertThrowsError(try w.addI8("g", shape: [2, 6], values: .init(repeating: 1, count: 12), scaleAxis: 0, groupSize: 2,
                                         scales: .init(repeating: 1, count: 6), packed: true))
        // A packed tensor whose stored length is the unpadded one is refused by the reader.
        var bad = PSAMWriter()
        try bad.add(.init(name: "w", dtype: .i8, shape: [3, 4], data: .init(repeating: 1, count: 12), scaleAxis: 0,
                          scales: [1, 1, 1], layout: .rowMajor))
        var bytes = try bad.serialize()
        // Flip the layout byte of the only tensor entry (right after its dtype byte) to panels16x4.
        let name = Array("w".utf8)
        let at = try XCTUnwrap((0..<(bytes.count - 3)).first { bytes[$0] == 1 && bytes[$0 + 1] == 0 && bytes[$0 + 2] == name[0] && bytes[$0 + 3] == 2 })
        bytes[at + 4] = 1
        XCTAssertThrowsError(try open(bytes, .init(verifyChecksums: false, validateModel: false)))
    }

    func testWriterRejectsInconsistentTensors() {
        var w = PSAMWriter()
        XCTAssertThrowsError(try w.addF32("x", shape: [2, 2], values: [1, 2, 3]))
        XCTAssertThrowsError(try w.addI8("q", shape: [2, 2], values: [1, 2, 3, 4], scaleAxis: 0, scales: [1]))
        XCTAssertThrowsError(try w.addI8("g", shape: [2, 6], values: .init(repeating: 1, count: 12), scaleAxis: 0,
                                         groupSize: 4, scales: [1, 1, 1, 1]))
        XCTAssertThrowsError(try w.addI8("n", shape: [1, 1], values: [1], scaleAxis: 0, scales: [.nan]))
        XCTAssertNoThrow(try w.addF32("y", shape: [1], values: [1]))
        XCTAssertThrowsError(try w.addF32("y", shape: [1], values: [1]), "duplicate name")
    }

    // MARK: hostile files

    func validFile() throws -> [UInt8] { try TestModels.writer(TestModels.vit).serialize() }

    /// Header fields (docs/FORMAT.md).
    func u64(_ b: [UInt8], _ o: Int) -> Int { (0..<8).reduce(0) { $0 | Int(b[o + $1]) << (8 * $1) } }
    func put64(_ b: inout [UInt8], _ o: Int, _ v: UInt64) { for i in 0..<8 { b[o + i] = UInt8((v >> (8 * UInt64(i))) & 0xFF) } }

    /// Recomputes the directory CRC after a deliberate change, so the parser itself meets the change.
    func fixDirectoryCRC(_ b: inout [UInt8]) {
        var c = CRC32()
        c.update(Array(b[0..<72]))
        c.update(Array(b[u64(b, 24)..<(u64(b, 24) + u64(b, 32))]))
        c.update(Array(b[u64(b, 40)..<(u64(b, 40) + u64(b, 48))]))
        for i in 0..<4 { b[72 + i] = UInt8((c.value >> (8 * UInt32(i))) & 0xFF) }
    }

    /// Byte offset, in the file, of the first tensor-table entry's fields.
    func firstEntry(_ b: [UInt8]) -> (dtype: Int, axis: Int, dataOffset: Int, scaleOffset: Int) {
        let t = u64(b, 40)
        let nameLen = Int(b[t]) | Int(b[t + 1]) << 8
        let dtype = t + 2 + nameLen
        let rank = Int(b[dtype + 2])
        let dataOffset = dtype + 4 + 8 * rank
        return (dtype, dtype + 3, dataOffset, dataOffset + 16)
    }

    func testBadMagic() throws {
        var b = try validFile()
        b[0] = UInt8(ascii: "X")
        assertThrows(b) { $0 == .badMagic }
        assertThrows(Array("PK\u{3}\u{4} this is a zip, not psam.................................................................".utf8)) {
            $0 == .badMagic
        }
    }

    func testFutureVersion() throws {
        var b = try validFile()
        b[8] = 2
        assertThrows(b) { $0 == .unsupportedVersion(found: 2, supported: 1) }
    }

    func testEveryTruncationIsAnError() throws {
        let b = try validFile()
        let lengths = Array(0..<300) + stride(from: 300, to: b.count, by: max(1, b.count / 500)).map { $0 }
        for n in lengths {
            assertThrows(Array(b[0..<n])) { _ in true }
        }
        assertThrows([]) { $0 == .tooSmall(size: 0, minimum: 80) }
    }

    func testOffsetPastTheEnd() throws {
        var b = try validFile()
        let e = firstEntry(b)
        put64(&b, e.dataOffset, UInt64(b.count) * 64)
        fixDirectoryCRC(&b)
        assertThrows(b) { if case .outOfBounds = $0 { return true } else { return false } }
        // The data section itself running past the end.
        var c = try validFile()
        put64(&c, 64, UInt64(c.count))
        fixDirectoryCRC(&c)
        assertThrows(c) { if case .outOfBounds = $0 { return true } else { return false } }
        // An offset that overflows when the length is added.
        var d = try validFile()
        put64(&d, e.dataOffset, UInt64.max - 63)
        fixDirectoryCRC(&d)
        assertThrows(d) { if case .outOfBounds = $0 { return true } else { return false } }
    }

    func testMisalignedOffset() throws {
        var b = try validFile()
        let e = firstEntry(b)
        put64(&b, e.dataOffset, UInt64(u64(b, e.dataOffset) + 4))
        fixDirectoryCRC(&b)
        assertThrows(b) { if case .misaligned = $0 { return true } else { return false } }
    }

    func testUnknownDType() throws {
        var b = try validFile()
        b[firstEntry(b).dtype] = 9
        fixDirectoryCRC(&b)
        assertThrows(b) { if case .unknownDType(_, 9) = $0 { return true } else { return false } }
    }

    func testTensorCRCMismatch() throws {
        var b = try validFile()
        let f0 = try open(b)
        let last = try XCTUnwrap(f0.tensors.last)
        b[f0.dataOffset + Int(last.dataOffset)] ^= 0x40  // the first byte of the last tensor
        var found: PSAMError?
        do { _ = try open(b) } catch let e as PSAMError { found = e }
        guard case .tensorChecksumMismatch? = found else { return XCTFail("got \(String(describing: found))") }
        // Without checksum verification the same file opens (the bytes are only data).
        XCTAssertNoThrow(try open(b, .init(verifyChecksums: false)))
    }

    func testDirectoryCRCMismatch() throws {
        var b = try validFile()
        b[90] ^= 0x01  // in the metadata
        assertThrows(b) { if case .headerChecksumMismatch = $0 { return true } else { return false } }
    }

    func testNaNScaleIsRejected() throws {
        var b = try validFile()
        let f = try open(b)
        let q = try XCTUnwrap(f.tensors.first { $0.dtype == .i8 })
        let at = f.dataOffset + Int(try XCTUnwrap(q.scaleOffset))
        for (i, byte) in [0x00, 0x00, 0xC0, 0x7F].enumerated() { b[at + i] = UInt8(byte) }
        assertThrows(b, .init(verifyChecksums: false)) { if case .badScales = $0 { return true } else { return false } }
    }

    func testShapeThatDisagreesWithTheMetadata() throws {
        var w = PSAMWriter()
        TestModels.vit.write(to: &w.metadata)
        for spec in TestModels.vit.tensorSpecs() {
            var shape = spec.shape
            if spec.name == "image_encoder.blocks.0.attn.qkv.weight" { shape = [48, 8] }
            try w.addF32(spec.name, shape: shape, values: .init(repeating: 0.5, count: shape.reduce(1, *)))
        }
        let b = try w.serialize()
        assertThrows(b) {
            $0 == .tensorShapeMismatch(name: "image_encoder.blocks.0.attn.qkv.weight", expected: [48, 16], found: [48, 8])
        }
        XCTAssertNoThrow(try open(b, .init(validateModel: false)), "the container itself is sound")
    }

    func testMissingAndUnexpectedTensors() throws {
        var w = PSAMWriter()
        TestModels.vit.write(to: &w.metadata)
        for spec in TestModels.vit.tensorSpecs() where spec.name != "mask_decoder.iou_token.weight" {
            try w.addF32(spec.name, shape: spec.shape, values: .init(repeating: 0, count: spec.shape.reduce(1, *)))
        }
        assertThrows(try w.serialize()) { $0 == .tensorMissing(name: "mask_decoder.iou_token.weight") }
        try w.addF32("mask_decoder.iou_token.weight", shape: [1, 16], values: .init(repeating: 0, count: 16))
        try w.addF32("extra", shape: [1], values: [0])
        assertThrows(try w.serialize()) { $0 == .unexpectedTensor(name: "extra") }
    }

    func testInt8OnlyWhereTheRoleAllowsIt() throws {
        var w = PSAMWriter()
        TestModels.vit.write(to: &w.metadata)
        for spec in TestModels.vit.tensorSpecs() {
            let n = spec.shape.reduce(1, *)
            if spec.name == "image_encoder.pos_embed" {
                try w.addI8(spec.name, shape: spec.shape, values: .init(repeating: 1, count: n), scaleAxis: 0, scales: [1])
            } else {
                try w.addF32(spec.name, shape: spec.shape, values: .init(repeating: 0, count: n))
            }
        }
        assertThrows(try w.serialize()) { $0 == .tensorDTypeNotAllowed(name: "image_encoder.pos_embed", dtype: .i8) }
    }

    func testBadMetadata() throws {
        var w = try TestModels.writer(TestModels.vit)
        w.metadata["vit.num_heads"] = .int(3)  // 16 is not divisible by 3
        assertThrows(try w.serialize()) { if case .invalidConfig = $0 { return true } else { return false } }
        w.metadata["vit.num_heads"] = .string("two")
        assertThrows(try w.serialize()) { $0 == .metadataType(key: "vit.num_heads", expected: "an integer") }
        w.metadata["vit.num_heads"] = nil
        assertThrows(try w.serialize()) { $0 == .metadataMissing(key: "vit.num_heads") }
        w.metadata["vit.num_heads"] = .int(2)
        w.metadata["model.family"] = .string("resnet")
        assertThrows(try w.serialize()) { $0 == .invalidConfig("unknown model family 'resnet'") }
    }

    func testOpeningAMissingFileOrADirectory() {
        XCTAssertThrowsError(try PSAMFile.open(path: "/nonexistent/model.psam")) {
            guard case PSAMError.cannotOpen = $0 else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try PSAMFile.open(path: "/tmp")) {
            guard case PSAMError.cannotOpen(_, "not a regular file") = $0 else { return XCTFail("\($0)") }
        }
    }
}
