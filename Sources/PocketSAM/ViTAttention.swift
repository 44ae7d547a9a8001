import COpenBLAS
import PocketSAMKernels

/// SAM ViT's multi-head attention with decomposed relative positions, as blocks of independent work on the session's
/// threads, each through one thread's scratch: no score matrix bigger than one block's exists.
///
/// - Windowed blocks: a block is one window and one head. The window's query, key and value rows are gathered from
///   the image's qkv rows (tokens past the right or bottom border take the padding row: SAM pads with zeros after
///   norm1, so every padding token has the qkv of a zero row), then `wn × wn` scores, the relative terms, softmax and
///   the weighted values; only the outputs of tokens inside the image are written.
/// - Global blocks: a block is one head and `queryRows` queries against every key, read in place (rows of
///   `qkv` are 3·E apart): a `queryRows × n` score block (1 MB at SAM's sizes) instead of the `n × n` matrix per head
///   (64 MB).
///
/// The relative terms are the queries' products with `rel_pos_h` / `rel_pos_w` (`[rows, 2·side − 1]`), added per
/// score by `psam_relpos_add`: never expanded to `[n, n]` per head.
///
/// With `bf16` (int8 models on a CPU with AVX-512 BF16, as TinyViT's windows) the products run in
/// `psam_vit_attention_bf16` (q·scale, k, v and the probabilities rounded to bf16, fp32 sums: twice the fp32 rate),
/// and a global block is one head and a chunk of its queries (`chunks` per head: as few as keep every thread busy,
/// so that the head's keys and values are packed as seldom as possible), in 64-query steps.
struct ViTAttentionJob {
    /// `[n + 1][3·E]`: per token `[q | k | v]`, head h at columns h·hd of each; row n is the padding row (windowed
    /// blocks whose windows hang over the border).
    let qkv: CPtr
    /// Grid side (n = g²), window side (g for a global block).
    let g: Int, ws: Int
    let global: Bool
    let E: Int, heads: Int, hd: Int
    /// `[2·ws − 1][hd]`.
    let relH: CPtr, relW: CPtr
    let scale: Float
    /// `[n][E]`: head h's output at columns h·hd.
    let out: FPtr
    let scratch: FPtr
    let slotFloats: Int
    let bf16: Bool
    /// bf16 global blocks per head.
    let chunks: Int

    /// Queries per step of a global attention.
    static let queryRows = 64
    /// Queries whose relative terms a bf16 global block computes at once (a multiple of `queryRows`).
    static let termRows = 512

    /// bf16 global blocks per head for `threads` threads: 1 where the heads divide among the threads, else enough
    /// that the blocks do (12 heads on 8 threads: 2).
    static func chunksPerHead(heads: Int, threads: Int) -> Int {
        var (a, b) = (heads, max(threads, 1))
        while b != 0 { (a, b) = (b, a % b) }
        return max(1, threads / max(a, 1))
    }

    var n: Int { g * g }
    var windowsPerSide: Int { (g + ws - 1) / ws }
    /// Queries per global block: 64, or in bf16 a chunk of whole `termRows` groups (so that the groups, and the
    /// relative terms' products, are the same whatever the thread count).
    var blockRows: Int {
        guard bf16 else { return Self.queryRows }
        let groups = (n + Self.termRows - 1) / Self.termRows
        return (groups + chunks - 1) / chunks * Self.termRows
    }
    var queryBlocks: Int { (n + blockRows - 1) / blockRows }
    var blocks: Int { global ? heads * queryBlocks : windowsPerSide * windowsPerSide * heads }

    /// Floats of one slot's scratch.
    static func slotFloats(g: Int, ws: Int, global: Bool, hd: Int, bf16: Bool) -> Int {
        let r = 2 * ws - 1
        if bf16 {
            let rows = global ? queryRows : ws * ws
            let own = global ? 0 : 4 * rows * hd
            return own + psam_vit_attention_bf16_packed_floats(ws, hd) + psam_vit_attention_bf16_scratch(rows, ws, hd)
                + 2 * (global ? termRows : rows) * r
        }
        if global { return queryRows * (g * g) + 2 * queryRows * r }
        let wn = ws * ws
        return 4 * wn * hd + wn * wn + 2 * wn * r
    }

    /// Multiply-accumulates of the whole attention (scores, weighted values, relative terms).
    var macs: Int {
        let r = 2 * ws - 1
        let tokens = global ? n : windowsPerSide * windowsPerSide * ws * ws
        let keys = global ? n : ws * ws
        return heads * tokens * (2 * keys * hd + 2 * r * hd)
    }

    func run(block i: Int, slot: Int) {
        if global { runGlobal(i, scratch + slot * slotFloats) } else { runWindow(i, scratch + slot * slotFloats) }
    }

    private func runGlobal(_ i: Int, _ base: FPtr) {
        if bf16 { return runGlobalBF16(i, base) }
        let h = i / queryBlocks, q0 = (i % queryBlocks) * Self.queryRows, rows = min(Self.queryRows, n - q0)
        let r = 2 * ws - 1, ld = 3 * E
        let s = base, th = base + Self.queryRows * n, tw = th + Self.queryRows * r
        let q = qkv + q0 * ld + h * hd, k = qkv + E + h * hd, v = qkv + 2 * E + h * hd
        BLAS.sgemm(transB: true, m: rows, n: n, k: hd, alpha: scale, a: q, lda: ld, b: k, ldb: ld, c: s, ldc: n)
        relativeTerms(q, ld: ld, rows: rows, th: th, tw: tw)
        psam_relpos_add(s, n, rows, q0, g, th, tw, r)
        psam_softmax_rows(s, rows, n, n)
        BLAS.sgemm(m: rows, n: hd, k: n, a: s, lda: n, b: v, ldb: ld, c: out + q0 * E + h * hd, ldc: E)
    }

    private func runGlobalBF16(_ i: Int, _ base: FPtr) {
        let h = i / queryBlocks, c0 = (i % queryBlocks) * blockRows, c1 = min(n, c0 + blockRows)
        let r = 2 * ws - 1, ld = 3 * E, rows = Self.queryRows, termRows = Self.termRows
        let packed = base, s = packed + psam_vit_attention_bf16_packed_floats(g, hd)
        let th = s + psam_vit_attention_bf16_scratch(rows, g, hd), tw = th + termRows * r
        psam_vit_attention_bf16_pack(qkv + E + h * hd, qkv + 2 * E + h * hd, ld, g, hd, packed)
        // The relative terms of `termRows` queries in one product (small per-step products ran at a fraction of the
        // GEMM's rate), then 64-query steps over them.
        for t0 in stride(from: c0, to: c1, by: termRows) {
            let t1 = min(c1, t0 + termRows)
            relativeTerms(qkv + t0 * ld + h * hd, ld: ld, rows: t1 - t0, th: th, tw: tw)
            for q0 in stride(from: t0, to: t1, by: rows) {
                let m = min(rows, t1 - q0), q = qkv + q0 * ld + h * hd
                psam_vit_attention_bf16(q, ld, m, q0, g, packed, hd, scale, th + (q0 - t0) * r, tw + (q0 - t0) * r,
                                        out + q0 * E + h * hd, E, s)
            }
        }
    }

    private func runWindow(_ i: Int, _ base: FPtr) {
        let w = i / heads, h = i % heads, nw = windowsPerSide
        let wy = w / nw, wx = w % nw, wn = ws * ws, r = 2 * ws - 1, ld = 3 * E
        let q = base, k = q + wn * hd, v = k + wn * hd, o = v + wn * hd, s = o + wn * hd, th = s + wn * wn, tw = th + wn * r
        for t in 0..<wn {
            let y = wy * ws + t / ws, x = wx * ws + t % ws
            let row = qkv + (y < g && x < g ? y * g + x : n) * ld + h * hd
            (q + t * hd).update(from: row, count: hd)
            (k + t * hd).update(from: row + E, count: hd)
            (v + t * hd).update(from: row + 2 * E, count: hd)
        }
        if bf16 {
            let packed = o + wn * hd, sc = packed + psam_vit_attention_bf16_packed_floats(ws, hd)
            let th = sc + psam_vit_attention_bf16_scratch(wn, ws, hd), tw = th + wn * r
            psam_vit_attention_bf16_pack(k, v, hd, ws, hd, packed)
            relativeTerms(q, ld: hd, rows: wn, th: th, tw: tw)
            psam_vit_attention_bf16(q, hd, wn, 0, ws, packed, hd, scale, th, tw, o, hd, sc)
        } else {
            BLAS.sgemm(transB: true, m: wn, n: wn, k: hd, alpha: scale, a: q, lda: hd, b: k, ldb: hd, c: s, ldc: wn)
            relativeTerms(q, ld: hd, rows: wn, th: th, tw: tw)
            psam_relpos_add(s, wn, wn, 0, ws, th, tw, r)
            psam_softmax_rows(s, wn, wn, wn)
            BLAS.sgemm(m: wn, n: hd, k: wn, a: s, lda: wn, b: v, ldb: hd, c: o, ldc: hd)
        }
        for t in 0..<wn {
            let y = wy * ws + t / ws, x = wx * ws + t % ws
            if y < g && x < g { (out + (y * g + x) * E + h * hd).update(from: o + t * hd, count: hd) }
        }
    }

    /// `th = q · rel_pos_hᵀ`, `tw = q · rel_pos_wᵀ` (unscaled queries, `[rows, 2·ws − 1]`), for `psam_relpos_add`.
    private func relativeTerms(_ q: CPtr, ld: Int, rows: Int, th: FPtr, tw: FPtr) {
        let r = 2 * ws - 1
        BLAS.sgemm(transB: true, m: rows, n: r, k: hd, a: q, lda: ld, b: relH, ldb: hd, c: th, ldc: r)
        BLAS.sgemm(transB: true, m: rows, n: r, k: hd, a: q, lda: ld, b: relW, ldb: hd, c: tw, ldc: r)
    }
}

extension Ops {
    /// SAM ViT's attention on `qkv` (`[n + 1, 3·E]`, see `ViTAttentionJob`) into `out[n, E]`: windows of `ws` tokens a
    /// side, or global (`ws` = g). Scratch for `ctx.slots` threads (`windowSlots` when planning, so the planned arena
    /// holds for that many); a session with more threads runs the blocks on the calling thread. `halfPrecision` (int8
    /// models): the bf16 kernel where the CPU has AVX-512 BF16.
    static func vitAttention(_ ctx: Arena, qkv: CPtr, g: Int, ws: Int, global: Bool, E: Int, heads: Int, relH: CPtr, relW: CPtr,
                             out: FPtr, halfPrecision: Bool) {
        let hd = E / heads, mark = ctx.mark()
        let bf16 = halfPrecision && psam_vit_attention_bf16_fast(hd) != 0
        let slotFloats = ViTAttentionJob.slotFloats(g: g, ws: ws, global: global, hd: hd, bf16: bf16)
        var job = ViTAttentionJob(qkv: qkv, g: g, ws: ws, global: global, E: E, heads: heads, hd: hd, relH: relH, relW: relW,
                                  scale: 1 / Float(hd).squareRoot(), out: out, scratch: ctx.alloc(ctx.slots * slotFloats),
                                  slotFloats: slotFloats, bf16: bf16,
                                  chunks: ViTAttentionJob.chunksPerHead(heads: heads, threads: min(ctx.threads, windowSlots)))
        ctx.macs &+= job.macs
        if ctx.threads <= windowSlots {
            runJob(ctx, &job, kind: .vitAttentionBlock, blocks: job.blocks)
        } else {
            for i in 0..<job.blocks { job.run(block: i, slot: 0) }
        }
        ctx.reset(to: mark)
    }
}
