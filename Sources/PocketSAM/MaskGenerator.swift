import PocketSAMKernels

#if canImport(Glibc)
import Glibc
#endif

/// The parameters of SAM's `SamAutomaticMaskGenerator`, with its defaults.
public struct MaskGeneratorOptions: Sendable {
    /// Points per side of the grid sampled in the first crop layer (nil: `pointGrids` gives the points).
    public var pointsPerSide: Int? = 32
    /// Explicit points per crop layer, normalised to [0, 1]² as (x, y); used when `pointsPerSide` is nil.
    public var pointGrids: [[SIMD2<Double>]]? = nil
    /// Prompts decoded together (memory grows with it; results do not depend on it).
    public var pointsPerBatch = 64
    /// Masks whose predicted IoU is not above this are dropped, before upscaling (0: keep all).
    public var predIoUThresh: Float = 0.88
    /// Masks whose stability score is below this are dropped (0: keep all).
    public var stabilityScoreThresh: Float = 0.95
    /// Logit offset of the stability score (IoU of the mask thresholded at ± this).
    public var stabilityScoreOffset: Float = 1.0
    /// Box IoU above which non-maximum suppression drops the lower-scoring of two masks of one crop.
    public var boxNMSThresh: Float = 0.7
    /// Extra layers of crops: layer i has 2^i × 2^i overlapping crops, each encoded separately.
    public var cropNLayers = 0
    /// Box IoU of the suppression between crops (smaller crops lose).
    public var cropNMSThresh: Float = 0.7
    /// Overlap of neighbouring crops, as a fraction of the image's shorter side (at the first crop layer).
    public var cropOverlapRatio: Double = 512.0 / 1500.0
    /// Points per side in crop layer i are `pointsPerSide / factor^i`.
    public var cropNPointsDownscaleFactor = 1
    /// When > 0, holes and islands smaller than this many pixels are removed from each mask, and masks
    /// that changed go through one more suppression.
    public var minMaskRegionArea = 0
    /// TinySAM's hierarchical sampling: a grid of `pointsPerSide / hierarchicalSparseFactor` per side
    /// first, then the full grid's points only where no mask kept from the first pass lies. Needs
    /// `pointsPerSide`.
    public var hierarchical = false
    public var hierarchicalSparseFactor = 4
    /// Hierarchical sampling skips a dense point where a mask kept from the sparse pass has a logit above
    /// the mask threshold plus this (0: anywhere inside the mask, as TinySAM's "covered by a confident
    /// mask"; larger values skip only the masks' confident cores, decoding more points).
    public var hierarchicalCoverOffset: Float = 0
    /// HQ-SAM models: each point's mask is the HQ token's alone instead of HQ + SAM's best (the official generator's
    /// default, false). Ignored by other models.
    public var hqTokenOnly = false

    public init() {}

    func check() throws {
        func bad(_ s: String) -> PocketSAMError { .invalidOptions(s) }
        if let n = pointsPerSide {
            guard n >= 1, n <= 1024 else { throw bad("points per side \(n) (1 to 1024)") }
        } else {
            guard let g = pointGrids, g.count > cropNLayers else {
                throw bad("no points: give pointsPerSide or one point grid per crop layer (\(cropNLayers + 1))")
            }
            for layer in g { for p in layer {
                guard p.x.isFinite, p.y.isFinite, p.x >= 0, p.x <= 1, p.y >= 0, p.y <= 1 else {
                    throw bad("grid point (\(p.x), \(p.y)) is outside [0, 1]²")
                }
            } }
        }
        guard pointsPerBatch >= 1, pointsPerBatch <= 4096 else { throw bad("points per batch \(pointsPerBatch) (1 to 4096)") }
        for (name, v) in [("pred IoU threshold", predIoUThresh), ("stability threshold", stabilityScoreThresh),
                          ("box NMS threshold", boxNMSThresh), ("crop NMS threshold", cropNMSThresh)] {
            guard v.isFinite, v >= 0, v <= 1 else { throw bad("\(name) \(v) (0 to 1)") }
        }
        guard stabilityScoreOffset.isFinite, stabilityScoreOffset >= 0 else { throw bad("stability offset \(stabilityScoreOffset)") }
        guard cropNLayers >= 0, cropNLayers <= 4 else { throw bad("crop layers \(cropNLayers) (0 to 4)") }
        guard cropOverlapRatio.isFinite, cropOverlapRatio >= 0, cropOverlapRatio < 1 else { throw bad("crop overlap ratio \(cropOverlapRatio)") }
        guard cropNPointsDownscaleFactor >= 1 else { throw bad("crop points downscale factor \(cropNPointsDownscaleFactor)") }
        guard minMaskRegionArea >= 0 else { throw bad("min mask region area \(minMaskRegionArea)") }
        if hierarchical {
            guard pointsPerSide != nil else { throw bad("hierarchical sampling needs pointsPerSide") }
            guard hierarchicalSparseFactor >= 2 else { throw bad("hierarchical sparse factor \(hierarchicalSparseFactor) (at least 2)") }
            guard hierarchicalCoverOffset.isFinite, hierarchicalCoverOffset >= 0 else { throw bad("hierarchical cover offset \(hierarchicalCoverOffset)") }
        }
    }
}

/// A box in image pixels: top-left corner and size.
public struct PixelBox: Sendable, Equatable {
    public var x: Int, y: Int, width: Int, height: Int
    public init(x: Int, y: Int, width: Int, height: Int) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }
}

/// One mask of automatic generation, with what SAM's generator reports for it.
public struct GeneratedMask: Sendable {
    /// The mask at the image's size.
    public var segmentation: MaskRLE
    /// Pixels in the mask.
    public var area: Int
    /// SAM's box (x, y, width, height), where width = last column − first column (so one less than the
    /// pixel extent, as the reference computes it).
    public var bbox: PixelBox
    public var predictedIoU: Float
    public var stabilityScore: Float
    /// The point prompt that produced it, in image pixels.
    public var point: SIMD2<Double>
    /// The crop it was found in.
    public var cropBox: PixelBox
}

/// What generation did and where its time went.
public struct GenerationStats: Sendable {
    public var crops = 0
    /// Prompts decoded (points × 1 decoder pass, each giving 3 masks).
    public var decoderCalls = 0
    /// Masks upscaled to the image (those that passed the predicted-IoU filter).
    public var masksUpscaled = 0
    /// Masks after the IoU, stability and crop-edge filters, before suppression.
    public var candidates = 0
    public var encoderSeconds = 0.0
    public var decoderSeconds = 0.0
    /// Multiply-accumulates of the decoder passes.
    public var decoderMACs = 0
    public var postprocessSeconds = 0.0
    public var nmsSeconds = 0.0
    public var cleanupSeconds = 0.0
    public var totalSeconds = 0.0
}

public struct GenerationResult: Sendable {
    public var masks: [GeneratedMask]
    public var stats: GenerationStats
}

/// Progress of a generation: the crop (0-based, of `crops`) and points decoded in it so far.
public struct GenerationProgress: Sendable {
    public var crop: Int, crops: Int
    public var pointsDone: Int, pointsTotal: Int
    public var stage: String
}

extension Session {
    /// SAM's automatic mask generation ("segment everything") on an 8-bit image, as the official
    /// `SamAutomaticMaskGenerator.generate`: a grid of point prompts per crop, three masks per point,
    /// filtered by predicted IoU, stability and crop edges, suppressed by box IoU within and between crops,
    /// optionally cleaned of small holes and islands. Replaces the session's current image (each crop
    /// is encoded in turn). Allocates its results and working buffers (not the planned arena).
    /// Cost: one encoder pass per crop and one decoder pass per point.
    ///
    /// `progress` is called after each batch of prompts; returning false stops the generation, which then throws
    /// `PocketSAMError.cancelled` (the session keeps the last crop's embedding).
    public func generate(pixels: UnsafePointer<UInt8>, width: Int, height: Int, channels: Int = 3, stride: Int? = nil,
                         options o: MaskGeneratorOptions = MaskGeneratorOptions(),
                         progress: ((GenerationProgress) -> Bool)? = nil) throws -> GenerationResult {
        try o.check()
        guard channels == 3 || channels == 1 else { throw PocketSAMError.invalidImage("\(channels) channels (1 or 3 are supported)") }
        let rowBytes = stride ?? width * channels
        let t0 = Stopwatch.now()
        var stats = GenerationStats()
        let crops = MaskGeneration.cropBoxes(h: height, w: width, layers: o.cropNLayers, overlap: o.cropOverlapRatio)
        stats.crops = crops.count
        var all: [MaskGeneration.Candidate] = []
        for (ci, crop) in crops.enumerated() {
            let te = Stopwatch.now()
            // The crop, as a view into the caller's pixels (setImage validates its size).
            try setImage(pixels: pixels + crop.y0 * rowBytes + crop.x0 * channels, width: crop.x1 - crop.x0,
                         height: crop.y1 - crop.y0, channels: channels, stride: rowBytes)
            stats.encoderSeconds += Stopwatch.since(te)
            var found = try generateInCrop(crop, index: ci, of: crops.count, imageH: height, imageW: width, options: o,
                                           stats: &stats, progress: progress)
            let tn = Stopwatch.now()
            found = MaskGeneration.nms(found, threshold: o.boxNMSThresh, score: { $0.iou })
            stats.nmsSeconds += Stopwatch.since(tn)
            all += found
        }
        if crops.count > 1 {
            let tn = Stopwatch.now()
            all = MaskGeneration.nms(all, threshold: o.cropNMSThresh, score: { Float(1 / Double($0.cropArea)) })
            stats.nmsSeconds += Stopwatch.since(tn)
        }
        if o.minMaskRegionArea > 0, !all.isEmpty {
            let tc = Stopwatch.now()
            all = MaskGeneration.removeSmallRegions(all, minArea: o.minMaskRegionArea, nmsThresh: max(o.boxNMSThresh, o.cropNMSThresh))
            stats.cleanupSeconds += Stopwatch.since(tc)
        }
        stats.totalSeconds = Stopwatch.since(t0)
        let masks = all.map { c in
            GeneratedMask(segmentation: c.rle, area: c.rle.area,
                          bbox: PixelBox(x: c.box.0, y: c.box.1, width: c.box.2 - c.box.0, height: c.box.3 - c.box.1),
                          predictedIoU: c.iou, stabilityScore: c.stability, point: c.point,
                          cropBox: PixelBox(x: c.crop.x0, y: c.crop.y0, width: c.crop.x1 - c.crop.x0, height: c.crop.y1 - c.crop.y0))
        }
        return GenerationResult(masks: masks, stats: stats)
    }

    /// As `generate`, with a progress closure that never stops the generation.
    public func generate(pixels: UnsafePointer<UInt8>, width: Int, height: Int, channels: Int = 3, stride: Int? = nil,
                         options o: MaskGeneratorOptions = MaskGeneratorOptions(),
                         progress: @escaping (GenerationProgress) -> Void) throws -> GenerationResult {
        try generate(pixels: pixels, width: width, height: height, channels: channels, stride: stride, options: o,
                     progress: { progress($0); return true })
    }

    /// Decodes the crop's points (the session holds the crop's embedding) and returns the masks that pass
    /// the filters, in image coordinates.
    private func generateInCrop(_ crop: MaskGeneration.Crop, index ci: Int, of nCrops: Int, imageH: Int, imageW: Int,
                                options o: MaskGeneratorOptions, stats: inout GenerationStats,
                                progress: ((GenerationProgress) -> Bool)?) throws -> [MaskGeneration.Candidate] {
        let ch = crop.y1 - crop.y0, cw = crop.x1 - crop.x0
        let scale = SIMD2<Double>(Double(cw), Double(ch))
        // build_all_layer_point_grids: points per side of this crop layer.
        let side = o.pointsPerSide.map { n in (0..<crop.layer).reduce(n) { s, _ in s / o.cropNPointsDownscaleFactor } }
        let grid = side.map { MaskGeneration.pointGrid($0) } ?? o.pointGrids![crop.layer]
        let decoder = try PointDecoder(session: self, cropH: ch, cropW: cw)
        decoder.hqTokenOnly = o.hqTokenOnly
        var covered = [UInt8](repeating: 0, count: o.hierarchical ? ch * cw : 0)
        func run(_ points: [SIMD2<Double>], stage: String, cover: Bool = false) throws -> [MaskGeneration.Candidate] {
            var out: [MaskGeneration.Candidate] = []
            var i = 0
            while i < points.count {
                let batch = Array(points[i..<min(points.count, i + o.pointsPerBatch)])
                out += covered.withUnsafeMutableBufferPointer { cov in
                    decoder.decode(batch, crop: crop, imageH: imageH, imageW: imageW, options: o, stats: &stats,
                                   coverage: cover ? cov.baseAddress : nil)
                }
                i += batch.count
                if progress?(GenerationProgress(crop: ci, crops: nCrops, pointsDone: i, pointsTotal: points.count, stage: stage)) == false {
                    throw PocketSAMError.cancelled
                }
            }
            return out
        }
        let pts = grid.map { $0 * scale }
        guard o.hierarchical, let side else { return try run(pts, stage: "points") }
        // Hierarchical: a sparse grid first; then only the dense points outside every mask the sparse pass kept
        // (outside their cores: logit above threshold + hierarchicalCoverOffset).
        let sparse = MaskGeneration.pointGrid(max(1, side / o.hierarchicalSparseFactor)).map { $0 * scale }
        let first = try run(sparse, stage: "sparse points", cover: true)
        let rest = pts.filter { p in
            let x = min(cw - 1, Int(p.x)), y = min(ch - 1, Int(p.y))
            return covered[y * cw + x] == 0
        }
        return first + (try run(rest, stage: "dense points"))
    }
}

/// Decodes batches of point prompts against the session's current embedding and turns each mask into a
/// filtered candidate. The prompts of a batch are split between the session's threads, each decoding
/// its share single-threaded in its own scratch arena (whole prompts in parallel: no synchronisation
/// inside the decoder's many small steps).
private final class PointDecoder {
    let session: Session
    let plan: MaskGeneration.UpscalePlan
    /// `main`: the shared per-image part and the batch's inputs and outputs (on the session's threads);
    /// `workers`: one single-threaded arena per thread.
    let main: Arena
    let workers: [Arena]
    /// `MaskGeneratorOptions.hqTokenOnly`.
    var hqTokenOnly = false
    /// The folded decoder's per-image part (nil for HQ-SAM, which runs the plain decoder per prompt).
    let shared: MaskDecoder.Shared?
    /// HQ-SAM: the embedding, the no-mask dense embedding and the image's HQ features for the plain decoder.
    let hq: (embedding: UnsafePointer<Float>, dense: UnsafePointer<Float>, features: UnsafePointer<Float>)?
    let densePE: UnsafePointer<Float>
    let ch: Int, cw: Int, rh: Int, rw: Int
    let upscaleScratch: MaskGeneration.UpscalePlan.Scratch

    /// One batch's work, read by the threads.
    var sparse: UnsafeMutablePointer<Float>?
    var masks: UnsafeMutablePointer<Float>?
    var iou: UnsafeMutablePointer<Float>?
    var batch = 0
    /// Prompts per decoder pass: enough to fill the token-side GEMMs, few enough that a pass's image-side
    /// activations (prompts × 64² × 256 floats) stay near the caches.
    static let step = 2

    init(session s: Session, cropH: Int, cropW: Int) throws {
        session = s
        ch = cropH
        cw = cropW
        let (emb, pe, rh, rw) = try s.embeddingState()
        self.rh = rh
        self.rw = rw
        let cfg = s.model.config
        plan = MaskGeneration.UpscalePlan(low: 4 * cfg.prompt.embeddingSize, size: cfg.encoder.imageSize, rh: rh, rw: rw,
                                          outH: cropH, outW: cropW)
        upscaleScratch = .init(plan, slots: 2 * (s.arena.pool?.size ?? 1))
        main = Arena()
        main.pool = s.arena.pool
        workers = (0..<(s.arena.pool?.size ?? 1)).map { _ in Arena() }
        let g = cfg.prompt.embeddingSize
        if let features = s.hqFeaturesState {
            hq = (emb, UnsafePointer(s.model.promptEncoder.dense(mask: nil, arena: main)), features)
            shared = nil
        } else {
            hq = nil
            shared = s.model.maskDecoder.shared(image: emb, pe: pe, noMask: s.model.promptEncoder.noMask, hw: g * g, model: s.model,
                                                arena: main)
        }
        densePE = pe
    }

    /// Masks kept per point: SAM's three (tokens 1…3), or for HQ-SAM one, as its official generator (whose predictor
    /// returns one mask even with multimask).
    var masksPerPoint: Int { hq == nil ? session.model.config.decoder.numMaskTokens - 1 : 1 }

    /// HQ-SAM: prompt `b` through the plain decoder in `arena`; its mask (the HQ mask plus SAM's best of tokens 1…3, as
    /// HQ-SAM's predictor with multimask) transposed into the batch's masks, that token's IoU at `iou[b, 1]`.
    func decodeHQ(_ b: Int, sparse: UnsafePointer<Float>, masks: UnsafeMutablePointer<Float>, iou: UnsafeMutablePointer<Float>,
                  arena: Arena) {
        guard let hq else { return }
        let cfg = session.model.config
        let g = cfg.prompt.embeddingSize, low = 4 * g, lowN = low * low, T = cfg.decoder.numMaskTokens
        let mark = arena.mark()
        let all = arena.alloc((T + 1) * lowN), allIoU = arena.alloc(T)
        session.model.maskDecoder.run(image: hq.embedding, pe: densePE, dense: hq.dense, grid: g, sparse: sparse, ns: 2, masks: all,
                                      iou: allIoU, hqFeatures: hq.features, arena: arena)
        let best = MaskDecoderHQ.combine(masks: all, iou: allIoU, tokens: T, n: lowN, multimask: true, hqTokenOnly: hqTokenOnly)
        psam_transpose(all + T * lowN, low, low, low, masks + b * lowN, low)
        iou[b * T + 1] = allIoU[best]
        arena.reset(to: mark)
    }

    /// Thread `t`'s share of the batch: passes t, t + threads, …
    func decodeShare(_ t: Int) {
        let cfg = session.model.config
        let g = cfg.prompt.embeddingSize, lowN = 16 * g * g, T = cfg.decoder.numMaskTokens, C = cfg.prompt.embedDim
        guard let sparse, let masks, let iou else { return }
        if hq != nil {
            for b in stride(from: t, to: batch, by: workers.count) {
                decodeHQ(b, sparse: sparse + b * 2 * C, masks: masks, iou: iou, arena: workers[t])
            }
            return
        }
        guard let shared else { return }
        let count = T - 1
        var b0 = t * Self.step
        while b0 < batch {
            let nb = min(Self.step, batch - b0)
            session.model.maskDecoder.runBatch(shared: shared, pe: densePE, grid: g, sparse: sparse + b0 * 2 * C, ns: 2, batch: nb,
                                               first: 1, count: count, masks: masks + b0 * count * lowN, iou: iou + b0 * T,
                                               arena: workers[t])
            b0 += workers.count * Self.step
        }
    }

    func decode(_ points: [SIMD2<Double>], crop: MaskGeneration.Crop, imageH: Int, imageW: Int, options o: MaskGeneratorOptions,
                stats: inout GenerationStats, coverage: UnsafeMutablePointer<UInt8>?) -> [MaskGeneration.Candidate] {
        let cfg = session.model.config
        let g = cfg.prompt.embeddingSize, lowN = 16 * g * g, T = cfg.decoder.numMaskTokens, C = cfg.prompt.embedDim
        let count = masksPerPoint, B = points.count
        let td = Stopwatch.now()
        let mark = main.mark()
        let sx = Double(rw) / Double(cw), sy = Double(rh) / Double(ch)
        let sparse = main.alloc(B * 2 * C)
        for (b, p) in points.enumerated() {
            let (e, ns) = session.model.promptEncoder.sparse(points: [PointPrompt(x: Float(p.x), y: Float(p.y))], box: nil,
                                                             sx: sx, sy: sy, arena: main)
            precondition(ns == 2)
            (sparse + b * 2 * C).update(from: e, count: 2 * C)
        }
        let masks = main.alloc(B * count * lowN), iou = main.alloc(B * T)
        self.sparse = sparse
        self.masks = masks
        self.iou = iou
        batch = B
        let macs0 = workers.reduce(0) { $0 + $1.macs }
        var task = ColumnTask(kind: .callback, a: nil, b: nil, c: masks, bias: nil, m: 0, n: 0, k: 0, lda: 0, ldb: 0, ldc: 0)
        task.callback = { ctx, i in Unmanaged<PointDecoder>.fromOpaque(ctx).takeUnretainedValue().decodeShare(i) }
        task.context = Unmanaged.passUnretained(self).toOpaque()
        main.parallelBlocks(&task, blocks: workers.count)
        stats.decoderMACs += workers.reduce(0) { $0 + $1.macs } - macs0
        stats.decoderCalls += B
        stats.decoderSeconds += Stopwatch.since(td)

        let tp = Stopwatch.now()
        var out: [MaskGeneration.Candidate] = []
        var jobs: [(b: Int, j: Int)] = []
        for b in 0..<B {
            for j in 0..<count where o.predIoUThresh <= 0 || iou[b * T + 1 + j] > o.predIoUThresh { jobs.append((b, j)) }
        }
        stats.masksUpscaled += jobs.count
        let results = plan.run(jobs.map { UnsafePointer(masks + ($0.b * count + $0.j) * lowN) },
                               threshold: Float(cfg.maskThreshold), offset: o.stabilityScoreOffset, coreOffset: o.hierarchicalCoverOffset,
                               crop: crop, imageH: imageH, imageW: imageW, pool: main.pool, scratch: upscaleScratch, coverage: coverage,
                               keep: { st in
                                   let stability = st.union_ == 0 ? Float.nan : Float(st.intersection) / Float(st.union_)
                                   if o.stabilityScoreThresh > 0, !(stability >= o.stabilityScoreThresh) { return false }
                                   return !MaskGeneration.nearCropEdge(st.box, crop: crop, imageH: imageH, imageW: imageW)
                               })
        for (job, r) in zip(jobs, results) {
            guard let (rle, st) = r else { continue }
            let stability = st.union_ == 0 ? Float.nan : Float(st.intersection) / Float(st.union_)
            let p = points[job.b]
            // SAM uncrops the box of an empty mask too: (crop x0, y0, x0, y0).
            let box = (Int(st.box.0) + crop.x0, Int(st.box.1) + crop.y0, Int(st.box.2) + crop.x0, Int(st.box.3) + crop.y0)
            out.append(MaskGeneration.Candidate(rle: rle, box: box, iou: iou[job.b * T + 1 + job.j], stability: stability,
                                                point: SIMD2(p.x + Double(crop.x0), p.y + Double(crop.y0)), crop: crop))
        }
        stats.candidates += out.count
        self.sparse = nil
        self.masks = nil
        self.iou = nil
        main.reset(to: mark)
        stats.postprocessSeconds += Stopwatch.since(tp)
        return out
    }
}

/// The generator's geometry and bookkeeping, following `segment_anything/utils/amg.py`.
enum MaskGeneration {
    struct Crop: Sendable, Equatable {
        var x0: Int, y0: Int, x1: Int, y1: Int
        var layer: Int
    }

    struct Candidate: Sendable {
        var rle: MaskRLE
        /// x0, y0, x1, y1 (inclusive) in image pixels; zeros for an empty mask.
        var box: (Int, Int, Int, Int)
        var iou: Float
        var stability: Float
        var point: SIMD2<Double>
        var crop: Crop
        var cropArea: Int { (crop.x1 - crop.x0) * (crop.y1 - crop.y0) }
    }

    /// `build_point_grid`: n×n cell centres of [0, 1]², x fastest.
    static func pointGrid(_ n: Int) -> [SIMD2<Double>] {
        let offset = 1 / (2 * Double(n))
        // numpy's linspace(offset, 1 - offset, n): start + i·step, the last value exactly the end.
        let step = n > 1 ? (1 - 2 * offset) / Double(n - 1) : 0
        let side = (0..<n).map { i in i == n - 1 && n > 1 ? 1 - offset : offset + Double(i) * step }
        var out: [SIMD2<Double>] = []
        out.reserveCapacity(n * n)
        for y in side { for x in side { out.append(SIMD2(x, y)) } }
        return out
    }

    /// `generate_crop_boxes`: the whole image, then per layer 2^(i+1) × 2^(i+1) overlapping crops (x outer).
    static func cropBoxes(h: Int, w: Int, layers: Int, overlap ratio: Double) -> [Crop] {
        var out = [Crop(x0: 0, y0: 0, x1: w, y1: h, layer: 0)]
        let short = min(h, w)
        func cropLen(_ orig: Int, _ n: Int, _ overlap: Int) -> Int {
            Int((Double(overlap * (n - 1) + orig) / Double(n)).rounded(.up))
        }
        for i in 0..<layers {
            let n = 1 << (i + 1)
            let overlap = Int(ratio * Double(short) * (2 / Double(n)))
            let cw = cropLen(w, n, overlap), ch = cropLen(h, n, overlap)
            for xi in 0..<n {
                for yi in 0..<n {
                    let x0 = (cw - overlap) * xi, y0 = (ch - overlap) * yi
                    out.append(Crop(x0: x0, y0: y0, x1: min(x0 + cw, w), y1: min(y0 + ch, h), layer: i + 1))
                }
            }
        }
        return out
    }

    /// `is_box_near_crop_edge` (atol 20): a side within 20 px of the crop's edge that is not the image's.
    static func nearCropEdge(_ b: (Int32, Int32, Int32, Int32), crop: Crop, imageH: Int, imageW: Int) -> Bool {
        let box = [Double(b.0) + Double(crop.x0), Double(b.1) + Double(crop.y0), Double(b.2) + Double(crop.x0),
                   Double(b.3) + Double(crop.y0)]
        let cb = [crop.x0, crop.y0, crop.x1, crop.y1].map(Double.init)
        let ib = [0, 0, Double(imageW), Double(imageH)]
        for i in 0..<4 where abs(box[i] - cb[i]) <= 20 && !(abs(box[i] - ib[i]) <= 20) { return true }
        return false
    }

    /// torchvision's `nms`: scores in descending order (stable), drop boxes overlapping a kept one by
    /// more than `threshold` (IoU of the boxes as float32, areas (x1 − x0)(y1 − y0)). Returns the kept
    /// indexes in score order.
    static func nmsOrder(_ boxes: [(Int, Int, Int, Int)], scores: [Float], threshold: Float) -> [Int] {
        let order = boxes.indices.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
        let b = boxes.map { SIMD4<Float>(Float($0.0), Float($0.1), Float($0.2), Float($0.3)) }
        let areas = b.map { ($0[2] - $0[0]) * ($0[3] - $0[1]) }
        var suppressed = [Bool](repeating: false, count: boxes.count)
        var keep: [Int] = []
        for (oi, i) in order.enumerated() where !suppressed[i] {
            keep.append(i)
            let a = b[i]
            for j in order[(oi + 1)...] where !suppressed[j] {
                let c = b[j]
                let iw = max(0, min(a[2], c[2]) - max(a[0], c[0])), ih = max(0, min(a[3], c[3]) - max(a[1], c[1]))
                let inter = iw * ih
                // 0/0 (two empty boxes) is NaN, which suppresses nothing, as in torchvision.
                if inter / (areas[i] + areas[j] - inter) > threshold { suppressed[j] = true }
            }
        }
        return keep
    }

    static func nms(_ c: [Candidate], threshold: Float, score: (Candidate) -> Float) -> [Candidate] {
        nmsOrder(c.map(\.box), scores: c.map(score), threshold: threshold).map { c[$0] }
    }

    /// `postprocess_small_regions`: fill small holes, remove small islands; masks that changed score 0,
    /// unchanged 1, and a box suppression (on the new boxes) prefers the unchanged ones.
    static func removeSmallRegions(_ c: [Candidate], minArea: Int, nmsThresh: Float) -> [Candidate] {
        guard let first = c.first else { return c }
        let h = first.rle.height, w = first.rle.width
        let mask = UnsafeMutablePointer<UInt8>.allocate(capacity: h * w)
        let labels = UnsafeMutablePointer<Int32>.allocate(capacity: h * w)
        defer {
            mask.deallocate()
            labels.deallocate()
        }
        var stack: [Int32] = []
        var updated = c
        var scores = [Float](repeating: 1, count: c.count)
        for i in c.indices {
            c[i].rle.decode(into: mask)
            let holes = MaskRegions.removeSmall(mask, h: h, w: w, minArea: minArea, holes: true, labels: labels, stack: &stack)
            let islands = MaskRegions.removeSmall(mask, h: h, w: w, minArea: minArea, holes: false, labels: labels, stack: &stack)
            guard holes || islands else { continue }
            scores[i] = 0
            let rle = MaskRLE(mask: mask, height: h, width: w)
            let bx = rle.box
            updated[i].rle = rle
            updated[i].box = (bx.x0, bx.y0, bx.x1, bx.y1)
        }
        return nmsOrder(updated.map(\.box), scores: scores, threshold: nmsThresh).map { updated[$0] }
    }

    /// The composition of SAM's two bilinear resizes (low-res logits → padded input size, crop to the
    /// resized image, → original size) as one separable 4-tap resampling, per output row and column.
    struct UpscalePlan {
        let low: Int, outH: Int, outW: Int
        var rowStart: [Int32], colStart: [Int32]
        var rowW: [Float], colW: [Float]

        init(low: Int, size: Int, rh: Int, rw: Int, outH: Int, outW: Int) {
            self.low = low
            self.outH = outH
            self.outW = outW
            (rowStart, rowW) = Self.taps(low: low, size: size, valid: rh, out: outH)
            (colStart, colW) = Self.taps(low: low, size: size, valid: rw, out: outW)
        }

        /// 1-D: low → size (bilinear, align_corners=False), keep [0, valid), → out (bilinear).
        static func taps(low: Int, size: Int, valid: Int, out: Int) -> ([Int32], [Float]) {
            func lerp(_ o: Int, from n: Int, to m: Int) -> (Int, Int, Float) {
                let s = Float(n) / Float(m)
                let f = max((Float(o) + 0.5) * s - 0.5, 0)
                let i0 = min(Int(f), n - 1)
                return (i0, min(i0 + 1, n - 1), f - Float(i0))
            }
            var starts = [Int32](repeating: 0, count: out), weights = [Float](repeating: 0, count: 4 * out)
            for o in 0..<out {
                let (b0, b1, lb) = lerp(o, from: valid, to: out)
                var acc: [(Int, Float)] = []
                for (c, wc) in [(b0, 1 - lb), (b1, lb)] {
                    let (a0, a1, la) = lerp(c, from: low, to: size)
                    acc.append((a0, wc * (1 - la)))
                    acc.append((a1, wc * la))
                }
                let start = min(acc.map(\.0).min()!, low - 4)
                starts[o] = Int32(start)
                for (i, w) in acc { weights[4 * o + i - start] += w }
            }
            return (starts, weights)
        }

        /// Upscales each mask (in parallel on `pool`), keeps those `keep` accepts, and encodes them as RLE in
        /// the image frame.
        /// Working memory of `run` for `slots` masks at a time, kept across batches (fresh pages cost).
        final class Scratch {
            let slots: Int, hsize: Int, runsPerSlot: Int
            let hbuf: UnsafeMutablePointer<Float>
            let masks: UnsafeMutablePointer<UInt8>
            let stats: UnsafeMutablePointer<psam_mask_stats>
            let counts: UnsafeMutablePointer<UInt32>

            init(_ plan: UpscalePlan, slots: Int) {
                self.slots = slots
                hsize = plan.low * plan.low + plan.low * plan.outH
                // Masks of real images have a few thousand runs; the worst case is one per pixel. Beyond this
                // many a mask is encoded again from its bytes (`MaskRLE(columnMajor:)`).
                runsPerSlot = min(plan.outH * plan.outW + 3, 1 << 20)
                hbuf = .allocate(capacity: slots * hsize)
                masks = .allocate(capacity: slots * plan.outH * plan.outW)
                stats = .allocate(capacity: slots)
                counts = .allocate(capacity: slots * runsPerSlot)
            }

            deinit {
                hbuf.deallocate()
                masks.deallocate()
                stats.deallocate()
                counts.deallocate()
            }
        }

        func run(_ lows: [UnsafePointer<Float>], threshold: Float, offset: Float, coreOffset: Float, crop: Crop, imageH: Int, imageW: Int,
                 pool: ThreadPool?, scratch: Scratch, coverage: UnsafeMutablePointer<UInt8>? = nil,
                 keep: (psam_mask_stats) -> Bool) -> [(MaskRLE, psam_mask_stats)?] {
            let n = lows.count
            guard n > 0 else { return [] }
            let slots = scratch.slots, hsize = scratch.hsize, runsPerSlot = scratch.runsPerSlot
            let hbuf = scratch.hbuf, masks = scratch.masks, stats = scratch.stats, counts = scratch.counts
            var results: [(MaskRLE, psam_mask_stats)?] = []
            results.reserveCapacity(n)
            rowStart.withUnsafeBufferPointer { rs in colStart.withUnsafeBufferPointer { cs in
                rowW.withUnsafeBufferPointer { rw in colW.withUnsafeBufferPointer { cw in
                    var args = psam_mask_upscale_args(low: low, out_h: outH, out_w: outW, row_start: rs.baseAddress, col_start: cs.baseAddress,
                                                      row_w: rw.baseAddress, col_w: cw.baseAddress, threshold: threshold, offset: offset,
                                                      core_offset: coreOffset, counts: counts, counts_capacity: runsPerSlot,
                                                      frame_x0: crop.x0, frame_y0: crop.y0,
                                                      frame_h: imageH, frame_w: imageW)
                    var i = 0
                    while i < n {
                        let m = min(slots, n - i)
                        var task = ColumnTask(kind: .maskUpscale, a: nil, b: nil, c: hbuf, bias: nil, m: m, n: 0, k: 0, lda: 0, ldb: 0,
                                              ldc: hsize)
                        withUnsafeMutablePointer(to: &args) { ap in
                            lows.withUnsafeBufferPointer { lp in
                                task.maskArgs = UnsafePointer(ap)
                                task.lows = UnsafePointer(lp.baseAddress! + i)
                                task.qa = masks
                                task.maskStats = stats
                                if let pool, m > 1 {
                                    withUnsafePointer(to: task) { pool.run(m, $0) }
                                } else {
                                    for s in 0..<m { task.run(block: s) }
                                }
                            }
                        }
                        var wanted = [Bool](repeating: false, count: m)
                        for s in 0..<m {
                            guard keep(stats[s]) else { continue }
                            wanted[s] = true
                            if let coverage {
                                let m = masks + s * outH * outW  // column-major
                                for x in 0..<outW { for y in 0..<outH where m[x * outH + y] & 2 != 0 { coverage[y * outW + x] = 1 } }
                            }
                        }
                        // The kept masks' run arrays, built on the pool too (large arrays of speckled masks are
                        // fresh pages: copying them one by one on this thread left the others idle).
                        let job = RLEJob(counts: counts, masks: masks, stats: stats, runsPerSlot: runsPerSlot, outH: outH, outW: outW,
                                         crop: crop, imageH: imageH, imageW: imageW, wanted: wanted)
                        var rt = ColumnTask(kind: .callback, a: nil, b: nil, c: hbuf, bias: nil, m: 0, n: 0, k: 0, lda: 0, ldb: 0, ldc: 0)
                        rt.callback = { ctx, i in Unmanaged<RLEJob>.fromOpaque(ctx).takeUnretainedValue().build(i) }
                        rt.context = Unmanaged.passUnretained(job).toOpaque()
                        if let pool, m > 1 {
                            withUnsafePointer(to: rt) { pool.run(m, $0) }
                        } else {
                            for s in 0..<m { rt.run(block: s) }
                        }
                        withExtendedLifetime(job) {
                            for s in 0..<m { results.append(job.out[s].map { ($0, stats[s]) }) }
                        }
                        i += m
                    }
                } }
            } }
            return results
        }
    }
}

/// Builds the run arrays of a slot batch's kept masks, one mask per block (`ColumnTask.callback`).
private final class RLEJob {
    let counts: UnsafeMutablePointer<UInt32>, masks: UnsafeMutablePointer<UInt8>, stats: UnsafeMutablePointer<psam_mask_stats>
    let runsPerSlot: Int, outH: Int, outW: Int, crop: MaskGeneration.Crop, imageH: Int, imageW: Int
    let wanted: [Bool]
    /// One entry per slot, each written by its own block only.
    let out: UnsafeMutablePointer<MaskRLE?>

    init(counts: UnsafeMutablePointer<UInt32>, masks: UnsafeMutablePointer<UInt8>, stats: UnsafeMutablePointer<psam_mask_stats>,
         runsPerSlot: Int, outH: Int, outW: Int, crop: MaskGeneration.Crop, imageH: Int, imageW: Int, wanted: [Bool]) {
        self.counts = counts
        self.masks = masks
        self.stats = stats
        self.runsPerSlot = runsPerSlot
        self.outH = outH
        self.outW = outW
        self.crop = crop
        self.imageH = imageH
        self.imageW = imageW
        self.wanted = wanted
        out = .allocate(capacity: wanted.count)
        out.initialize(repeating: nil, count: wanted.count)
    }

    deinit {
        out.deinitialize(count: wanted.count)
        out.deallocate()
    }

    func build(_ s: Int) {
        guard wanted[s] else { return }
        let st = stats[s]
        // `runs` is SIZE_MAX (−1 as Int) when the runs did not fit.
        out[s] = st.runs >= 0 && st.runs <= runsPerSlot
            ? MaskRLE(height: imageH, width: imageW, counts: Array(UnsafeBufferPointer(start: counts + s * runsPerSlot, count: st.runs)))
            : MaskRLE(columnMajor: masks + s * outH * outW, height: outH, width: outW, x0: crop.x0, y0: crop.y0,
                      fullHeight: imageH, fullWidth: imageW)
    }
}

/// Monotonic time for the generator's per-stage figures.
enum Stopwatch {
    static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    static func since(_ t: Double) -> Double { now() - t }
}
