#if canImport(Glibc)
import Glibc
#endif

/// NumPy `.npy` files (format 1.0): little-endian float32 or uint8 arrays, C order.
public enum NPY {
    public enum DType: String, Sendable { case f32 = "<f4", u8 = "|u1", f64 = "<f8", bool = "|b1", f16 = "<f2" }

    public struct Array: Sendable {
        public var dtype: DType
        public var shape: [Int]
        public var data: [UInt8]

        public var floats: [Float] {
            switch dtype {
            case .f32: return data.withUnsafeBytes { b in (0..<(data.count / 4)).map { Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) } }
            case .f64: return data.withUnsafeBytes { b in (0..<(data.count / 8)).map { Float(Double(bitPattern: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self)))) } }
            case .f16: return data.withUnsafeBytes { b in (0..<(data.count / 2)).map { Float(Float16(bitPattern: UInt16(littleEndian: b.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)))) } }
            case .u8, .bool: return data.map(Float.init)
            }
        }
    }

    public static func encode(_ data: [UInt8], dtype: DType, shape: [Int]) -> [UInt8] {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(dtype.rawValue)', 'fortran_order': False, 'shape': \(shapeText), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        let h = Swift.Array(header.utf8)
        return [0x93] + Swift.Array("NUMPY".utf8) + [1, 0, UInt8(h.count & 0xFF), UInt8(h.count >> 8)] + h + data
    }

    public static func encode(_ values: [Float], shape: [Int]) -> [UInt8] {
        var d = [UInt8](repeating: 0, count: values.count * 4)
        d.withUnsafeMutableBytes { b in for (i, v) in values.enumerated() { b.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) } }
        return encode(d, dtype: .f32, shape: shape)
    }

    public static func write(_ bytes: [UInt8], to path: String) throws {
        guard let f = fopen(path, "wb") else { throw ImageIOError.cannotWrite(path: path, reason: String(cString: strerror(errno))) }
        let n = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
        let closed = fclose(f)
        guard n == bytes.count, closed == 0 else { throw ImageIOError.cannotWrite(path: path, reason: "short write") }
    }

    public enum ReadError: Error, CustomStringConvertible {
        case invalid(String)
        public var description: String { switch self { case let .invalid(s): return "invalid .npy: \(s)" } }
    }

    /// Parses a version 1.x/2.x `.npy` in C order with one of the supported dtypes.
    public static func decode(_ b: [UInt8]) throws -> Array {
        guard b.count >= 10, b[0] == 0x93, Swift.Array(b[1..<6]) == Swift.Array("NUMPY".utf8) else { throw ReadError.invalid("bad magic") }
        let major = b[6]
        var hlen = Int(b[8]) | Int(b[9]) << 8
        var start = 10
        if major >= 2 {
            guard b.count >= 12 else { throw ReadError.invalid("truncated") }
            hlen = Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24
            start = 12
        }
        guard hlen <= b.count - start else { throw ReadError.invalid("header runs past the end") }
        let header = String(decoding: b[start..<(start + hlen)], as: UTF8.self)
        guard !header.contains("'fortran_order': True") else { throw ReadError.invalid("Fortran order is not supported") }
        guard let dtype = [DType.f32, .u8, .f64, .bool, .f16].first(where: { header.contains("'\($0.rawValue)'") }) else {
            throw ReadError.invalid("unsupported dtype in \(header)")
        }
        let key = Swift.Array("'shape': (".utf8), hb = Swift.Array(header.utf8)
        guard let at = (0...(max(0, hb.count - key.count))).first(where: { hb.count >= key.count && Swift.Array(hb[$0..<($0 + key.count)]) == key }),
              let close = hb[(at + key.count)...].firstIndex(of: UInt8(ascii: ")")) else {
            throw ReadError.invalid("no shape")
        }
        let inside = String(decoding: hb[(at + key.count)..<close], as: UTF8.self)
        let dims = inside[...].split(separator: ",").map { $0.trimmingCharacters(in: " ") }.filter { !$0.isEmpty }
        var shape: [Int] = []
        for d in dims {
            guard let v = Int(d), v >= 0 else { throw ReadError.invalid("bad shape") }
            shape.append(v)
        }
        let size: Int = { switch dtype { case .f32: return 4; case .f64: return 8; case .f16: return 2; case .u8, .bool: return 1 } }()
        let n = shape.reduce(1, *) * size
        let dataStart = start + hlen
        guard n <= b.count - dataStart else { throw ReadError.invalid("data shorter than its shape") }
        return Array(dtype: dtype, shape: shape, data: Swift.Array(b[dataStart..<(dataStart + n)]))
    }
}

extension Substring {
    func trimmingCharacters(in chars: String) -> String {
        var s = self
        while let f = s.first, chars.contains(f) { s = s.dropFirst() }
        while let l = s.last, chars.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
