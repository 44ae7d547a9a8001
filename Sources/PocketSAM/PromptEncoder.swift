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

    /// Fourier features of `n` points given in [0, 1]² (x, y): `[sin(2π·(2p−1)·G), cos(…)]`.
    func fourier(_ xy: [(Float, Float)], out: UnsafeMutablePointer<Float>) {
        let g = gauss
        let half = c.embedDim / 2
        for (i, (x, y)) in xy.enumerated() {
            let cx = 2 * x - 1, cy = 2 * y - 1
            let row = out + i * c.embedDim
            for j in 0..<half {
                let v = 2 * Float.pi * (cx * g[j] + cy * g[half + j])
                row[j] = sinf(v)
                row[half + j] = cosf(v)
            }
        }
    }

    /// The dense positional encoding of the embedding grid, `[G·G, C]`.
    func densePE(arena: Arena) -> UnsafeMutablePointer<Float> {
        let g = c.embeddingSize
        let out = arena.alloc(g * g * c.embedDim)
        var pts: [(Float, Float)] = []
        pts.reserveCapacity(g * g)
        for y in 0..<g { for x in 0..<g { pts.append(((Float(x) + 0.5) / Float(g), (Float(y) + 0.5) / Float(g))) } }
        fourier(pts, out: out)
        return out
    }

    /// Sparse embeddings `[N, C]` of points (labels 1, 0) and a box, in input-image coordinates (after
    /// the longest-side resize). Without a box a padding point (label −1) is appended, as SAM does.
    func sparse(points: [(Float, Float)], labels: [Int], box: (Float, Float, Float, Float)?,
                arena: Arena) -> (UnsafeMutablePointer<Float>, Int) {
        let s = Float(c.inputImageSize)
        var coords = points.map { (($0.0 + 0.5) / s, ($0.1 + 0.5) / s) }
        var labs = labels
        if box == nil {
            coords.append((0, 0))  // the padding point; its encoding is replaced below
            labs.append(-1)
        }
        if let b = box {
            coords.append(((b.0 + 0.5) / s, (b.1 + 0.5) / s))
            coords.append(((b.2 + 0.5) / s, (b.3 + 0.5) / s))
        }
        let n = coords.count, C = c.embedDim
        let out = arena.alloc(n * C)
        fourier(coords, out: out)
        for (i, l) in labs.enumerated() {
            let row = out + i * C
            switch l {
            case -1:
                for j in 0..<C { row[j] = notAPoint[j] }
            case 0: Ops.add(row, pointEmbeddings[0], C)
            default: Ops.add(row, pointEmbeddings[1], C)
            }
        }
        if box != nil {
            Ops.add(out + (n - 2) * C, pointEmbeddings[2], C)
            Ops.add(out + (n - 1) * C, pointEmbeddings[3], C)
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
        Ops.conv2d(mask, h: s4, w: s4, cin: 1, weight: down0.w,
                   bias: down0.b, cout: mc / 4, k: 2, stride: 2, pad: 0, out: a, arena: arena)
        Ops.layerNorm(a, a, m: s2 * s2, c: mc / 4, weight: down1.w,
                      bias: down1.b, eps: 1e-6)
        Ops.gelu(a, s2 * s2 * mc / 4, arena)
        let b = arena.alloc(g * g * mc)
        Ops.conv2d(a, h: s2, w: s2, cin: mc / 4, weight: down3.w,
                   bias: down3.b, cout: mc, k: 2, stride: 2, pad: 0, out: b, arena: arena)
        Ops.layerNorm(b, b, m: g * g, c: mc, weight: down4.w,
                      bias: down4.b, eps: 1e-6)
        Ops.gelu(b, g * g * mc, arena)
        Ops.linear(arena, b, down6.w, down6.b, out,
                   m: g * g, n: C, k: mc)
        arena.reset(to: mark)
        return out
    }
}
