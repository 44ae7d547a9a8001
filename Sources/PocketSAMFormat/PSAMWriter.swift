#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Builds a `.psam` file. Tensors are written in the order they are added; together with the
/// insertion-ordered metadata this makes the output a pure function of the input (no timestamps).
public struct PSAMWriter: Sendable {
    public struct Tensor: Sendable {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        /// Little-endian element bytes in row-major order.
        public var data: [UInt8]
        /// For `.i8`: the scale axis and one fp32 scale per index along it.
        public var scaleAxis: Int?
        /// 0: one scale per channel; otherwise the group size (see `TensorEntry.groupSize`).
        public var groupSize: Int = 0
        public var scales: [Float]
        /// How `data` is ordered (`.panels16x4`: already packed, see `PanelLayout`).
        public var layout: TensorLayout = .rowMajor

        public init(name: String, dtype: DType, shape: [Int], data: [UInt8], scaleAxis: Int?, groupSize: Int = 0,
                    scales: [Float], layout: TensorLayout = .rowMajor) {
            self.layout = layout
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.data = data
            self.scaleAxis = scaleAxis
            self.groupSize = groupSize
            self.scales = scales
        }
    }

    public var metadata = Metadata()
    public private(set) var tensors: [Tensor] = []
    private var names: Set<String> = []

    public init() {}

    public mutating func addF32(_ name: String, shape: [Int], values: [Float]) throws(PSAMError) {
        var b = [UInt8](repeating: 0, count: values.count * 4)
        b.withUnsafeMutableBytes { p in
            for (i, v) in values.enumerated() { p.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
        }
        try add(Tensor(name: name, dtype: .f32, shape: shape, data: b, scaleAxis: nil, scales: []))
    }

    public mutating func addF16(_ name: String, shape: [Int], values: [Float16]) throws(PSAMError) {
        try add(Self.f16Tensor(name: name, shape: shape, values: values))
    }

    /// An fp16 tensor as `addF16` stores it.
    public static func f16Tensor(name: String, shape: [Int], values: [Float16]) -> Tensor {
        var b = [UInt8](repeating: 0, count: values.count * 2)
        b.withUnsafeMutableBytes { p in
            for (i, v) in values.enumerated() { p.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
        }
        return Tensor(name: name, dtype: .f16, shape: shape, data: b, scaleAxis: nil, scales: [])
    }

    /// Puts `t` in the place of the tensor of the same name (added before), with the checks `add` makes.
    public mutating func replace(_ t: Tensor) throws(PSAMError) {
        guard let i = tensors.firstIndex(where: { $0.name == t.name }) else {
            throw .malformed(what: "tensor '\(t.name)': nothing of that name to replace")
        }
        let old = tensors[i]
        tensors.remove(at: i)
        names.remove(t.name)
        do {
            try add(t)
        } catch {
            tensors.insert(old, at: i)
            names.insert(old.name)
            throw error
        }
        tensors.insert(tensors.removeLast(), at: i)
    }

    /// Adds int8 values given row-major; `packed` stores them in the int8 GEMM layout (`.panels16x4`,
    /// scale axis 0, rank ≥ 2, groups a multiple of 4).
    public mutating func addI8(_ name: String, shape: [Int], values: [Int8], scaleAxis: Int, groupSize: Int = 0,
                               scales: [Float], packed: Bool = false) throws(PSAMError) {
        let bytes = values.map { UInt8(bitPattern: $0) }
        if packed {
            guard scaleAxis == 0, shape.count >= 2, groupSize % 4 == 0, values.count == shape.reduce(1, *) else {
                throw .malformed(what: "tensor '\(name)': panels16x4 needs an i8 matrix with scale axis 0 and groups of a multiple of 4")
            }
            let n = shape[0], k = shape.dropFirst().reduce(1, *)
            try add(Tensor(name: name, dtype: .i8, shape: shape, data: PanelLayout.pack(bytes, n: n, k: k),
                           scaleAxis: scaleAxis, groupSize: groupSize, scales: scales, layout: .panels16x4))
        } else {
            try add(Tensor(name: name, dtype: .i8, shape: shape, data: bytes, scaleAxis: scaleAxis, groupSize: groupSize,
                           scales: scales))
        }
    }

    public mutating func add(_ t: Tensor) throws(PSAMError) {
        guard !t.name.isEmpty, t.name.utf8.count <= PSAMFile.maxNameLength else {
            throw .malformed(what: "tensor name '\(t.name)' is empty or too long")
        }
        guard !names.contains(t.name) else { throw .duplicateName(t.name) }
        guard t.shape.count <= PSAMFile.maxRank, t.shape.allSatisfy({ $0 >= 0 }) else {
            throw .malformed(what: "tensor '\(t.name)' has shape \(t.shape)")
        }
        let n = t.shape.reduce(1, *)
        var expected = n * t.dtype.size
        if t.layout == .panels16x4 {
            guard t.dtype == .i8, t.scaleAxis == 0, t.shape.count >= 2, t.groupSize % 4 == 0 else {
                throw .malformed(what: "tensor '\(t.name)': panels16x4 needs an i8 matrix with scale axis 0 and groups of a multiple of 4")
            }
            expected = t.shape[0] == 0 ? 0 : PanelLayout.byteCount(n: t.shape[0], k: n / t.shape[0])
        }
        guard t.data.count == expected else {
            throw .sizeMismatch(tensor: t.name, expected: UInt64(expected), found: UInt64(t.data.count))
        }
        if t.dtype == .i8 {
            guard let a = t.scaleAxis, a < t.shape.count else {
                throw .badScales(tensor: t.name, reason: "an i8 tensor needs a scale axis")
            }
            let inner = t.shape[(a + 1)...].reduce(1, *)
            guard t.groupSize == 0 || (a == 0 && t.groupSize > 0 && inner % t.groupSize == 0) else {
                throw .badScales(tensor: t.name, reason: "group size \(t.groupSize) needs scale axis 0 and must divide \(inner)")
            }
            let groups = t.groupSize == 0 ? 1 : inner / t.groupSize
            guard t.scales.count == t.shape[a] * groups else {
                throw .badScales(tensor: t.name, reason: "need \(t.shape[a] * groups) scales, got \(t.scales.count)")
            }
            guard t.scales.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
                throw .badScales(tensor: t.name, reason: "scales must be finite and non-negative")
            }
        } else {
            guard t.scaleAxis == nil, t.scales.isEmpty, t.groupSize == 0 else {
                throw .badScales(tensor: t.name, reason: "only i8 tensors carry scales")
            }
        }
        names.insert(t.name)
        tensors.append(t)
    }

    /// The whole file in memory.
    public func serialize() throws(PSAMError) -> [UInt8] {
        var out: [UInt8] = []
        try emit { out.append(contentsOf: $0) }
        return out
    }

    /// Writes to `path` through a temporary file and a rename, so a reader never sees half a file.
    public func write(to path: String) throws(PSAMError) {
        let tmp = path + ".tmp-\(getpid())"
        guard let f = fopen(tmp, "wb") else {
            throw .writeFailed(path: path, reason: String(cString: strerror(errno)))
        }
        var failed = false
        do {
            try emit { chunk in
                if failed || chunk.isEmpty { return }
                let n = chunk.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
                if n != chunk.count { failed = true }
            }
        } catch {
            fclose(f)
            unlink(tmp)
            throw error
        }
        if fclose(f) != 0 { failed = true }
        guard !failed, rename(tmp, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            throw .writeFailed(path: path, reason: reason)
        }
    }

    /// Emits the file as a sequence of chunks.
    func emit(_ sink: ([UInt8]) -> Void) throws(PSAMError) {
        let a = PSAMFile.alignment
        func align(_ x: Int) -> Int { (x + a - 1) / a * a }

        // Data layout: each tensor's bytes, then its scales, each starting on a 64-byte boundary.
        var offsets: [(data: Int, scales: Int?)] = []
        var cursor = 0
        for t in tensors {
            let d = cursor
            cursor = align(d + t.data.count)
            var s: Int?
            if t.dtype == .i8 {
                s = cursor
                cursor = align(cursor + 4 * t.scales.count)
            }
            offsets.append((d, s))
        }
        let dataLength = cursor

        var meta = ByteWriter()
        for (key, value) in metadata.entries {
            let k = Array(key.utf8)
            guard !k.isEmpty, k.count <= PSAMFile.maxNameLength else { throw .malformed(what: "metadata key '\(key)'") }
            meta.u16(UInt16(k.count))
            meta.append(k)
            meta.u8(value.code)
            switch value {
            case let .int(v): meta.i64(v)
            case let .double(v): meta.f64(v)
            case let .bool(v): meta.u8(v ? 1 : 0)
            case let .string(s):
                let b = Array(s.utf8)
                meta.u32(UInt32(b.count))
                meta.append(b)
            case let .ints(a):
                meta.u32(UInt32(a.count))
                for v in a { meta.i64(v) }
            case let .doubles(a):
                meta.u32(UInt32(a.count))
                for v in a { meta.f64(v) }
            }
        }

        var table = ByteWriter()
        var scaleBytes: [[UInt8]] = []
        for (t, o) in zip(tensors, offsets) {
            let nb = Array(t.name.utf8)
            table.u16(UInt16(nb.count))
            table.append(nb)
            table.u8(t.dtype.rawValue)
            table.u8(t.layout.rawValue)
            table.u8(UInt8(t.shape.count))
            table.u8(t.scaleAxis.map { UInt8($0) } ?? 0xFF)
            for d in t.shape { table.u64(UInt64(d)) }
            table.u64(UInt64(o.data))
            table.u64(UInt64(t.data.count))
            table.u64(o.scales.map { UInt64($0) } ?? UInt64.max)
            table.u32(UInt32(t.groupSize))
            var sb = ByteWriter()
            for s in t.scales { sb.u32(s.bitPattern) }
            var crc = CRC32()
            crc.update(t.data)
            crc.update(sb.bytes)
            table.u32(crc.value)
            scaleBytes.append(sb.bytes)
        }

        let metaOffset = PSAMFile.headerSize
        let tableOffset = metaOffset + meta.bytes.count
        let dataOffset = align(tableOffset + table.bytes.count)
        var header = ByteWriter()
        header.append(PSAMFile.magic)
        header.u32(PSAMFile.currentVersion)
        header.u32(0)
        header.u32(UInt32(metadata.entries.count))
        header.u32(UInt32(tensors.count))
        header.u64(UInt64(metaOffset))
        header.u64(UInt64(meta.bytes.count))
        header.u64(UInt64(tableOffset))
        header.u64(UInt64(table.bytes.count))
        header.u64(UInt64(dataOffset))
        header.u64(UInt64(dataLength))
        var crc = CRC32()
        crc.update(header.bytes)
        crc.update(meta.bytes)
        crc.update(table.bytes)
        header.u32(crc.value)
        header.u32(0)

        sink(header.bytes)
        sink(meta.bytes)
        sink(table.bytes)
        sink([UInt8](repeating: 0, count: dataOffset - tableOffset - table.bytes.count))
        var written = 0
        for (i, t) in tensors.enumerated() {
            let o = offsets[i]
            sink([UInt8](repeating: 0, count: o.data - written))
            sink(t.data)
            written = o.data + t.data.count
            if let s = o.scales {
                sink([UInt8](repeating: 0, count: s - written))
                sink(scaleBytes[i])
                written = s + scaleBytes[i].count
            }
        }
        sink([UInt8](repeating: 0, count: dataLength - written))
    }
}
