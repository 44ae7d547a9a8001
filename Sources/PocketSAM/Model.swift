import PocketSAMFormat

#if canImport(Glibc)
import Glibc
#endif

/// A loaded `.psam` model: immutable, shared by any number of sessions and threads.
///
/// fp32 tensors are used in place from the memory-mapped file. The fp32 reference path needs fp32
/// values, so fp16 and int8 tensors are dequantized once here (the int8 kernels read them in place).
public final class Model: @unchecked Sendable {
    public let file: PSAMFile
    public let config: ModelConfig
    private let weights: [String: UnsafePointer<Float>]
    private let owned: [UnsafeMutablePointer<Float>]

    enum Encoder {
        case vit(ViTEncoder)
        case tinyViT(TinyViTEncoder)
    }
    /// The network, with every weight pointer resolved once here.
    private(set) var encoder: Encoder!
    private(set) var promptEncoder: PromptEncoder!
    private(set) var maskDecoder: MaskDecoder!

    /// Opens, validates (every offset, CRC and tensor shape) and maps `path`.
    public convenience init(path: String) throws {
        do {
            try self.init(file: try PSAMFile.open(path: path))
        } catch let e as PSAMError {
            throw PocketSAMError.model(e)
        }
    }

    public init(file: PSAMFile) throws {
        guard let config = file.config else {
            throw PocketSAMError.unsupportedModel("the file was opened without model validation")
        }
        self.file = file
        self.config = config
        var w: [String: UnsafePointer<Float>] = [:]
        var owned: [UnsafeMutablePointer<Float>] = []
        for e in file.tensors {
            if e.dtype == .f32 {
                let raw = file.data(of: e)
                w[e.name] = raw.baseAddress.map { UnsafePointer($0.assumingMemoryBound(to: Float.self)) }
                    ?? UnsafePointer(UnsafeMutablePointer<Float>.allocate(capacity: 1))
            } else {
                let values = file.floatValues(of: e)
                let p = UnsafeMutablePointer<Float>.allocate(capacity: max(values.count, 1))
                p.initialize(from: values, count: values.count)
                owned.append(p)
                w[e.name] = UnsafePointer(p)
            }
        }
        weights = w
        self.owned = owned
        switch config.encoder {
        case let .vit(c): encoder = .vit(ViTEncoder(c: c, m: self))
        case let .tinyViT(c): encoder = .tinyViT(TinyViTEncoder(c: c, m: self))
        }
        promptEncoder = PromptEncoder(c: config.prompt, m: self)
        maskDecoder = MaskDecoder(c: config.decoder, m: self)
    }

    deinit {
        for p in owned { p.deallocate() }
        planLock.deallocate()
    }

    private let planLock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()
    private var plannedBytes: Int?

    /// The bytes of activation memory a session of this model needs (its arena), measured once by a
    /// planning pass (one encoder run on a blank image, see `Session.measureArena`) and cached.
    /// Thread-safe.
    public func plannedArenaBytes() throws -> Int {
        pthread_mutex_lock(planLock)
        defer { pthread_mutex_unlock(planLock) }
        if let p = plannedBytes { return p }
        let p = try Session.measureArena(self)
        plannedBytes = p
        return p
    }

    /// The weights of a tensor the configuration's spec names (validated at load, so always present).
    func w(_ name: String) -> UnsafePointer<Float> {
        guard let p = weights[name] else { preconditionFailure("tensor \(name) missing after validation") }
        return p
    }
}
