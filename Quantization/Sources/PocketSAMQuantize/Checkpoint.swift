import Foundation
import PocketSAMFormat

/// Element types a checkpoint may hold.
public enum TensorDType: String, Sendable, Equatable {
    case f32, f16, bf16, f64, i64, i32, i16, i8, u8, bool

    public var size: Int {
        switch self {
        case .f64, .i64: return 8
        case .f32, .i32: return 4
        case .f16, .bf16, .i16: return 2
        case .i8, .u8, .bool: return 1
        }
    }

    public var isFloatingPoint: Bool { [.f32, .f16, .bf16, .f64].contains(self) }
}

/// A tensor in a checkpoint: where its elements are, not yet read.
public struct SourceTensor: @unchecked Sendable {
    public var name: String
    public var dtype: TensorDType
    public var shape: [Int]
    /// Strides and offset in elements (PyTorch's view of its storage).
    public var strides: [Int]
    public var storageOffset: Int
    /// The storage bytes (inside the checkpoint's mapping, or in `owner`).
    let storage: UnsafeRawBufferPointer
    /// Keeps `storage` alive: the checkpoint's mapping, or heap bytes (values computed here, such as merged LoRA weights).
    var owner: AnyObject? = nil

    /// A contiguous fp32 tensor holding `values` (copied into storage this tensor owns).
    public init(name: String, shape: [Int], values: [Float]) {
        precondition(values.count == shape.reduce(1, *), "values do not fill the shape")
        let box = OwnedBytes(count: max(values.count, 1) * 4)
        values.withUnsafeBytes { box.buffer.copyMemory(from: $0) }
        var strides = [Int](repeating: 1, count: shape.count)
        for d in stride(from: shape.count - 2, through: 0, by: -1) { strides[d] = strides[d + 1] * shape[d + 1] }
        self.init(name: name, dtype: .f32, shape: shape, strides: strides, storageOffset: 0,
                  storage: UnsafeRawBufferPointer(box.buffer), owner: box)
    }

    init(name: String, dtype: TensorDType, shape: [Int], strides: [Int], storageOffset: Int, storage: UnsafeRawBufferPointer,
         owner: AnyObject? = nil) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.strides = strides
        self.storageOffset = storageOffset
        self.storage = storage
        self.owner = owner
    }

    /// The same tensor under another name.
    public func renamed(_ newName: String) -> SourceTensor {
        var t = self
        t.name = newName
        return t
    }

    /// The product of the shape; Int.max when it overflows (`checkBounds` then refuses the tensor).
    public var elementCount: Int {
        var n = 1
        for d in shape {
            let (p, o) = n.multipliedReportingOverflow(by: d)
            if o || d < 0 { return Int.max }
            n = p
        }
        return n
    }

    /// The most elements a tensor may have (8 GB of fp32; SAM ViT-H's largest matrix has 6.6 M).
    static let maxElements = 1 << 31

    /// Checks that the view fits in its storage: every element it addresses is in bounds.
    func checkBounds() throws(CheckpointError) {
        let available = storage.count / dtype.size
        if elementCount == 0 { return }
        guard elementCount <= Self.maxElements else {
            throw .badTensor(tensor: name, reason: "shape \(shape) has more than \(Self.maxElements) elements")
        }
        var last = storageOffset
        for (d, s) in zip(shape, strides) {
            let (m, o1) = (d - 1).multipliedReportingOverflow(by: s)
            let (sum, o2) = last.addingReportingOverflow(m)
            guard !o1, !o2 else { throw .badTensor(tensor: name, reason: "strides overflow") }
            last = sum
        }
        guard last < available else {
            throw .storageTooShort(tensor: name, neededBytes: (last + 1) * dtype.size, availableBytes: storage.count)
        }
    }

    /// The elements in row-major order, converted to fp32. Floating-point tensors only.
    public func floats() throws(CheckpointError) -> [Float] {
        guard dtype.isFloatingPoint else { throw .unsupportedDType(tensor: name, dtype: dtype.rawValue) }
        try checkBounds()
        let n = elementCount
        var out = [Float](repeating: 0, count: n)
        if n == 0 { return out }
        let rank = shape.count
        let contiguous: Bool = {
            var expect = 1
            for d in (0..<rank).reversed() {
                if shape[d] != 1 && strides[d] != expect { return false }
                expect *= shape[d]
            }
            return true
        }()
        let src = storage
        let size = dtype.size
        let dt = dtype
        func load(_ e: Int) -> Float {
            let o = e * size
            switch dt {
            case .f32: return Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: o, as: UInt32.self)))
            case .f16: return Float(Float16(bitPattern: UInt16(littleEndian: src.loadUnaligned(fromByteOffset: o, as: UInt16.self))))
            case .bf16:
                return Float(bitPattern: UInt32(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: o, as: UInt16.self))) << 16)
            case .f64: return Float(Double(bitPattern: UInt64(littleEndian: src.loadUnaligned(fromByteOffset: o, as: UInt64.self))))
            default: return 0
            }
        }
        out.withUnsafeMutableBufferPointer { dst in
            if contiguous {
                for i in 0..<n { dst[i] = load(storageOffset + i) }
            } else {
                var idx = [Int](repeating: 0, count: rank)
                var e = storageOffset
                for i in 0..<n {
                    dst[i] = load(e)
                    var d = rank - 1
                    while d >= 0 {
                        idx[d] += 1
                        e += strides[d]
                        if idx[d] < shape[d] { break }
                        e -= strides[d] * shape[d]
                        idx[d] = 0
                        d -= 1
                    }
                }
            }
        }
        return out
    }
}

/// Heap bytes a `SourceTensor` owns.
final class OwnedBytes {
    let buffer: UnsafeMutableRawBufferPointer
    init(count: Int) { buffer = .allocate(byteCount: count, alignment: 16) }
    deinit { buffer.deallocate() }
}

/// A checkpoint opened for reading: its tensors by name, backed by the mapped file.
public final class Checkpoint: @unchecked Sendable {
    public enum Format: String, Sendable {
        case pytorchZip = "pytorch-zip", safetensors
        /// No checkpoint: seeded random weights (`RandomCheckpoint`), for benchmarks.
        case random
    }

    public let path: String
    public let format: Format
    public let file: ByteStorage
    /// Tensors in the order the checkpoint lists them.
    public let tensors: [SourceTensor]
    public let byName: [String: SourceTensor]

    public static let stateDictWrappers = ["state_dict", "model"]

    public convenience init(path: String) throws(CheckpointError) {
        let file: ByteStorage
        do {
            file = try ByteStorage(mapping: path)
        } catch {
            if case let .cannotOpen(_, reason) = error { throw .cannotOpen(path: path, reason: reason) }
            throw .cannotOpen(path: path, reason: error.description)
        }
        try self.init(storage: file, path: path)
    }

    /// Reads a checkpoint already in memory; `path` is only used in messages.
    public init(storage file: ByteStorage, path: String) throws(CheckpointError) {
        self.path = path
        self.file = file
        let b = file.bytes
        if b.count >= 4, b[0] == 0x50, b[1] == 0x4B {
            format = .pytorchZip
            tensors = try Checkpoint.readTorchZip(b).map { var t = $0; t.owner = file; return t }
        } else if b.count >= 8, (try? Checkpoint.safetensorsHeaderLength(b)) != nil {
            format = .safetensors
            tensors = try Checkpoint.readSafetensors(b).map { var t = $0; t.owner = file; return t }
        } else if b.count >= 2, b[0] == 0x80 {
            throw .unknownFormat(path: path + "' (a legacy, non-zip torch.save pickle; re-save it with a current torch")
        } else {
            throw .unknownFormat(path: path)
        }
        var m: [String: SourceTensor] = [:]
        for t in tensors {
            guard m.updateValue(t, forKey: t.name) == nil else { throw .notAStateDict("tensor '\(t.name)' appears twice") }
        }
        byName = m
    }

    // MARK: PyTorch zip

    static func readTorchZip(_ bytes: UnsafeRawBufferPointer) throws(CheckpointError) -> [SourceTensor] {
        let zip = try ZipArchive(bytes)
        let pkls = zip.names.filter { $0.hasSuffix("/data.pkl") && $0.split(separator: "/").count == 2 }
        guard pkls.count == 1, let pklName = pkls.first, let pkl = zip.entries[pklName] else {
            throw .notAStateDict("the zip has \(pkls.count) '<name>/data.pkl' records, torch.save writes exactly one")
        }
        let prefix = String(pklName.dropLast("data.pkl".count))
        if let bo = zip.entries[prefix + "byteorder"] {
            let v = String(decoding: try zip.data(bo), as: UTF8.self)
            guard v == "little" else { throw .notAStateDict("byte order '\(v)' is not supported (little-endian only)") }
        }
        let root = try Unpickler.load(try zip.data(pkl))
        let dict = try stateDict(root)
        var out: [SourceTensor] = []
        var verified: Set<String> = []
        for (k, v) in dict.pairs {
            guard case let .string(name) = k else { throw .notAStateDict("a key is not a string") }
            guard case let .tensor(t) = v else { throw .notAStateDict("value of '\(name)' is not a tensor") }
            let entryName = prefix + "data/" + t.storage.key
            guard let entry = zip.entries[entryName] else {
                throw .badTensor(tensor: name, reason: "its storage record '\(entryName)' is missing from the zip")
            }
            let data = try zip.data(entry, verify: !verified.contains(entryName))
            verified.insert(entryName)
            let declared = t.storage.elementCount * t.storage.dtype.size
            let usable = UnsafeRawBufferPointer(rebasing: data[0..<min(declared, data.count)])
            let st = SourceTensor(name: name, dtype: t.storage.dtype, shape: t.shape, strides: t.strides,
                                  storageOffset: t.storageOffset, storage: usable)
            try st.checkBounds()
            out.append(st)
        }
        return out
    }

    /// The state dict inside a pickle root: the root itself, or its `state_dict` / `model` entry.
    static func stateDict(_ root: PickleValue) throws(CheckpointError) -> PickleDict {
        guard case let .dict(d) = root else { throw .notAStateDict("the pickle's root is not a dict") }
        for w in stateDictWrappers {
            if case let .dict(inner)? = d.string(w) { return inner }
        }
        return d
    }

    // MARK: safetensors

    static let maxSafetensorsHeader = 100 << 20

    static func safetensorsHeaderLength(_ b: UnsafeRawBufferPointer) throws(CheckpointError) -> Int {
        let n = UInt64(littleEndian: b.loadUnaligned(as: UInt64.self))
        guard n >= 2, n <= UInt64(maxSafetensorsHeader), n <= UInt64(b.count - 8) else {
            throw .safetensors("header length \(n) does not fit the \(b.count)-byte file")
        }
        guard b[8] == UInt8(ascii: "{") else { throw .safetensors("header is not a JSON object") }
        return Int(n)
    }

    static func readSafetensors(_ b: UnsafeRawBufferPointer) throws(CheckpointError) -> [SourceTensor] {
        let n = try safetensorsHeaderLength(b)
        let json = Data(UnsafeRawBufferPointer(rebasing: b[8..<(8 + n)]))
        guard let obj = try? JSONSerialization.jsonObject(with: json), let header = obj as? [String: Any] else {
            throw .safetensors("header is not valid JSON")
        }
        let dataStart = 8 + n
        let dataCount = b.count - dataStart
        var out: [SourceTensor] = []
        // JSON objects are unordered; sort by data offset, then name, for a deterministic order.
        var rows: [(String, TensorDType, [Int], Int, Int)] = []
        for (name, value) in header where name != "__metadata__" {
            guard let info = value as? [String: Any], let dt = info["dtype"] as? String,
                  let shapeAny = info["shape"] as? [Any], let offsAny = info["data_offsets"] as? [Any], offsAny.count == 2
            else { throw .safetensors("entry '\(name)' lacks dtype, shape or data_offsets") }
            let dtypes: [String: TensorDType] = ["F32": .f32, "F16": .f16, "BF16": .bf16, "F64": .f64, "I64": .i64,
                                                 "I32": .i32, "I16": .i16, "I8": .i8, "U8": .u8, "BOOL": .bool]
            guard let dtype = dtypes[dt] else { throw .unsupportedDType(tensor: name, dtype: dt) }
            var shape: [Int] = []
            for s in shapeAny {
                guard let i = (s as? NSNumber)?.int64Value, i >= 0, i < (1 << 40) else {
                    throw .safetensors("entry '\(name)' has a bad shape")
                }
                shape.append(Int(i))
            }
            guard shape.count <= 8, let begin = (offsAny[0] as? NSNumber)?.int64Value,
                  let end = (offsAny[1] as? NSNumber)?.int64Value, begin >= 0, end >= begin, end <= Int64(dataCount)
            else { throw .safetensors("entry '\(name)' data_offsets run past the end of the file") }
            var count = 1
            for d in shape {
                let (p, o) = count.multipliedReportingOverflow(by: d)
                guard !o, p < (1 << 48) else { throw .safetensors("entry '\(name)' is too large") }
                count = p
            }
            guard Int(end - begin) == count * dtype.size else {
                throw .storageTooShort(tensor: name, neededBytes: count * dtype.size, availableBytes: Int(end - begin))
            }
            rows.append((name, dtype, shape, Int(begin), Int(end)))
        }
        rows.sort { ($0.3, $0.0) < ($1.3, $1.0) }
        for (name, dtype, shape, begin, end) in rows {
            var strides = [Int](repeating: 1, count: shape.count)
            var acc = 1
            // Wrapping: only a tensor without elements can have a shape whose product overflows (the others are below
            // 2^48), and its strides are never used.
            for d in (0..<shape.count).reversed() { strides[d] = acc; acc = acc &* shape[d] }
            let storage = UnsafeRawBufferPointer(rebasing: b[(dataStart + begin)..<(dataStart + end)])
            out.append(SourceTensor(name: name, dtype: dtype, shape: shape, strides: strides, storageOffset: 0, storage: storage))
        }
        return out
    }
}
