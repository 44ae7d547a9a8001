#include "rowops_internal.h"

/* One output pixel (oy, ox) of a depthwise convolution, all c channels, into o. */
#define DEPTHWISE_PIXEL                                                                         \
    for (size_t j = 0; j < c; j++) o[j] = bias ? bias[j] : 0.0f;                                \
    for (size_t ky = 0; ky < k; ky++) {                                                         \
        ptrdiff_t iy = (ptrdiff_t)(oy * stride + ky) - (ptrdiff_t)pad;                          \
        if (iy < 0 || iy >= (ptrdiff_t)h) continue;                                             \
        for (size_t kx = 0; kx < k; kx++) {                                                     \
            ptrdiff_t ix = (ptrdiff_t)(ox * stride + kx) - (ptrdiff_t)pad;                      \
            if (ix < 0 || ix >= (ptrdiff_t)w) continue;                                         \
            const float *s = x + ((size_t)iy * w + (size_t)ix) * c;                             \
            const float *wk = wt + (ky * k + kx) * c;                                           \
            for (size_t j = 0; j < c; j++) o[j] = o[j] + s[j] * wk[j];                          \
        }                                                                                       \
    }

static inline void dw_pixel_generic(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias,
                                    size_t k, size_t stride, size_t pad, size_t oy, size_t ox, float *o) {
    DEPTHWISE_PIXEL
}

#if defined(__x86_64__)
/* Channels in blocks of 16 held in a register across all k·k taps (fused multiply-adds). */
static inline PSAM_AVX512FMA __attribute__((always_inline)) void
dw_pixel_avx512(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t k, size_t stride,
                size_t pad, size_t oy, size_t ox, float *o) {
    for (size_t j = 0; j < c; j += 16) {
        __mmask16 mk = c - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (c - j)) - 1u);
        __m512 acc = bias ? _mm512_maskz_loadu_ps(mk, bias + j) : _mm512_setzero_ps();
        for (size_t ky = 0; ky < k; ky++) {
            ptrdiff_t iy = (ptrdiff_t)(oy * stride + ky) - (ptrdiff_t)pad;
            if (iy < 0 || iy >= (ptrdiff_t)h) continue;
            for (size_t kx = 0; kx < k; kx++) {
                ptrdiff_t ix = (ptrdiff_t)(ox * stride + kx) - (ptrdiff_t)pad;
                if (ix < 0 || ix >= (ptrdiff_t)w) continue;
                const float *sp = x + ((size_t)iy * w + (size_t)ix) * c + j;
                acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, sp), _mm512_maskz_loadu_ps(mk, wt + (ky * k + kx) * c + j), acc);
            }
        }
        _mm512_mask_storeu_ps(o + j, mk, acc);
    }
}

/* DW_PIX output pixels (oy, ox …) whose every tap is inside the input, all c channels, into rows o[i]: per block of
 * 16 channels and tap, one load of the weights and DW_PIX independent fused multiply-adds (no bounds checks). */
#define DW_PIX 4
static inline PSAM_AVX512FMA __attribute__((always_inline)) void
dw_pixels_avx512(const float *x, size_t w, size_t c, const float *wt, const float *bias, size_t k, size_t stride, size_t iy0,
                 size_t ix0, float *const *o) {
    const size_t step = stride * c;
    for (size_t j = 0; j < c; j += 16) {
        const __mmask16 mk = c - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (c - j)) - 1u);
        const __m512 b0 = bias ? _mm512_maskz_loadu_ps(mk, bias + j) : _mm512_setzero_ps();
        __m512 acc[DW_PIX];
        for (int i = 0; i < DW_PIX; i++) acc[i] = b0;
        for (size_t ky = 0; ky < k; ky++) {
            const float *row = x + ((iy0 + ky) * w + ix0) * c + j;
            for (size_t kx = 0; kx < k; kx++) {
                const __m512 wv = _mm512_maskz_loadu_ps(mk, wt + (ky * k + kx) * c + j);
                const float *sp = row + kx * c;
                for (int i = 0; i < DW_PIX; i++) acc[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, sp + (size_t)i * step), wv, acc[i]);
            }
        }
        for (int i = 0; i < DW_PIX; i++) _mm512_mask_storeu_ps(o[i] + j, mk, acc[i]);
    }
}

/* 3 × 3 kernels (every depthwise convolution of TinyViT): DW3_PIX output pixels whose every tap is inside the
 * input, per block of 16 channels with the 9 weights in registers, each input row's DW3_PIX·stride + 3 − stride
 * vectors loaded once for its three taps. The multiply-adds of each output are those of dw_pixels_avx512, in the
 * same order (bias, then taps row by row, left to right), so the results are the same bit for bit. */
#define DW3_PIX 8
static inline PSAM_AVX512FMA __attribute__((always_inline)) void
dw3_block_avx512(const float *x, size_t w, size_t c, const float *wt, const float *bias, const size_t stride, size_t iy0,
                 size_t ix0, float *const *o, size_t j, __mmask16 mk, const int lut) {
    __m512 wk[9], acc[DW3_PIX], in[2 * DW3_PIX + 1];
    for (int t = 0; t < 9; t++) wk[t] = _mm512_maskz_loadu_ps(mk, wt + (size_t)t * c + j);
    const __m512 b0 = bias ? _mm512_maskz_loadu_ps(mk, bias + j) : _mm512_setzero_ps();
    for (int i = 0; i < DW3_PIX; i++) acc[i] = b0;
    const size_t nin = (DW3_PIX - 1) * stride + 3;
    for (size_t ky = 0; ky < 3; ky++) {
        const float *row = x + ((iy0 + ky) * w + ix0) * c + j;
        for (size_t t = 0; t < nin; t++) in[t] = _mm512_maskz_loadu_ps(mk, row + t * c);
        for (size_t kx = 0; kx < 3; kx++)
            for (int i = 0; i < DW3_PIX; i++) acc[i] = _mm512_fmadd_ps(in[(size_t)i * stride + kx], wk[ky * 3 + kx], acc[i]);
    }
    if (lut) {
        /* The integer path's GELU here, on the sums still in registers (psam_gelu_lut512, as the row function). */
        __m512 tb[8];
        psam_gelu_lut512_table(tb);
        for (int i = 0; i < DW3_PIX; i++) acc[i] = psam_gelu_lut512(acc[i], tb);
    }
    for (int i = 0; i < DW3_PIX; i++) _mm512_mask_storeu_ps(o[i] + j, mk, acc[i]);
}

static inline PSAM_AVX512FMA __attribute__((always_inline)) void
dw3_pixels_avx512(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, const size_t stride,
                  size_t iy0, size_t ix0, float *const *o, const int lut) {
    /* The input rows the next output row adds, this group's span of them, into L2 ahead of use (the blocks of 16
     * channels walk the rows with a stride of c floats, which the hardware prefetchers do not follow). */
    for (size_t r = iy0 + 3; r < iy0 + 3 + stride && r < h; r++) {
        const char *p = (const char *)(x + (r * w + ix0) * c), *e = (const char *)(x + (r * w + ix0 + DW3_PIX * stride) * c);
        for (; p < e; p += 64) _mm_prefetch(p, _MM_HINT_T1);
    }
    size_t j = 0;
    for (; j + 16 <= c; j += 16) dw3_block_avx512(x, w, c, wt, bias, stride, iy0, ix0, o, j, (__mmask16)0xFFFF, lut);
    if (j < c) dw3_block_avx512(x, w, c, wt, bias, stride, iy0, ix0, o, j, (__mmask16)((1u << (c - j)) - 1u), lut);
}

/* Interior pixels DW_PIX at a time (dw_pixels_avx512; DW3_PIX for 3 × 3 kernels), the border ones one by one;
 * the quantized output goes through scratch rows on the stack when c ≤ 1024 (else one at a time through `out`). */
PSAM_AVX512FMA void psam_depthwise__avx512(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias,
                                            size_t k, size_t stride, size_t pad, float *out, size_t wo, size_t y0, size_t y1,
                                            int gelu, uint8_t *q, size_t ldq, float *scale, int32_t *zero) {
    float rows[DW3_PIX][1024];
    const int grouped = !q || c <= 1024, k3 = k == 3 && (stride == 1 || stride == 2);
    const size_t gp = k3 ? DW3_PIX : DW_PIX;
    /* Interior columns [ox_lo, ox_hi): every tap inside the row. The last group of a row ends at ox_hi, overlapping
     * the one before: its first pixels are computed (and, with `gelu` or `q`, finished) again from the input, to
     * the same values. */
    const size_t ox_lo = (pad + stride - 1) / stride;
    const size_t ox_hi = w + pad < k ? 0 : (w + pad - k) / stride + 1 < wo ? (w + pad - k) / stride + 1 : wo;
    for (size_t oy = y0; oy < y1; oy++) {
        const ptrdiff_t iy0 = (ptrdiff_t)(oy * stride) - (ptrdiff_t)pad;
        const int rows_in = iy0 >= 0 && iy0 + (ptrdiff_t)k <= (ptrdiff_t)h;
        size_t ox = 0;
        while (ox < wo) {
            const int group = grouped && rows_in && ox >= ox_lo && ox < ox_hi && ox_hi - ox_lo >= gp;
            if (group && ox + gp > ox_hi) ox = ox_hi - gp;
            const ptrdiff_t ix0 = (ptrdiff_t)(ox * stride) - (ptrdiff_t)pad;
            const size_t np = group ? gp : 1;
            float *o[DW3_PIX];
            for (size_t i = 0; i < np; i++) o[i] = q ? (group ? rows[i] : out) : out + (oy * wo + ox + i) * c;
            /* The 3 × 3 groups apply the LUT GELU themselves. */
            const int lut = gelu == PSAM_GELU_LUT, fused = lut && group && k3;
            if (group && k3 && stride == 1 && lut) dw3_pixels_avx512(x, h, w, c, wt, bias, 1, (size_t)iy0, (size_t)ix0, o, 1);
            else if (group && k3 && stride == 1) dw3_pixels_avx512(x, h, w, c, wt, bias, 1, (size_t)iy0, (size_t)ix0, o, 0);
            else if (group && k3 && lut) dw3_pixels_avx512(x, h, w, c, wt, bias, 2, (size_t)iy0, (size_t)ix0, o, 1);
            else if (group && k3) dw3_pixels_avx512(x, h, w, c, wt, bias, 2, (size_t)iy0, (size_t)ix0, o, 0);
            else if (group) dw_pixels_avx512(x, w, c, wt, bias, k, stride, (size_t)iy0, (size_t)ix0, o);
            else dw_pixel_avx512(x, h, w, c, wt, bias, k, stride, pad, oy, ox, o[0]);
            for (size_t i = 0; i < np; i++) {
                if (lut && !fused) psam_gelu_lut__avx512(o[i], c);
                else if (gelu && !lut) psam_gelu__avx512(o[i], c);
            }
            /* The group's pixels are consecutive rows of `rows` (and of q): quantized together. */
            const size_t p = oy * wo + ox;
            if (q) psam_quantize_u8__avx512(o[0], np, c, group ? 1024 : c, q + p * ldq, ldq, scale + p, zero + p);
            ox += np;
        }
    }
}

/* Channels [j, j + 8·B) held in B registers across all k·k taps (fused multiply-adds); if `masked`, the
 * last register holds only the c − j − 8·(B − 1) < 8 channels that remain. */
static inline PSAM_AVX2FMA __attribute__((always_inline)) void
dw_block_avx2(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t k, size_t stride,
              size_t pad, size_t oy, size_t ox, size_t j, const int B, const int masked, float *o) {
    const __m256i mk = masked ? tail_mask8(c - j - 8 * (size_t)(B - 1)) : _mm256_set1_epi32(-1);
#define PSAM_LD(p, b) (masked && (b) == B - 1 ? _mm256_maskload_ps((p), mk) : _mm256_loadu_ps(p))
    __m256 acc[4];
    for (int b = 0; b < B; b++) acc[b] = bias ? PSAM_LD(bias + j + 8 * b, b) : _mm256_setzero_ps();
    for (size_t ky = 0; ky < k; ky++) {
        ptrdiff_t iy = (ptrdiff_t)(oy * stride + ky) - (ptrdiff_t)pad;
        if (iy < 0 || iy >= (ptrdiff_t)h) continue;
        for (size_t kx = 0; kx < k; kx++) {
            ptrdiff_t ix = (ptrdiff_t)(ox * stride + kx) - (ptrdiff_t)pad;
            if (ix < 0 || ix >= (ptrdiff_t)w) continue;
            const float *sp = x + ((size_t)iy * w + (size_t)ix) * c + j, *wk = wt + (ky * k + kx) * c + j;
            for (int b = 0; b < B; b++) acc[b] = _mm256_fmadd_ps(PSAM_LD(sp + 8 * b, b), PSAM_LD(wk + 8 * b, b), acc[b]);
        }
    }
#undef PSAM_LD
    for (int b = 0; b < B; b++) {
        if (masked && b == B - 1) store_tail8(o + j + 8 * b, acc[b], c - j - 8 * (size_t)b);
        else _mm256_storeu_ps(o + j + 8 * b, acc[b]);
    }
}

PSAM_AVX2FMA void psam_depthwise__avx2(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias,
                                        size_t k, size_t stride, size_t pad, float *out, size_t wo, size_t y0, size_t y1,
                                        int gelu, uint8_t *q, size_t ldq, float *scale, int32_t *zero) {
    for (size_t oy = y0; oy < y1; oy++)
        for (size_t ox = 0; ox < wo; ox++) {
            size_t p = oy * wo + ox;
            float *o = q ? out : out + p * c;
            size_t j = 0;
            for (; j + 32 <= c; j += 32) dw_block_avx2(x, h, w, c, wt, bias, k, stride, pad, oy, ox, j, 4, 0, o);
            for (; j + 8 <= c; j += 8) dw_block_avx2(x, h, w, c, wt, bias, k, stride, pad, oy, ox, j, 1, 0, o);
            if (j < c) dw_block_avx2(x, h, w, c, wt, bias, k, stride, pad, oy, ox, j, 1, 1, o);
            if (gelu == PSAM_GELU_LUT) psam_gelu_lut__generic(o, c);
            else if (gelu) psam_gelu__avx2(o, c);
            if (q) psam_quantize_u8__avx2(o, 1, c, c, q + p * ldq, ldq, scale + p, zero + p);
        }
}
#endif

#if defined(__aarch64__)
/* Channels [j, j + 4·B) of one output pixel in B registers: bias, then the taps inside the input row by row, left
 * to right, one fused multiply-add each. The grouped kernels below take an interior pixel's taps in the same order,
 * so a pixel has the same bits whichever path computes it (the quantized output relies on it). sx, sw: the input
 * pixel and the weights of the first tap inside, nky × nkx taps from there. */
static inline __attribute__((always_inline)) void dw_taps_neon(const float *sx, const float *sw, const float *bias,
                                                               size_t w, size_t c, size_t k, size_t nky, size_t nkx,
                                                               size_t j, const int B, float *o) {
    float32x4_t acc[4];
#pragma GCC unroll 4
    for (int b = 0; b < B; b++) acc[b] = bias ? vld1q_f32(bias + j + 4 * b) : vdupq_n_f32(0.0f);
    for (size_t ky = 0; ky < nky; ky++)
        for (size_t kx = 0; kx < nkx; kx++) {
            const float *sp = sx + (ky * w + kx) * c + j, *wp = sw + (ky * k + kx) * c + j;
#pragma GCC unroll 4
            for (int b = 0; b < B; b++) acc[b] = vfmaq_f32(acc[b], vld1q_f32(sp + 4 * b), vld1q_f32(wp + 4 * b));
        }
#pragma GCC unroll 4
    for (int b = 0; b < B; b++) vst1q_f32(o + j + 4 * b, acc[b]);
}

/* One output pixel (any position: the taps outside the input skipped), c ≥ 4 channels into o. The last block of 4
 * channels ends at c, overlapping the one before when c is not a multiple of 4 (same values rewritten). */
static void dw_pixel_neon(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t k,
                          size_t stride, size_t pad, size_t oy, size_t ox, float *o) {
    const ptrdiff_t iy0 = (ptrdiff_t)(oy * stride) - (ptrdiff_t)pad, ix0 = (ptrdiff_t)(ox * stride) - (ptrdiff_t)pad;
    const ptrdiff_t ky0 = iy0 < 0 ? -iy0 : 0, kx0 = ix0 < 0 ? -ix0 : 0;
    ptrdiff_t ky1 = (ptrdiff_t)h - iy0, kx1 = (ptrdiff_t)w - ix0;
    ky1 = ky1 > (ptrdiff_t)k ? (ptrdiff_t)k : ky1;
    kx1 = kx1 > (ptrdiff_t)k ? (ptrdiff_t)k : kx1;
    size_t nky = ky1 > ky0 ? (size_t)(ky1 - ky0) : 0, nkx = kx1 > kx0 ? (size_t)(kx1 - kx0) : 0;
    const float *sx = x, *sw = wt;
    if (nky && nkx) {
        sx = x + (size_t)((iy0 + ky0) * (ptrdiff_t)w + ix0 + kx0) * c;
        sw = wt + ((size_t)ky0 * k + (size_t)kx0) * c;
    } else nky = nkx = 0; /* no tap: the bias alone */
    size_t j = 0;
    for (; j + 16 <= c; j += 16) dw_taps_neon(sx, sw, bias, w, c, k, nky, nkx, j, 4, o);
    for (; j + 4 <= c; j += 4) dw_taps_neon(sx, sw, bias, w, c, k, nky, nkx, j, 1, o);
    if (j < c) dw_taps_neon(sx, sw, bias, w, c, k, nky, nkx, c - 4, 1, o);
}

/* DWN_PIX output pixels side by side whose every tap is inside the input, channels [j, j + 4), into o + i·c + j
 * (pixel i). 3 × 3 kernels (TinyViT's): the 9 weights in registers, each input vector of a row loaded once for the
 * up to three outputs that use it; DWN_PIX accumulators hide the multiply-add latency (A72, A53). */
#define DWN_PIX 8
static inline __attribute__((always_inline)) void dw3_block_neon(const float *x, size_t w, size_t c, const float *wt,
                                                                 const float *bias, const size_t stride, size_t iy0,
                                                                 size_t ix0, float *o, size_t j) {
    float32x4_t wk[9], acc[DWN_PIX];
#pragma GCC unroll 9
    for (int t = 0; t < 9; t++) wk[t] = vld1q_f32(wt + (size_t)t * c + j);
    const float32x4_t b0 = bias ? vld1q_f32(bias + j) : vdupq_n_f32(0.0f);
#pragma GCC unroll 8
    for (int i = 0; i < DWN_PIX; i++) acc[i] = b0;
    const size_t nin = (DWN_PIX - 1) * stride + 3;
#pragma GCC unroll 3
    for (size_t ky = 0; ky < 3; ky++) {
        const float *row = x + ((iy0 + ky) * w + ix0) * c + j;
#pragma GCC unroll 17
        for (size_t t = 0; t < nin; t++) {
            const float32x4_t v = vld1q_f32(row + t * c);
#pragma GCC unroll 3
            for (size_t kx = 0; kx < 3; kx++)
                if (t >= kx && (t - kx) % stride == 0 && (t - kx) / stride < DWN_PIX)
                    acc[(t - kx) / stride] = vfmaq_f32(acc[(t - kx) / stride], v, wk[ky * 3 + kx]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < DWN_PIX; i++) vst1q_f32(o + (size_t)i * c + j, acc[i]);
}

/* Any k and stride: per tap one weight load and DWN_PIX multiply-adds. */
static inline __attribute__((always_inline)) void dwk_block_neon(const float *x, size_t w, size_t c, const float *wt,
                                                                 const float *bias, size_t k, size_t stride, size_t iy0,
                                                                 size_t ix0, float *o, size_t j) {
    float32x4_t acc[DWN_PIX];
    const float32x4_t b0 = bias ? vld1q_f32(bias + j) : vdupq_n_f32(0.0f);
#pragma GCC unroll 8
    for (int i = 0; i < DWN_PIX; i++) acc[i] = b0;
    const size_t step = stride * c;
    for (size_t ky = 0; ky < k; ky++) {
        const float *row = x + ((iy0 + ky) * w + ix0) * c + j, *wr = wt + ky * k * c + j;
        for (size_t kx = 0; kx < k; kx++) {
            const float32x4_t wv = vld1q_f32(wr + kx * c);
            const float *sp = row + kx * c;
#pragma GCC unroll 8
            for (int i = 0; i < DWN_PIX; i++) acc[i] = vfmaq_f32(acc[i], vld1q_f32(sp + (size_t)i * step), wv);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < DWN_PIX; i++) vst1q_f32(o + (size_t)i * c + j, acc[i]);
}

/* A group's c ≥ 4 channels in blocks of 4, the last one ending at c. */
static void dw_group_neon(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t k,
                          size_t stride, size_t iy0, size_t ix0, float *o) {
    /* The input rows the next output row adds, this group's span of them, towards the caches ahead of use: the
     * blocks of 4 channels walk them c floats apart. */
    for (size_t r = iy0 + k; r < iy0 + k + stride && r < h; r++) {
        const char *p = (const char *)(x + (r * w + ix0) * c), *e = (const char *)(x + (r * w + ix0 + DWN_PIX * stride) * c);
        for (; p < e; p += 64) __builtin_prefetch(p, 0, 2);
    }
    const size_t jl = c - 4;
    if (k == 3 && stride == 1) {
        for (size_t j = 0; j < jl; j += 4) dw3_block_neon(x, w, c, wt, bias, 1, iy0, ix0, o, j);
        dw3_block_neon(x, w, c, wt, bias, 1, iy0, ix0, o, jl);
    } else if (k == 3 && stride == 2) {
        for (size_t j = 0; j < jl; j += 4) dw3_block_neon(x, w, c, wt, bias, 2, iy0, ix0, o, j);
        dw3_block_neon(x, w, c, wt, bias, 2, iy0, ix0, o, jl);
    } else {
        for (size_t j = 0; j < jl; j += 4) dwk_block_neon(x, w, c, wt, bias, k, stride, iy0, ix0, o, j);
        dwk_block_neon(x, w, c, wt, bias, k, stride, iy0, ix0, o, jl);
    }
}

/* Interior pixels DWN_PIX at a time, the border ones one by one; GELU and quantization by the public row functions
 * (bit-identical to the generic ones) on each group's rows, which lie one after another in `out` or, for the
 * quantized output, in `rows` on the stack (c ≤ 1024; else one pixel at a time through `out`). Fewer than 4
 * channels: the generic body. */
void psam_depthwise__neon(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t k,
                          size_t stride, size_t pad, float *out, size_t wo, size_t y0, size_t y1, int gelu, uint8_t *q,
                          size_t ldq, float *scale, int32_t *zero) {
    if (c < 4) {
        psam_depthwise__generic(x, h, w, c, wt, bias, k, stride, pad, out, wo, y0, y1, gelu, q, ldq, scale, zero);
        return;
    }
    float rows[DWN_PIX * 1024];
    const int grouped = !q || c <= 1024;
    /* Interior columns [ox_lo, ox_hi): every tap inside the row. The last group of a row ends at ox_hi, overlapping
     * the one before: its first pixels are computed (and finished) again, to the same values. */
    const size_t ox_lo = (pad + stride - 1) / stride;
    const size_t ox_hi = w + pad < k ? 0 : (w + pad - k) / stride + 1 < wo ? (w + pad - k) / stride + 1 : wo;
    for (size_t oy = y0; oy < y1; oy++) {
        const ptrdiff_t iy0 = (ptrdiff_t)(oy * stride) - (ptrdiff_t)pad;
        const int rows_in = iy0 >= 0 && iy0 + (ptrdiff_t)k <= (ptrdiff_t)h;
        size_t ox = 0;
        while (ox < wo) {
            const int group = grouped && rows_in && ox >= ox_lo && ox < ox_hi && ox_hi - ox_lo >= DWN_PIX;
            if (group && ox + DWN_PIX > ox_hi) ox = ox_hi - DWN_PIX;
            const size_t np = group ? DWN_PIX : 1, p = oy * wo + ox;
            float *o = q ? (group ? rows : out) : out + p * c;
            if (group) dw_group_neon(x, h, w, c, wt, bias, k, stride, (size_t)iy0, ox * stride - pad, o);
            else dw_pixel_neon(x, h, w, c, wt, bias, k, stride, pad, oy, ox, o);
            if (gelu) psam_gelu_mode_rows(o, np * c, gelu);
            if (q) psam_quantize_rows_u8(o, np, c, c, q + p * ldq, ldq, scale + p, zero + p);
            ox += np;
        }
    }
}
#endif

void psam_depthwise__generic(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t k,
                              size_t stride, size_t pad, float *out, size_t wo, size_t y0, size_t y1, int gelu, uint8_t *q,
                              size_t ldq, float *scale, int32_t *zero) {
    for (size_t oy = y0; oy < y1; oy++)
        for (size_t ox = 0; ox < wo; ox++) {
            size_t p = oy * wo + ox;
            float *o = q ? out : out + p * c;
            dw_pixel_generic(x, h, w, c, wt, bias, k, stride, pad, oy, ox, o);
            if (gelu == PSAM_GELU_LUT) psam_gelu_lut__generic(o, c);
            else if (gelu) psam_gelu__generic(o, c);
            if (q) psam_quantize_u8__generic(o, 1, c, c, q + p * ldq, ldq, scale + p, zero + p);
        }
}

void psam_depthwise_rows(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias,
                         size_t k, size_t stride, size_t pad, float *out, size_t wo, size_t y0, size_t y1, int gelu) {
#if defined(__x86_64__)
    if (has_avx512()) {
        psam_depthwise__avx512(x, h, w, c, wt, bias, k, stride, pad, out, wo, y0, y1, gelu, NULL, 0, NULL, NULL);
        return;
    }
    if (has_avx2()) {
        psam_depthwise__avx2(x, h, w, c, wt, bias, k, stride, pad, out, wo, y0, y1, gelu, NULL, 0, NULL, NULL);
        return;
    }
#endif
#if defined(__aarch64__)
    if (!psam_portable_kernels()) {
        psam_depthwise__neon(x, h, w, c, wt, bias, k, stride, pad, out, wo, y0, y1, gelu, NULL, 0, NULL, NULL);
        return;
    }
#endif
    psam_depthwise__generic(x, h, w, c, wt, bias, k, stride, pad, out, wo, y0, y1, gelu, NULL, 0, NULL, NULL);
}

void psam_depthwise_rows_u8(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t k,
                            size_t stride, size_t pad, size_t wo, size_t y0, size_t y1, int gelu, float *row,
                            uint8_t *q, size_t ldq, float *scale, int32_t *zero) {
#if defined(__x86_64__)
    if (has_avx512()) {
        psam_depthwise__avx512(x, h, w, c, wt, bias, k, stride, pad, row, wo, y0, y1, gelu, q, ldq, scale, zero);
        return;
    }
    if (has_avx2()) {
        psam_depthwise__avx2(x, h, w, c, wt, bias, k, stride, pad, row, wo, y0, y1, gelu, q, ldq, scale, zero);
        return;
    }
#endif
#if defined(__aarch64__)
    if (!psam_portable_kernels()) {
        psam_depthwise__neon(x, h, w, c, wt, bias, k, stride, pad, row, wo, y0, y1, gelu, q, ldq, scale, zero);
        return;
    }
#endif
    psam_depthwise__generic(x, h, w, c, wt, bias, k, stride, pad, row, wo, y0, y1, gelu, q, ldq, scale, zero);
}
