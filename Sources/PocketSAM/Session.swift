import COpenBLAS
import PocketSAMFormat

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
}

/// One image at a time: `setImage` runs the image encoder once, `predict` answers prompts against the
/// cached embedding. Not thread-safe: use one session per thread (they may share one `Model`).
public final class Session {
    public let model: Model
    let arena = Arena()
    /// Images larger than this on either side are refused (memory for the resize is proportional).
    public static let maxImageSide = 16384

    private var embedding: UnsafeMutablePointer<Float>?
    private var densePE: UnsafeMutablePointer<Float>?
    private var persistentMark: Arena.Mark?
    private(set) var imageSize: (h: Int, w: Int)?
    private(set) var resized: (h: Int, w: Int)?
    /// The resized uint8 image of the last `setImage` (for tests of the resize).
    public private(set) var resizedImage: [UInt8] = []

    public init(model: Model, threads: Int = 1) {
        self.model = model
        // OpenBLAS runs single-threaded; the session splits work itself, so that results do not depend
        // on the thread count (OpenBLAS's own threading changes summation order).
        openblas_set_num_threads(1)
        arena.pool = threads > 1 ? ThreadPool(size: threads) : nil
    }

    /// Peak bytes of activation memory used so far.
    public var arenaPeakBytes: Int { arena.peakBytes }

    /// Encodes an 8-bit image: `channels` 3 (RGB) or 1 (gray, replicated to RGB), rows `stride` bytes apart.
    public func setImage(pixels: UnsafePointer<UInt8>, width: Int, height: Int, channels: Int = 3, stride: Int? = nil) throws {
        guard channels == 3 || channels == 1 else { throw PocketSAMError.invalidImage("\(channels) channels (1 or 3 are supported)") }
        guard width >= 2, height >= 2 else { throw PocketSAMError.invalidImage("\(width)×\(height) is too small (at least 2×2)") }
        guard width <= Self.maxImageSide, height <= Self.maxImageSide else {
            throw PocketSAMError.invalidImage("\(width)×\(height) is larger than the \(Self.maxImageSide)-pixel limit")
        }
        let rowBytes = stride ?? width * channels
        guard rowBytes >= width * channels else { throw PocketSAMError.invalidImage("stride \(rowBytes) < \(width * channels)") }
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            let row = pixels + y * rowBytes
            for x in 0..<width {
                for c in 0..<3 { rgb[(y * width + x) * 3 + c] = row[x * channels + (channels == 3 ? c : 0)] }
            }
        }
        let size = model.config.encoder.imageSize
        let (rh, rw) = Preprocess.resizedShape(h: height, w: width, long: size)
        let small = rgb.withUnsafeBufferPointer {
            Preprocess.resizeRGB($0.baseAddress!, h: height, w: width, stride: width * 3, oh: rh, ow: rw)
        }
        arena.reset(to: Arena.Mark(chunk: 0, offset: 0))
        let input = arena.alloc(size * size * 3)
        Preprocess.normalizeAndPad(small, h: rh, w: rw, size: size, norm: model.config.normalization, out: input)
        let emb: UnsafeMutablePointer<Float>
        switch model.encoder! {
        case let .tinyViT(enc): emb = enc.run(input, arena: arena)
        case let .vit(enc): emb = enc.run(input, arena: arena)
        }
        // Keep the embedding and the dense positional encoding; everything after is per-prompt scratch.
        let pe = model.promptEncoder.densePE(arena: arena)
        embedding = emb
        densePE = pe
        persistentMark = arena.mark()
        imageSize = (height, width)
        resized = (rh, rw)
        resizedImage = small
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
    public func predict(points: [PointPrompt] = [], box: BoxPrompt? = nil, maskInput: [Float]? = nil,
                        multimask: Bool = false) throws -> Prediction {
        guard let emb = embedding, let pe = densePE, let keep = persistentMark, let (h, w) = imageSize,
              let (rh, rw) = resized else { throw PocketSAMError.noImage }
        let cfg = model.config
        let g = cfg.prompt.embeddingSize, lowRes = 4 * g
        guard !points.isEmpty || box != nil || maskInput != nil else {
            throw PocketSAMError.invalidPrompt("no prompt: give at least one point, a box or a mask input")
        }
        for p in points {
            guard p.x.isFinite, p.y.isFinite else { throw PocketSAMError.invalidPrompt("point (\(p.x), \(p.y)) is not finite") }
            guard p.x >= 0, p.y >= 0, p.x <= Float(w), p.y <= Float(h) else {
                throw PocketSAMError.invalidPrompt("point (\(p.x), \(p.y)) is outside the \(w)×\(h) image")
            }
        }
        if let b = box {
            guard [b.x0, b.y0, b.x1, b.y1].allSatisfy(\.isFinite) else { throw PocketSAMError.invalidPrompt("box is not finite") }
            guard b.x1 >= b.x0, b.y1 >= b.y0 else { throw PocketSAMError.invalidPrompt("box is inverted (x1 < x0 or y1 < y0)") }
            guard b.x0 >= 0, b.y0 >= 0, b.x1 <= Float(w), b.y1 <= Float(h) else {
                throw PocketSAMError.invalidPrompt("box (\(b.x0), \(b.y0), \(b.x1), \(b.y1)) is outside the \(w)×\(h) image")
            }
        }
        if let mi = maskInput {
            guard mi.count == lowRes * lowRes else {
                throw PocketSAMError.invalidPrompt("mask input has \(mi.count) values, \(lowRes)×\(lowRes) expected")
            }
            guard mi.allSatisfy(\.isFinite) else { throw PocketSAMError.invalidPrompt("mask input is not finite") }
        }
        arena.reset(to: keep)
        // SAM's apply_coords: scale by new/old size per axis, in double precision.
        let sx = Double(rw) / Double(w), sy = Double(rh) / Double(h)
        let pe2: PromptEncoder = model.promptEncoder
        let (sparse, ns) = pe2.sparse(
            points: points.map { (Float(Double($0.x) * sx), Float(Double($0.y) * sy)) },
            labels: points.map { $0.positive ? 1 : 0 },
            box: box.map { (Float(Double($0.x0) * sx), Float(Double($0.y0) * sy), Float(Double($0.x1) * sx), Float(Double($0.y1) * sy)) },
            arena: arena)
        let dense: UnsafeMutablePointer<Float>
        if let mi = maskInput {
            dense = mi.withUnsafeBufferPointer { pe2.dense(mask: $0.baseAddress!, arena: arena) }
        } else {
            dense = pe2.dense(mask: nil, arena: arena)
        }
        let T = cfg.decoder.numMaskTokens
        let allMasks = arena.alloc(T * lowRes * lowRes)
        let allIoU = arena.alloc(T)
        model.maskDecoder.run(image: emb, pe: pe, dense: dense, grid: g, sparse: sparse, ns: ns,
                                                  masks: allMasks, iou: allIoU, arena: arena)
        let first = multimask ? 1 : 0, count = multimask ? T - 1 : 1
        var low = [Float](repeating: 0, count: count * lowRes * lowRes)
        var iou = [Float](repeating: 0, count: count)
        for i in 0..<count {
            for j in 0..<(lowRes * lowRes) { low[i * lowRes * lowRes + j] = allMasks[(first + i) * lowRes * lowRes + j] }
            iou[i] = allIoU[first + i]
        }
        // Postprocess: upscale to the padded input, crop the valid region, upscale to the image.
        let size = cfg.encoder.imageSize
        var masks = [UInt8](repeating: 0, count: count * h * w)
        var stability = [Float](repeating: 0, count: count)
        let up = arena.alloc(size * size), crop = arena.alloc(rh * rw), full = arena.alloc(h * w)
        let thr = Float(cfg.maskThreshold)
        for i in 0..<count {
            low.withUnsafeBufferPointer { Ops.bilinear($0.baseAddress! + i * lowRes * lowRes, h: lowRes, w: lowRes, out: up, ho: size, wo: size) }
            for y in 0..<rh { (crop + y * rw).update(from: up + y * size, count: rw) }
            Ops.bilinear(crop, h: rh, w: rw, out: full, ho: h, wo: w)
            var inter = 0, union = 0
            for j in 0..<(h * w) {
                let v = full[j]
                if v > thr { masks[i * h * w + j] = 1 }
                if v > thr + 1 { inter += 1 }
                if v > thr - 1 { union += 1 }
            }
            stability[i] = union == 0 ? 0 : Float(inter) / Float(union)
        }
        arena.reset(to: keep)
        return Prediction(count: count, width: w, height: h, masks: masks, iou: iou, stability: stability,
                          lowResLogits: low, lowResSize: lowRes)
    }
}
