import PocketSAMFormat
import PocketSAMKernels

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
    /// `early` (HQ-SAM): receives the output of block `earlyBlock`, `[G·G, E]`.
    func run(_ x: UnsafePointer<Float>, arena: Arena, early: (block: Int, into: UnsafeMutablePointer<Float>)? = nil)
        -> UnsafeMutablePointer<Float> {
        let g = c.gridSize, E = c.embedDim, n = g * g
        let tok = arena.alloc(n * E)
        Ops.conv2d(x, h: c.imageSize, w: c.imageSize, cin: 3, weight: patch, cout: E, k: c.patchSize, stride: c.patchSize, pad: 0,
                   out: tok, arena: arena)
        Ops.add(tok, pos, n * E)
        arena.tap?("blocks.input", tok, [g, g, E])
        for b in 0..<c.depth {
            block(tok, b, arena)
            arena.tap?("blocks.\(b)", tok, [g, g, E])
            if let early, early.block == b { early.into.update(from: tok, count: n * E) }
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
    ///
    /// The qkv projection runs once over the image's tokens (not over padded windows: 4096 rows instead of 4900 at
    /// SAM's sizes) plus, when windows hang over the border, one zero row, the qkv of every padding token (SAM pads
    /// after norm1). The attention runs in blocks of windows × heads or heads × query rows (`ViTAttentionJob`), the
    /// projection over the image's tokens again. On int8 weights norm1 goes straight into quantized rows and the MLP
    /// runs 64 tokens at a time (`Ops.mlpInt8`); otherwise (fp32, the calibration hook) in whole-image steps, the MLP
    /// in chunks of rows so that its hidden activations stay small.
    func block(_ x: UnsafeMutablePointer<Float>, _ b: Int, _ arena: Arena) {
        let wt = blocks[b]
        let g = c.gridSize, E = c.embedDim, n = g * g
        let mark = arena.mark()
        let global = c.isGlobal(b)
        let ws = global ? g : c.windowSize
        let padded = !global && g % ws != 0
        let rows = n + (padded ? 1 : 0)
        let qkv = arena.alloc(rows * 3 * E)
        do {
            let scratch = arena.mark()
            if let q = wt.qkv.q, arena.linearInputHook == nil {
                let input = Ops.QuantizedRows(arena, m: rows, kp: q.kp)
                Ops.layerNormQuantized(arena, x, m: n, c: E, wt.norm1, eps: Self.eps, into: input)
                if padded {
                    let zero = arena.alloc(E)
                    zero.initialize(repeating: 0, count: E)
                    psam_quantize_rows_u8(zero, 1, E, E, input.q + n * q.kp, q.kp, input.scale + n, input.zero + n)
                }
                Ops.qgemm(arena, input, wt.qkv, qkv, m: rows, n: 3 * E, k: E)
            } else {
                let normed = arena.alloc(rows * E)
                Ops.layerNormScalar(arena, x, normed, m: n, c: E, wt.norm1, eps: Self.eps)
                if padded { (normed + n * E).initialize(repeating: 0, count: E) }
                Ops.linear(arena, normed, wt.qkv, qkv, m: rows, n: 3 * E, k: E)
            }
            arena.reset(to: scratch)
        }
        let att = arena.alloc(n * E)
        Ops.vitAttention(arena, qkv: qkv, g: g, ws: ws, global: global, E: E, heads: c.numHeads, relH: wt.relH, relW: wt.relW, out: att,
                        halfPrecision: wt.qkv.q != nil && arena.linearInputHook == nil)
        // The projection's output where qkv was.
        Ops.linear(arena, att, wt.proj, qkv, m: n, n: E, k: E)
        Ops.add(arena, x, qkv, into: x, n * E)
        arena.reset(to: mark)
        if arena.linearInputHook == nil,
           Ops.mlpInt8(arena, x, m: n, d: E, hid: c.mlpDim, norm: wt.norm2, eps: Self.eps, fc1: wt.lin1, fc2: wt.lin2) {
            return
        }
        // Whole rows at a time; under the calibration hook the whole image in one step.
        let chunk = arena.linearInputHook == nil ? Self.mlpChunkRows : n
        let t = arena.alloc(chunk * E), hid = arena.alloc(chunk * c.mlpDim), o = arena.alloc(chunk * E)
        for r0 in stride(from: 0, to: n, by: chunk) {
            let m = min(chunk, n - r0), xr = x + r0 * E
            Ops.layerNormScalar(arena, xr, t, m: m, c: E, wt.norm2, eps: Self.eps)
            Ops.linear(arena, t, wt.lin1, hid, m: m, n: c.mlpDim, k: E, gelu: true)
            Ops.linear(arena, hid, wt.lin2, o, m: m, n: E, k: c.mlpDim)
            Ops.add(arena, xr, o, into: xr, m * E)
        }
        arena.reset(to: mark)
    }

    /// Rows per step of the MLP on fp32 (or int16) weights: its hidden activations are this many rows (5 MB for
    /// ViT-H) instead of the image's (84 MB).
    static let mlpChunkRows = 256
}
