import PocketSAMFormat

#if canImport(Glibc)
import Glibc
#endif

/// SAM's prompt encoder: random-Fourier positional encoding of points and box corners, learned
/// label embeddings, and the mask-input downscaling (or the no-mask embedding).
struct PromptEncoder {
    let c: PromptEncoderConfig
    static let p = "prompt_encoder."
    let gauss: UnsafePointer<Float>
    let pointEmbeddings: [UnsafePointer<Float>]
    let notAPoint, noMask: UnsafePointer<Float>
    let down0: Lin, down1: Norm, down3: Lin, down4: Norm, down6: Lin

    init(c: PromptEncoderConfig, m: Model) {
        self.c = c
        let p = Self.p
        gauss = m.w(p + "pe_layer.positional_encoding_gaussian_matrix")
        pointEmbeddings = (0..<4).map { m.w(p + "point_embeddings.\($0).weight") }
        notAPoint = m.w(p + "not_a_point_embed.weight")
        noMask = m.w(p + "no_mask_embed.weight")
        down0 = m.lin(p + "mask_downscaling.0")
        down1 = m.norm(p + "mask_downscaling.1")
        down3 = m.lin(p + "mask_downscaling.3")
        down4 = m.norm(p + "mask_downscaling.4")
        down6 = m.lin(p + "mask_downscaling.6")
    }

    /// Fourier features of `n` points given in [0, 1]² as (x, y) pairs in `xy`:
    /// `[sin(2π·(2p−1)·G), cos(…)]`.
    func fourier(_ xy: UnsafePointer<Float>, _ n: Int, out: UnsafeMutablePointer<Float>) {
        let g = gauss
        let half = c.embedDim / 2
        for i in 0..<n {
            let cx = 2 * xy[2 * i] - 1, cy = 2 * xy[2 * i + 1] - 1
            let row = out + i * c.embedDim
            for j in 0..<half {
                let v = 2 * Float.pi * (cx * g[j] + cy * g[half + j])
                row[j] = sinf(v)
                row[half + j] = cosf(v)
            }
        }
    }

    /// The dense positional encoding of the embedding grid, `[G·G, C]`.
    /// The dense positional encoding `[G·G, C]` into `out` (it depends on the model only: `Model` makes it once).
    func densePE(into out: UnsafeMutablePointer<Float>) {
        let g = c.embeddingSize
        var xy = [Float](repeating: 0, count: 2 * g * g)
        for y in 0..<g {
            for x in 0..<g {
                xy[2 * (y * g + x)] = (Float(x) + 0.5) / Float(g)
                xy[2 * (y * g + x) + 1] = (Float(y) + 0.5) / Float(g)
            }
        }
        xy.withUnsafeBufferPointer { fourier($0.baseAddress!, g * g, out: out) }
    }

    /// How many sparse tokens `sparse` makes of `points` points and a box or none (a padding point without a box).
    func sparseCount(points: Int, box: Bool) -> Int { points + (box ? 2 : 1) }

    /// Sparse embeddings `[N, C]` of points and a box given in original-image pixels, scaled by
    /// (`sx`, `sy`) to the resized image as SAM's `apply_coords` does (in double precision). Without a
    /// box a padding point (label −1) is appended, as SAM does.
    func sparse(points: [PointPrompt], box: BoxPrompt?, sx: Double, sy: Double,
                arena: Arena) -> (UnsafeMutablePointer<Float>, Int) {
        let s = Float(c.inputImageSize), C = c.embedDim
        let np = points.count
        let n = sparseCount(points: np, box: box != nil)
        let out = arena.alloc(n * C)
        let mark = arena.mark()
        let xy = arena.alloc(2 * n)
        func put(_ i: Int, _ x: Float, _ y: Float) {
            xy[2 * i] = (Float(Double(x) * sx) + 0.5) / s
            xy[2 * i + 1] = (Float(Double(y) * sy) + 0.5) / s
        }
        for (i, p) in points.enumerated() { put(i, p.x, p.y) }
        if let b = box {
            put(np, b.x0, b.y0)
            put(np + 1, b.x1, b.y1)
        } else {
            xy[2 * np] = 0
            xy[2 * np + 1] = 0
        }
        fourier(xy, n, out: out)
        arena.reset(to: mark)
        for (i, p) in points.enumerated() { Ops.add(out + i * C, pointEmbeddings[p.positive ? 1 : 0], C) }
        if box != nil {
            Ops.add(out + np * C, pointEmbeddings[2], C)
            Ops.add(out + (np + 1) * C, pointEmbeddings[3], C)
        } else {
            (out + np * C).update(from: notAPoint, count: C)  // the padding point: its encoding is replaced
        }
        return (out, n)
    }

    /// Dense embeddings `[G·G, C]`: the mask input (`[4G, 4G]` logits) downscaled, or `no_mask_embed`.
    func dense(mask: UnsafePointer<Float>?, arena: Arena) -> UnsafeMutablePointer<Float> {
        let g = c.embeddingSize, C = c.embedDim, mc = c.maskInChans
        let out = arena.alloc(g * g * C)
        guard let mask else {
            for i in 0..<(g * g) { (out + i * C).update(from: noMask, count: C) }
            return out
        }
        let mark = arena.mark()
        let s4 = 4 * g, s2 = 2 * g
        let a = arena.alloc(s2 * s2 * mc / 4)
        Ops.conv2d(mask, h: s4, w: s4, cin: 1, weight: down0, cout: mc / 4, k: 2, stride: 2, pad: 0, out: a, arena: arena)
        Ops.layerNorm(a, a, m: s2 * s2, c: mc / 4, weight: down1.w, bias: down1.b, eps: 1e-6)
        Ops.gelu(a, s2 * s2 * mc / 4, arena)
        let b = arena.alloc(g * g * mc)
        Ops.conv2d(a, h: s2, w: s2, cin: mc / 4, weight: down3, cout: mc, k: 2, stride: 2, pad: 0, out: b, arena: arena)
        Ops.layerNorm(b, b, m: g * g, c: mc, weight: down4.w, bias: down4.b, eps: 1e-6)
        Ops.gelu(b, g * g * mc, arena)
        Ops.linear(arena, b, down6, out,
                   m: g * g, n: C, k: mc)
        arena.reset(to: mark)
        return out
    }
}
