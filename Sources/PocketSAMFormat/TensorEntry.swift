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

    public var description: String { "row-major" }
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
