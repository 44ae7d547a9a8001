import PocketSAMFormat

/// TinyViT image encoder (MobileSAM, LiteMedSAM), fp32, channels-last.
struct TinyViTEncoder {
    let c: TinyViTConfig
    let m: Model
    static let eps: Float = 1e-5

    /// `x`: the normalised, padded input `[S, S, 3]`. Returns the image embedding `[G·G, outChans]`.
    func run(_ x: UnsafePointer<Float>, arena: Arena) -> UnsafeMutablePointer<Float> {
        let e = "image_encoder."
        let s = c.patchEmbedStride, k = c.patchEmbedKernel, d0 = c.embedDims[0]
        var h = c.imageSize
        // Patch embedding: conv → GELU → conv.
        let h1 = (h + 2 * (k / 2) - k) / s + 1
        let t1 = arena.alloc(h1 * h1 * d0 / 2)
        Ops.conv2d(x, h: h, w: h, cin: 3, weight: m.w(e + "patch_embed.seq.0.weight"), bias: m.w(e + "patch_embed.seq.0.bias"),
                   cout: d0 / 2, k: k, stride: s, pad: k / 2, out: t1, arena: arena)
        Ops.gelu(t1, h1 * h1 * d0 / 2, arena)
        let h2 = (h1 + 2 * (k / 2) - k) / s + 1
        var cur = arena.alloc(h2 * h2 * d0)
        Ops.conv2d(t1, h: h1, w: h1, cin: d0 / 2, weight: m.w(e + "patch_embed.seq.2.weight"), bias: m.w(e + "patch_embed.seq.2.bias"),
                   cout: d0, k: k, stride: s, pad: k / 2, out: cur, arena: arena)
        h = h2

        for st in 0..<c.stageCount {
            let d = c.embedDims[st]
            for b in 0..<c.depths[st] {
                let p = e + "layers.\(st).blocks.\(b)."
                if st == 0 {
                    mbconv(cur, h: h, d: d, p, arena)
                } else {
                    block(cur, h: h, d: d, stage: st, p, arena)
                }
            }
            if st < c.stageCount - 1 {
                let p = e + "layers.\(st).downsample."
                let o = c.embedDims[st + 1], stride = c.mergeStrides[st]
                let mark = arena.mark()
                let a = arena.alloc(h * h * o)
                Ops.linear(arena, cur, m.w(p + "conv1.weight"), m.w(p + "conv1.bias"), a, m: h * h, n: o, k: d)
                Ops.gelu(a, h * h * o, arena)
                let ho = (h + 2 - 3) / stride + 1
                let bb = arena.alloc(ho * ho * o)
                Ops.depthwiseConv(a, h: h, w: h, c: o, weight: m.w(p + "conv2.weight"), bias: m.w(p + "conv2.bias"), k: 3,
                                  stride: stride, pad: 1, out: bb, arena: arena)
                Ops.gelu(bb, ho * ho * o, arena)
                let out = arena.alloc(ho * ho * o)
                Ops.linear(arena, bb, m.w(p + "conv3.weight"), m.w(p + "conv3.bias"), out, m: ho * ho, n: o, k: o)
                // Keep only `out`: move it down to where `a` began.
                arena.reset(to: mark)
                let moved = arena.alloc(ho * ho * o)
                moved.update(from: out, count: ho * ho * o)
                cur = moved
                h = ho
            }
        }
        // Neck: conv1×1 → LayerNorm2d → conv3×3 → LayerNorm2d (ε 1e-6).
        let dl = c.embedDims[c.stageCount - 1], oc = c.outChans
        let n1 = arena.alloc(h * h * oc)
        Ops.linear(arena, cur, m.w(e + "neck.0.weight"), nil, n1, m: h * h, n: oc, k: dl)
        Ops.layerNorm(n1, n1, m: h * h, c: oc, weight: m.w(e + "neck.1.weight"), bias: m.w(e + "neck.1.bias"), eps: 1e-6)
        let n2 = arena.alloc(h * h * oc)
        Ops.conv2d(n1, h: h, w: h, cin: oc, weight: m.w(e + "neck.2.weight"), bias: nil, cout: oc, k: 3, stride: 1, pad: 1,
                   out: n2, arena: arena)
        Ops.layerNorm(n2, n2, m: h * h, c: oc, weight: m.w(e + "neck.3.weight"), bias: m.w(e + "neck.3.bias"), eps: 1e-6)
        return n2
    }

    /// MBConv: 1×1 → GELU → depthwise 3×3 → GELU → 1×1, + shortcut, GELU. In place on `x`.
    func mbconv(_ x: UnsafeMutablePointer<Float>, h: Int, d: Int, _ p: String, _ arena: Arena) {
        let hid = c.mbconvHiddenDim, n = h * h
        let mark = arena.mark()
        let a = arena.alloc(n * hid)
        Ops.linear(arena, x, m.w(p + "conv1.weight"), m.w(p + "conv1.bias"), a, m: n, n: hid, k: d)
        Ops.gelu(a, n * hid, arena)
        let b = arena.alloc(n * hid)
        Ops.depthwiseConv(a, h: h, w: h, c: hid, weight: m.w(p + "conv2.weight"), bias: m.w(p + "conv2.bias"), k: 3,
                          stride: 1, pad: 1, out: b, arena: arena)
        Ops.gelu(b, n * hid, arena)
        let o = arena.alloc(n * d)
        Ops.linear(arena, b, m.w(p + "conv3.weight"), m.w(p + "conv3.bias"), o, m: n, n: d, k: hid)
        Ops.add(x, o, n * d)
        Ops.gelu(x, n * d, arena)
        arena.reset(to: mark)
    }

    /// TinyViT block: windowed attention (+ residual), depthwise local conv, MLP (+ residual). In place.
    func block(_ x: UnsafeMutablePointer<Float>, h: Int, d: Int, stage: Int, _ p: String, _ arena: Arena) {
        let heads = c.numHeads[stage], win = c.windowSizes[stage], kd = d / heads
        let n = h * h, nw = (h + win - 1) / win, wn = win * win
        let mark = arena.mark()
        let tok = arena.alloc(wn * d), qkv = arena.alloc(wn * 3 * d), att = arena.alloc(wn * d), proj = arena.alloc(wn * d)
        // The attention bias of a window does not depend on the window: expand it once per block,
        // bias[h][i][j] = attention_biases[h, |yi − yj| · win + |xi − xj|].
        let biases = m.w(p + "attn.attention_biases")
        let bias = arena.alloc(heads * wn * wn)
        for hd in 0..<heads {
            for i in 0..<wn {
                let yi = i / win, xi = i % win
                let row = bias + (hd * wn + i) * wn
                for j in 0..<wn { row[j] = biases[hd * wn + abs(yi - j / win) * win + abs(xi - j % win)] }
            }
        }
        let scale = 1 / Float(kd).squareRoot()
        for wy in 0..<nw {
            for wx in 0..<nw {
                // Gather the window (zero rows where it hangs over the padded border).
                for i in 0..<wn {
                    let y = wy * win + i / win, xx = wx * win + i % win
                    let dst = tok + i * d
                    if y < h && xx < h { dst.update(from: x + (y * h + xx) * d, count: d) } else { dst.initialize(repeating: 0, count: d) }
                }
                Ops.layerNorm(tok, tok, m: wn, c: d, weight: m.w(p + "attn.norm.weight"), bias: m.w(p + "attn.norm.bias"), eps: Self.eps)
                Ops.linear(arena, tok, m.w(p + "attn.qkv.weight"), m.w(p + "attn.qkv.bias"), qkv, m: wn, n: 3 * d, k: d)
                // Per head the qkv columns are [q | k | v], each kd wide (attn_ratio 1).
                Ops.attention(q: qkv, k: qkv, v: qkv, nq: wn, nk: wn, heads: heads, d: kd, dv: kd, ldq: 3 * d, ldk: 3 * d,
                              ldv: 3 * d, qOff: { $0 * 3 * kd }, kOff: { $0 * 3 * kd + kd }, vOff: { $0 * 3 * kd + 2 * kd },
                              scale: scale, bias: { hd, s in Ops.add(s, bias + hd * wn * wn, wn * wn) },
                              out: att, arena: arena)
                Ops.linear(arena, att, m.w(p + "attn.proj.weight"), m.w(p + "attn.proj.bias"), proj, m: wn, n: d, k: d)
                for i in 0..<wn {
                    let y = wy * win + i / win, xx = wx * win + i % win
                    if y < h && xx < h { Ops.add(x + (y * h + xx) * d, proj + i * d, d) }
                }
            }
        }
        arena.reset(to: mark)
        // Local depthwise conv (folded BN), no residual.
        let lc = arena.alloc(n * d)
        let ks = c.localConvSize
        Ops.depthwiseConv(x, h: h, w: h, c: d, weight: m.w(p + "local_conv.weight"), bias: m.w(p + "local_conv.bias"), k: ks,
                          stride: 1, pad: ks / 2, out: lc, arena: arena)
        x.update(from: lc, count: n * d)
        arena.reset(to: mark)
        // MLP with its own LayerNorm, + residual.
        let hid = c.mlpHiddenDims[stage]
        let t = arena.alloc(n * d), a = arena.alloc(n * hid), o = arena.alloc(n * d)
        Ops.layerNorm(x, t, m: n, c: d, weight: m.w(p + "mlp.norm.weight"), bias: m.w(p + "mlp.norm.bias"), eps: Self.eps)
        Ops.linear(arena, t, m.w(p + "mlp.fc1.weight"), m.w(p + "mlp.fc1.bias"), a, m: n, n: hid, k: d)
        Ops.gelu(a, n * hid, arena)
        Ops.linear(arena, a, m.w(p + "mlp.fc2.weight"), m.w(p + "mlp.fc2.bias"), o, m: n, n: d, k: hid)
        Ops.add(x, o, n * d)
        arena.reset(to: mark)
    }
}
