import PocketSAMFormat
import PocketSAMKernels

#if canImport(Glibc)
import Glibc
#endif

/// How a model computes its linear and convolution layers.
public enum ComputeMode: String, Sendable, CaseIterable {
    /// int8 GEMM kernels for every weight the file stores as packed int8, fp32 for the rest; in an int8 file, the
    /// weight matrices kept as fp16 run on the int16 GEMM where the CPU runs it faster than fp32 (AVX-512 VNNI).
    case auto
    /// fp32 everywhere (int8 and fp16 weights dequantized at load): the reference path.
    case fp32
}

/// A loaded `.psam` model: immutable, shared by any number of sessions and threads.
///
/// fp32 tensors and packed int8 weights are used in place from the memory-mapped file. fp16 tensors,
/// row-major int8 ones (transposed convolutions) and, in `.fp32` mode, every int8 tensor are
/// dequantized once here (and an int8 model's fp16 weight matrices also packed to int16, see `int16Layers`).
public final class Model: @unchecked Sendable {
    public let file: PSAMFile
    public let config: ModelConfig
    public let computeMode: ComputeMode
    private let weights: [String: UnsafePointer<Float>]
    let qweights: [String: QWeight]
    /// int16 forms, made by `lin(_:int16:)` while the layers are resolved in `init` (never after).
    private(set) var s16weights: [String: S16Weight] = [:]
    /// An int8 model's fp16 weight matrices `[n, k]` that can have an int16 form (see `init`).
    private var int16Candidates: [String: (n: Int, k: Int)] = [:]
    private var owned: [UnsafeMutableRawPointer]
    /// Weight matrices run by the int8 kernels, and the kernel variant that runs them.
    public var int8Layers: Int { qweights.count }
    /// Weight matrices run by the int16 GEMM: an int8 model's fp16 GEMM layers, where `psam_s16gemm_fast()`.
    public var int16Layers: Int { s16weights.count }
    public static var kernelName: String { String(cString: psam_isa_name(psam_best_isa())) }

    enum Encoder {
        case vit(ViTEncoder)
        case tinyViT(TinyViTEncoder)
    }
    /// The network, with every weight pointer resolved once here.
    private(set) var encoder: Encoder!
    private(set) var promptEncoder: PromptEncoder!
    private(set) var maskDecoder: MaskDecoder!
    /// The prompt encoder's dense positional encoding `[G·G, C]`, made once here (it does not depend on the image).
    private(set) var densePE: UnsafePointer<Float>!

    /// Opens, validates (every offset, CRC and tensor shape) and maps `path`.
    public convenience init(path: String, compute: ComputeMode = .auto, int16: Bool = true) throws {
        do {
            try self.init(file: try PSAMFile.open(path: path), compute: compute, int16: int16)
        } catch let e as PSAMError {
            throw PocketSAMError.model(e)
        }
    }

    /// `int16: false` runs an int8 model's fp16 layers in fp32 even where the int16 GEMM would run them (for
    /// comparisons: the int16 form is used only with `.auto`, on CPUs where `psam_s16gemm_fast()`).
    public init(file: PSAMFile, compute: ComputeMode = .auto, int16: Bool = true) throws {
        guard let config = file.config else {
            throw PocketSAMError.unsupportedModel("the file was opened without model validation")
        }
        self.file = file
        self.config = config
        self.computeMode = compute
        var w: [String: UnsafePointer<Float>] = [:]
        var q: [String: QWeight] = [:]
        var owned: [UnsafeMutableRawPointer] = []
        var candidates: [String: (n: Int, k: Int)] = [:]
        // An int8 model's fp16 matrices (the layers the quantizer kept at higher precision) also get an int16 form
        // where the int16 GEMM is faster than fp32: those that run as GEMMs (`lin`, not depthwise or transposed).
        let int16 = int16 && compute == .auto && psam_s16gemm_fast() != 0 && file.tensors.contains { $0.dtype == .i8 }
        for e in file.tensors {
            if e.dtype == .i8, e.layout == .panels16x4, compute == .auto {
                let n = e.matrixRows, k = e.matrixColumns, np = PanelLayout.paddedN(n), kp = PanelLayout.paddedK(k)
                let groups = e.groupsPerChannel, group = e.groupSize == 0 ? kp : e.groupSize
                let src = file.scales(of: e)
                let raw = file.data(of: e)
                if let why = PanelLayout.firstInvalidValue(raw, n: n, k: k) {
                    throw PocketSAMError.model(.malformed(what: "int8 tensor '\(e.name)': \(why)"))
                }
                let scales = UnsafeMutablePointer<Float>.allocate(capacity: max(groups * np, 1))
                let sums = UnsafeMutablePointer<Int32>.allocate(capacity: max(groups * np, 1))
                scales.initialize(repeating: 0, count: max(groups * np, 1))
                sums.initialize(repeating: 0, count: max(groups * np, 1))
                for c in 0..<n {
                    for g in 0..<groups {
                        scales[g * np + c] = src[c * groups + g]
                        var s: Int32 = 0
                        for kk in (g * group)..<min((g + 1) * group, k) {
                            s += Int32(Int8(bitPattern: raw[PanelLayout.offset(n: c, k: kk, kp: kp)]))
                        }
                        sums[g * np + c] = s
                    }
                }
                owned.append(UnsafeMutableRawPointer(scales))
                owned.append(UnsafeMutableRawPointer(sums))
                guard let base = raw.baseAddress else { throw PocketSAMError.unsupportedModel("empty int8 tensor \(e.name)") }
                q[e.name] = QWeight(data: base.assumingMemoryBound(to: Int8.self), scales: scales, sums: sums,
                                    n: n, k: k, kp: kp, group: group)
            } else if e.dtype == .f32 {
                let raw = file.data(of: e)
                w[e.name] = raw.baseAddress.map { UnsafePointer($0.assumingMemoryBound(to: Float.self)) }
                    ?? UnsafePointer(UnsafeMutablePointer<Float>.allocate(capacity: 1))
            } else {
                let values = file.floatValues(of: e)
                let p = UnsafeMutablePointer<Float>.allocate(capacity: max(values.count, 1))
                p.initialize(from: values, count: values.count)
                owned.append(UnsafeMutableRawPointer(p))
                w[e.name] = UnsafePointer(p)
                if int16, e.dtype == .f16, e.shape.count >= 2, e.name.hasSuffix(".weight") {
                    candidates[e.name] = (e.matrixRows, e.matrixColumns)
                }
            }
        }
        weights = w
        int16Candidates = candidates
        qweights = q
        self.owned = owned
        switch config.encoder {
        case let .vit(c): encoder = .vit(ViTEncoder(c: c, m: self))
        case let .tinyViT(c): encoder = .tinyViT(TinyViTEncoder(c: c, m: self))
        }
        promptEncoder = PromptEncoder(c: config.prompt, m: self)
        maskDecoder = MaskDecoder(c: config.decoder, m: self)
        let pe = UnsafeMutablePointer<Float>.allocate(capacity: config.prompt.embeddingSize * config.prompt.embeddingSize * config.prompt.embedDim)
        promptEncoder.densePE(into: pe)
        self.owned.append(UnsafeMutableRawPointer(pe))
        densePE = UnsafePointer(pe)
    }

    /// The int16 form of `name`, packed on first request; only while `init` resolves the layers.
    func int16Form(_ name: String) -> S16Weight? {
        if let s = s16weights[name] { return s }
        guard let (n, k) = int16Candidates[name], let p = weights[name] else { return nil }
        let data = UnsafeMutablePointer<Int16>.allocate(capacity: PanelLayout.paddedN(n) * ((k + 1) & ~1))
        let scales = UnsafeMutablePointer<Float>.allocate(capacity: PanelLayout.paddedN(n))
        owned.append(UnsafeMutableRawPointer(data))
        owned.append(UnsafeMutableRawPointer(scales))
        let s = S16Weight.pack(p, n: n, k: k, data: data, scales: scales)
        s16weights[name] = s
        return s
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
