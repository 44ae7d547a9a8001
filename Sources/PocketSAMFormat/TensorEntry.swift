#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Element type of a stored tensor.
public enum DType: UInt8, Sendable, CustomStringConvertible, CaseIterable {
    case f32 = 0
    case f16 = 1
    case i8 = 2

    public var size: Int {
        switch self {
        case .f32: return 4
        case .f16: return 2
        case .i8: return 1
        }
    }

    public var description: String {
        switch self {
        case .f32: return "f32"
        case .f16: return "f16"
        case .i8: return "i8"
        }
    }
}

/// How a tensor's elements are ordered in the file.
public enum TensorLayout: UInt8, Sendable, CustomStringConvertible {
    /// Row-major in the logical shape, exactly PyTorch's contiguous order.
    case rowMajor = 0
    /// int8 weights `[N, K…]` (scale axis 0, K the product of the other dimensions) in the int8 GEMM
    /// kernels' layout: panels of 16 output channels, each `Kp/4` blocks (Kp = K rounded up to 4) of
    /// 64 bytes holding 4 consecutive k of the panel's 16 channels; zero padding (`PanelLayout`).
    case panels16x4 = 1

    public var description: String {
        switch self {
        case .rowMajor: return "row-major"
        case .panels16x4: return "panels16x4"
        }
    }
}

/// Index arithmetic of `TensorLayout.panels16x4`, shared by the writer, the reader and the runtime.
public enum PanelLayout {
    /// Padded sizes of a `[n, k]` matrix: rows to a multiple of 16, columns to a multiple of 4.
    public static func paddedN(_ n: Int) -> Int { (n + 15) / 16 * 16 }
    public static func paddedK(_ k: Int) -> Int { (k + 3) / 4 * 4 }
    public static func byteCount(n: Int, k: Int) -> Int { paddedN(n) * paddedK(k) }

    /// Byte offset of element `(n, k)`; `kp` = `paddedK(K)`.
    @inline(__always)
    public static func offset(n: Int, k: Int, kp: Int) -> Int { ((n / 16) * (kp / 4) + k / 4) * 64 + (n % 16) * 4 + k % 4 }

    /// The first byte of a packed `[n, k]` matrix that breaks the layout's value rules, described for an error
    /// message, or nil: weights are −127…127 (never −128: the NEON kernels sum two products of an activation − 128
    /// and a weight in 16 bits, which only that range keeps exact) and padding bytes are zero (the kernels' zero-point
    /// corrections cover the real columns only). `bytes` holds `byteCount(n:k:)` bytes.
    public static func firstInvalidValue(_ bytes: UnsafeRawBufferPointer, n: Int, k: Int) -> String? {
        let np = paddedN(n), kp = paddedK(k)
        guard bytes.count == np * kp else { return "\(bytes.count) bytes for a \(n) × \(k) matrix (\(np * kp) expected)" }
        if let base = bytes.baseAddress, memchr(base, 0x80, bytes.count) != nil {
            for r in 0..<n { for c in 0..<k where bytes[offset(n: r, k: c, kp: kp)] == 0x80 {
                return "weight (\(r), \(c)) is −128 (int8 weights are −127…127)"
            } }
        }
        for r in 0..<np {
            for c in (r < n ? k : 0)..<kp where bytes[offset(n: r, k: c, kp: kp)] != 0 {
                return "padding byte at (\(r), \(c)) is not zero"
            }
        }
        return nil
    }

    /// Packs row-major `[n, k]` bytes.
    public static func pack(_ rowMajor: [UInt8], n: Int, k: Int) -> [UInt8] {
        let kp = paddedK(k)
        var out = [UInt8](repeating: 0, count: byteCount(n: n, k: k))
        for r in 0..<n { for c in 0..<k { out[offset(n: r, k: c, kp: kp)] = rowMajor[r * k + c] } }
        return out
    }
}

/// One row of the tensor table. Offsets are relative to the start of the data section.
public struct TensorEntry: Equatable, Sendable {
    public var name: String
    public var dtype: DType
    public var layout: TensorLayout
    public var shape: [Int]
    public var dataOffset: UInt64
    public var dataLength: UInt64
    /// For `.i8`: the axis whose index selects the scale (the output-channel axis). `nil` otherwise.
    public var scaleAxis: Int?
    /// For `.i8`: 0 when each index of the scale axis has one scale (per output channel); otherwise the
    /// channel's elements (row-major, after the axis) are split into groups of this many consecutive
    /// elements, each with its own scale. Groups are only allowed with scale axis 0.
    public var groupSize: Int
    /// For `.i8`: offset of `scaleCount` little-endian f32 scales (dequantized = int8 × scale), ordered
    /// channel-major: scale `c * groupsPerChannel + g`.
    public var scaleOffset: UInt64?
    /// CRC-32 of the data bytes followed by the scale bytes.
    public var crc32: UInt32

    public var elementCount: Int { shape.reduce(1, *) }
    /// Rows (output channels) and columns of the matrix view `[shape[0], product of the rest]`.
    public var matrixRows: Int { shape.first ?? 1 }
    public var matrixColumns: Int { shape.dropFirst().reduce(1, *) }
    /// Bytes of the tensor's data in its layout.
    public var storedByteCount: Int {
        layout == .panels16x4 ? PanelLayout.byteCount(n: matrixRows, k: matrixColumns) : elementCount * dtype.size
    }
    /// Elements per channel: the product of the dimensions after the scale axis.
    public var channelInner: Int { scaleAxis.map { shape[($0 + 1)...].reduce(1, *) } ?? 0 }
    public var groupsPerChannel: Int { groupSize == 0 ? 1 : channelInner / groupSize }
    public var scaleCount: Int { scaleAxis.map { shape[$0] * groupsPerChannel } ?? 0 }

    public init(name: String, dtype: DType, layout: TensorLayout, shape: [Int], dataOffset: UInt64, dataLength: UInt64,
                scaleAxis: Int?, groupSize: Int, scaleOffset: UInt64?, crc32: UInt32) {
        self.name = name
        self.dtype = dtype
        self.layout = layout
        self.shape = shape
        self.dataOffset = dataOffset
        self.dataLength = dataLength
        self.scaleAxis = scaleAxis
        self.groupSize = groupSize
        self.scaleOffset = scaleOffset
        self.crc32 = crc32
    }
}
