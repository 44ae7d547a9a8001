import PocketSAMFormat

/// SAM's ViT image encoder (ViT-B/L/H and any other size), fp32, channels-last.
struct ViTEncoder {
    let c: ViTConfig
    static let eps: Float = 1e-6

    struct Block { let norm1: Norm; let qkv, proj: Lin; let relH, relW: UnsafePointer<Float>; let norm2: Norm; let lin1, lin2: Lin }
    let patch: Lin
    let pos: UnsafePointer<Float>
    let blocks: [Block]
    let neck0: Lin, neck1: Norm, neck2: Lin, neck3: Norm

    init(c: ViTConfig, m: Model) {
        self.c = c
        let e = "image_encoder."
        patch = m.lin(e + "patch_embed.proj")
        pos = m.w(e + "pos_embed")
        blocks = (0..<c.depth).map { b in
            let p = e + "blocks.\(b)."
            return Block(norm1: m.norm(p + "norm1"), qkv: m.lin(p + "attn.qkv", bias: c.qkvBias), proj: m.lin(p + "attn.proj"),
                         relH: m.w(p + "attn.rel_pos_h"), relW: m.w(p + "attn.rel_pos_w"), norm2: m.norm(p + "norm2"),
                         lin1: m.lin(p + "mlp.lin1"), lin2: m.lin(p + "mlp.lin2"))
        }
        neck0 = m.lin(e + "neck.0", bias: false)
        neck1 = m.norm(e + "neck.1")
        neck2 = m.lin(e + "neck.2", bias: false)
        neck3 = m.norm(e + "neck.3")
    }

    /// `x`: the normalised, padded input `[S, S, 3]`. Returns the image embedding `[G·G, outChans]`.
    func run(_ x: UnsafePointer<Float>, arena: Arena) -> UnsafeMutablePointer<Float> {
        let g = c.gridSize, E = c.embedDim, n = g * g
        let tok = arena.alloc(n * E)
        Ops.conv2d(x, h: c.imageSize, w: c.imageSize, cin: 3, weight: patch, cout: E, k: c.patchSize, stride: c.patchSize, pad: 0,
                   out: tok, arena: arena)
        Ops.add(tok, pos, n * E)
        arena.tap?("blocks.input", tok, [g, g, E])
        for b in 0..<c.depth {
            block(tok, b, arena)
            arena.tap?("blocks.\(b)", tok, [g, g, E])
        }
        let oc = c.outChans
        let n1 = arena.alloc(n * oc)
        Ops.linear(arena, tok, neck0, n1, m: n, n: oc, k: E)
        Ops.layerNormScalar(arena, n1, n1, m: n, c: oc, neck1, eps: 1e-6)
        let n2 = arena.alloc(n * oc)
        Ops.conv2d(n1, h: g, w: g, cin: oc, weight: neck2, cout: oc, k: 3, stride: 1, pad: 1,
                   out: n2, arena: arena)
        Ops.layerNormScalar(arena, n2, n2, m: n, c: oc, neck3, eps: 1e-6)
        arena.tap?("neck", n2, [g, g, oc])
        return n2
    }

    /// One block: x += attn(norm1(x)) (windowed or global), x += mlp(norm2(x)). In place.
    func block(_ x: UnsafeMutablePointer<Float>, _ b: Int, _ arena: Arena) {
        let wt = blocks[b]
        let g = c.gridSize, E = c.embedDim, n = g * g
        let mark = arena.mark()
        let normed = arena.alloc(n * E)
        Ops.layerNormScalar(arena, x, normed, m: n, c: E, wt.norm1, eps: Self.eps)
        let global = c.isGlobal(b)
        let ws = global ? g : c.windowSize
        let nw = (g + ws - 1) / ws, wn = ws * ws
        let win = arena.alloc(wn * E), att = arena.alloc(wn * E), out = arena.alloc(wn * E)
        for wy in 0..<nw {
            for wx in 0..<nw {
                // Window partition: zero rows past the border (SAM pads after norm1).
                for i in 0..<wn {
                    let y = wy * ws + i / ws, xx = wx * ws + i % ws
                    if y < g && xx < g { (win + i * E).update(from: normed + (y * g + xx) * E, count: E) } else {
                        (win + i * E).initialize(repeating: 0, count: E)
                    }
                }
                attention(win, side: ws, wt, out: att, arena)
                Ops.linear(arena, att, wt.proj, out, m: wn, n: E, k: E)
                for i in 0..<wn {
                    let y = wy * ws + i / ws, xx = wx * ws + i % ws
                    if y < g && xx < g { Ops.add(x + (y * g + xx) * E, out + i * E, E) }
                }
            }
        }
        arena.reset(to: mark)
        let t = arena.alloc(n * E), hid = arena.alloc(n * c.mlpDim), o = arena.alloc(n * E)
        Ops.layerNormScalar(arena, x, t, m: n, c: E, wt.norm2, eps: Self.eps)
        Ops.linear(arena, t, wt.lin1, hid, m: n, n: c.mlpDim, k: E, gelu: true)
        Ops.linear(arena, hid, wt.lin2, o, m: n, n: E, k: c.mlpDim)
        Ops.add(x, o, n * E)
        arena.reset(to: mark)
    }

    /// Multi-head attention over one `side × side` window with SAM's decomposed relative position
    /// bias: `attn[q, k] += q · Rh[qy − ky + side − 1] + q · Rw[qx − kx + side − 1]` (unscaled q).
    func attention(_ x: UnsafePointer<Float>, side s: Int, _ wt: Block, out: UnsafeMutablePointer<Float>, _ arena: Arena) {
        let E = c.embedDim, H = c.numHeads, hd = c.headDim, n = s * s, r = 2 * s - 1
        let mark = arena.mark()
        let qkv = arena.alloc(n * 3 * E)
        Ops.linear(arena, x, wt.qkv, qkv, m: n, n: 3 * E, k: E)
        let relH = wt.relH, relW = wt.relW
        let th = arena.alloc(n * r), tw = arena.alloc(n * r)
        Ops.attention(q: qkv, k: qkv, v: qkv, nq: n, nk: n, heads: H, d: hd, dv: hd, ldq: 3 * E, ldk: 3 * E, ldv: 3 * E,
                      qOff: { $0 * hd }, kOff: { E + $0 * hd }, vOff: { 2 * E + $0 * hd }, scale: 1 / Float(hd).squareRoot(),
                      bias: { h, scores in
                          // th[q, j] = q · rel_pos_h[j], tw likewise: two small GEMMs per head.
                          Ops.matmul(arena, qkv + h * hd, relH, th, m: n, n: r, k: hd, lda: 3 * E, ldb: hd, ldc: r, transB: true)
                          Ops.matmul(arena, qkv + h * hd, relW, tw, m: n, n: r, k: hd, lda: 3 * E, ldb: hd, ldc: r, transB: true)
                          for q in 0..<n {
                              let qy = q / s, qx = q % s
                              let row = scores + q * n, rh = th + q * r, rw = tw + q * r
                              for ky in 0..<s {
                                  let bh = rh[qy - ky + s - 1]
                                  let base = row + ky * s
                                  for kx in 0..<s { base[kx] += bh + rw[qx - kx + s - 1] }
                              }
                          }
                      }, out: out, arena: arena)
        arena.reset(to: mark)
    }
}
