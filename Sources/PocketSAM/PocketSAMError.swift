import PocketSAMFormat

/// Errors of the runtime, each saying what was wrong with which input.
public enum PocketSAMError: Error, Equatable, Sendable, CustomStringConvertible {
    case model(PSAMError)
    case unsupportedModel(String)
    case invalidImage(String)
    case invalidPrompt(String)
    case noImage
    /// Generator options out of range.
    case invalidOptions(String)
    case bufferTooSmall(needed: Int, given: Int)
    case bufferMisaligned
    /// A `.psemb` image embedding that is corrupt or from another model.
    case invalidEmbedding(String)
    /// A long call stopped by its progress callback.
    case cancelled

    public var description: String {
        switch self {
        case let .model(e): return "model file: \(e)"
        case let .unsupportedModel(why): return "unsupported model: \(why)"
        case let .invalidImage(why): return "invalid image: \(why)"
        case let .invalidPrompt(why): return "invalid prompt: \(why)"
        case .noImage: return "predict was called before setImage"
        case let .invalidOptions(why): return "invalid options: \(why)"
        case let .bufferTooSmall(needed, given): return "the arena buffer has \(given) bytes, the model needs \(needed)"
        case .bufferMisaligned: return "the arena buffer is not 64-byte aligned"
        case let .invalidEmbedding(why): return "image embedding: \(why)"
        case .cancelled: return "cancelled by the progress callback"
        }
    }
}
