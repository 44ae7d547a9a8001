import PocketSAMKernels

/// The attention half of a TinyViT block on int8 qkv and projection weights, a few windows at a time through one
/// thread's scratch that stays in its L2 cache: layer norm the windows' tokens (zero past the border) and quantize
/// them, the qkv GEMM, window attention, quantize, the projection GEMM, and add the result back into
/// the image's tokens. Done as separate whole-image steps, the qkv (three floats per channel of every padded token)
/// and the projections' input and output went to memory and back, which cost more than the arithmetic in the
/// 49-token windows. Every value is the one the whole-image steps give: each step works row by row (per-row
/// quantization, exact integer sums with the same fp32 epilogue, one window's attention) and each token is added
/// back once, so groups change nothing but where the intermediate rows live.
struct WindowAttentionJob {
    let x: FPtr
    let h: Int, d: Int, win: Int, heads: Int, kd: Int
    let norm: Norm
    let eps: Float
    let qkv: QWeight, qkvBias: CPtr?, proj: QWeight, projBias: CPtr?
    /// The expanded attention bias `[heads][wn][wn]` and the scores' scale.
    let bias: CPtr
    let scale: Float
    let attention: ColumnTask.Kind
    /// Windows per group (one block each) and the floats of one slot's scratch at `scratch + slot · slotFloats`.
    let group: Int
    let scratch: FPtr
    let slotFloats: Int

    var nw: Int { (h + win - 1) / win }
    var wn: Int { win * win }
    var windows: Int { nw * nw }

    /// One slot's scratch, in floats: a zero row (then the attention's output), normalised tokens (then the
    /// projection's output), qkv, the quantized rows, their scales and zero points, the attention kernel's scratch,
    /// the padding tokens' qkv row.
    static func layout(rows: Int, d: Int, kp: Int, attention: Int) -> (tok: Int, ln: Int, qkv: Int, q: Int, scale: Int, zero: Int, att: Int, pad: Int, total: Int) {
        func up(_ n: Int) -> Int { (n + 15) & ~15 }
        let tok = 0, ln = tok + up(rows * d), qkv = ln + up(rows * d), q = qkv + up(rows * 3 * d)
        let scale = q + up((rows * kp + 3) / 4), zero = scale + up(rows), att = zero + up(rows), pad = att + up(attention)
        return (tok, ln, qkv, q, scale, zero, att, pad, pad + up(3 * d))
    }

    /// The `k`-th window in the order the blocks take them: the whole windows first (row by row), then those over the
    /// right border, then the bottom row. The border windows, whose rows are mostly padding, cost less, so the last
    /// blocks handed out are the short ones and the threads finish together.
    @inline(__always)
    func window(_ k: Int) -> (wy: Int, wx: Int) {
        let nf = h / win
        if nf == nw { return (k / nw, k % nw) }
        if k < nf * nf { return (k / nf, k % nf) }
        let r = k - nf * nf
        return r < nf ? (r, nw - 1) : (nw - 1, r - nf)
    }

    /// The `k`-th window's place and its rows and columns of tokens inside the image (the rest are padding).
    @inline(__always)
    func extent(_ k: Int) -> (wy: Int, wx: Int, ny: Int, nx: Int) {
        let (wy, wx) = window(k)
        return (wy, wx, min(win, h - wy * win), min(win, h - wx * win))
    }

    /// Windows over the bottom or right border hold padding tokens (zeros before the layer norm, as PyTorch pads):
    /// they all have the same norm, so the same quantized row and the same qkv row. The layer norm, quantization and
    /// qkv GEMM run over the group's tokens inside the image (in window order, "compact" rows) and one padding row;
    /// the qkv rows are then spread to their window places (the padding row to every padding place), since the
    /// attention takes every key and value of a window. Padding queries' outputs are dropped, so the projection runs
    /// over the compact rows only. Every row's values are those of the whole-window computation: rows are
    /// independent in the layer norm, the quantization and the GEMMs (exact integer sums, the same epilogue).
    func run(block i: Int, slot: Int) {
        let w0 = i * group, w1 = min(windows, w0 + group)
        guard w0 < w1 else { return }
        let rows = (w1 - w0) * wn, kp = max(qkv.kp, proj.kp), d3 = 3 * d
        let l = Self.layout(rows: rows, d: d, kp: kp, attention: Self.attentionScratch(attention, wn: wn, kd: kd))
        let base = scratch + slot * slotFloats
        let tok = base + l.tok, ln = base + l.ln, qkvOut = base + l.qkv, scales = base + l.scale, att = base + l.att
        let q = UnsafeMutableRawPointer(base + l.q).bindMemory(to: UInt8.self, capacity: rows * kp)
        let zero = UnsafeMutableRawPointer(base + l.zero).bindMemory(to: Int32.self, capacity: rows)
        // The layer norm of each window row's tokens inside the image, read in place (contiguous in x).
        var real = 0
        for w in w0..<w1 {
            let e = extent(w)
            for ty in 0..<e.ny {
                psam_layernorm_rows(x + ((e.wy * win + ty) * h + e.wx * win) * d, e.nx, d, d, norm.w, norm.b, eps, ln + real * d, d)
                real += e.nx
            }
        }
        let padded = real < rows
        if padded {
            tok.initialize(repeating: 0, count: d)
            psam_layernorm_rows(tok, 1, d, d, norm.w, norm.b, eps, ln + real * d, d)
        }
        let m1 = real + (padded ? 1 : 0)
        psam_quantize_rows_u8(ln, m1, d, d, q, qkv.kp, scales, zero)
        qkv.gemm(q, scale: scales, zero: zero, m: m1, bias: qkvBias, into: qkvOut, ldc: d3)
        if padded {
            // Spread the compact rows to their window places, last first (a row's place is at or after its compact
            // index, and every row not yet moved lies before the place written), padding places from `pad`.
            let padRow = base + l.pad
            padRow.update(from: qkvOut + real * d3, count: d3)
            var c = real - 1
            for w in (w0..<w1).reversed() {
                let e = extent(w)
                for t in (0..<wn).reversed() {
                    let dst = qkvOut + ((w - w0) * wn + t) * d3
                    if t / win < e.ny && t % win < e.nx {
                        if dst != qkvOut + c * d3 { dst.update(from: qkvOut + c * d3, count: d3) }
                        c -= 1
                    } else {
                        dst.update(from: padRow, count: d3)
                    }
                }
            }
        }
        for w in 0..<(w1 - w0) {
            let a = qkvOut + w * wn * d3, o = tok + w * wn * d
            switch attention {
            case .windowAttentionBF16:
                // Only the queries inside the image (padding queries' outputs are dropped).
                let e = extent(w0 + w)
                if e.nx == win || wn > Int(UInt16.max) {
                    psam_window_attention_bf16_rows(a, d3, wn, e.ny * win, nil, heads, kd, scale, bias, o, d, att)
                } else {
                    withUnsafeTemporaryAllocation(of: UInt16.self, capacity: wn) { rows in
                        var nq = 0
                        for ty in 0..<e.ny {
                            for tx in 0..<e.nx {
                                rows[nq] = UInt16(ty * win + tx)
                                nq += 1
                            }
                        }
                        psam_window_attention_bf16_rows(a, d3, wn, nq, rows.baseAddress, heads, kd, scale, bias, o, d, att)
                    }
                }
            case .windowAttentionFP16: psam_window_attention_fp16(a, d3, wn, heads, kd, scale, bias, o, d, att)
            default: psam_window_attention(a, d3, wn, heads, kd, scale, bias, o, d, att)
            }
        }
        if padded {
            // The outputs of the tokens inside the image to compact rows, first first (a row's compact index is at
            // or before its place).
            var c = 0
            for w in w0..<w1 {
                let e = extent(w)
                for ty in 0..<e.ny {
                    for tx in 0..<e.nx {
                        let src = tok + ((w - w0) * wn + ty * win + tx) * d
                        if src != tok + c * d { (tok + c * d).update(from: src, count: d) }
                        c += 1
                    }
                }
            }
        }
        psam_quantize_rows_u8(tok, real, d, d, q, proj.kp, scales, zero)
        proj.gemm(q, scale: scales, zero: zero, m: real, bias: projBias, into: ln, ldc: d)
        // Add back the tokens inside the image (each belongs to exactly one window), a window row at a time.
        var c = 0
        for w in w0..<w1 {
            let e = extent(w)
            for ty in 0..<e.ny {
                let dst = x + ((e.wy * win + ty) * h + e.wx * win) * d
                psam_add_rows(dst, dst, ln + c * d, e.nx * d)
                c += e.nx
            }
        }
    }

    /// Scratch floats of one window's attention kernel.
    static func attentionScratch(_ attention: ColumnTask.Kind, wn: Int, kd: Int) -> Int {
        switch attention {
        case .windowAttentionBF16: return psam_window_attention_bf16_scratch(wn, kd)
        case .windowAttentionFP16: return psam_window_attention_fp16_scratch(wn, kd)
        default: return wn * wn + kd * wn
        }
    }
}

extension Ops {
    /// Runs `blocks` blocks of `job` on the session's threads (`kind` names its type for `ColumnTask.run`).
    static func runJob<J>(_ ctx: Arena, _ job: inout J, kind: ColumnTask.Kind, blocks: Int) {
        withUnsafeMutablePointer(to: &job) { jp in
            var t = ColumnTask(kind: kind, a: nil, b: nil, c: ctx.alloc(0), bias: nil, m: 0, n: 0, k: 0, lda: 0, ldb: 0, ldc: 0)
            t.context = UnsafeMutableRawPointer(jp)
            ctx.parallelBlocks(&t, blocks: blocks)
        }
    }

    /// Threads that the block jobs have scratch for (a slot per thread, `Arena.slots`; the planned arena holds
    /// this many); a session with more threads takes the whole-image steps or runs the blocks on the calling thread.
    static let windowSlots = 8

    /// Windows per group: as many as have about 320 KB of fp32 qkv (at least one), so that a group's rows (tokens,
    /// normalised tokens, qkv, quantized rows: about 5·d floats per token) stay within a core's L2 cache.
    static let windowGroupQKVBytes = 320 << 10

    /// TinyViT's attention (+ residual) on the tokens `x[h, h, d]` in place, for int8 `qkv` and `proj` (see
    /// `WindowAttentionJob`). `bias`: the expanded attention bias. Returns false (doing nothing) when the session
    /// has more threads than `windowSlots`.
    static func windowAttentionInt8(_ ctx: Arena, _ x: FPtr, h: Int, d: Int, win: Int, heads: Int, kd: Int, norm: Norm, eps: Float,
                                    qkv: Lin, proj: Lin, bias: CPtr) -> Bool {
        guard let q = qkv.q, let p = proj.q, ctx.threads <= windowSlots else { return false }
        precondition(q.n == 3 * d && q.k == d && p.n == d && p.k == d, "int8 attention weights [\(q.n), \(q.k)], [\(p.n), \(p.k)] for width \(d)")
        let wn = win * win, nw = (h + win - 1) / win, windows = nw * nw
        var kind = ColumnTask.Kind.windowAttention
        if psam_window_attention_fp16_fast(kd) != 0 {
            kind = .windowAttentionFP16
        } else if psam_window_attention_bf16_fast(kd) != 0 {
            kind = .windowAttentionBF16
        }
        let group = max(1, min(windows, windowGroupQKVBytes / (wn * 3 * d * 4)))
        let mark = ctx.mark()
        let slotFloats = WindowAttentionJob.layout(rows: group * wn, d: d, kp: max(q.kp, p.kp),
                                                   attention: WindowAttentionJob.attentionScratch(kind, wn: wn, kd: kd)).total
        var job = WindowAttentionJob(x: x, h: h, d: d, win: win, heads: heads, kd: kd, norm: norm, eps: eps, qkv: q, qkvBias: qkv.b,
                                     proj: p, projBias: proj.b, bias: bias, scale: 1 / Float(kd).squareRoot(), attention: kind,
                                     group: group, scratch: ctx.alloc(ctx.slots * slotFloats), slotFloats: slotFloats)
        let T = windows * wn
        ctx.macs &+= T * 3 * d * d + windows * heads * wn * wn * kd * 2 + T * d * d
        runJob(ctx, &job, kind: .windowBlock, blocks: (windows + group - 1) / group)
        ctx.reset(to: mark)
        return true
    }
}

/// The local conv and MLP half of a TinyViT block on int8 fc1 and fc2 weights, `rows` tokens (whole image rows) at a
/// time through one thread's scratch: the local conv `lc` of those rows, layer norm and quantize, fc1 with GELU,
/// quantize, fc2, and `x = lc + fc2`. As whole-image steps `lc` and the fc2 output went to memory and were read
/// back for the norm and the residual add. The same values as those steps (per-pixel depthwise sums, row-wise work,
/// exact integer sums, the same fp32 epilogues and the same single add).
struct MLPJob {
    /// Where `lc + MLP(lc)` goes.
    let x: FPtr
    let m: Int, d: Int, hid: Int
    let norm: Norm
    let eps: Float
    let fc1: QWeight, fc1Bias: CPtr?, fc2: QWeight, fc2Bias: CPtr?
    /// TinyViT's local conv, made here a block of image rows at a time from the block's input `[h, h, d]` (read
    /// only: the output goes to another buffer): depthwise k × k weights tap-major `[k²][d]`, bias. `rows` is a
    /// multiple of h. Without it (SAM ViT's MLP) the input is `x` itself: `x += fc2(GELU(fc1(LN(x))))`.
    let local: (x: CPtr, h: Int, w: CPtr, b: CPtr?, k: Int)?
    let gelu: Int32
    /// Rows per block; one slot's scratch at `scratch + slot · slotFloats`.
    let rows: Int
    let scratch: FPtr
    let slotFloats: Int

    /// One slot's scratch, in floats: normalised rows (then fc2's output), fc1's output, the quantized rows, their
    /// scales and zero points, the local conv's output rows.
    static func layout(rows: Int, d: Int, hid: Int, kp: Int) -> (ln: Int, h: Int, q: Int, scale: Int, zero: Int, lc: Int, total: Int) {
        func up(_ n: Int) -> Int { (n + 15) & ~15 }
        let ln = 0, h = ln + up(rows * d), q = h + up(rows * hid), scale = q + up((rows * kp + 3) / 4), zero = scale + up(rows)
        let lc = zero + up(rows)
        return (ln, h, q, scale, zero, lc, lc + up(rows * d))
    }

    func run(block i: Int, slot: Int) {
        let r0 = i * rows, r1 = min(m, r0 + rows)
        guard r0 < r1 else { return }
        let n = r1 - r0, kp = max(fc1.kp, fc2.kp)
        let l = Self.layout(rows: rows, d: d, hid: hid, kp: kp)
        let base = scratch + slot * slotFloats
        let ln = base + l.ln, hb = base + l.h, scales = base + l.scale
        let q = UnsafeMutableRawPointer(base + l.q).bindMemory(to: UInt8.self, capacity: rows * kp)
        let zero = UnsafeMutableRawPointer(base + l.zero).bindMemory(to: Int32.self, capacity: rows)
        // The MLP's input: the local conv of image rows [r0 / h, r1 / h) (the kernel indexes output rows from the
        // image's top, so the destination is shifted back; nothing is written there), or x's rows.
        var input = UnsafePointer(x + r0 * d)
        if let local {
            let lcb = base + l.lc, y0 = r0 / local.h, y1 = (r1 + local.h - 1) / local.h
            psam_depthwise_rows(local.x, local.h, local.h, d, local.w, local.b, local.k, 1, local.k / 2, lcb - y0 * local.h * d,
                                local.h, y0, y1, 0)
            input = UnsafePointer(lcb)
        }
        psam_layernorm_rows(input, n, d, d, norm.w, norm.b, eps, ln, d)
        psam_quantize_rows_u8(ln, n, d, d, q, fc1.kp, scales, zero)
        fc1.gemm(q, scale: scales, zero: zero, m: n, bias: fc1Bias, into: hb, ldc: hid, gelu: gelu)
        psam_quantize_rows_u8(hb, n, hid, hid, q, fc2.kp, scales, zero)
        fc2.gemm(q, scale: scales, zero: zero, m: n, bias: fc2Bias, into: ln, ldc: d)
        psam_add_rows(x + r0 * d, input, ln, n * d)
    }
}

extension Ops {
    /// Tokens per block of `localMLPInt8` (rounded to whole image rows): fc1's output for them (hid floats a token)
    /// stays in L1/L2.
    static let mlpRows = 64

    /// TinyViT's MLP with its residual, `x = lc + fc2(GELU(fc1(LN(lc))))` over `m` tokens, for int8 fc1 and fc2 (see
    /// `MLPJob`). Returns false (doing nothing) when the session has more threads than `windowSlots`.
    /// TinyViT's local conv and MLP with its residual: `y = lc + fc2(GELU(fc1(LN(lc))))`, `lc = local(x)`, for
    /// `x[h, h, d]` (read only) into `y`, on int8 fc1 and fc2, a few image rows at a time (see `MLPJob`). Returns
    /// false (doing nothing) when the session has more threads than `windowSlots`.
    /// Whether `localMLPInt8` runs (and so writes into a second buffer) for these weights.
    static func localMLPTiles(_ ctx: Arena, fc1: Lin, fc2: Lin) -> Bool {
        fc1.q != nil && fc2.q != nil && ctx.threads <= windowSlots
    }

    static func localMLPInt8(_ ctx: Arena, _ x: CPtr, into y: FPtr, h: Int, d: Int, hid: Int, local: Lin, k: Int, norm: Norm, eps: Float,
                             fc1: Lin, fc2: Lin) -> Bool {
        guard localMLPTiles(ctx, fc1: fc1, fc2: fc2), let q1 = fc1.q, let q2 = fc2.q else { return false }
        precondition(q1.n == hid && q1.k == d && q2.n == d && q2.k == hid, "int8 MLP weights [\(q1.n), \(q1.k)], [\(q2.n), \(q2.k)] for \(d), \(hid)")
        let m = h * h, mark = ctx.mark()
        // Whole image rows per block, about mlpRows tokens.
        let rows = max(1, mlpRows / h) * h
        let slotFloats = MLPJob.layout(rows: rows, d: d, hid: hid, kp: max(q1.kp, q2.kp)).total
        let wt = ctx.alloc(k * k * d)
        for j in 0..<d { for t in 0..<(k * k) { wt[t * d + j] = local.w[j * k * k + t] } }
        var job = MLPJob(x: y, m: m, d: d, hid: hid, norm: norm, eps: eps, fc1: q1, fc1Bias: fc1.b, fc2: q2, fc2Bias: fc2.b,
                         local: (x, h, UnsafePointer(wt), local.b, k), gelu: intGELU, rows: rows,
                         scratch: ctx.alloc(ctx.slots * slotFloats), slotFloats: slotFloats)
        ctx.macs &+= m * d * k * k + 2 * m * d * hid
        runJob(ctx, &job, kind: .mlpBlock, blocks: (m + rows - 1) / rows)
        ctx.reset(to: mark)
        return true
    }

    /// SAM ViT's MLP with its residual, `x += lin2(GELU(lin1(LN(x))))` over `m` tokens in place, on int8 lin1 and
    /// lin2, `mlpRows` tokens at a time (see `MLPJob`): the hidden activations (`m × hid` floats, 84 MB for ViT-H)
    /// only ever exist a block at a time. Returns false (doing nothing) when the session has more threads than
    /// `windowSlots`.
    static func mlpInt8(_ ctx: Arena, _ x: FPtr, m: Int, d: Int, hid: Int, norm: Norm, eps: Float, fc1: Lin, fc2: Lin) -> Bool {
        guard let q1 = fc1.q, let q2 = fc2.q, ctx.threads <= windowSlots else { return false }
        precondition(q1.n == hid && q1.k == d && q2.n == d && q2.k == hid, "int8 MLP weights [\(q1.n), \(q1.k)], [\(q2.n), \(q2.k)] for \(d), \(hid)")
        let mark = ctx.mark(), rows = mlpRows
        let slotFloats = MLPJob.layout(rows: rows, d: d, hid: hid, kp: max(q1.kp, q2.kp)).total
        var job = MLPJob(x: x, m: m, d: d, hid: hid, norm: norm, eps: eps, fc1: q1, fc1Bias: fc1.b, fc2: q2, fc2Bias: fc2.b,
                         local: nil, gelu: intGELU, rows: rows, scratch: ctx.alloc(ctx.slots * slotFloats), slotFloats: slotFloats)
        ctx.macs &+= 2 * m * d * hid
        runJob(ctx, &job, kind: .mlpBlock, blocks: (m + rows - 1) / rows)
        ctx.reset(to: mark)
        return true
    }
}

/// `TinyViTEncoder.expandProject` (1×1 conv `conv1` with GELU → depthwise 3×3 with GELU → 1×1 conv `conv3`) on
/// integer kernels, a tile of output columns and a few output rows at a time through one thread's scratch: conv1 for
/// the tile's input pixels (the 3×3 taps' one-pixel halo included; zero outside the image, as the depthwise conv
/// pads), the depthwise conv quantizing its output for conv3, conv3 into `out`. The expansion (`hid` channels at
/// full resolution, 64 MB at LiteMedSAM's stage 0) stays in L2 instead of going to memory and back. Each tile
/// keeps its last input rows for the next chunk of output rows, so only the column halos (and one row per band)
/// are computed twice. Every value is the whole image's: conv1 rows are per pixel (per-row quantization, exact
/// integer sums), the depthwise conv's taps run in the same order (the zero halo's taps add exact zeros), and
/// conv3's rows are per pixel.
struct ExpandJob {
    let x: CPtr
    let h: Int, cin: Int, hid: Int, cout: Int, stride: Int, ho: Int
    /// conv1 and conv3 each as int8 (`q1`, `q3`) or int16 (`s1`, `s3`).
    let q1: QWeight?, s1: S16Weight?, b1: CPtr?
    /// The depthwise conv's weights `[9][hid]` and bias.
    let w2: CPtr, b2: CPtr?
    let q3: QWeight?, s3: S16Weight?, b3: CPtr?
    let out: FPtr
    /// MBConv's shortcut: with it, `out = GELU(residual + conv3)` (exact GELU, as `Ops.add` with `gelu`).
    let residual: CPtr?
    let gelu: Int32
    /// Output columns per tile, output rows per band (one block = one tile of one band), per chunk.
    let tileW: Int, bandRows: Int, chunkRows: Int
    let scratch: FPtr
    let slotFloats: Int

    var tiles: Int { (ho + tileW - 1) / tileW }
    var inW: Int { stride * (tileW - 1) + 3 }
    var inRows: Int { stride * (chunkRows - 1) + 3 }
    var kp1: Int { q1?.kp ?? s1?.kp ?? cin }
    var kp3: Int { q3?.kp ?? s3?.kp ?? hid }

    /// One slot's scratch, in floats: the expansion's input rows of a chunk, conv1's quantized input (the chunk's
    /// input pixels), conv3's quantized input (the chunk's pixels, u8 or int16), their scales and zero points, a
    /// depthwise row, and for an int16 conv3 the depthwise conv's fp32 output (the chunk's pixels).
    static func layout(inRows: Int, inW: Int, hid: Int, kp1: Int, pixels: Int, kp3: Int, f32: Bool) -> (e: Int, a1: Int, s1: Int, z1: Int, a3: Int, s3: Int, z3: Int, row: Int, f: Int, total: Int) {
        func up(_ n: Int) -> Int { (n + 15) & ~15 }
        let e = 0, a1 = e + up(inRows * inW * hid), s1 = a1 + up((inRows * inW * kp1 * 2 + 3) / 4), z1 = s1 + up(inRows * inW)
        let a3 = z1 + up(inRows * inW)
        let s3 = a3 + up((pixels * kp3 * 2 + 3) / 4), z3 = s3 + up(pixels), row = z3 + up(pixels), f = row + up(hid)
        return (e, a1, s1, z1, a3, s3, z3, row, f, f + (f32 ? up(pixels * hid) : 0))
    }

    func run(block i: Int, slot: Int) {
        let band = i / tiles, tile = i % tiles
        let oy0 = band * bandRows, oy1 = min(ho, oy0 + bandRows), ox0 = tile * tileW, ox1 = min(ho, ox0 + tileW)
        guard oy0 < oy1, ox0 < ox1 else { return }
        let tw = ox1 - ox0, iw = stride * (tw - 1) + 3, ix0 = stride * ox0 - 1
        let l = Self.layout(inRows: inRows, inW: inW, hid: hid, kp1: kp1, pixels: chunkRows * tileW, kp3: kp3, f32: s3 != nil)
        let base = scratch + slot * slotFloats
        let e = base + l.e, scales1 = base + l.s1, scales3 = base + l.s3, row = base + l.row
        let z3 = UnsafeMutableRawPointer(base + l.z3).bindMemory(to: Int32.self, capacity: chunkRows * tileW)
        // Input pixels of the image inside the tile's columns.
        let c0 = max(0, ix0), c1 = min(h, ix0 + iw)
        var have = 0, haveFrom = 0  // input rows already in `e` (image rows [haveFrom, haveFrom + have))
        var cy0 = oy0
        while cy0 < oy1 {
            let cy1 = min(oy1, cy0 + chunkRows), r0 = stride * cy0 - 1, nr = stride * (cy1 - 1 - cy0) + 3
            // Keep the rows this chunk shares with the last one (moved to the top), make the others.
            var keep = 0
            if have > 0 && haveFrom + have > r0 && r0 >= haveFrom {
                keep = haveFrom + have - r0
                (e).update(from: e + (r0 - haveFrom) * iw * hid, count: keep * iw * hid)
            }
            // Rows inside the image: one GEMM for all of them where the tile is inside the image's columns (their
            // pixels then follow each other in `e`), else one per row between the zero halo columns.
            let ra = max(keep, -r0), rb = min(nr, h - r0)
            for r in keep..<nr where r < ra || r >= rb || c0 >= c1 { (e + r * iw * hid).initialize(repeating: 0, count: iw * hid) }
            if ra < rb && c0 < c1 {
                if c0 == ix0 && c1 == ix0 + iw {
                    conv1(rows: (r0 + ra)..<(r0 + rb), c0: c0, n: iw, into: e + ra * iw * hid, base: base, l.a1, l.z1, scales1)
                } else {
                    for r in ra..<rb {
                        let dst = e + r * iw * hid
                        if c0 > ix0 { dst.initialize(repeating: 0, count: (c0 - ix0) * hid) }
                        if ix0 + iw > c1 { (dst + (c1 - ix0) * hid).initialize(repeating: 0, count: (ix0 + iw - c1) * hid) }
                        conv1(rows: (r0 + r)..<(r0 + r + 1), c0: c0, n: c1 - c0, into: dst + (c0 - ix0) * hid, base: base, l.a1, l.z1,
                              scales1)
                    }
                }
            }
            have = nr
            haveFrom = r0
            // Depthwise 3×3 (stride, no padding on the tile: its halo holds the zeros): for an int8 conv3 quantized
            // at once (the integer path's GELU), for an int16 one fp32 rows (exact GELU, as `Ops.depthwiseConv`) then
            // quantized.
            let pixels = (cy1 - cy0) * tw
            if let q3 {
                let a3 = UnsafeMutableRawPointer(base + l.a3).bindMemory(to: UInt8.self, capacity: chunkRows * tileW * q3.kp)
                psam_depthwise_rows_u8(e, nr, iw, hid, w2, b2, 3, stride, 0, tw, 0, cy1 - cy0, gelu, row, a3, q3.kp, scales3, z3)
            } else if let s3 {
                let a3 = UnsafeMutableRawPointer(base + l.a3).bindMemory(to: Int16.self, capacity: chunkRows * tileW * s3.kp)
                psam_depthwise_rows(e, nr, iw, hid, w2, b2, 3, stride, 0, base + l.f, tw, 0, cy1 - cy0, 1)
                psam_quantize_rows_s16(base + l.f, pixels, hid, hid, a3, s3.kp, scales3)
            }
            for yy in 0..<(cy1 - cy0) {
                if let q3 {
                    let a3 = UnsafeMutableRawPointer(base + l.a3).bindMemory(to: UInt8.self, capacity: chunkRows * tileW * q3.kp)
                    q3.gemm(a3 + yy * tw * q3.kp, scale: scales3 + yy * tw, zero: z3 + yy * tw, m: tw, bias: b3,
                            into: out + ((cy0 + yy) * ho + ox0) * cout, ldc: cout)
                } else if let s3 {
                    let a3 = UnsafeMutableRawPointer(base + l.a3).bindMemory(to: Int16.self, capacity: chunkRows * tileW * s3.kp)
                    s3.gemm(a3 + yy * tw * s3.kp, scale: scales3 + yy * tw, m: tw, bias: b3, into: out + ((cy0 + yy) * ho + ox0) * cout,
                            ldc: cout)
                }
                if let residual {
                    let o = out + ((cy0 + yy) * ho + ox0) * cout
                    psam_add_rows(o, residual + ((cy0 + yy) * ho + ox0) * cout, o, tw * cout)
                    psam_gelu_rows(o, tw * cout)
                }
            }
            cy0 = cy1
        }
    }

    /// conv1 with GELU on the `n` pixels from column `c0` of each image row in `rows` (cin channels each) into `o`
    /// (hid channels each, row after row).
    func conv1(rows: Range<Int>, c0: Int, n: Int, into o: FPtr, base: FPtr, _ qa: Int, _ qz: Int, _ scales: FPtr) {
        let m = rows.count * n
        if let s1 {
            let q = UnsafeMutableRawPointer(base + qa).bindMemory(to: Int16.self, capacity: m * s1.kp)
            for (k, y) in rows.enumerated() {
                psam_quantize_rows_s16(x + (y * h + c0) * cin, n, cin, cin, q + k * n * s1.kp, s1.kp, scales + k * n)
            }
            s1.gemm(q, scale: scales, m: m, bias: b1, into: o, ldc: hid, gelu: gelu)
        } else if let q1 {
            let q = UnsafeMutableRawPointer(base + qa).bindMemory(to: UInt8.self, capacity: m * q1.kp)
            let z = UnsafeMutableRawPointer(base + qz).bindMemory(to: Int32.self, capacity: m)
            for (k, y) in rows.enumerated() {
                psam_quantize_rows_u8(x + (y * h + c0) * cin, n, cin, cin, q + k * n * q1.kp, q1.kp, scales + k * n, z + k * n)
            }
            q1.gemm(q, scale: scales, zero: z, m: m, bias: b1, into: o, ldc: hid, gelu: gelu)
        }
    }
}

extension Ops {
    /// `TinyViTEncoder.expandProject` on integer kernels in tiles (see `ExpandJob`), when conv1 and conv3 are int8 or
    /// int16 and the session has at most `windowSlots` threads; returns false (doing nothing) otherwise.
    /// With `residual` (MBConv: `x` itself, cin = cout, stride 1), `out = GELU(x + conv3(…))`.
    /// Whether `expandProjectTiled` runs (and so needs an output buffer apart from its input) for these weights.
    static func expandProjectTiles(_ ctx: Arena, conv1: Lin, conv3: Lin, stride: Int) -> Bool {
        (conv3.q != nil || conv3.s != nil) && (conv1.q != nil || conv1.s != nil) && ctx.threads <= windowSlots
            && (stride == 1 || stride == 2)
    }

    static func expandProjectTiled(_ ctx: Arena, _ x: CPtr, h: Int, cin: Int, hid: Int, cout: Int, stride: Int, conv1: Lin, conv2: Lin,
                                   conv3: Lin, out: FPtr, residual: CPtr? = nil) -> Bool {
        guard expandProjectTiles(ctx, conv1: conv1, conv3: conv3, stride: stride) else { return false }
        let s3 = conv3.q == nil ? conv3.s : nil
        let n1 = conv1.q?.n ?? conv1.s?.n, k1 = conv1.q?.k ?? conv1.s?.k, n3 = conv3.q?.n ?? s3?.n, k3 = conv3.q?.k ?? s3?.k
        precondition(n1 == hid && k1 == cin && n3 == cout && k3 == hid, "expansion weights for \(cin) → \(hid) → \(cout) channels")
        let ho = (h + 2 - 3) / stride + 1
        // Tiles of 64 output columns (32 at stride 2: about 65 input columns either way; at most half the image, so
        // that small images have two), chunks of 4 output rows (6 or 9 input rows: about 400 or 600 KB of expansion
        // at 256 or 128 channels), and bands of rows (at most 64) for at least 8 blocks.
        let tileW = min(ho, stride == 1 ? 64 : 32, max(16, ho / 2)), chunkRows = 4
        let tiles = (ho + tileW - 1) / tileW, bands = max(1, (8 + tiles - 1) / tiles)
        let bandRows = min(64, (((ho + bands - 1) / bands) + chunkRows - 1) / chunkRows * chunkRows)
        let inW = stride * (tileW - 1) + 3, inRows = stride * (chunkRows - 1) + 3
        let kp1 = conv1.q?.kp ?? conv1.s?.kp ?? cin
        let kp3 = conv3.q?.kp ?? s3?.kp ?? hid
        let slotFloats = ExpandJob.layout(inRows: inRows, inW: inW, hid: hid, kp1: kp1, pixels: chunkRows * tileW, kp3: kp3, f32: s3 != nil).total
        let mark = ctx.mark()
        // The depthwise weights tap-major, [9][hid], as the kernel reads them (PyTorch's are [hid][9]).
        let w2 = ctx.alloc(9 * hid)
        for j in 0..<hid { for t in 0..<9 { w2[t * hid + j] = conv2.w[j * 9 + t] } }
        var job = ExpandJob(x: x, h: h, cin: cin, hid: hid, cout: cout, stride: stride, ho: ho, q1: conv1.q, s1: conv1.q == nil ? conv1.s : nil,
                            b1: conv1.b, w2: w2, b2: conv2.b, q3: conv3.q, s3: s3, b3: conv3.b, out: out, residual: residual, gelu: intGELU, tileW: tileW,
                            bandRows: bandRows, chunkRows: chunkRows, scratch: ctx.alloc(ctx.slots * slotFloats), slotFloats: slotFloats)
        ctx.macs &+= h * h * hid * cin &+ ho * ho * hid * 9 &+ ho * ho * cout * hid
        runJob(ctx, &job, kind: .expandBlock, blocks: job.tiles * ((ho + bandRows - 1) / bandRows))
        ctx.reset(to: mark)
        return true
    }
}

/// A k × k convolution (`Ops.conv2d`) on an int8 or int16 weight, `rows` output pixels at a time through one thread's
/// scratch: their im2col rows a few at a time into a small fp32 buffer, quantized at once, then the GEMM with bias and
/// GELU into `out`. As whole-image steps the fp32 im2col (9·cin floats per pixel: 38 MB for the neck's 3 × 3 conv)
/// went to memory and back before quantizing. The same values (im2col and quantization per row, exact sums).
struct ConvJob {
    let x: CPtr
    let h: Int, w: Int, cin: Int, k: Int, stride: Int, pad: Int, wo: Int, pixels: Int
    let q: QWeight?, s: S16Weight?, bias: CPtr?
    let cout: Int
    let gelu: Int32
    /// Output pixels [first, first + pixels) are computed; `out` holds them from its row 0.
    let first: Int
    let out: FPtr
    /// Output pixels per block (the GEMM's rows), im2col rows per pass through the fp32 buffer.
    let rows: Int, pass: Int
    let scratch: FPtr
    let slotFloats: Int

    var kk: Int { cin * k * k }
    var kp: Int { q?.kp ?? s?.kp ?? kk }

    /// One slot's scratch, in floats: the fp32 im2col rows of a pass, the block's quantized rows (u8 or int16), their
    /// scales and zero points.
    static func layout(rows: Int, pass: Int, kk: Int, kp: Int) -> (col: Int, qa: Int, scale: Int, zero: Int, total: Int) {
        func up(_ n: Int) -> Int { (n + 15) & ~15 }
        let col = 0, qa = col + up(pass * kk), scale = qa + up((rows * kp * 2 + 3) / 4), zero = scale + up(rows)
        return (col, qa, scale, zero, zero + up(rows))
    }

    func run(block i: Int, slot: Int) {
        let p0 = first + i * rows, p1 = min(first + pixels, p0 + rows)
        guard p0 < p1 else { return }
        let l = Self.layout(rows: rows, pass: pass, kk: kk, kp: kp)
        let base = scratch + slot * slotFloats, col = base + l.col, scales = base + l.scale
        let zero = UnsafeMutableRawPointer(base + l.zero).bindMemory(to: Int32.self, capacity: rows)
        var p = p0
        while p < p1 {
            let n = min(pass, p1 - p), r = p - p0
            psam_im2col(x, h, w, cin, k, stride, pad, wo, p, p + n, col, kk)
            if let s {
                let qa = UnsafeMutableRawPointer(base + l.qa).bindMemory(to: Int16.self, capacity: rows * s.kp)
                psam_quantize_rows_s16(col, n, kk, kk, qa + r * s.kp, s.kp, scales + r)
            } else if let q {
                let qa = UnsafeMutableRawPointer(base + l.qa).bindMemory(to: UInt8.self, capacity: rows * q.kp)
                psam_quantize_rows_u8(col, n, kk, kk, qa + r * q.kp, q.kp, scales + r, zero + r)
            }
            p += n
        }
        let m = p1 - p0
        if let s {
            let qa = UnsafeMutableRawPointer(base + l.qa).bindMemory(to: Int16.self, capacity: rows * s.kp)
            s.gemm(qa, scale: scales, m: m, bias: bias, into: out + (p0 - first) * cout, ldc: cout, gelu: gelu)
        } else if let q {
            let qa = UnsafeMutableRawPointer(base + l.qa).bindMemory(to: UInt8.self, capacity: rows * q.kp)
            q.gemm(qa, scale: scales, zero: zero, m: m, bias: bias, into: out + (p0 - first) * cout, ldc: cout, gelu: gelu)
        }
    }
}

extension Ops {
    /// `conv2d` on an int8 or int16 weight through per-thread scratch (see `ConvJob`); false (doing nothing) for fp32
    /// weights, under the calibration hook, or with more threads than `windowSlots`.
    static func conv2dTiled(_ ctx: Arena, _ x: CPtr, h: Int, w: Int, cin: Int, weight: Lin, cout: Int, k: Int, stride: Int, pad: Int,
                            out: FPtr, gelu: Bool, pixels: Range<Int>) -> Bool {
        let s = weight.q == nil ? weight.s : nil
        guard weight.q != nil || s != nil, ctx.linearInputHook == nil, ctx.threads <= windowSlots else { return false }
        let wo = (w + 2 * pad - k) / stride + 1, kk = cin * k * k
        if let q = weight.q { precondition(q.n == cout && q.k == kk, "int8 conv weight [\(q.n), \(q.k)] used as [\(cout), \(kk)]") }
        if let s { precondition(s.n == cout && s.k == kk, "int16 conv weight [\(s.n), \(s.k)] used as [\(cout), \(kk)]") }
        // 64 pixels per block; im2col passes of about 64 KB of floats.
        let rows = 64, pass = max(1, min(rows, (16 << 10) / kk))
        let kp = weight.q?.kp ?? s?.kp ?? kk
        let slotFloats = ConvJob.layout(rows: rows, pass: pass, kk: kk, kp: kp).total
        let mark = ctx.mark()
        var job = ConvJob(x: x, h: h, w: w, cin: cin, k: k, stride: stride, pad: pad, wo: wo, pixels: pixels.count, q: weight.q, s: s,
                          bias: weight.b, cout: cout, gelu: gelu ? intGELU : 0, first: pixels.lowerBound, out: out, rows: rows,
                          pass: pass, scratch: ctx.alloc(ctx.slots * slotFloats), slotFloats: slotFloats)
        ctx.macs &+= pixels.count * cout * kk
        runJob(ctx, &job, kind: .convBlock, blocks: (pixels.count + rows - 1) / rows)
        ctx.reset(to: mark)
        return true
    }
}
