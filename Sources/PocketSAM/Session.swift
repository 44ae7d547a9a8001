import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif
import PocketSAMFormat
import PocketSAMKernels

/// A point prompt in original-image pixels (x right, y down) with its label.
public struct PointPrompt: Sendable, Equatable {
    public var x: Float
    public var y: Float
    /// true: foreground (label 1); false: background (label 0).
    public var positive: Bool

    public init(x: Float, y: Float, positive: Bool = true) {
        self.x = x
        self.y = y
        self.positive = positive
    }
}

/// A box prompt in original-image pixels: top-left (x0, y0), bottom-right (x1, y1).
public struct BoxPrompt: Sendable, Equatable {
    public var x0: Float, y0: Float, x1: Float, y1: Float

    public init(x0: Float, y0: Float, x1: Float, y1: Float) {
        self.x0 = x0
        self.y0 = y0
        self.x1 = x1
        self.y1 = y1
    }
}

/// The answer to one prompt, as SAM's predictor gives it.
public struct Prediction: Sendable {
    /// Number of masks: 1, or 3 with `multimask`.
    public var count: Int
    public var width: Int
    public var height: Int
    /// `count` masks of `height × width` bytes (1 = inside), mask-major.
    public var masks: [UInt8]
    /// Predicted IoU of each mask.
    public var iou: [Float]
    /// Stability score of each mask (IoU of the masks thresholded at ±1 logit).
    public var stability: [Float]
    /// Low-resolution logits `[count, lowResSize, lowResSize]`, usable as a later `maskInput`.
    public var lowResLogits: [Float]
    public var lowResSize: Int

    /// An empty prediction, to pass to `Session.predict(…, into:)` and reuse across calls.
    public init() {
        count = 0
        width = 0
        height = 0
        masks = []
        iou = []
        stability = []
        lowResLogits = []
        lowResSize = 0
    }
}

/// One image at a time: `setImage` runs the image encoder once, `predict` answers prompts against the
/// cached embedding. Not thread-safe: use one session per thread (they may share one `Model`).
public final class Session {
    public let model: Model
    let arena: Arena
    /// Images larger than this on either side are refused (memory for the resize is proportional).
    public static let maxImageSide = 16384
    /// Most point prompts in one `predict` (the arena plan covers this many).
    public static let maxPoints = 256

    private(set) var embedding: UnsafeMutablePointer<Float>?
    /// HQ-SAM: the image's HQ features `[4G, 4G, D/8]` (`MaskDecoderHQ.features`), above the embedding.
    private(set) var hqFeatures: UnsafeMutablePointer<Float>?
    private(set) var densePE: UnsafePointer<Float>?
    private(set) var persistentMark: Arena.Mark?
    private(set) var imageSize: (h: Int, w: Int)?
    private(set) var resized: (h: Int, w: Int)?
    /// Whether `scratch.resized` holds the current image's resized pixels (not after `setEmbedding`).
    private var resizedPixelsValid = false
    private let scratch = SessionScratch()
    /// The decoder's prompt-independent part for the current image (`MaskDecoder.Shared`, in the arena above the
    /// embedding), made by the first prompt without a mask input; its weights-only part, made once per session.
    private(set) var decoderShared: MaskDecoder.Shared?
    private var decoderFolded: MaskDecoder.Folded?
    /// Seconds the current image's first prompt spent making `decoderShared` (0 until then).
    public private(set) var decoderSetupSeconds: Double = 0

    /// Parts one prompt's image-side decoder work is cut into (`MaskDecoder.runBatch`'s `parts`): fixed, so that the
    /// answer does not depend on the thread count; up to this many threads share a prompt.
    static let decoderParts = 4

    /// A session whose arena grows during its first image (chunks of 32 MB) and is reused after.
    public init(model: Model, threads: Int = 1) {
        self.model = model
        arena = Arena()
        Self.setUp(arena, threads)
    }

    /// A session over exactly `Model.plannedArenaBytes()` of memory: its own, or `buffer` (at least that
    /// many bytes, 64-byte aligned, owned by the caller and kept alive as long as the session).
    public init(model: Model, threads: Int = 1, buffer: UnsafeMutableRawBufferPointer? = nil) throws {
        self.model = model
        let need = try model.plannedArenaBytes()
        if let b = buffer {
            guard let base = b.baseAddress, b.count >= need else {
                throw PocketSAMError.bufferTooSmall(needed: need, given: buffer?.count ?? 0)
            }
            guard Int(bitPattern: base) % 64 == 0 else { throw PocketSAMError.bufferMisaligned }
            arena = Arena(base: base, bytes: b.count, release: { _, _ in })
        } else {
            arena = Arena(base: UnsafeMutableRawPointer.allocate(byteCount: need, alignment: 64), bytes: need,
                          release: { p, _ in p.deallocate() })
        }
        Self.setUp(arena, threads)
    }

    static func setUp(_ arena: Arena, _ threads: Int) {
        // OpenBLAS runs single-threaded; the session splits work itself, so that results do not depend
        // on the thread count (OpenBLAS's own threading changes summation order).
        openblas_set_num_threads(1)
        arena.pool = threads > 1 ? ThreadPool(size: threads) : nil
    }

    /// Measures the arena this model needs: one pass over a blank image at the model's input size and
    /// the largest prompt (`maxPoints` points, a box and a mask input, three masks) and batch (`promptBatch` boxes), on a reserved
    /// address range that costs only the pages touched. No allocation depends on the image size or the
    /// prompt beyond that, so this bounds every later call. Cost: one encoder pass.
    static func measureArena(_ model: Model) throws -> Int {
        guard let arena = Arena.measuring() else { throw PocketSAMError.unsupportedModel("cannot reserve address space to plan the arena") }
        let s = Session(model: model, arena: arena)
        let size = model.config.encoder.imageSize
        let px = [UInt8](repeating: 0, count: size * size)
        try px.withUnsafeBufferPointer { try s.setImage(pixels: $0.baseAddress!, width: size, height: size, channels: 1) }
        let lowRes = 4 * model.config.prompt.embeddingSize
        let points = (0..<maxPoints).map { PointPrompt(x: Float($0 % size), y: Float($0 / size)) }
        var r = Prediction()
        // A prompt without a mask input first (it keeps the decoder's per-image part in the arena), then the largest.
        try s.predict(box: BoxPrompt(x0: 0, y0: 0, x1: Float(size), y1: Float(size)), multimask: true, into: &r)
        // A batch of such prompts (`predict(prompts:)`, whose groups never hold more tokens than this), and the folded
        // decoder's largest single prompt.
        let whole = BoxPrompt(x0: 0, y0: 0, x1: Float(size), y1: Float(size))
        _ = try s.predict(prompts: Array(repeating: Prompt(box: whole, multimask: true), count: promptBatch))
        let foldedMax = Ops.fewKeysMax - 3 - model.config.decoder.numMaskTokens
        try s.predict(points: Array(points.prefix(max(foldedMax, 0))), box: whole, multimask: true, into: &r)
        try s.predict(points: points, box: BoxPrompt(x0: 0, y0: 0, x1: Float(size), y1: Float(size)),
                      maskInput: [Float](repeating: 0, count: lowRes * lowRes), multimask: true, into: &r)
        return arena.peakBytes
    }

    private init(model: Model, arena: Arena) {
        self.model = model
        self.arena = arena
    }

    /// Test and debugging hook: called during `setImage`/`predict` with named intermediate activations
    /// (channels-last `[H, W, C]` or `[N, C]`, valid only during the call). Allocates; leave nil in use.
    public var debugTap: ((String, UnsafePointer<Float>, [Int]) -> Void)? {
        get { arena.tap }
        set { arena.tap = newValue }
    }

    /// Width and height of the current image, nil before `setImage`.
    public var currentImageSize: (width: Int, height: Int)? {
        guard embedding != nil, let (h, w) = imageSize else { return nil }
        return (w, h)
    }

    /// Peak bytes of activation memory used so far.
    public var arenaPeakBytes: Int { arena.peakBytes }

    /// Calibration (for the quantizer): called with each linear or convolution layer's weight name and
    /// its fp32 input rows (pointer, rows, columns, row stride) during `setImage` and `predict`.
    @_spi(Calibration)
    public var linearInputHook: ((String, UnsafePointer<Float>, Int, Int, Int) -> Void)? {
        get { arena.linearInputHook }
        set { arena.linearInputHook = newValue }
    }

    /// Multiply-accumulates of every GEMM, matmul and convolution this session has run (a counter for
    /// benchmarks: the encoder's MACs are the difference around one `setImage`).
    public var multiplyAccumulates: Int { arena.macs }

    /// The last image resized to the encoder's input (uint8 RGB `[h, w, 3]`), as a copy; for tests.
    public func resizedImage() -> [UInt8] {
        guard let (h, w) = resized else { return [] }
        guard resizedPixelsValid else { return [] }
        return Array(UnsafeBufferPointer(start: scratch.resized.base, count: h * w * 3))
    }

    /// Encodes an 8-bit image: `channels` 3 (RGB) or 1 (gray, replicated to RGB), rows `stride` bytes
    /// apart (default: packed). Runs the image encoder once; prompts are then answered by `predict`.
    /// Cost: one encoder pass (the expensive step); no heap allocation once the session has seen an
    /// image of this size.
    public func setImage(pixels: UnsafePointer<UInt8>, width: Int, height: Int, channels: Int = 3, stride: Int? = nil) throws {
        guard channels == 3 || channels == 1 else { throw PocketSAMError.invalidImage("\(channels) channels (1 or 3 are supported)") }
        guard width >= 2, height >= 2 else { throw PocketSAMError.invalidImage("\(width)×\(height) is too small (at least 2×2)") }
        guard width <= Self.maxImageSide, height <= Self.maxImageSide else {
            throw PocketSAMError.invalidImage("\(width)×\(height) is larger than the \(Self.maxImageSide)-pixel limit")
        }
        let rowBytes = stride ?? width * channels
        guard rowBytes >= width * channels else { throw PocketSAMError.invalidImage("stride \(rowBytes) < \(width * channels)") }
        clearImage()
        let size = model.config.encoder.imageSize
        let (rh, rw) = Preprocess.resizedShape(h: height, w: width, long: size)
        let small = scratch.resized.reserve(rh * rw * 3)
        Preprocess.resizeRGB(pixels, h: height, w: width, channels: channels, stride: rowBytes, oh: rh, ow: rw, out: small,
                             scratch: scratch, arena: arena)
        arena.reset(to: Arena.bottom)
        let g = model.config.prompt.embeddingSize, D = model.config.prompt.embedDim
        // HQ-SAM: the early feature, kept below the encoder's memory until the HQ features are made from it.
        let hq = model.maskDecoder.hq
        let early = hq.map { arena.alloc(g * g * $0.hq.vitDim) }
        let inputMark = arena.mark()
        let input = arena.alloc(size * size * 3)
        Preprocess.normalizeAndPad(small, h: rh, w: rw, size: size, norm: model.config.normalization, out: input, scratch: scratch,
                                   arena: arena)
        let emb: UnsafeMutablePointer<Float>
        switch model.encoder! {
        case let .tinyViT(enc):
            emb = enc.run(input, arena: arena, inputMark: inputMark, early: hq.flatMap { h in early.map { (h.hq.earlyLayer, $0) } })
        case let .vit(enc):
            emb = enc.run(input, arena: arena, early: hq.flatMap { h in early.map { (h.hq.earlyLayer, $0) } })
        }
        // HQ-SAM: the HQ features once per image (the official decoder makes them at every prompt), above the embedding.
        var features: UnsafeMutablePointer<Float>?
        let featureCount = EmbeddingFile.hqCount(model)
        if let hq, let early {
            arena.tap?("hq.early", early, [g, g, hq.hq.vitDim])
            let f = arena.alloc(featureCount)
            hq.features(embedding: emb, early: early, grid: g, out: f, arena: arena)
            arena.tap?("hq.features", f, [4 * g, 4 * g, D / 8])
            features = f
        }
        // Keep the embedding (and the HQ features) at the bottom of the arena; the encoder's scratch above is reused by
        // the decoder. Each is above its destination, so the moves do not overwrite what is still to move.
        let embCount = g * g * D
        arena.reset(to: Arena.bottom)
        let kept = arena.alloc(embCount)
        memmove(kept, emb, embCount * 4)
        if let features {
            let keptFeatures = arena.alloc(featureCount)
            memmove(keptFeatures, features, featureCount * 4)
            hqFeatures = keptFeatures
        }
        embedding = kept
        densePE = model.densePE
        persistentMark = arena.mark()
        imageSize = (height, width)
        resized = (rh, rw)
        resizedPixelsValid = true
    }

    /// Forgets the current image (its embedding, HQ features, the decoder's per-image part, the resized pixels).
    private func clearImage() {
        embedding = nil
        hqFeatures = nil
        decoderShared = nil
        decoderSetupSeconds = 0
        resizedPixelsValid = false
    }

    /// The current image's embedding as a `.psemb` file (docs/FORMAT.md): what `predict` needs of the image, without the
    /// encoder pass, for `setEmbedding` on a session of the same model file (here or on another machine).
    public func embeddingFile() throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: try embeddingFileSize())
        try out.withUnsafeMutableBytes { try writeEmbeddingFile(into: $0) }
        return out
    }

    /// The size of `embeddingFile()`'s bytes, without making them.
    public func embeddingFileSize() throws -> Int {
        guard embedding != nil else { throw PocketSAMError.noImage }
        let g = model.config.prompt.embeddingSize, c = model.config.prompt.embedDim
        return EmbeddingFile.size(embedding: g * g * c, hq: hqFeatures == nil ? 0 : EmbeddingFile.hqCount(model))
    }

    /// Writes `embeddingFile()`'s bytes into `out`, which must hold exactly `embeddingFileSize()` bytes (a caller's buffer).
    public func writeEmbeddingFile(into out: UnsafeMutableRawBufferPointer) throws {
        guard let emb = embedding, let (h, w) = imageSize, let (rh, rw) = resized else { throw PocketSAMError.noImage }
        let g = model.config.prompt.embeddingSize, c = model.config.prompt.embedDim
        let hqCount = hqFeatures == nil ? 0 : EmbeddingFile.hqCount(model)
        EmbeddingFile.write(fingerprint: model.file.fingerprint, original: (h, w), resized: (rh, rw), grid: g, channels: c,
                            embedding: emb, hq: hqFeatures.map { UnsafePointer($0) }, hqCount: hqCount, into: out)
    }

    /// Sets the current image from a `.psemb` file made by `embeddingFile` with the same model file (its fingerprint must
    /// match): prompts then answer exactly as after `setImage` on that image. Validates everything (a corrupt or foreign
    /// file throws `invalidEmbedding` and leaves no image set). Cost: a copy; no encoder pass.
    public func setEmbedding(_ data: UnsafeRawBufferPointer) throws {
        clearImage()  // (the file has no pixels: resizedImage() stays empty)
        let p = try EmbeddingFile.parse(data, model: model)
        arena.reset(to: Arena.bottom)
        let kept = arena.alloc(p.embeddingCount)
        UnsafeMutableRawPointer(kept).copyMemory(from: data.baseAddress! + p.embeddingOffset, byteCount: 4 * p.embeddingCount)
        if p.hqCount > 0 {
            let f = arena.alloc(p.hqCount)
            UnsafeMutableRawPointer(f).copyMemory(from: data.baseAddress! + p.hqOffset, byteCount: 4 * p.hqCount)
            hqFeatures = f
        }
        embedding = kept
        densePE = model.densePE
        persistentMark = arena.mark()
        imageSize = p.original
        resized = p.resized
    }

    /// HQ-SAM: the current image's HQ features `[4G, 4G, D/8]`; nil for other models or before `setImage`.
    var hqFeaturesState: UnsafePointer<Float>? { embedding == nil ? nil : hqFeatures.map { UnsafePointer($0) } }

    /// The current embedding `[G·G, C]`, dense positional encoding, and the resized image's size.
    func embeddingState() throws -> (UnsafePointer<Float>, UnsafePointer<Float>, Int, Int) {
        guard let emb = embedding, let pe = densePE, let (rh, rw) = resized else { throw PocketSAMError.noImage }
        return (UnsafePointer(emb), UnsafePointer(pe), rh, rw)
    }

    /// The image embedding of the current image, `[C, G, G]` (PyTorch's layout), copied out.
    public func imageEmbedding() throws -> [Float] {
        guard let emb = embedding else { throw PocketSAMError.noImage }
        let g = model.config.prompt.embeddingSize, C = model.config.prompt.embedDim
        var out = [Float](repeating: 0, count: C * g * g)
        for p in 0..<(g * g) { for c in 0..<C { out[c * g * g + p] = emb[p * C + c] } }
        return out
    }

    /// Answers one prompt against the current image. Points and box are in original-image pixels;
    /// `maskInput` is low-resolution logits (`lowResSize²` floats) from an earlier prediction.
    /// Allocates the returned arrays; `predict(…, into:)` reuses the caller's.
    /// HQ-SAM models answer with one mask, as the official predictor does: the HQ token's mask plus SAM's (mask 0, or
    /// with `multimask` the best-scored of masks 1…3, whose IoU is returned), or with `hqTokenOnly` the HQ mask alone.
    /// Other models ignore `hqTokenOnly`.
    public func predict(points: [PointPrompt] = [], box: BoxPrompt? = nil, maskInput: [Float]? = nil,
                        multimask: Bool = false, hqTokenOnly: Bool = false) throws -> Prediction {
        var p = Prediction()
        try predict(points: points, box: box, maskInput: maskInput, multimask: multimask, hqTokenOnly: hqTokenOnly, into: &p)
        return p
    }

    /// As `predict`, writing into `result`, whose arrays are reused: once they have grown to this
    /// image's size, a call makes no heap allocation. Cost: one mask-decoder pass and the upscaling
    /// of 1 (or 3 with `multimask`) masks to the image size.
    public func predict(points: [PointPrompt] = [], box: BoxPrompt? = nil, maskInput: [Float]? = nil,
                        multimask: Bool = false, hqTokenOnly: Bool = false, into result: inout Prediction) throws {
        guard let emb = embedding, let pe = densePE, let keep = persistentMark, let (h, w) = imageSize,
              let (rh, rw) = resized else { throw PocketSAMError.noImage }
        let cfg = model.config
        let g = cfg.prompt.embeddingSize, lowRes = 4 * g, lowN = lowRes * lowRes
        try check(points: points, box: box, maskInput: maskInput, h: h, w: w)
        let pen = model.promptEncoder!, T = cfg.decoder.numMaskTokens
        let hq = model.maskDecoder.hq != nil
        var first = multimask ? 1 : 0
        let count = multimask && !hq ? T - 1 : 1
        // The folded decoder (`MaskDecoder.runBatch`) where the keys are the shared ones (no mask input) and the
        // tokens fit its few-token attention; else (and under the debug tap, for the plain decoder's steps, and for
        // HQ-SAM, which it does not know) the plain one.
        let folded = usesFoldedDecoder(points: points.count, box: box != nil, maskInput: maskInput != nil)
        if folded { makeDecoderShared(emb: emb, pe: pe, keep: keep) }
        let top = persistentMark ?? keep
        arena.reset(to: top)
        let (sparse, ns) = pen.sparse(points: points, box: box, sx: Double(rw) / Double(w), sy: Double(rh) / Double(h),
                                      arena: arena)
        let allIoU = arena.alloc(T)
        // `count` masks' low-res logits, row-major.
        let low: UnsafeMutablePointer<Float>
        if folded, let shared = decoderShared {
            low = arena.alloc(count * lowN)
            let lowT = arena.alloc(count * lowN)
            model.maskDecoder.runBatch(shared: shared, pe: pe, grid: g, sparse: sparse, ns: ns, batch: 1, first: first, count: count,
                                       masks: lowT, iou: allIoU, parts: Self.decoderParts, arena: arena)
            for i in 0..<count { psam_transpose(lowT + i * lowN, lowRes, lowRes, lowRes, low + i * lowN, lowRes) }
        } else {
            let dense: UnsafeMutablePointer<Float>
            if let mi = maskInput {
                dense = mi.withUnsafeBufferPointer { pen.dense(mask: $0.baseAddress, arena: arena) }
            } else {
                dense = pen.dense(mask: nil, arena: arena)
            }
            let allMasks = arena.alloc(model.maskDecoder.outputMasks * lowN)
            model.maskDecoder.run(image: emb, pe: pe, dense: dense, grid: g, sparse: sparse, ns: ns, masks: allMasks, iou: allIoU,
                                  hqFeatures: hqFeatures.map { UnsafePointer($0) }, arena: arena)
            if hq {
                first = MaskDecoderHQ.combine(masks: allMasks, iou: allIoU, tokens: T, n: lowN, multimask: multimask,
                                              hqTokenOnly: hqTokenOnly)
                low = allMasks + T * lowN
            } else {
                low = allMasks + first * lowN
            }
        }
        finish(low: low, count: count, iou: allIoU + first, into: &result)
        arena.reset(to: top)
    }

    /// Whether a prompt goes through the folded decoder (see `predict`).
    func usesFoldedDecoder(points: Int, box: Bool, maskInput: Bool) -> Bool {
        let pen = model.promptEncoder!, T = model.config.decoder.numMaskTokens
        return model.maskDecoder.hq == nil && !maskInput && arena.tap == nil
            && 1 + T + pen.sparseCount(points: points, box: box) <= Ops.fewKeysMax
    }

    /// The folded decoder's per-image part, made at the first prompt that needs it after an image is set.
    func makeDecoderShared(emb: UnsafeMutablePointer<Float>, pe: UnsafePointer<Float>, keep: Arena.Mark) {
        guard decoderShared == nil else { return }
        let t0 = Stopwatch.now()
        arena.reset(to: keep)
        let f = decoderFolded ?? model.maskDecoder.folded(model: model)
        decoderFolded = f
        decoderShared = model.maskDecoder.shared(image: emb, pe: pe, noMask: model.promptEncoder!.noMask, hw: model.config.prompt.embeddingSize * model.config.prompt.embeddingSize,
                                                 model: model, folded: f, arena: arena)
        persistentMark = arena.mark()
        decoderSetupSeconds = Stopwatch.since(t0)
    }

    /// Checks a prompt against the current image's size.
    func check(points: [PointPrompt], box: BoxPrompt?, maskInput: [Float]?, h: Int, w: Int) throws {
        let lowRes = 4 * model.config.prompt.embeddingSize, lowN = lowRes * lowRes
        guard !points.isEmpty || box != nil || maskInput != nil else {
            throw PocketSAMError.invalidPrompt("no prompt: give at least one point, a box or a mask input")
        }
        guard points.count <= Self.maxPoints else {
            throw PocketSAMError.invalidPrompt("\(points.count) points (at most \(Self.maxPoints))")
        }
        for p in points {
            guard p.x.isFinite, p.y.isFinite else { throw PocketSAMError.invalidPrompt("point (\(p.x), \(p.y)) is not finite") }
            guard p.x >= 0, p.y >= 0, p.x <= Float(w), p.y <= Float(h) else {
                throw PocketSAMError.invalidPrompt("point (\(p.x), \(p.y)) is outside the \(w)×\(h) image")
            }
        }
        if let b = box {
            guard b.x0.isFinite, b.y0.isFinite, b.x1.isFinite, b.y1.isFinite else { throw PocketSAMError.invalidPrompt("box is not finite") }
            guard b.x1 >= b.x0, b.y1 >= b.y0 else { throw PocketSAMError.invalidPrompt("box is inverted (x1 < x0 or y1 < y0)") }
            guard b.x0 >= 0, b.y0 >= 0, b.x1 <= Float(w), b.y1 <= Float(h) else {
                throw PocketSAMError.invalidPrompt("box (\(b.x0), \(b.y0), \(b.x1), \(b.y1)) is outside the \(w)×\(h) image")
            }
        }
        if let mi = maskInput {
            guard mi.count == lowN else {
                throw PocketSAMError.invalidPrompt("mask input has \(mi.count) values, \(lowRes)×\(lowRes) expected")
            }
            guard mi.allSatisfy(\.isFinite) else { throw PocketSAMError.invalidPrompt("mask input is not finite") }
        }
    }

    /// Fills `result` from `count` masks' low-res logits (row-major) and their IoUs: the masks upscaled to the image
    /// (`MaskPostprocess`), stability scores. Uses the arena above its current top and gives it back.
    func finish(low: UnsafePointer<Float>, count: Int, iou: UnsafePointer<Float>, into result: inout Prediction) {
        let cfg = model.config
        let (h, w) = imageSize!, (rh, rw) = resized!
        let lowRes = 4 * cfg.prompt.embeddingSize, lowN = lowRes * lowRes
        let top = arena.mark()
        func resize<E>(_ a: inout [E], _ n: Int, _ zero: E) {
            a.removeAll(keepingCapacity: true)
            a.append(contentsOf: repeatElement(zero, count: n))
        }
        resize(&result.lowResLogits, count * lowN, 0)
        resize(&result.iou, count, 0)
        resize(&result.stability, count, 0)
        resize(&result.masks, count * h * w, 0)
        result.count = count
        result.width = w
        result.height = h
        result.lowResSize = lowRes
        result.lowResLogits.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: low, count: count * lowN) }
        for i in 0..<count { result.iou[i] = iou[i] }
        // Postprocess: upscale to the padded input, keep the valid region, upscale to the image (`MaskPostprocess`).
        // The last upscale goes straight into the mask: nothing of the image's size is kept in the arena, so its size
        // depends on the model only.
        let size = cfg.encoder.imageSize, blocks = MaskPostprocess.defaultBlocks
        let up = arena.alloc(rh * rw)
        let counts = UnsafeMutableRawPointer(arena.alloc(2 * blocks * 2)).bindMemory(to: Int.self, capacity: 2 * blocks)
        // Column taps of both upscales in the session's scratch (image-wide: not in the planned arena).
        let ti = scratch.tapIndex.reserve(2 * (rw + w)), tw = scratch.tapWeight.reserve(rw + w)
        Ops.bilinearTaps(w: lowRes, wo: size, cols: rw, x0: ti, x1: ti + rw, lx: tw)
        Ops.bilinearTaps(w: rw, wo: w, cols: w, x0: ti + 2 * rw, x1: ti + 2 * rw + w, lx: tw + rw)
        let taps0 = (x0: UnsafePointer(ti), x1: UnsafePointer(ti + rw), l: UnsafePointer(tw))
        let taps1 = (x0: UnsafePointer(ti + 2 * rw), x1: UnsafePointer(ti + 2 * rw + w), l: UnsafePointer(tw + rw))
        for i in 0..<count {
            result.masks.withUnsafeMutableBufferPointer { m in
                var job = MaskPostprocess(low: low + i * lowN, lowRes: lowRes, size: size, rh: rh, rw: rw, h: h, w: w,
                                          threshold: Float(cfg.maskThreshold), up: up, mask: m.baseAddress! + i * h * w, counts: counts,
                                          blocks: blocks, taps0: taps0, taps1: taps1)
                arena.runParts(&job, blocks, MaskPostprocess.thunk)
                job.stage = 1
                arena.runParts(&job, blocks, MaskPostprocess.thunk)
            }
            var inter = 0, union = 0
            for b in 0..<blocks {
                inter += counts[2 * b]
                union += counts[2 * b + 1]
            }
            result.stability[i] = union == 0 ? 0 : Float(inter) / Float(union)
        }
        arena.reset(to: top)
    }
}
