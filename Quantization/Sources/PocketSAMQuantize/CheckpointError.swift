/// Everything the tool can reject in a checkpoint, with what and where.
public enum CheckpointError: Error, Equatable, Sendable, CustomStringConvertible {
    case cannotOpen(path: String, reason: String)
    case unknownFormat(path: String)
    case zip(String)
    case pickle(offset: Int, reason: String)
    case disallowedGlobal(module: String, name: String)
    case unsupportedOpcode(opcode: UInt8, name: String, offset: Int)
    case notAStateDict(String)
    case unsupportedDType(tensor: String, dtype: String)
    case storageTooShort(tensor: String, neededBytes: Int, availableBytes: Int)
    case badTensor(tensor: String, reason: String)
    case safetensors(String)
    case unknownArchitecture(String)
    case missingTensor(name: String, needed: String)
    case unexpectedTensor(name: String)
    case shapeMismatch(name: String, expected: [Int], found: [Int])
    case nonFinite(tensor: String)
    /// A transformers `config.json` that is unreadable or disagrees with the tensors.
    case config(path: String, reason: String)
    /// A shard index (`*.index.json`) that is unreadable or disagrees with its shards.
    case index(path: String, reason: String)
    /// A tensor name of the transformers layout this tool cannot place.
    case layout(tensor: String, reason: String)
    /// A LoRA adapter (or inline LoRA layers) that cannot be merged.
    case adapter(path: String, reason: String)

    public var description: String {
        switch self {
        case let .cannotOpen(path, reason): return "cannot open '\(path)': \(reason)"
        case let .unknownFormat(path):
            return "'\(path)' is neither a PyTorch zip checkpoint (torch.save) nor a .safetensors file"
        case let .zip(why): return "corrupt zip archive: \(why)"
        case let .pickle(offset, reason): return "pickle (data.pkl) at byte \(offset): \(reason)"
        case let .disallowedGlobal(module, name):
            return "pickle references '\(module).\(name)', which is not on the allow-list of a state dict; refusing to load it"
        case let .unsupportedOpcode(op, name, offset):
            return "pickle opcode \(name) (0x\(String(op, radix: 16))) at byte \(offset) is outside the subset a state dict needs"
        case let .notAStateDict(why): return "not a state dict: \(why)"
        case let .unsupportedDType(tensor, dtype): return "tensor '\(tensor)': unsupported dtype \(dtype)"
        case let .storageTooShort(tensor, needed, available):
            return "tensor '\(tensor)': its shape and strides need \(needed) bytes of storage, only \(available) are there"
        case let .badTensor(tensor, reason): return "tensor '\(tensor)': \(reason)"
        case let .safetensors(why): return "corrupt safetensors file: \(why)"
        case let .unknownArchitecture(why): return "unknown architecture: \(why)"
        case let .missingTensor(name, needed): return "tensor '\(name)' is missing (needed for \(needed))"
        case let .unexpectedTensor(name):
            return "tensor '\(name)' is not part of the detected architecture (refusing to drop weights silently)"
        case let .shapeMismatch(name, expected, found):
            return "tensor '\(name)' has shape \(found), the detected architecture needs \(expected)"
        case let .nonFinite(tensor): return "tensor '\(tensor)' contains NaN or infinity"
        case let .config(path, reason): return "'\(path)': \(reason)"
        case let .index(path, reason): return "shard index '\(path)': \(reason)"
        case let .layout(tensor, reason): return "tensor '\(tensor)': \(reason)"
        case let .adapter(path, reason): return "LoRA adapter '\(path)': \(reason); nothing was written"
        }
    }
}
