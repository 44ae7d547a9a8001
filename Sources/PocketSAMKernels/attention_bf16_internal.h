/* bf16 attention's shared stages (window_attention_bf16.c: TinyViT's windows with a bias; vit_attention_bf16.c: SAM
 * ViT's windows and global attention with decomposed relative positions). q·scale, k, v and the probabilities are
 * rounded to bf16 (to nearest even, subnormals flushed to zero, as vcvtneps2bf16 does); scores and outputs are fp32
 * sums of products of bf16 pairs, each pair added odd element first, one rounding per product, as vdpbf16ps
 * specifies. Layouts: q pairs qp[nq][kd/2]; keys transposed kt[kd/2][wp] (wp = keys rounded up to 32, zero past
 * them); value pairs vp[wp/2][kd] (keys 2m, 2m + 1 of each value column, the even key in the low half). Internal. */
#ifndef POCKETSAM_ATTENTION_BF16_INTERNAL_H
#define POCKETSAM_ATTENTION_BF16_INTERNAL_H
#include "rowops_internal.h"

/* fp32 → bf16 bits, round to nearest even, subnormals to signed zero, NaN kept quiet. */
static inline uint16_t bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40u);
    if ((u & 0x7F800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* bf16 bits → the fp32 value they stand for. */
static inline float bf16_float(uint16_t b) {
    const uint32_t u = (uint32_t)b << 16;
    float y;
    memcpy(&y, &u, 4);
    return y;
}

/* x rounded to bf16, as fp32. */
static inline float bf16_value(float x) { return bf16_float(bf16_bits(x)); }

/* Keys padded to a whole number of score tiles. */
static inline size_t bf16_keys_padded(size_t nk) { return (nk + 31) & ~(size_t)31; }

#if defined(__x86_64__)
/* 16 floats → 16 bf16 in the low halves of 16 32-bit lanes (high halves zero). */
PSAM_AVX512BF16 static inline __m512i bf16_low(__m512 x) {
    return _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x));
}

/* Scores of R queries (rows i0…, bf16 pairs qp[i][kp]) against keys [j, j + 16·NC) (pairs kᵀ[kp][wp]): fp32 sums of
 * pair products, + bias (stride wn; keys ≥ wn unbiased, softmax skips them) into s[i][wp]. */
static inline PSAM_AVX512BF16 __attribute__((always_inline)) void
scores_tile_bf16(const uint32_t *qp, const uint32_t *kt, size_t wn, size_t wp, size_t kp, size_t i0, size_t j, const int R,
                 const int NC, const float *bias, const uint16_t *rows, float *s) {
    /* NC key vectors (1, 2 or 4) per query pair broadcast; R · NC accumulators. */
    __m512 acc[8][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_ps();
    for (size_t p = 0; p < kp; p++) {
        __m512bh kv[4];
        for (int c = 0; c < NC; c++) kv[c] = (__m512bh)_mm512_loadu_si512((const void *)(kt + p * wp + j + 16 * (size_t)c));
        for (int r = 0; r < R; r++) {
            const __m512bh qv = (__m512bh)_mm512_set1_epi32((int)qp[(i0 + r) * kp + p]);
            for (int c = 0; c < NC; c++) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], qv, kv[c]);
        }
    }
    for (int c = 0; c < NC; c++) {
        const size_t jc = j + 16 * (size_t)c;
        const __mmask16 mk = jc >= wn ? 0 : wn - jc >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (wn - jc)) - 1u);
        for (int r = 0; r < R; r++) {
            __m512 t = acc[r][c];
            if (bias) t = _mm512_add_ps(t, _mm512_maskz_loadu_ps(mk, bias + (rows ? rows[i0 + r] : i0 + r) * wn + jc));
            _mm512_storeu_ps(s + (i0 + r) * wp + jc, t);
        }
    }
}

/* Score tiles of the R < 8 rows from i0 (a switch to constant tile heights). */
static inline PSAM_AVX512BF16 __attribute__((always_inline)) void
scores_tail_bf16(const uint32_t *qp, const uint32_t *kt, size_t wn, size_t wp, size_t kp, size_t i0, size_t j, size_t R,
                 const int NC, const float *bias, const uint16_t *rows, float *s) {
    switch (R) {
    case 7: scores_tile_bf16(qp, kt, wn, wp, kp, i0, j, 7, NC, bias, rows, s); break;
    case 6: scores_tile_bf16(qp, kt, wn, wp, kp, i0, j, 6, NC, bias, rows, s); break;
    case 5: scores_tile_bf16(qp, kt, wn, wp, kp, i0, j, 5, NC, bias, rows, s); break;
    case 4: scores_tile_bf16(qp, kt, wn, wp, kp, i0, j, 4, NC, bias, rows, s); break;
    case 3: scores_tile_bf16(qp, kt, wn, wp, kp, i0, j, 3, NC, bias, rows, s); break;
    case 2: scores_tile_bf16(qp, kt, wn, wp, kp, i0, j, 2, NC, bias, rows, s); break;
    case 1: scores_tile_bf16(qp, kt, wn, wp, kp, i0, j, 1, NC, bias, rows, s); break;
    default: break;
    }
}

/* Output of R queries (bf16 probabilities p[i][·], row stride lp halves, zero past the window) for value columns
 * [d, d + 32) of the key pairs vp[m][kd] (keys 2m, 2m + 1; zero past the window), over the first np pairs. */
static inline PSAM_AVX512BF16 __attribute__((always_inline)) void
values_tile_bf16(const uint16_t *p, size_t lp, const uint32_t *vp, size_t kd, size_t np, size_t i0, size_t d, const int R,
                 const int NV, const uint16_t *rows, float *out, size_t ldo) {
    /* NV value vectors (2 or 4: 32 or 64 columns) per probability pair broadcast; R · NV accumulators. */
    __m512 acc[8][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < NV; c++) acc[r][c] = _mm512_setzero_ps();
    for (size_t m = 0; m < np; m++) {
        __m512bh vv[4];
        for (int c = 0; c < NV; c++) vv[c] = (__m512bh)_mm512_loadu_si512((const void *)(vp + m * kd + d + 16 * (size_t)c));
        for (int r = 0; r < R; r++) {
            uint32_t pair;
            memcpy(&pair, p + (i0 + r) * lp + 2 * m, 4);
            const __m512bh pv = (__m512bh)_mm512_set1_epi32((int)pair);
            for (int c = 0; c < NV; c++) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], pv, vv[c]);
        }
    }
    for (int r = 0; r < R; r++) {
        float *o = out + (rows ? rows[i0 + r] : i0 + r) * ldo + d;
        for (int c = 0; c < NV; c++) _mm512_storeu_ps(o + 16 * c, acc[r][c]);
    }
}

/* Value tiles of the R < 8 rows from i0 (a switch to constant tile heights). */
static inline PSAM_AVX512BF16 __attribute__((always_inline)) void
values_tail_bf16(const uint16_t *p, size_t lp, const uint32_t *vp, size_t kd, size_t np, size_t i0, size_t d, size_t R, const int NV,
                 const uint16_t *rows, float *out, size_t ldo) {
    switch (R) {
    case 7: values_tile_bf16(p, lp, vp, kd, np, i0, d, 7, NV, rows, out, ldo); break;
    case 6: values_tile_bf16(p, lp, vp, kd, np, i0, d, 6, NV, rows, out, ldo); break;
    case 5: values_tile_bf16(p, lp, vp, kd, np, i0, d, 5, NV, rows, out, ldo); break;
    case 4: values_tile_bf16(p, lp, vp, kd, np, i0, d, 4, NV, rows, out, ldo); break;
    case 3: values_tile_bf16(p, lp, vp, kd, np, i0, d, 3, NV, rows, out, ldo); break;
    case 2: values_tile_bf16(p, lp, vp, kd, np, i0, d, 2, NV, rows, out, ldo); break;
    case 1: values_tile_bf16(p, lp, vp, kd, np, i0, d, 1, NV, rows, out, ldo); break;
    default: break;
    }
}

/* Softmax of R score rows i0… (stride wp) over their wn keys, each row as softmax_row_exp and the scaling to bf16
 * in place: the same operations on each row (the same bits), the R rows' independent chains interleaved. Vectors
 * of keys all past wn are zeros (exp is not evaluated there; adding their zeros to the sums changes nothing). */
static inline PSAM_AVX512BF16 __attribute__((always_inline)) void
softmax_rows_bf16(float *s, size_t wn, size_t wp, size_t i0, const int R) {
    __m512 vm[8], mx[8], sum[8], inv[8];
    for (int r = 0; r < R; r++) vm[r] = _mm512_set1_ps(-INFINITY);
    for (size_t j = 0; j < wn; j += 16) {
        const __mmask16 mk = wn - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (wn - j)) - 1u);
        for (int r = 0; r < R; r++) vm[r] = _mm512_mask_max_ps(vm[r], mk, vm[r], _mm512_loadu_ps(s + (i0 + r) * wp + j));
    }
    for (int r = 0; r < R; r++) {
        mx[r] = _mm512_set1_ps(_mm512_reduce_max_ps(vm[r]));
        sum[r] = _mm512_setzero_ps();
    }
    for (size_t j = 0; j < wp; j += 16) {
        if (j >= wn) {
            for (int r = 0; r < R; r++) _mm512_storeu_ps(s + (i0 + r) * wp + j, _mm512_setzero_ps());
            continue;
        }
        const __mmask16 mk = wn - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (wn - j)) - 1u);
        for (int r = 0; r < R; r++) {
            float *row = s + (i0 + r) * wp + j;
            const __m512 e = _mm512_maskz_mov_ps(mk, exp512(_mm512_sub_ps(_mm512_loadu_ps(row), mx[r])));
            sum[r] = _mm512_add_ps(sum[r], e);
            _mm512_storeu_ps(row, e);
        }
    }
    for (int r = 0; r < R; r++) inv[r] = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum[r]));
    for (int r = 0; r < R; r++) {
        float *row = s + (i0 + r) * wp;
        for (size_t j = 0; j < wp; j += 16)
            _mm256_storeu_si256((__m256i *)(row + j / 2), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(row + j), inv[r])));
    }
}


/* q·scale of rows rows[0 .. nq) (NULL: [0, nq)) of q[·][ldq] as bf16 pairs qp[nq][kd/2]; kd a multiple of 32. */
static inline PSAM_AVX512BF16 __attribute__((always_inline)) void
pack_q_bf16(const float *q, size_t ldq, size_t nq, const uint16_t *rows, size_t kd, float scale, uint32_t *qp) {
    const size_t kp = kd / 2;
    const __m512 vs = _mm512_set1_ps(scale);
    for (size_t i = 0; i < nq; i++) {
        const float *qi = q + (rows ? rows[i] : i) * ldq;
        for (size_t d = 0; d < kd; d += 32)
            _mm512_storeu_si512((void *)(qp + i * kp + d / 2),
                                (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(_mm512_loadu_ps(qi + d + 16), vs),
                                                             _mm512_mul_ps(_mm512_loadu_ps(qi + d), vs)));
    }
}

/* nk keys and values (rows of k and v, stride ld) as kt[kd/2][wp] (through 16 × 16 transposes) and vp[wp/2][kd],
 * zero past nk; kd a multiple of 32. */
static inline PSAM_AVX512BF16 __attribute__((always_inline)) void
pack_kv_bf16(const float *kk, const float *v, size_t ld, size_t nk, size_t kd, uint32_t *kt, uint32_t *vp) {
    const size_t wp = bf16_keys_padded(nk);
    for (size_t m = 0; m < wp / 2; m++)
        for (size_t d = 0; d < kd; d += 16) {
            const size_t j = 2 * m;
            const __m512i lo = j < nk ? bf16_low(_mm512_loadu_ps(v + j * ld + d)) : _mm512_setzero_si512();
            const __m512i hi = j + 1 < nk ? bf16_low(_mm512_loadu_ps(v + (j + 1) * ld + d)) : _mm512_setzero_si512();
            _mm512_storeu_si512((void *)(vp + m * kd + d), _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        }
    for (size_t j = 0; j < wp; j += 16)
        for (size_t d = 0; d < kd; d += 32) {
            __m512 r[16];
            for (size_t x = 0; x < 16; x++)
                r[x] = j + x < nk ? (__m512)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(kk + (j + x) * ld + d + 16),
                                                                _mm512_loadu_ps(kk + (j + x) * ld + d))
                                  : _mm512_setzero_ps();
            transpose16x16(r);
            for (size_t x = 0; x < 16; x++) _mm512_storeu_ps((float *)(kt + (d / 2 + x) * wp + j), r[x]);
        }
}

/* Scores s[nq][wp] of the packed queries against the nk packed keys (+ bias[rows[i] or i][·], stride nk, if any),
 * in key tiles of 32, the last one 16 wide where the keys end within its first half (the softmax reads no score
 * past nk). */
static inline PSAM_AVX512BF16 __attribute__((always_inline)) void
scores_bf16(const uint32_t *qp, const uint32_t *kt, size_t nq, size_t nk, size_t kd, const float *bias, const uint16_t *rows,
            int wide, float *s) {
    const size_t wp = bf16_keys_padded(nk), kp = kd / 2;
    size_t j = 0;
    /* wide (SAM ViT's long key rows): tiles of 6 queries × 64 keys first, each query pair broadcast feeding four key
     * vectors (10 loads per 24 vdpbf16ps instead of 10 per 16); the same sums. */
    for (; wide && j + 64 <= wp; j += 64) {
        size_t i = 0;
        for (; i + 6 <= nq; i += 6) scores_tile_bf16(qp, kt, nk, wp, kp, i, j, 6, 4, bias, rows, s);
        scores_tail_bf16(qp, kt, nk, wp, kp, i, j, nq - i, 4, bias, rows, s);
    }
    for (; j < wp; j += 32) {
        size_t i = 0;
        if (j + 16 >= nk) {
            for (; i + 8 <= nq; i += 8) scores_tile_bf16(qp, kt, nk, wp, kp, i, j, 8, 1, bias, rows, s);
            scores_tail_bf16(qp, kt, nk, wp, kp, i, j, nq - i, 1, bias, rows, s);
        } else {
            for (; i + 8 <= nq; i += 8) scores_tile_bf16(qp, kt, nk, wp, kp, i, j, 8, 2, bias, rows, s);
            scores_tail_bf16(qp, kt, nk, wp, kp, i, j, nq - i, 2, bias, rows, s);
        }
    }
}

/* Softmax over the nk keys of each row of s[nq][wp]; the probabilities (0 past nk) overwrite the row's start as
 * bf16 (each 16 scores are read before their 8 floats' worth of halves are written at or before them). Rows 8 at a
 * time, so that their reductions' latencies overlap. */
static inline PSAM_AVX512BF16 __attribute__((always_inline)) void softmax_bf16(float *s, size_t nq, size_t nk) {
    const size_t wp = bf16_keys_padded(nk);
    size_t i = 0;
    for (; i + 8 <= nq; i += 8) softmax_rows_bf16(s, nk, wp, i, 8);
    if (nq - i >= 4) {
        softmax_rows_bf16(s, nk, wp, i, 4);
        i += 4;
    }
    for (; i < nq; i++) softmax_rows_bf16(s, nk, wp, i, 1);
}

/* out[rows[i] or i][0 .. kd) = the bf16 probabilities of s (softmax_bf16's) times the packed values, tiles of 8
 * queries × 32 columns. */
static inline PSAM_AVX512BF16 __attribute__((always_inline)) void
values_bf16(const float *s, const uint32_t *vp, size_t nq, size_t nk, size_t kd, const uint16_t *rows, int wide, float *o,
            size_t ldo) {
    const size_t wp = bf16_keys_padded(nk), np = (nk + 1) / 2;
    const uint16_t *pp = (const uint16_t *)s;
    /* wide (kd a multiple of 64): tiles of 6 queries × 64 columns, else 8 × 32; the same sums. */
    const int nv = wide && kd % 64 == 0 ? 4 : 2, rt = nv == 4 ? 6 : 8;
    for (size_t d = 0; d < kd; d += 16 * (size_t)nv) {
        size_t i = 0;
        for (; i + (size_t)rt <= nq; i += (size_t)rt)
            if (nv == 4) values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 6, 4, rows, o, ldo);
            else values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 8, 2, rows, o, ldo);
        if (nv == 4) values_tail_bf16(pp, 2 * wp, vp, kd, np, i, d, nq - i, 4, rows, o, ldo);
        else values_tail_bf16(pp, 2 * wp, vp, kd, np, i, d, nq - i, 2, rows, o, ldo);
    }
}
#endif
#endif
