import COpenBLAS
import PocketSAMKernels

#if canImport(Glibc)
import Glibc
#endif

typealias FPtr = UnsafeMutablePointer<Float>
typealias CPtr = UnsafePointer<Float>

/// fp32 building blocks on raw pointers. Activations are channels-last: an image is `[H, W, C]`,
/// a sequence `[N, C]`, so 1×1 convolutions and linears are the same GEMM and norms run over
/// contiguous channels.
enum Ops {
    /// `out[M, N] = a[M, K] · w[N, K]ᵀ (+ bias[N])`, with row strides `lda`, `ldo` (PyTorch's Linear).
    /// The work is split into blocks fixed by the shape (row × column blocks on `psam_sgemm_inplace` for many
    /// rows and short dot products, else column blocks, each a single-threaded OpenBLAS sgemm), run on the
    /// session's threads: every element is the same K-long dot product in the same order whatever the
    /// thread count, so results are bit-identical for 1 or N threads.
    static func linear(_ ctx: Arena, _ a: CPtr, _ w: CPtr, _ bias: CPtr?, _ out: FPtr, m: Int, n: Int, k: Int,
                       lda: Int? = nil, ldo: Int? = nil, gelu: Bool = false) {
        if m >= inPlaceMinRows, k <= inPlaceMaxK, n > 0 {
            // Many rows, short dot products: the in-place GEMM on the weights transposed once into scratch
            // (OpenBLAS would pack the weights and clear the output again for every row chunk), in blocks of
            // rows × columns fixed by the shape, bias and GELU on each block while it is in cache.
            let mark = ctx.mark()
            let bt = ctx.alloc(k * n)
            psam_transpose(w, n, k, k, bt, n)
            var t = ColumnTask(kind: .linearInPlace, a: a, b: UnsafePointer(bt), c: out, bias: bias, m: m, n: n, k: k,
                               lda: lda ?? k, ldb: n, ldc: ldo ?? n)
            t.gelu = gelu
            t.colBlocks = max(1, (n + 255) / 256)
            t.width = ((n + t.colBlocks - 1) / t.colBlocks + 15) & ~15
            t.rowsPer = 192
            ctx.macs &+= m * n * k
            ctx.parallelBlocks(&t, blocks: ((m + t.rowsPer - 1) / t.rowsPer) * t.colBlocks)
            ctx.reset(to: mark)
            return
        }
        var t = ColumnTask(kind: .linear, a: a, b: w, c: out, bias: bias, m: m, n: n, k: k, lda: lda ?? k, ldb: k, ldc: ldo ?? n)
        t.gelu = gelu
        ctx.macs &+= m * n * k
        ctx.parallelColumns(&t, work: m * n * k)
    }

    /// fp32 linears with at least this many rows and at most this many inputs run on `psam_sgemm_inplace`.
    static let inPlaceMinRows = 1024, inPlaceMaxK = 640

    /// A linear (or im2col'd convolution) layer, then GELU if `gelu`: fp32 through `linear` above, or, for
    /// packed int8 weights, per-row u8 quantization of `a` and the int8 GEMM kernel with the bias and GELU
    /// fused. The int8 results are exact integers plus the same fp32 epilogue whatever the split, so
    /// the work is cut into row and column blocks freely.
    static func linear(_ ctx: Arena, _ a: CPtr, _ l: Lin, _ out: FPtr, m: Int, n: Int, k: Int,
                       lda: Int? = nil, ldo: Int? = nil, gelu: Bool = false) {
        ctx.linearInputHook?(l.name, a, m, k, lda ?? k)
        guard let q = l.q else {
            if let s = l.s, ctx.linearInputHook == nil {
                linearS16(ctx, a, l, s, out, m: m, n: n, k: k, lda: lda ?? k, ldo: ldo ?? n, gelu: gelu)
            } else {
                linear(ctx, a, l.w, l.b, out, m: m, n: n, k: k, lda: lda, ldo: ldo, gelu: gelu)
            }
            return
        }
        precondition(q.n == n && q.k == k, "int8 weight [\(q.n), \(q.k)] used as [\(n), \(k)]")
        guard m > 0, n > 0 else { return }
        let lda = lda ?? k
        let mark = ctx.mark()
        let input = QuantizedRows(ctx, m: m, kp: q.kp)
        var quant = ColumnTask(kind: .quantize, a: a, b: nil, c: input.scale, bias: nil, m: m, n: 0, k: k, lda: lda, ldb: 0, ldc: 0)
        quant.qa = input.q
        quant.qz = input.zero
        quant.ldq = q.kp
        quant.rowsPer = rowsPerBlock(m: m, k: k)
        ctx.parallelBlocks(&quant, blocks: (m + quant.rowsPer - 1) / quant.rowsPer)
        qgemm(ctx, input, l, out, m: m, n: n, k: k, ldo: ldo, gelu: gelu)
        ctx.reset(to: mark)
    }

    /// The int16 form of a kept fp16 layer: per-row symmetric int16 quantization of `a`, then the int16 GEMM with
    /// bias and GELU fused, in row and column blocks (exact integer sums: the same values whatever the split).
    static func linearS16(_ ctx: Arena, _ a: CPtr, _ l: Lin, _ s: S16Weight, _ out: FPtr, m: Int, n: Int, k: Int, lda: Int,
                          ldo: Int, gelu: Bool) {
        precondition(s.n == n && s.k == k, "int16 weight [\(s.n), \(s.k)] used as [\(n), \(k)]")
        guard m > 0, n > 0 else { return }
        let mark = ctx.mark()
        let qa = UnsafeMutableRawPointer(ctx.allocBytes(m * s.kp * 2)).bindMemory(to: Int16.self, capacity: m * s.kp)
        let scale = ctx.alloc(m)
        var quant = ColumnTask(kind: .quantizeS16, a: a, b: nil, c: scale, bias: nil, m: m, n: 0, k: k, lda: lda, ldb: 0, ldc: 0)
        quant.qa16 = qa
        quant.ldq = s.kp
        quant.rowsPer = rowsPerBlock(m: m, k: k)
        ctx.parallelBlocks(&quant, blocks: (m + quant.rowsPer - 1) / quant.rowsPer)
        var t = ColumnTask(kind: .s16gemm, a: nil, b: nil, c: out, bias: l.b, m: m, n: n, k: k, lda: s.kp, ldb: 0, ldc: ldo)
        t.sargs = psam_s16gemm_args(a: qa, lda: s.kp, a_scale: scale, w: s.data, w_scale: s.scales, bias: l.b, c: out, ldc: ldo,
                                    m: m, n: n, kp: s.kp, gelu: gelu ? intGELU : 0)
        runGEMMBlocks(ctx, &t)
        ctx.reset(to: mark)
    }

    /// The GELU of the int8 and int16 layers (fused into their GEMMs, and the depthwise convolutions whose output is
    /// quantized): the piecewise-cubic one (`psam_gelu_lut_rows`, within 1.7e-6·max(1, |x|) of exact, about twice as
    /// fast) where it is vectorised, else the exact one of the fp32 path.
    static var intGELU: Int32 { psam_gelu_lut_fast() != 0 ? PSAM_GELU_LUT : PSAM_GELU_EXACT }

    /// Row blocks for int8 work: a multiple of 8 rows (the widest kernel tile), fixed by the shape.
    static func rowsPerBlock(m: Int, k: Int) -> Int {
        let blocks = m * k < 1 << 16 ? 1 : min(16, max(1, m / 256))
        return ((m + blocks - 1) / blocks + 7) & ~7
    }

    /// Activations quantized per row for an int8 GEMM: `q[m][kp]` u8 with `scale`, `zero` per row,
    /// in arena scratch.
    struct QuantizedRows {
        let q: UnsafeMutablePointer<UInt8>
        let scale: FPtr
        let zero: UnsafeMutablePointer<Int32>
        let kp: Int
        init(_ ctx: Arena, m: Int, kp: Int) {
            q = ctx.allocBytes(m * kp)
            scale = ctx.alloc(m)
            zero = UnsafeMutableRawPointer(ctx.alloc(m)).bindMemory(to: Int32.self, capacity: m)
            self.kp = kp
        }
    }

    /// The int8 GEMM on already quantized rows, bias and GELU fused; row and column blocks on the
    /// session's threads.
    static func qgemm(_ ctx: Arena, _ input: QuantizedRows, _ l: Lin, _ out: FPtr, m: Int, n: Int, k: Int, ldo: Int? = nil,
                      gelu: Bool = false) {
        guard let q = l.q, m > 0, n > 0 else { return }
        let ldo = ldo ?? n
        var t = ColumnTask(kind: .qgemm, a: nil, b: nil, c: out, bias: l.b, m: m, n: n, k: k, lda: q.kp, ldb: 0, ldc: ldo)
        t.qargs = psam_qgemm_args(a: input.q, lda: q.kp, a_scale: input.scale, a_zero: input.zero, w: q.data, w_scale: q.scales,
                                  w_sum: q.sums, bias: l.b, c: out, ldc: ldo, m: m, n: n, kp: q.kp, group: q.group, gelu: gelu ? intGELU : 0)
        runGEMMBlocks(ctx, &t)
    }

    /// Runs an integer GEMM task (`.qgemm`, `.s16gemm`; shape in `t.m`, `t.n`, `t.k`) in row × column blocks fixed by
    /// the shape (small products in one block), and counts its multiply-accumulates.
    static func runGEMMBlocks(_ ctx: Arena, _ t: inout ColumnTask) {
        let m = t.m, n = t.n, k = t.k
        ctx.macs &+= m * n * k
        let colBlocks = m * n * k < 1 << 18 ? 1 : max(1, min(8, n / 64))
        t.rowsPer = m * n * k < 1 << 18 ? m : rowsPerBlock(m: m, k: k)
        t.colBlocks = colBlocks
        t.width = ((n + colBlocks - 1) / colBlocks + 31) & ~31
        ctx.parallelBlocks(&t, blocks: ((m + t.rowsPer - 1) / t.rowsPer) * colBlocks)
    }

    /// Layer norm of the rows of `x[M, C]` straight into quantized rows for an int8 GEMM, 64 rows at a time
    /// through a small scratch (the normalised rows never go to memory as floats); the same values as
    /// `layerNorm` then quantizing.
    static func layerNormQuantized(_ ctx: Arena, _ x: CPtr, m: Int, c: Int, _ nrm: Norm, eps: Float, into q: QuantizedRows) {
        let mark = ctx.mark()
        var t = ColumnTask(kind: .layerNormQuantize, a: x, b: nrm.w, c: ctx.alloc(0), bias: nrm.b, m: m, n: c, k: 0, lda: c, ldb: 0,
                           ldc: c)
        t.eps = eps
        let blocks = m * c < 1 << 15 ? 1 : min(16, max(1, m / 64))
        t.rowsPer = (m + blocks - 1) / blocks
        t.c = ctx.alloc(blocks * quantizeChunk * c)
        t.qa = q.q
        t.qz = q.zero
        t.ldq = q.kp
        t.scratch = q.scale
        ctx.parallelBlocks(&t, blocks: (m + t.rowsPer - 1) / t.rowsPer)
        ctx.reset(to: mark)
    }

    /// Rows per scratch chunk of the fused quantizing operations (the int8 kernels' row block).
    static let quantizeChunk = 64

    /// Multiply-accumulates up to which `matmul` (B not transposed) uses `psam_sgemm_inplace` rather than OpenBLAS.
    static let smallProduct = 1_000_000

    /// `c[M, N] = alpha · a[M, K] · b[K, N]` (`a[K, M]ᵀ` with `transA`, `b[N, K]ᵀ` with `transB`), row-major
    /// with strides; columns split as in `linear`. `accumulate` adds to c (beta 1), else beta 0.
    static func matmul(_ ctx: Arena, _ a: CPtr, _ b: CPtr, _ c: FPtr, m: Int, n: Int, k: Int, lda: Int, ldb: Int, ldc: Int,
                       transA: Bool = false, transB: Bool = false, alpha: Float = 1, accumulate: Bool = false) {
        var t = ColumnTask(kind: .matmul, a: a, b: b, c: c, bias: nil, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc)
        t.transA = transA
        t.transB = transB
        t.alpha = alpha
        t.beta = accumulate ? 1 : 0
        ctx.macs &+= m * n * k
        ctx.parallelColumns(&t, work: m * n * k)
    }

    /// Layer norm over the last dimension of `x[M, C]` into `out` (may alias `x`).
    static func layerNorm(_ x: CPtr, _ out: FPtr, m: Int, c: Int, weight: CPtr, bias: CPtr, eps: Float) {
        psam_layernorm_rows_seq(x, m, c, weight, bias, eps, out)
    }

    /// `layerNorm` above (the same per-row arithmetic, so the same values) with its rows split across the session's
    /// threads: the encoders' necks and the ViT blocks' norms.
    static func layerNormScalar(_ ctx: Arena, _ x: CPtr, _ out: FPtr, m: Int, c: Int, _ nrm: Norm, eps: Float) {
        var t = ColumnTask(kind: .layerNormScalar, a: x, b: nrm.w, c: out, bias: nrm.b, m: m, n: c, k: 0, lda: c, ldb: 0, ldc: c)
        t.eps = eps
        let blocks = m * c < 1 << 15 ? 1 : min(16, max(1, m / 64))
        t.rowsPer = (m + blocks - 1) / blocks
        ctx.parallelBlocks(&t, blocks: (m + t.rowsPer - 1) / t.rowsPer)
    }

    /// Layer norm of the rows of `x[M, C]` (stride `ldx`) into `out` (stride `ldo`, may alias `x`), rows
    /// split across the session's threads.
    static func layerNorm(_ ctx: Arena, _ x: CPtr, _ out: FPtr, m: Int, c: Int, _ nrm: Norm, eps: Float,
                          ldx: Int? = nil, ldo: Int? = nil) {
        var t = ColumnTask(kind: .layerNorm, a: x, b: nrm.w, c: out, bias: nrm.b, m: m, n: c, k: 0, lda: ldx ?? c, ldb: 0,
                           ldc: ldo ?? c)
        t.eps = eps
        let blocks = m * c < 1 << 15 ? 1 : min(16, max(1, m / 64))
        t.rowsPer = (m + blocks - 1) / blocks
        ctx.parallelBlocks(&t, blocks: (m + t.rowsPer - 1) / t.rowsPer)
    }

    /// Attention inside `windows` windows of `wn` tokens each, all at once: `qkv[windows·wn, lda]` holds
    /// per head `[q | k | v]` (`kd` wide each), `bias` (optional) `[heads, wn, wn]` is added to the scaled
    /// scores; output `[windows·wn, ldo]`, head h at columns h·kd. Windows are split across threads.
    /// With `halfPrecision` (int8 models), on a CPU with AVX-512 FP16 or with ARMv8.2 half-precision arithmetic
    /// (aarch64 ASIMDHP: Cortex-A55/A76 and later, Neoverse), q, k, v and the probabilities are rounded to fp16 and
    /// multiplied and summed in fp16 in short chains (`psam_window_attention_fp16`), at twice the fp32 rate;
    /// on LiteMedSAM that moves 1 − cosine of the embedding by 3e-7 (Tests/Reference/int8_sensitivity.py
    /// --attention-fp16), against the int8 weights' 9e-4. On a CPU with AVX-512 BF16 but not FP16 (AMD Zen 4,
    /// Intel Cooper Lake) they are rounded to bf16 and summed in fp32 (`psam_window_attention_bf16`, vdpbf16ps, also
    /// twice the fp32 rate there): about 2e-6 of the cosine. Elsewhere it is the fp32 kernel.
    static func windowAttention(_ ctx: Arena, qkv: CPtr, lda: Int, windows: Int, wn: Int, heads: Int, kd: Int,
                                scale: Float, bias: CPtr?, out: FPtr, ldo: Int, halfPrecision: Bool = false) {
        let mark = ctx.mark()
        var kind = ColumnTask.Kind.windowAttention, scratch = wn * wn + kd * wn
        if halfPrecision && psam_window_attention_fp16_fast(kd) != 0 {
            kind = .windowAttentionFP16
            scratch = psam_window_attention_fp16_scratch(wn, kd)
        } else if halfPrecision && psam_window_attention_bf16_fast(kd) != 0 {
            kind = .windowAttentionBF16
            scratch = psam_window_attention_bf16_scratch(wn, kd)
        }
        var t = ColumnTask(kind: kind, a: qkv, b: bias, c: out, bias: nil, m: wn, n: heads, k: kd, lda: lda, ldb: 0, ldc: ldo)
        t.alpha = scale
        t.ldq = scratch
        t.scratch = ctx.alloc(windows * t.ldq)
        ctx.macs &+= windows * heads * wn * wn * kd * 2
        ctx.parallelBlocks(&t, blocks: windows)
        ctx.reset(to: mark)
    }

    /// GELU `x · Φ(x)` (PyTorch's exact `nn.GELU()`), with erf evaluated by `erfApprox`.
    static func gelu(_ x: FPtr, _ n: Int, _ ctx: Arena? = nil) {
        if let ctx {
            var t = ColumnTask(kind: .gelu, a: nil, b: nil, c: x, bias: nil, m: 1, n: n, k: 1, lda: 0, ldb: 0, ldc: 0)
            ctx.parallelColumns(&t, work: n * 64)
        } else {
            geluRange(x, 0, n)
        }
    }

    @inline(__always)
    static func geluRange(_ x: FPtr, _ i0: Int, _ i1: Int) {
        for i in i0..<i1 {
            let v = x[i]
            x[i] = 0.5 * v * (1 + erfApprox(v * 0.707_106_781_186_547_5))
        }
    }

    /// erf as a rational minimax fit on [−4, 4] (the fit Eigen and XLA use): max error 6.5e-8 in exact
    /// arithmetic, about 2 ulp in Float; no exp and no branch, so the loop vectorises.
    @inline(__always)
    static func erfApprox(_ v: Float) -> Float {
        let x = min(max(v, -4), 4)
        let x2 = x * x
        var p: Float = -2.72614225801306e-10
        p = p * x2 + 2.77068142495902e-08
        p = p * x2 - 2.10102402082508e-06
        p = p * x2 - 5.69250639462346e-05
        p = p * x2 - 7.34990630326855e-04
        p = p * x2 - 2.95459980854025e-03
        p = p * x2 - 1.60960333262415e-02
        var q: Float = -1.45660718464996e-05
        q = q * x2 - 2.13374055278905e-04
        q = q * x2 - 1.68282697438203e-03
        q = q * x2 - 7.37332916720468e-03
        q = q * x2 - 1.42647390514189e-02
        return x * p / q
    }

    static func relu(_ x: FPtr, _ n: Int) {
        for i in 0..<n where x[i] < 0 { x[i] = 0 }
    }

    /// `o = a + b` elementwise.
    static func sumInto(_ o: FPtr, _ a: CPtr, _ b: CPtr, _ n: Int) {
        psam_add_rows(o, a, b, n)
    }

    static func add(_ x: FPtr, _ y: CPtr, _ n: Int) {
        psam_add_rows(x, x, y, n)
    }

    /// `out[i] = x[i] + y[i]`, then GELU with `gelu`, for i < n (`out` may be `x`), in column blocks on the session's
    /// threads: the same values as `add` then `gelu`.
    static func add(_ ctx: Arena, _ x: CPtr, _ y: CPtr, into out: FPtr, _ n: Int, gelu: Bool = false) {
        var t = ColumnTask(kind: .add, a: x, b: y, c: out, bias: nil, m: 1, n: n, k: 1, lda: 0, ldb: 0, ldc: 0)
        t.gelu = gelu
        ctx.parallelColumns(&t, work: n * 16)
    }

    /// Window partition of TinyViT's attention: the tokens of `x[h, h, d]` into `tok[windows, win², d]`, window by
    /// window in row-major order, zero rows where a window hangs over the border; a block per row of windows.
    static func gatherWindows(_ ctx: Arena, _ x: CPtr, h: Int, d: Int, win: Int, into tok: FPtr) {
        let nw = (h + win - 1) / win
        var t = ColumnTask(kind: .windowGather, a: x, b: nil, c: tok, bias: nil, m: h, n: d, k: win, lda: nw, ldb: 0, ldc: 0)
        ctx.parallelBlocks(&t, blocks: h * h * d < 1 << 16 ? 1 : nw)
    }

    /// The reverse of `gatherWindows`, adding: `x[h, h, d] += tok[windows, win², d]` for the tokens inside the image.
    static func scatterAddWindows(_ ctx: Arena, _ tok: CPtr, h: Int, d: Int, win: Int, into x: FPtr) {
        let nw = (h + win - 1) / win
        var t = ColumnTask(kind: .windowScatterAdd, a: tok, b: nil, c: x, bias: nil, m: h, n: d, k: win, lda: nw, ldb: 0, ldc: 0)
        ctx.parallelBlocks(&t, blocks: h * h * d < 1 << 16 ? 1 : nw)
    }

    /// Softmax of each row of `x[M, N]` (row stride `ld`), in place.
    static func softmaxRows(_ x: FPtr, m: Int, n: Int, ld: Int) {
        psam_softmax_rows(x, m, n, ld)
    }

    /// Dense 2-D convolution, channels-last: `x[H, W, Cin]`, PyTorch weight `[Cout, Cin, kh, kw]`,
    /// symmetric zero padding. Returns the output size; `out` holds `[Ho, Wo, Cout]`.
    /// `pixels`: the output pixels (row-major indices) to compute, all by default; `out` holds those only (its row 0 is
    /// `pixels.lowerBound`), and `x` need only hold the input rows they read (rows are indexed from the image's top, so a
    /// band's pointer is shifted back by its first row). Each output value is the same whatever the range.
    @discardableResult
    static func conv2d(_ x: CPtr, h: Int, w: Int, cin: Int, weight: Lin, cout: Int, k: Int,
                       stride: Int, pad: Int, out: FPtr, arena: Arena, gelu: Bool = false,
                       pixels: Range<Int>? = nil) -> (h: Int, w: Int) {
        let ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1
        let pixels = pixels ?? 0..<(ho * wo)
        precondition(pixels.lowerBound >= 0 && pixels.upperBound <= ho * wo, "conv2d pixels \(pixels) of \(ho * wo)")
        if k == 1, stride == 1, pad == 0 {
            linear(arena, x + pixels.lowerBound * cin, weight, out, m: pixels.count, n: cout, k: cin, gelu: gelu)
            return (ho, wo)
        }
        if conv2dTiled(arena, x, h: h, w: w, cin: cin, weight: weight, cout: cout, k: k, stride: stride, pad: pad, out: out,
                       gelu: gelu, pixels: pixels) {
            return (ho, wo)
        }
        // im2col with K ordered (cin, ky, kx), PyTorch's weight order; rows in blocks to bound memory.
        let kk = cin * k * k
        let rowsPerBlock = max(1, min(pixels.count, (8 << 20) / max(kk, 1)))
        let mark = arena.mark()
        let col = arena.alloc(rowsPerBlock * kk)
        var p0 = pixels.lowerBound
        while p0 < pixels.upperBound {
            let rows = min(rowsPerBlock, pixels.upperBound - p0)
            // The rows in up to 16 blocks across the session's threads.
            var t = ColumnTask(kind: .im2col, a: x, b: nil, c: col, bias: nil, m: rows, n: cin, k: k, lda: h, ldb: w, ldc: kk)
            t.stride = stride
            t.pad = pad
            t.heads = wo
            t.p0 = p0
            let blocks = rows * kk < 1 << 16 ? 1 : min(16, max(1, rows / 16))
            t.rowsPer = (rows + blocks - 1) / blocks
            arena.parallelBlocks(&t, blocks: (rows + t.rowsPer - 1) / t.rowsPer)
            linear(arena, col, weight, out + (p0 - pixels.lowerBound) * cout, m: rows, n: cout, k: kk, gelu: gelu)
            p0 += rows
        }
        arena.reset(to: mark)
        return (ho, wo)
    }

    /// Depthwise convolution, channels-last, weight `[C, 1, k, k]`, zero padding, then GELU if `gelu`.
    /// The weights are first laid out `[k·k, C]` in `arena` scratch so the inner loop runs over
    /// contiguous channels; output rows are split across the session's threads (each output is
    /// computed the same way whatever the split). With `quantizedInto`, each output pixel is quantized
    /// at once into those rows for the int8 GEMM that follows, and never stored as floats (`out` unused).
    /// `rows`: the output rows to compute (all by default); `out` or `quantizedInto` holds those rows only (its
    /// row 0 is `rows.lowerBound`). Each output value is the same whatever the range.
    @discardableResult
    static func depthwiseConv(_ x: CPtr, h: Int, w: Int, c: Int, weight: CPtr, bias: CPtr?, k: Int, stride: Int,
                              pad: Int, out: FPtr?, quantizedInto: QuantizedRows? = nil, arena: Arena,
                              gelu: Bool = false, rows: Range<Int>? = nil) -> (h: Int, w: Int) {
        let ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1
        let rows = rows ?? 0..<ho
        precondition(rows.lowerBound >= 0 && rows.upperBound <= ho, "depthwiseConv rows \(rows) of \(ho)")
        let first = rows.lowerBound, count = rows.count
        let mark = arena.mark()
        let wt = arena.alloc(k * k * c)
        for j in 0..<c { for t in 0..<(k * k) { wt[t * c + j] = weight[j * k * k + t] } }
        let blocks = count * wo * c * k * k < 1 << 16 ? 1 : min(count, 16)
        // Quantized output: `c` is one scratch row of C floats per block. The kernels index output rows from the
        // top of the image, so the destinations are shifted back by `first` rows (never written there).
        let dst = quantizedInto == nil ? out.map { $0 - first * wo * c } : arena.alloc(blocks * c)
        guard let dst else { preconditionFailure("depthwiseConv needs out or quantizedInto") }
        var t = ColumnTask(kind: .depthwise, a: x, b: wt, c: dst, bias: bias, m: count, n: c, k: k, lda: h, ldb: w, ldc: wo)
        t.stride = stride
        t.pad = pad
        t.gelu = gelu
        t.firstRow = first
        if let q = quantizedInto {
            t.qa = q.q - first * wo * q.kp
            t.qz = q.zero - first * wo
            t.ldq = q.kp
            t.scratch = q.scale - first * wo
        }
        arena.macs &+= count * wo * c * k * k
        t.rowsPer = (count + blocks - 1) / blocks
        arena.parallelBlocks(&t, blocks: (count + t.rowsPer - 1) / t.rowsPer)
        arena.reset(to: mark)
        return (ho, wo)
    }

    /// `ConvTranspose2d(kernel 2, stride 2)`, channels-last: `x[H, W, Cin]`, weight `[Cin, Cout, 2, 2]`,
    /// into `out[2H, 2W, Cout]`.
    static func convTranspose2x2(_ x: CPtr, h: Int, w: Int, cin: Int, weight: CPtr, bias: CPtr, cout: Int,
                                 out: FPtr, arena: Arena) {
        let mark = arena.mark()
        let tmp = arena.alloc(h * w * cout * 4)
        // tmp[p, (o, dy, dx)] = Σ_i x[p, i] · W[i, (o, dy, dx)]
        matmul(arena, x, weight, tmp, m: h * w, n: cout * 4, k: cin, lda: cin, ldb: cout * 4, ldc: cout * 4)
        let w2 = 2 * w
        for y in 0..<h {
            for xx in 0..<w {
                let src = tmp + (y * w + xx) * cout * 4
                for dy in 0..<2 {
                    for dx in 0..<2 {
                        let dst = out + ((2 * y + dy) * w2 + 2 * xx + dx) * cout
                        for o in 0..<cout { dst[o] = src[o * 4 + dy * 2 + dx] + bias[o] }
                    }
                }
            }
        }
        arena.reset(to: mark)
    }

    /// Bilinear resize of planar `x[H, W]` to `[Ho, Wo]` (PyTorch's `interpolate(mode="bilinear",
    /// align_corners=False)`), output rows `rows` (default all) and columns `0 ..< cols` (default all), each value
    /// handed to `body(y, x, value)`: a block of the output is the same values the whole resize gives there.
    /// The column taps of `bilinearRows` for output columns `0 ..< cols`: left and right input column and the right
    /// one's weight, computed once instead of per row (the same values).
    static func bilinearTaps(w: Int, wo: Int, cols: Int, x0: UnsafeMutablePointer<Int32>, x1: UnsafeMutablePointer<Int32>, lx: FPtr) {
        let sx = Float(w) / Float(wo)
        for ox in 0..<cols {
            let fx = max((Float(ox) + 0.5) * sx - 0.5, 0)
            let a = min(Int(fx), w - 1)
            x0[ox] = Int32(a)
            x1[ox] = Int32(min(a + 1, w - 1))
            lx[ox] = fx - Float(a)
        }
    }

    /// `bilinearRows` with the column taps of `bilinearTaps` (`cols` of them) and rows `rows` of the output.
    @inline(__always)
    static func bilinearRows(_ x: CPtr, h: Int, w: Int, ho: Int, rows: Range<Int>, cols: Int, x0: UnsafePointer<Int32>,
                             x1: UnsafePointer<Int32>, lx: CPtr, _ body: (Int, Int, Float) -> Void) {
        let sy = Float(h) / Float(ho)
        for oy in rows {
            let fy = max((Float(oy) + 0.5) * sy - 0.5, 0)
            let y0 = min(Int(fy), h - 1)
            let y1 = min(y0 + 1, h - 1)
            let ly = fy - Float(y0)
            let r0 = x + y0 * w, r1 = x + y1 * w
            for ox in 0..<cols {
                let a = Int(x0[ox]), b = Int(x1[ox]), l = lx[ox]
                let top = r0[a] * (1 - l) + r0[b] * l
                let bot = r1[a] * (1 - l) + r1[b] * l
                body(oy, ox, top * (1 - ly) + bot * ly)
            }
        }
    }

    @inline(__always)
    static func bilinearRows(_ x: CPtr, h: Int, w: Int, ho: Int, wo: Int, rows: Range<Int>? = nil, cols: Int? = nil,
                             _ body: (Int, Int, Float) -> Void) {
        let sy = Float(h) / Float(ho), sx = Float(w) / Float(wo)
        for oy in rows ?? 0..<ho {
            let fy = max((Float(oy) + 0.5) * sy - 0.5, 0)
            let y0 = min(Int(fy), h - 1)
            let y1 = min(y0 + 1, h - 1)
            let ly = fy - Float(y0)
            for ox in 0..<(cols ?? wo) {
                let fx = max((Float(ox) + 0.5) * sx - 0.5, 0)
                let x0 = min(Int(fx), w - 1)
                let x1 = min(x0 + 1, w - 1)
                let lx = fx - Float(x0)
                let top = x[y0 * w + x0] * (1 - lx) + x[y0 * w + x1] * lx
                let bot = x[y1 * w + x0] * (1 - lx) + x[y1 * w + x1] * lx
                body(oy, ox, top * (1 - ly) + bot * ly)
            }
        }
    }

    /// Multi-head attention on already-projected q, k, v. Head `h` of a row starts at column
    /// `qOff(h)` / `kOff(h)` / `vOff(h)`; rows have strides `ldq`, `ldk`, `ldv`. Optional additive bias per
    /// head: `bias(h)` is a `[Nq, Nk]` matrix. Output `[Nq, heads · dv]`.
    /// Attention of `nq` query rows over `nk` ≤ 64 keys (SAM's image→token attention), heads side by
    /// side in the columns (head `h` at column `h·d` of q, k, v and out); rows split across threads.
    /// Most keys `attentionFewKeys` takes.
    static let fewKeysMax = 64

    static func attentionFewKeys(_ ctx: Arena, q: CPtr, ldq: Int, k: CPtr, ldk: Int, v: CPtr, ldv: Int, nq: Int, nk: Int,
                                 heads: Int, d: Int, scale: Float, out: FPtr, ldo: Int) {
        precondition(nk <= fewKeysMax, "attentionFewKeys: \(nk) keys")
        var t = ColumnTask(kind: .fewKeysAttention, a: q, b: k, c: out, bias: nil, m: nq, n: nk, k: d, lda: ldq, ldb: ldk, ldc: ldo)
        t.v = v
        t.ldv = ldv
        t.heads = heads
        t.alpha = scale
        ctx.macs &+= 2 * nq * nk * heads * d
        let blocks = nq * nk * heads * d < 1 << 16 ? 1 : 16
        t.rowsPer = (nq + blocks - 1) / blocks
        ctx.parallelBlocks(&t, blocks: blocks)
    }

    static func attention(q: CPtr, k: CPtr, v: CPtr, nq: Int, nk: Int, heads: Int, d: Int, dv: Int,
                          ldq: Int, ldk: Int, ldv: Int, qOff: (Int) -> Int, kOff: (Int) -> Int, vOff: (Int) -> Int,
                          scale: Float, bias: (Int, FPtr) -> Void = { _, _ in }, out: FPtr, arena: Arena) {
        let mark = arena.mark()
        let s = arena.alloc(nq * nk)
        for h in 0..<heads {
            matmul(arena, q + qOff(h), k + kOff(h), s, m: nq, n: nk, k: d, lda: ldq, ldb: ldk, ldc: nk, transB: true, alpha: scale)
            bias(h, s)
            softmaxRows(s, m: nq, n: nk, ld: nk)
            matmul(arena, s, v + vOff(h), out + h * dv, m: nq, n: dv, k: nk, lda: nk, ldb: ldv, ldc: heads * dv)
        }
        arena.reset(to: mark)
    }
}

/// One column-parallel operation, described by value so the thread pool can run its blocks without
/// closures (a closure handed to other threads would be allocated on the heap).
struct ColumnTask {
    enum Kind { case linear, linearInPlace, matmul, gelu, quantize, quantizeS16, qgemm, s16gemm, depthwise, layerNorm, layerNormQuantize,
                  windowAttention, windowAttentionFP16, windowAttentionBF16, fewKeysAttention, maskUpscale, callback, im2col,
                  add, windowGather, windowScatterAdd, windowBlock, mlpBlock, expandBlock, convBlock, layerNormScalar,
                  preprocessBlock, vitAttentionBlock }
    var kind: Kind
    var a: CPtr?
    var b: CPtr?
    var c: FPtr
    var bias: CPtr?
    var m: Int, n: Int, k: Int, lda: Int, ldb: Int, ldc: Int
    var transA = false, transB = false
    var alpha: Float = 1
    /// `.matmul`: 1 adds the product to `c`.
    var beta: Float = 0
    /// Columns per block (set by `Arena.parallelColumns`).
    var width = 0
    /// int8 work (`.quantize`, `.qgemm`): blocks are `rowsPer` rows × `width` columns, column-major
    /// in the block index (`colBlocks` per row block).
    var rowsPer = 0
    var colBlocks = 1
    var qargs = psam_qgemm_args()
    /// `.depthwise`: the first output row (blocks cover rows `firstRow ..< firstRow + m`).
    var firstRow = 0
    /// `.quantizeS16` (into `qa16`, scales in `c`), `.s16gemm`.
    var sargs = psam_s16gemm_args()
    var qa16: UnsafeMutablePointer<Int16>?
    var qa: UnsafeMutablePointer<UInt8>?
    var qz: UnsafeMutablePointer<Int32>?
    var ldq = 0
    /// `.layerNorm`: epsilon; `.windowAttention`: per-window score scratch (`ldq` floats per window).
    var eps: Float = 0
    var scratch: FPtr?
    /// `.depthwise`: stride, padding, fused GELU.
    var stride = 1
    var pad = 0
    var gelu = false
    /// `.fewKeysAttention`: values, their row stride, heads (`k` is the head width, `n` the key count).
    var v: CPtr?
    var ldv = 0
    var heads = 0
    /// `.maskUpscale`: block i upscales mask `lows[i]` (scratch `c + i·ldc`, mask `qa + i·outH·outW`).
    var maskArgs: UnsafePointer<psam_mask_upscale_args>?
    var lows: UnsafePointer<UnsafePointer<Float>>?
    var maskStats: UnsafeMutablePointer<psam_mask_stats>?
    /// `.im2col`: the first output pixel of the rows (`m` rows from it; `heads` holds the output width).
    var p0 = 0
    /// `.callback`: block i calls `callback(context, i)` (coarse work that is itself Swift code).
    var callback: (@convention(c) (UnsafeMutableRawPointer, Int) -> Void)?
    var context: UnsafeMutableRawPointer?

    init(kind: Kind, a: CPtr?, b: CPtr?, c: FPtr, bias: CPtr?, m: Int, n: Int, k: Int, lda: Int, ldb: Int, ldc: Int) {
        self.kind = kind
        self.a = a
        self.b = b
        self.c = c
        self.bias = bias
        self.m = m
        self.n = n
        self.k = k
        self.lda = lda
        self.ldb = ldb
        self.ldc = ldc
    }

    /// Block i of `rowsPer` rows × `width` columns, column-major in the block index (`colBlocks` per row block).
    func rowColumnBlock(_ i: Int) -> (r0: Int, r1: Int, n0: Int, n1: Int) {
        let r0 = (i / colBlocks) * rowsPer, n0 = (i % colBlocks) * width
        return (r0, min(m, r0 + rowsPer), n0, min(n, n0 + width))
    }

    /// Block `i`, on the thread with slot `slot` (0 ..< the pool's size; see `ThreadPool`).
    func run(block i: Int, slot: Int = 0) {
        switch kind {
        case .quantize:
            let r0 = i * rowsPer, r1 = min(m, r0 + rowsPer)
            guard r0 < r1, let a, let qa, let qz else { return }
            psam_quantize_rows_u8(a + r0 * lda, r1 - r0, k, lda, qa + r0 * ldq, ldq, c + r0, qz + r0)
            return
        case .quantizeS16:
            let r0 = i * rowsPer, r1 = min(m, r0 + rowsPer)
            guard r0 < r1, let a, let qa16 else { return }
            psam_quantize_rows_s16(a + r0 * lda, r1 - r0, k, lda, qa16 + r0 * ldq, ldq, c + r0)
            return
        case .s16gemm:
            let (r0, r1, n0, n1) = rowColumnBlock(i)
            guard r0 < r1, n0 < n1 else { return }
            var p = sargs
            p.a = p.a.map { $0 + r0 * p.lda }
            p.a_scale = p.a_scale.map { $0 + r0 }
            p.c = p.c.map { $0 + r0 * p.ldc }
            p.m = r1 - r0
            withUnsafePointer(to: p) { psam_s16gemm($0, n0, n1) }
            return
        case .callback:
            guard let callback, let context else { return }
            callback(context, i)
            return
        case .windowBlock:
            context?.assumingMemoryBound(to: WindowAttentionJob.self).pointee.run(block: i, slot: slot)
            return
        case .mlpBlock:
            context?.assumingMemoryBound(to: MLPJob.self).pointee.run(block: i, slot: slot)
            return
        case .vitAttentionBlock:
            context?.assumingMemoryBound(to: ViTAttentionJob.self).pointee.run(block: i, slot: slot)
            return
        case .expandBlock:
            context?.assumingMemoryBound(to: ExpandJob.self).pointee.run(block: i, slot: slot)
            return
        case .convBlock:
            context?.assumingMemoryBound(to: ConvJob.self).pointee.run(block: i, slot: slot)
            return
        case .preprocessBlock:
            context?.assumingMemoryBound(to: PreprocessJob.self).pointee.run(block: i)
            return
        case .windowGather, .windowScatterAdd:
            // Row i of windows; m = h, n = d, k = win, lda = windows per row. Gather: a = x, c = tok; scatter: a = tok, c = x.
            guard let a else { return }
            let h = m, d = n, win = k, nw = lda, wn = win * win
            for wx in 0..<nw {
                for t in 0..<wn {
                    let y = i * win + t / win, xx = wx * win + t % win, w = ((i * nw + wx) * wn + t) * d
                    if kind == .windowGather {
                        if y < h && xx < h { (c + w).update(from: a + (y * h + xx) * d, count: d) } else { (c + w).initialize(repeating: 0, count: d) }
                    } else if y < h && xx < h {
                        let dst = c + (y * h + xx) * d, src = a + w
                        for j in 0..<d { dst[j] += src[j] }
                    }
                }
            }
            return
        case .maskUpscale:
            guard let maskArgs, let lows, let qa, let maskStats else { return }
            // This block's copy of the arguments, with its own run buffer.
            var a = maskArgs.pointee
            a.counts = a.counts.map { $0 + i * a.counts_capacity }
            psam_mask_upscale(&a, lows[i], c + i * ldc, qa + i * a.out_h * a.out_w, maskStats + i)
            return
        case .fewKeysAttention:
            let r0 = i * rowsPer, r1 = min(m, r0 + rowsPer)
            guard r0 < r1, let a, let b, let v else { return }
            psam_attention_few_keys(a, lda, b, ldb, v, ldv, n, heads, k, alpha, c, ldc, r0, r1)
            return
        case .im2col:
            // Rows [r0, r1) of this im2col block: input x[lda][ldb][n], kernel k, output width `heads`.
            let r0 = i * rowsPer, r1 = min(m, r0 + rowsPer)
            guard r0 < r1, let a else { return }
            psam_im2col(a, lda, ldb, n, k, stride, pad, heads, p0 + r0, p0 + r1, c + r0 * ldc, ldc)
            return
        case .layerNorm:
            let r0 = i * rowsPer, r1 = min(m, r0 + rowsPer)
            guard r0 < r1, let a, let b, let bias else { return }
            psam_layernorm_rows(a + r0 * lda, r1 - r0, n, lda, b, bias, eps, c + r0 * ldc, ldc)
            return
        case .layerNormScalar:
            let r0 = i * rowsPer, r1 = min(m, r0 + rowsPer)
            guard r0 < r1, let a, let b, let bias else { return }
            Ops.layerNorm(a + r0 * lda, c + r0 * ldc, m: r1 - r0, c: n, weight: b, bias: bias, eps: eps)
            return
        case .layerNormQuantize:
            // Rows [r0, r1) in chunks through this block's scratch c + i·chunk·n; quantized into qa (scale in `scratch`).
            let r0 = i * rowsPer, r1 = min(m, r0 + rowsPer)
            guard r0 < r1, let a, let b, let bias, let qa, let qz, let scratch else { return }
            let buf = c + i * Ops.quantizeChunk * n
            var r = r0
            while r < r1 {
                let rows = min(Ops.quantizeChunk, r1 - r)
                psam_layernorm_rows(a + r * lda, rows, n, lda, b, bias, eps, buf, n)
                psam_quantize_rows_u8(buf, rows, n, n, qa + r * ldq, ldq, scratch + r, qz + r)
                r += rows
            }
            return
        case .windowAttention:
            // Window i: rows [i·m, (i+1)·m) of qkv (stride lda; per head [q | k | v], k wide each);
            // scores scaled by alpha, plus bias[h] (m×m), softmax, times v, into c (stride ldc).
            guard let a, let scratch else { return }
            psam_window_attention(a + i * m * lda, lda, m, n, k, alpha, b, c + i * m * ldc, ldc, scratch + i * ldq)
            return
        case .windowAttentionFP16:
            guard let a, let scratch else { return }
            psam_window_attention_fp16(a + i * m * lda, lda, m, n, k, alpha, b, c + i * m * ldc, ldc, scratch + i * ldq)
            return
        case .windowAttentionBF16:
            guard let a, let scratch else { return }
            psam_window_attention_bf16(a + i * m * lda, lda, m, n, k, alpha, b, c + i * m * ldc, ldc, scratch + i * ldq)
            return
        case .depthwise:
            let y0 = firstRow + i * rowsPer, y1 = firstRow + min(m, (i + 1) * rowsPer)
            guard y0 < y1, let a, let b else { return }
            if let qa, let qz, let scratch {
                // Quantized output; `c` holds one scratch row of n floats per block (at most 16 blocks).
                psam_depthwise_rows_u8(a, lda, ldb, n, b, bias, k, stride, pad, ldc, y0, y1, gelu ? Ops.intGELU : 0, c + i * n,
                                       qa, ldq, scratch, qz)
            } else {
                psam_depthwise_rows(a, lda, ldb, n, b, bias, k, stride, pad, c, ldc, y0, y1, gelu ? 1 : 0)
            }
            return
        case .linearInPlace:
            // Rows [r0, r1) × columns [n0, n1) of a · bᵀ with b transposed to [k][n] (stride ldb), + bias, GELU.
            let (r0, r1, n0, n1) = rowColumnBlock(i)
            guard r0 < r1, n0 < n1, let a, let b else { return }
            psam_sgemm_inplace(a + r0 * lda, lda, 1, b + n0, ldb, c + r0 * ldc + n0, ldc, r1 - r0, n1 - n0, k, 1,
                               bias.map { $0 + n0 }, 0)
            if gelu { psam_bias_gelu_rows(c + r0 * ldc + n0, r1 - r0, n1 - n0, ldc, nil, 1) }
            return
        case .qgemm:
            let (r0, r1, n0, n1) = rowColumnBlock(i)
            guard r0 < r1, n0 < n1 else { return }
            var p = qargs
            p.a = p.a.map { $0 + r0 * p.lda }
            p.a_scale = p.a_scale.map { $0 + r0 }
            p.a_zero = p.a_zero.map { $0 + r0 }
            p.c = p.c.map { $0 + r0 * p.ldc }
            p.m = r1 - r0
            withUnsafePointer(to: p) { psam_qgemm($0, n0, n1) }
            return
        default:
            break
        }
        let j0 = i * width, j1 = min(n, j0 + width)
        guard j0 < j1 else { return }
        switch kind {
        case .linear:
            guard let a, let b else { return }
            guard bias != nil || gelu else {
                BLAS.sgemm(transB: true, m: m, n: j1 - j0, k: k, a: a, lda: lda, b: b + j0 * k, ldb: k, c: c + j0, ldc: ldc)
                return
            }
            // With an epilogue: in row chunks, so bias and GELU run on output still in cache.
            let chunk = 512
            var r0 = 0
            while r0 < m {
                let rows = min(chunk, m - r0)
                BLAS.sgemm(transB: true, m: rows, n: j1 - j0, k: k, a: a + r0 * lda, lda: lda, b: b + j0 * k, ldb: k, c: c + r0 * ldc + j0, ldc: ldc)
                psam_bias_gelu_rows(c + r0 * ldc + j0, rows, j1 - j0, ldc, bias.map { $0 + j0 }, gelu ? 1 : 0)
                r0 += rows
            }
        case .matmul:
            guard let a, let b else { return }
            // OpenBLAS 0.3.21's AVX-512 small-matrix kernel for non-transposed products (n of 8, 16 or 32, m·n·k up to
            // 10⁶: the decoders' attention with a mask input or HQ-SAM) calls malloc on every product. Products that
            // small, B not transposed, run on the in-place kernel instead, on every CPU alike.
            if !transB && m * (j1 - j0) * k <= Ops.smallProduct {
                psam_sgemm_inplace(a, transA ? 1 : lda, transA ? lda : 1, b + j0, ldb, c + j0, ldc, m, j1 - j0, k, alpha, nil,
                                   beta == 0 ? 0 : 1)
                return
            }
            BLAS.sgemm(transA: transA, transB: transB, m: m, n: j1 - j0, k: k, alpha: alpha, a: a, lda: lda, b: transB ? b + j0 * ldb : b + j0, ldb: ldb, accumulate: beta != 0, c: c + j0, ldc: ldc)
        case .gelu:
            psam_gelu_rows(c + j0, j1 - j0)
        case .add:
            guard let a, let b else { return }
            psam_add_rows(c + j0, a + j0, b + j0, j1 - j0)
            if gelu { psam_gelu_rows(c + j0, j1 - j0) }
        case .windowGather, .windowScatterAdd,
             .linearInPlace, .quantize, .quantizeS16, .qgemm, .s16gemm, .depthwise, .layerNorm, .layerNormQuantize, .windowAttention,
             .windowAttentionFP16, .windowAttentionBF16, .fewKeysAttention, .maskUpscale, .callback, .im2col, .windowBlock, .mlpBlock, .expandBlock, .convBlock, .layerNormScalar,
             .preprocessBlock, .vitAttentionBlock:
            break
        }
    }
}
