import PocketSAMFormat

/// A read-only view of a zip archive whose entries are stored uncompressed, as `torch.save` writes
/// them. Every header field is checked against the file size before it is followed; zip64 is read.
public struct ZipArchive {
    public struct Entry: Sendable {
        public var name: String
        public var crc32: UInt32
        /// Where the entry's bytes start in the archive, and how many there are.
        public var dataOffset: Int
        public var size: Int
    }

    public let bytes: UnsafeRawBufferPointer
    public private(set) var entries: [String: Entry] = [:]
    public private(set) var names: [String] = []
    public static let maxEntries = 1_000_000

    public init(_ bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        self.bytes = bytes
        let n = bytes.count
        guard n >= 22 else { throw .zip("file is \(n) bytes, too short for a zip end record (truncated?)") }
        // The end-of-central-directory record is within the last 22 + 65535 bytes.
        var eocd = -1
        var i = n - 22
        let lowest = max(0, n - 22 - 65535)
        while i >= lowest {
            if u32(i) == 0x0605_4B50 { eocd = i; break }
            i -= 1
        }
        guard eocd >= 0 else { throw .zip("no end-of-central-directory record (truncated or not a zip)") }
        var count = Int(u16(eocd + 10))
        var cdSize = Int(u32(eocd + 12))
        var cdOffset = Int(u32(eocd + 16))
        if count == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF {
            // zip64: a locator sits right before the end record.
            let loc = eocd - 20
            guard loc >= 0, u32(loc) == 0x0706_4B50 else { throw .zip("zip64 end-record locator missing") }
            let z64 = try ZipArchive.checkedInt(u64(loc + 8), "zip64 end record offset")
            guard z64 >= 0, z64 <= n - 56, u32(z64) == 0x0606_4B50 else { throw .zip("zip64 end record missing or past the end") }
            count = try ZipArchive.checkedInt(u64(z64 + 32), "zip64 entry count")
            cdSize = try ZipArchive.checkedInt(u64(z64 + 40), "zip64 central directory size")
            cdOffset = try ZipArchive.checkedInt(u64(z64 + 48), "zip64 central directory offset")
        }
        guard count <= ZipArchive.maxEntries else { throw .zip("\(count) entries is over the limit") }
        guard cdOffset >= 0, cdSize >= 0, cdOffset <= n, cdSize <= n - cdOffset else {
            throw .zip("central directory (offset \(cdOffset), \(cdSize) bytes) runs past the end of the \(n)-byte file")
        }
        var p = cdOffset
        let cdEnd = cdOffset + cdSize
        for _ in 0..<count {
            guard p + 46 <= cdEnd, u32(p) == 0x0201_4B50 else { throw .zip("bad central directory entry at \(p)") }
            let method = u16(p + 10)
            let crc = u32(p + 16)
            var csize = Int(u32(p + 20))
            var usize = Int(u32(p + 24))
            let nameLen = Int(u16(p + 28)), extraLen = Int(u16(p + 30)), commentLen = Int(u16(p + 32))
            var local = Int(u32(p + 42))
            let next = p + 46 + nameLen + extraLen + commentLen
            guard next <= cdEnd else { throw .zip("central directory entry at \(p) runs past the directory") }
            guard let name = String(validating: UnsafeRawBufferPointer(rebasing: bytes[(p + 46)..<(p + 46 + nameLen)]),
                                    as: UTF8.self) else { throw .zip("entry name at \(p) is not UTF-8") }
            // zip64 extended information: the fields that are saturated appear in order.
            var e = p + 46 + nameLen
            let extraEnd = e + extraLen
            while e + 4 <= extraEnd {
                let id = u16(e), len = Int(u16(e + 2))
                guard e + 4 + len <= extraEnd else { throw .zip("extra field of '\(name)' runs past its end") }
                if id == 0x0001 {
                    var q = e + 4
                    func take() throws(CheckpointError) -> Int {
                        guard q + 8 <= e + 4 + len else { throw .zip("short zip64 field in '\(name)'") }
                        defer { q += 8 }
                        return try ZipArchive.checkedInt(u64(q), "zip64 size of '\(name)'")
                    }
                    if usize == 0xFFFF_FFFF { usize = try take() }
                    if csize == 0xFFFF_FFFF { csize = try take() }
                    if local == 0xFFFF_FFFF { local = try take() }
                }
                e += 4 + len
            }
            guard method == 0 else {
                throw .zip("entry '\(name)' is compressed (method \(method)); torch.save writes stored entries only")
            }
            guard csize == usize else { throw .zip("entry '\(name)': stored sizes disagree (\(csize) vs \(usize))") }
            guard local >= 0, local <= n - 30, u32(local) == 0x0403_4B50 else {
                throw .zip("entry '\(name)': local header at \(local) is missing or past the end")
            }
            let dataStart = local + 30 + Int(u16(local + 26)) + Int(u16(local + 28))
            guard dataStart <= n, usize <= n - dataStart else {
                throw .zip("entry '\(name)' (\(usize) bytes at \(dataStart)) runs past the end of the \(n)-byte file")
            }
            if entries[name] == nil { names.append(name) }
            entries[name] = Entry(name: name, crc32: crc, dataOffset: dataStart, size: usize)
            p = next
        }
    }

    /// The bytes of `entry`, after checking its CRC-32.
    public func data(_ entry: Entry, verify: Bool = true) throws(CheckpointError) -> UnsafeRawBufferPointer {
        let r = UnsafeRawBufferPointer(rebasing: bytes[entry.dataOffset..<(entry.dataOffset + entry.size)])
        if verify {
            let c = CRC32.checksum(r)
            guard c == entry.crc32 else { throw .zip("entry '\(entry.name)' fails its CRC-32 check (corrupt)") }
        }
        return r
    }

    static func checkedInt(_ v: UInt64, _ what: String) throws(CheckpointError) -> Int {
        guard v <= UInt64(Int.max / 2) else { throw .zip("\(what) \(v) is absurd") }
        return Int(v)
    }

    // Callers check bounds first: every offset passed here is within `bytes`.
    private func u16(_ o: Int) -> UInt16 { UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
    private func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
    private func u64(_ o: Int) -> UInt64 { UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
}
