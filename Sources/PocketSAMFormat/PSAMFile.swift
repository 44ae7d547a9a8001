/// A `.psam` weights file, opened and validated. See docs/FORMAT.md for the layout.
///
/// Opening checks every offset, length, dtype and shape against the file size before anything is
/// read through them; with `verifyChecksums` it also checks the CRC-32 of the directory and of every
/// tensor. Tensor bytes are then used in place (from the mapping), never copied.
public struct PSAMFile: Sendable {
    public static let magic: [UInt8] = [0x50, 0x53, 0x41, 0x4D, 0x0D, 0x0A, 0x1A, 0x0A]  // "PSAM\r\n\x1a\n"
    public static let currentVersion: UInt32 = 1
    public static let headerSize = 80
    public static let alignment = 64
    /// Limits that keep a hostile file from asking for absurd work.
    public static let maxNameLength = 1024
    public static let maxRank = 8
    public static let maxEntries = 1 << 20

    public struct Options: Sendable {
        /// Check the directory CRC and every tensor's CRC (reads every byte once).
        public var verifyChecksums = true
        /// Parse the model configuration from the metadata and check every tensor against it.
        public var validateModel = true
        public init(verifyChecksums: Bool = true, validateModel: Bool = true) {
            self.verifyChecksums = verifyChecksums
            self.validateModel = validateModel
        }
    }

    public let storage: ByteStorage
    public let version: UInt32
    public let metadata: Metadata
    /// Tensors in file order.
    public let tensors: [TensorEntry]
    /// The model configuration, when `validateModel` was set.
    public let config: ModelConfig?
    /// SHA-256 (hex) of the header, metadata and tensor table, which holds every tensor's CRC-32: identifies the
    /// model's weights and format (what an image embedding saved from a session must match).
    public let fingerprint: String
    public let dataOffset: Int
    public let dataLength: Int
    private let byName: [String: Int]

    /// Opens and validates the file at `path` (memory-mapped).
    public static func open(path: String, options: Options = Options()) throws(PSAMError) -> PSAMFile {
        try PSAMFile(storage: ByteStorage(mapping: path), options: options)
    }

    /// Validates a file already in memory (the storage is kept alive by the result).
    public init(storage: ByteStorage, options: Options = Options()) throws(PSAMError) {
        self.storage = storage
        let file = storage.bytes
        let size = file.count
        guard size >= PSAMFile.headerSize else { throw .tooSmall(size: size, minimum: PSAMFile.headerSize) }
        var h = ByteCursor(file, context: "header")
        let magic = try h.raw(8, "magic")
        guard magic.elementsEqual(PSAMFile.magic) else { throw .badMagic }
        version = try h.u32("version")
        guard version == PSAMFile.currentVersion else {
            throw .unsupportedVersion(found: version, supported: PSAMFile.currentVersion)
        }
        let flags = try h.u32("flags")
        guard flags == 0 else { throw .malformed(what: "header flags \(flags) are not defined in version 1") }
        let metadataCount = Int(try h.u32("metadata count"))
        let tensorCount = Int(try h.u32("tensor count"))
        let metaOff = try h.u64("metadata offset"), metaLen = try h.u64("metadata length")
        let tableOff = try h.u64("table offset"), tableLen = try h.u64("table length")
        let dataOff = try h.u64("data offset"), dataLen = try h.u64("data length")
        let storedCRC = try h.u32("directory crc")
        _ = try h.u32("reserved")

        let limit = UInt64(size)
        func region(_ what: String, _ off: UInt64, _ len: UInt64) throws(PSAMError) {
            let (end, overflow) = off.addingReportingOverflow(len)
            guard !overflow, off >= UInt64(PSAMFile.headerSize), end <= limit else {
                throw .outOfBounds(what: what, offset: off, length: len, limit: limit)
            }
        }
        try region("metadata section", metaOff, metaLen)
        try region("tensor table", tableOff, tableLen)
        try region("data section", dataOff, dataLen)
        guard dataOff % UInt64(PSAMFile.alignment) == 0 else {
            throw .malformed(what: "data section offset \(dataOff) is not 64-byte aligned")
        }
        guard metadataCount <= PSAMFile.maxEntries, tensorCount <= PSAMFile.maxEntries else {
            throw .malformed(what: "\(metadataCount) metadata entries / \(tensorCount) tensors is over the limit")
        }
        let metaBytes = UnsafeRawBufferPointer(rebasing: file[Int(metaOff)..<Int(metaOff + metaLen)])
        let tableBytes = UnsafeRawBufferPointer(rebasing: file[Int(tableOff)..<Int(tableOff + tableLen)])
        if options.verifyChecksums {
            var crc = CRC32()
            crc.update(UnsafeRawBufferPointer(rebasing: file[0..<72]))
            crc.update(metaBytes)
            crc.update(tableBytes)
            guard crc.value == storedCRC else { throw .headerChecksumMismatch(stored: storedCRC, computed: crc.value) }
        }

        var sha = SHA256()
        sha.update(UnsafeRawBufferPointer(rebasing: file[0..<72]))
        sha.update(metaBytes)
        sha.update(tableBytes)
        fingerprint = sha.finalize()
        metadata = try PSAMFile.parseMetadata(metaBytes, count: metadataCount)
        dataOffset = Int(dataOff)
        dataLength = Int(dataLen)
        let data = UnsafeRawBufferPointer(rebasing: file[dataOffset..<(dataOffset + dataLength)])
        tensors = try PSAMFile.parseTable(tableBytes, count: tensorCount, data: data, verify: options.verifyChecksums)
        var index: [String: Int] = [:]
        for (i, t) in tensors.enumerated() {
            guard index.updateValue(i, forKey: t.name) == nil else { throw .duplicateName(t.name) }
        }
        byName = index
        if options.validateModel {
            let cfg = try ModelConfig(metadata: metadata)
            try cfg.validate(tensors: tensors)
            config = cfg
        } else {
            config = nil
        }
    }

    public func tensor(named name: String) -> TensorEntry? {
        byName[name].map { tensors[$0] }
    }

    /// The stored bytes of `entry` (in place, no copy). Valid while this file (its storage) is alive.
    public func data(of entry: TensorEntry) -> UnsafeRawBufferPointer {
        let start = dataOffset + Int(entry.dataOffset)
        return UnsafeRawBufferPointer(rebasing: storage.bytes[start..<(start + Int(entry.dataLength))])
    }

    /// The per-channel scales of an `.i8` entry (empty for other dtypes).
    public func scales(of entry: TensorEntry) -> UnsafeBufferPointer<Float> {
        guard let off = entry.scaleOffset, let base = storage.base else { return UnsafeBufferPointer(start: nil, count: 0) }
        let p = (base + dataOffset + Int(off)).assumingMemoryBound(to: Float.self)
        return UnsafeBufferPointer(start: p, count: entry.scaleCount)
    }

    /// The tensor's values converted to fp32 (dequantized for `.i8`). Allocates; for tools and tests.
    public func floatValues(of entry: TensorEntry) -> [Float] {
        let raw = data(of: entry)
        let n = entry.elementCount
        switch entry.dtype {
        case .f32:
            return (0..<n).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        case .f16:
            return (0..<n).map { Float(Float16(bitPattern: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)))) }
        case .i8:
            let s = scales(of: entry)
            guard let axis = entry.scaleAxis else { return [] }
            let inner = entry.channelInner
            let axisLen = entry.shape[axis]
            let groups = entry.groupsPerChannel
            let g = entry.groupSize == 0 ? inner : entry.groupSize
            if entry.layout == .panels16x4 {
                let kp = PanelLayout.paddedK(inner)
                return (0..<n).map { i in
                    let c = i / inner, k = i % inner
                    return Float(Int8(bitPattern: raw[PanelLayout.offset(n: c, k: k, kp: kp)])) * s[c * groups + k / g]
                }
            }
            return (0..<n).map { i in
                let c = (i / inner) % axisLen
                return Float(Int8(bitPattern: raw[i])) * s[c * groups + (i % inner) / g]
            }
        }
    }

    static func parseMetadata(_ bytes: UnsafeRawBufferPointer, count: Int) throws(PSAMError) -> Metadata {
        var c = ByteCursor(bytes, context: "metadata")
        var m = Metadata()
        for _ in 0..<count {
            let klen = Int(try c.u16("key length"))
            guard klen > 0, klen <= PSAMFile.maxNameLength else { throw .malformed(what: "metadata key length \(klen)") }
            let key = try c.utf8(klen, "key")
            let type = try c.u8("type of '\(key)'")
            let value: MetadataValue
            switch type {
            case 1: value = .int(try c.i64(key))
            case 2: value = .double(try c.f64(key))
            case 3:
                let b = try c.u8(key)
                guard b <= 1 else { throw .malformed(what: "metadata '\(key)': boolean byte \(b)") }
                value = .bool(b == 1)
            case 4:
                let n = Int(try c.u32("length of '\(key)'"))
                value = .string(try c.utf8(n, key))
            case 5, 6:
                let n = Int(try c.u32("count of '\(key)'"))
                guard n <= c.remaining / 8 else {
                    throw .outOfBounds(what: "metadata '\(key)' array", offset: UInt64(c.offset), length: UInt64(n) * 8,
                                       limit: UInt64(bytes.count))
                }
                var ints: [Int64] = []
                var dbls: [Double] = []
                for _ in 0..<n {
                    if type == 5 { ints.append(try c.i64(key)) } else { dbls.append(try c.f64(key)) }
                }
                value = type == 5 ? .ints(ints) : .doubles(dbls)
            default:
                throw .malformed(what: "metadata '\(key)': unknown value type \(type)")
            }
            guard m[key] == nil else { throw .duplicateName(key) }
            m[key] = value
        }
        guard c.remaining == 0 else { throw .malformed(what: "\(c.remaining) stray bytes after the metadata") }
        return m
    }

    static func parseTable(_ bytes: UnsafeRawBufferPointer, count: Int, data: UnsafeRawBufferPointer,
                           verify: Bool) throws(PSAMError) -> [TensorEntry] {
        var c = ByteCursor(bytes, context: "tensor table")
        var out: [TensorEntry] = []
        out.reserveCapacity(min(count, 4096))
        let dataLimit = UInt64(data.count)
        for _ in 0..<count {
            let nlen = Int(try c.u16("name length"))
            guard nlen > 0, nlen <= PSAMFile.maxNameLength else { throw .malformed(what: "tensor name length \(nlen)") }
            let name = try c.utf8(nlen, "tensor name")
            let dcode = try c.u8("dtype of '\(name)'")
            guard let dtype = DType(rawValue: dcode) else { throw .unknownDType(tensor: name, code: dcode) }
            let lcode = try c.u8("layout of '\(name)'")
            guard let layout = TensorLayout(rawValue: lcode) else { throw .unknownLayout(tensor: name, code: lcode) }
            let rank = Int(try c.u8("rank of '\(name)'"))
            guard rank <= PSAMFile.maxRank else { throw .malformed(what: "tensor '\(name)' has rank \(rank) (at most 8)") }
            let axisByte = try c.u8("scale axis of '\(name)'")
            var shape: [Int] = []
            var elements: UInt64 = 1
            for _ in 0..<rank {
                let d = try c.u64("shape of '\(name)'")
                guard d <= UInt64(1) << 40 else { throw .malformed(what: "tensor '\(name)' dimension \(d) is absurd") }
                let (p, o) = elements.multipliedReportingOverflow(by: d)
                guard !o, p <= UInt64(1) << 48 else { throw .malformed(what: "tensor '\(name)' has too many elements") }
                elements = p
                shape.append(Int(d))
            }
            let off = try c.u64("data offset of '\(name)'")
            let len = try c.u64("data length of '\(name)'")
            let soff = try c.u64("scale offset of '\(name)'")
            let group = UInt64(try c.u32("group size of '\(name)'"))
            let crc = try c.u32("crc of '\(name)'")

            guard off % UInt64(PSAMFile.alignment) == 0 else { throw .misaligned(tensor: name, offset: off) }
            var expected = elements * UInt64(dtype.size)
            if layout == .panels16x4 {
                // Packed int8 weights: a matrix [N, K] with scales along N, optional groups of 4k.
                guard dtype == .i8, rank >= 2, axisByte == 0, group % 4 == 0 else {
                    throw .malformed(what: "tensor '\(name)': the panels16x4 layout needs an i8 matrix with scale axis 0 and groups of a multiple of 4")
                }
                let n = UInt64(shape[0]), k = elements / max(n, 1)
                expected = n == 0 ? 0 : (n + 15) / 16 * 16 * ((k + 3) / 4 * 4)
            }
            guard len == expected else { throw .sizeMismatch(tensor: name, expected: expected, found: len) }
            let (end, o1) = off.addingReportingOverflow(len)
            guard !o1, end <= dataLimit else {
                throw .outOfBounds(what: "data of tensor '\(name)'", offset: off, length: len, limit: dataLimit)
            }
            var scaleAxis: Int?
            var scaleOffset: UInt64?
            if dtype == .i8 {
                guard Int(axisByte) < rank else {
                    throw .badScales(tensor: name, reason: "scale axis \(axisByte) for rank \(rank)")
                }
                scaleAxis = Int(axisByte)
                let inner = UInt64(shape[(Int(axisByte) + 1)...].reduce(1, *))
                if group != 0 {
                    guard axisByte == 0, inner % group == 0 else {
                        throw .badScales(tensor: name, reason: "group size \(group) needs scale axis 0 and must divide \(inner)")
                    }
                }
                let n = UInt64(shape[Int(axisByte)]) * (group == 0 ? 1 : inner / group)
                guard soff != UInt64.max, soff % UInt64(PSAMFile.alignment) == 0 else {
                    throw .badScales(tensor: name, reason: "scale offset \(soff) is missing or not 64-byte aligned")
                }
                let (send, o2) = soff.addingReportingOverflow(n * 4)
                guard !o2, send <= dataLimit else {
                    throw .outOfBounds(what: "scales of tensor '\(name)'", offset: soff, length: n * 4, limit: dataLimit)
                }
                scaleOffset = soff
                for i in 0..<Int(n) {
                    let bits = UInt32(littleEndian: data.loadUnaligned(fromByteOffset: Int(soff) + 4 * i, as: UInt32.self))
                    let s = Float(bitPattern: bits)
                    guard s.isFinite, s >= 0 else { throw .badScales(tensor: name, reason: "scale \(i) is \(s)") }
                }
            } else {
                guard axisByte == 0xFF, soff == UInt64.max, group == 0 else {
                    throw .badScales(tensor: name, reason: "a \(dtype) tensor may not carry scales")
                }
            }
            let entry = TensorEntry(name: name, dtype: dtype, layout: layout, shape: shape, dataOffset: off,
                                    dataLength: len, scaleAxis: scaleAxis, groupSize: Int(group), scaleOffset: scaleOffset,
                                    crc32: crc)
            if verify {
                var h = CRC32()
                h.update(UnsafeRawBufferPointer(rebasing: data[Int(off)..<Int(end)]))
                if let so = scaleOffset {
                    h.update(UnsafeRawBufferPointer(rebasing: data[Int(so)..<(Int(so) + 4 * entry.scaleCount)]))
                }
                guard h.value == crc else { throw .tensorChecksumMismatch(tensor: name, stored: crc, computed: h.value) }
            }
            out.append(entry)
        }
        guard c.remaining == 0 else { throw .malformed(what: "\(c.remaining) stray bytes after the tensor table") }
        return out
    }
}
