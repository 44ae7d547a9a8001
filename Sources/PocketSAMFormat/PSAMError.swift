/// Everything that can go wrong reading, validating or writing a `.psam` file.
///
/// Each case names what was wrong and where, so a message can be shown to a user as it is.
public enum PSAMError: Error, Equatable, Sendable, CustomStringConvertible {
    case cannotOpen(path: String, reason: String)
    case tooSmall(size: Int, minimum: Int)
    case badMagic
    case unsupportedVersion(found: UInt32, supported: UInt32)
    case headerChecksumMismatch(stored: UInt32, computed: UInt32)
    case outOfBounds(what: String, offset: UInt64, length: UInt64, limit: UInt64)
    case malformed(what: String)
    case duplicateName(String)
    case unknownDType(tensor: String, code: UInt8)
    case unknownLayout(tensor: String, code: UInt8)
    case misaligned(tensor: String, offset: UInt64)
    case sizeMismatch(tensor: String, expected: UInt64, found: UInt64)
    case tensorChecksumMismatch(tensor: String, stored: UInt32, computed: UInt32)
    case badScales(tensor: String, reason: String)
    case metadataMissing(key: String)
    case metadataType(key: String, expected: String)
    case invalidConfig(String)
    case tensorMissing(name: String)
    case unexpectedTensor(name: String)
    case tensorShapeMismatch(name: String, expected: [Int], found: [Int])
    case tensorDTypeNotAllowed(name: String, dtype: DType)
    case writeFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case let .cannotOpen(path, reason): return "cannot open '\(path)': \(reason)"
        case let .tooSmall(size, minimum):
            return "file is \(size) bytes, smaller than the \(minimum)-byte .psam header (truncated?)"
        case .badMagic: return "not a .psam file (bad magic bytes)"
        case let .unsupportedVersion(found, supported):
            return "format version \(found) is not supported (this build reads version \(supported))"
        case let .headerChecksumMismatch(stored, computed):
            return "header/metadata/table checksum mismatch (stored \(hex(stored)), computed \(hex(computed))): the file is corrupt"
        case let .outOfBounds(what, offset, length, limit):
            return "\(what) at offset \(offset) with length \(length) runs past the end (\(limit) bytes available)"
        case let .malformed(what): return "malformed file: \(what)"
        case let .duplicateName(name): return "name '\(name)' appears twice"
        case let .unknownDType(tensor, code): return "tensor '\(tensor)': unknown dtype code \(code)"
        case let .unknownLayout(tensor, code): return "tensor '\(tensor)': unknown layout code \(code)"
        case let .misaligned(tensor, offset): return "tensor '\(tensor)': data offset \(offset) is not 64-byte aligned"
        case let .sizeMismatch(tensor, expected, found):
            return "tensor '\(tensor)': byte length \(found) does not match its shape and dtype (\(expected) expected)"
        case let .tensorChecksumMismatch(tensor, stored, computed):
            return "tensor '\(tensor)': CRC32 mismatch (stored \(hex(stored)), computed \(hex(computed))): the file is corrupt"
        case let .badScales(tensor, reason): return "tensor '\(tensor)': bad quantization scales: \(reason)"
        case let .metadataMissing(key): return "metadata key '\(key)' is missing"
        case let .metadataType(key, expected): return "metadata key '\(key)' should be \(expected)"
        case let .invalidConfig(reason): return "invalid model configuration: \(reason)"
        case let .tensorMissing(name): return "tensor '\(name)' required by the model configuration is missing"
        case let .unexpectedTensor(name): return "tensor '\(name)' is not part of the model configuration"
        case let .tensorShapeMismatch(name, expected, found):
            return "tensor '\(name)' has shape \(found), the model configuration says \(expected)"
        case let .tensorDTypeNotAllowed(name, dtype):
            return "tensor '\(name)' may not be stored as \(dtype)"
        case let .writeFailed(path, reason): return "cannot write '\(path)': \(reason)"
        }
    }
}

@inline(__always)
func hex(_ v: UInt32) -> String {
    let s = String(v, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 8 - s.count)) + s
}
