import PocketSAMKernels

/// One prompt of `Session.predict(prompts:)`: what `predict(points:box:maskInput:multimask:hqTokenOnly:)` takes.
public struct Prompt: Sendable {
    public var points: [PointPrompt]
    public var box: BoxPrompt?
    public var maskInput: [Float]?
    public var multimask: Bool
    public var hqTokenOnly: Bool

    public init(points: [PointPrompt] = [], box: BoxPrompt? = nil, maskInput: [Float]? = nil, multimask: Bool = false,
                hqTokenOnly: Bool = false) {
        self.points = points
        self.box = box
        self.maskInput = maskInput
        self.multimask = multimask
        self.hqTokenOnly = hqTokenOnly
    }
}

extension Session {
    /// Prompts decoded together by `predict(prompts:)`: memory grows with it (about 7 MB a box prompt at SAM's sizes),
    /// and the planned arena covers a batch of this many boxes; prompts with more tokens go in smaller groups.
    public static let promptBatch = 4

    /// Answers many prompts against the current image (a detector's boxes, say), each exactly as `predict` would
    /// (the same bits): consecutive prompts that take the folded decoder with the same number of prompt tokens and
    /// masks go through it together, `promptBatch` at a time; the others (mask inputs, HQ-SAM) one by one. Every
    /// prompt is checked before any is decoded.
    public func predict(prompts: [Prompt]) throws -> [Prediction] {
        guard let emb = embedding, let pe = densePE, let keep = persistentMark, let (h, w) = imageSize,
              let (rh, rw) = resized else { throw PocketSAMError.noImage }
        for (i, p) in prompts.enumerated() {
            do {
                try check(points: p.points, box: p.box, maskInput: p.maskInput, h: h, w: w)
            } catch let PocketSAMError.invalidPrompt(why) {
                throw PocketSAMError.invalidPrompt("prompt \(i): \(why)")
            }
        }
        var results = [Prediction](repeating: Prediction(), count: prompts.count)
        let pen = model.promptEncoder!, cfg = model.config, T = cfg.decoder.numMaskTokens
        let g = cfg.prompt.embeddingSize, D = cfg.prompt.embedDim, lowRes = 4 * g, lowN = lowRes * lowRes
        func key(_ p: Prompt) -> (tokens: Int, multimask: Bool)? {
            guard usesFoldedDecoder(points: p.points.count, box: p.box != nil, maskInput: p.maskInput != nil) else { return nil }
            return (pen.sparseCount(points: p.points.count, box: p.box != nil), p.multimask)
        }
        var i = 0
        while i < prompts.count {
            guard let k = key(prompts[i]) else {
                let p = prompts[i]
                try predict(points: p.points, box: p.box, maskInput: p.maskInput, multimask: p.multimask,
                            hqTokenOnly: p.hqTokenOnly, into: &results[i])
                i += 1
                continue
            }
            // At most `promptBatch` prompts, and no more tokens than that many boxes (what the planned arena measured).
            let nt = 1 + T + k.tokens, boxTokens = 1 + T + 2
            let most = max(1, min(Self.promptBatch, Self.promptBatch * boxTokens / nt))
            var end = i + 1
            while end < prompts.count, end - i < most, let k2 = key(prompts[end]), k2 == k { end += 1 }
            makeDecoderShared(emb: emb, pe: pe, keep: keep)
            guard let shared = decoderShared, let top = persistentMark else { throw PocketSAMError.noImage }
            arena.reset(to: top)
            let nb = end - i, ns = k.tokens, first = k.multimask ? 1 : 0, count = k.multimask ? T - 1 : 1
            let sparse = arena.alloc(nb * ns * D)
            for j in 0..<nb {
                let m = arena.mark()
                let p = prompts[i + j]
                let (sp, n) = pen.sparse(points: p.points, box: p.box, sx: Double(rw) / Double(w), sy: Double(rh) / Double(h),
                                         arena: arena)
                precondition(n == ns)
                (sparse + j * ns * D).update(from: sp, count: ns * D)
                arena.reset(to: m)
            }
            let iou = arena.alloc(nb * T), lowT = arena.alloc(nb * count * lowN), low = arena.alloc(count * lowN)
            model.maskDecoder.runBatch(shared: shared, pe: pe, grid: g, sparse: sparse, ns: ns, batch: nb, first: first, count: count,
                                       masks: lowT, iou: iou, parts: Self.decoderParts, rowExact: true, arena: arena)
            for j in 0..<nb {
                for c in 0..<count {
                    psam_transpose(lowT + (j * count + c) * lowN, lowRes, lowRes, lowRes, low + c * lowN, lowRes)
                }
                finish(low: low, count: count, iou: iou + j * T + first, into: &results[i + j])
            }
            arena.reset(to: top)
            i = end
        }
        return results
    }
}
