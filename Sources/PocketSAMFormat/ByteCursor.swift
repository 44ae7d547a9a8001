/// A bounds-checked little-endian reader over bytes. Every read checks the remaining length first,
/// so a hostile length field becomes an error, never an out-of-bounds access.
public struct ByteCursor {
    public let bytes: UnsafeRawBufferPointer
    public private(set) var offset: Int
    /// Used in error messages ("metadata", "tensor table").
    public let context: String

    public init(_ bytes: UnsafeRawBufferPointer, offset: Int = 0, context: String) {
        self.bytes = bytes
        self.offset = offset
        self.context = context
    }

    public var remaining: Int { bytes.count - offset }

    @inline(__always)
    mutating func need(_ n: Int, _ what: String) throws(PSAMError) {
        guard n >= 0, n <= remaining else {
            throw .outOfBounds(what: "\(context): \(what)", offset: UInt64(offset), length: UInt64(max(n, 0)),
                               limit: UInt64(bytes.count))
        }
    }

    public mutating func u8(_ what: String) throws(PSAMError) -> UInt8 {
        try need(1, what)
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func u16(_ what: String) throws(PSAMError) -> UInt16 {
        try need(2, what)
        defer { offset += 2 }
        return UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    public mutating func u32(_ what: String) throws(PSAMError) -> UInt32 {
        try need(4, what)
        defer { offset += 4 }
        return UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    public mutating func u64(_ what: String) throws(PSAMError) -> UInt64 {
        try need(8, what)
        defer { offset += 8 }
        return UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    public mutating func i64(_ what: String) throws(PSAMError) -> Int64 {
        Int64(bitPattern: try u64(what))
    }

    public mutating func f64(_ what: String) throws(PSAMError) -> Double {
        Double(bitPattern: try u64(what))
    }

    public mutating func raw(_ n: Int, _ what: String) throws(PSAMError) -> UnsafeRawBufferPointer {
        try need(n, what)
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)])
    }

    /// A UTF-8 string of `n` bytes; invalid UTF-8 is an error.
    public mutating func utf8(_ n: Int, _ what: String) throws(PSAMError) -> String {
        let r = try raw(n, what)
        guard let s = String(validating: r, as: UTF8.self) else {
            throw .malformed(what: "\(context): \(what) is not valid UTF-8")
        }
        return s
    }
}

/// Little-endian byte writer used by the `.psam` writer.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    public mutating func f64(_ v: Double) { u64(v.bitPattern) }
    public mutating func append(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    public mutating func pad(toMultipleOf a: Int) {
        let r = bytes.count % a
        if r != 0 { bytes.append(contentsOf: [UInt8](repeating: 0, count: a - r)) }
    }
    public mutating func patchU32(at offset: Int, _ v: UInt32) {
        withUnsafeBytes(of: v.littleEndian) { for i in 0..<4 { bytes[offset + i] = $0[i] } }
    }
}
