#include "rowops_internal.h"

/* ---- Window attention in bf16 (the int8 models' path where the CPU has AVX-512 BF16 but not FP16) ----
 * q·scale, k, v and the probabilities are rounded to bf16 (to nearest even, subnormals flushed to zero, as
 * vcvtneps2bf16 does); scores and outputs are fp32 sums of products of bf16 pairs, each pair added odd element
 * first, one rounding per product (a product of two bf16 values is exact in fp32), as vdpbf16ps specifies. The
 * sums run in fp32, so only the 8-bit inputs cost accuracy: on LiteMedSAM bf16 attention moves 1 − cosine of the
 * embedding by about 2e-6 (Tests/Reference/int8_sensitivity.py), against the int8 weights' 9e-4; vdpbf16ps does
 * twice the fp32 rate (AMD Zen 4: 117 against 58 GMAC/s per thread). The generic body computes the same
 * roundings in scalar code and is the reference, and what runs where the CPU lacks AVX-512 BF16 (the runtime
 * does not pick this path there). Scratch per call, in floats: psam_window_attention_bf16_scratch(wn, kd). */
size_t psam_window_attention_bf16_scratch(size_t wn, size_t kd) {
    const size_t wp = (wn + 31) & ~(size_t)31, kp = (kd + 1) / 2;
    /* scores (then bf16 probabilities) wn × wp floats; kᵀ pairs kp × wp, q pairs wn × kp, v pairs wp/2 × kd. */
    return wn * wp + kp * wp + wn * kp + wp / 2 * kd;
}

/* fp32 → bf16 bits, round to nearest even, subnormals to signed zero, NaN kept quiet. */
static inline uint16_t bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40u);
    if ((u & 0x7F800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float bf16_value(float x) {
    uint32_t u = (uint32_t)bf16_bits(x) << 16;
    float y;
    memcpy(&y, &u, 4);
    return y;
}

void psam_window_attention_bf16_rows__generic(const float *qkv, size_t ldq, size_t wn, size_t nq, const uint16_t *rows, size_t heads,
                                        size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch) {
    float *s = scratch;
    /* Pairs (2t, 2t + 1): the odd element's product is added first. Products are exact in fp32, so
     * each += rounds once, as the instruction does; volatile keeps the compiler from reassociating. */
    for (size_t hd = 0; hd < heads; hd++) {
        const float *q = qkv + hd * 3 * kd, *kk = q + kd, *v = q + 2 * kd;
        for (size_t qi = 0; qi < nq; qi++) {
            const size_t i = rows ? rows[qi] : qi;
            float mx = -INFINITY;
            for (size_t j = 0; j < wn; j++) {
                volatile float acc = 0.0f;
                for (size_t d = 0; d < kd; d += 2) {
                    if (d + 1 < kd) acc = acc + bf16_value(q[i * ldq + d + 1] * scale) * bf16_value(kk[j * ldq + d + 1]);
                    acc = acc + bf16_value(q[i * ldq + d] * scale) * bf16_value(kk[j * ldq + d]);
                }
                s[j] = acc + (bias ? bias[(hd * wn + i) * wn + j] : 0.0f);
                mx = s[j] > mx ? s[j] : mx;
            }
            float sum = 0.0f;
            for (size_t j = 0; j < wn; j++) { s[j] = expf(s[j] - mx); sum += s[j]; }
            const float inv = 1.0f / sum;
            for (size_t j = 0; j < wn; j++) s[j] = bf16_value(s[j] * inv);
            float *o = out + i * ldo + hd * kd;
            for (size_t d = 0; d < kd; d++) {
                volatile float acc = 0.0f;
                for (size_t j = 0; j < wn; j += 2) {
                    if (j + 1 < wn) acc = acc + s[j + 1] * bf16_value(v[(j + 1) * ldq + d]);
                    acc = acc + s[j] * bf16_value(v[j * ldq + d]);
                }
                o[d] = acc;
            }
        }
    }
}

/* The whole window (the kernel test's reference; the library calls the _rows forms). */
void psam_window_attention_bf16__generic(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd,
                                                           float scale, const float *bias, float *out, size_t ldo,
                                                           float *scratch) {
    psam_window_attention_bf16_rows__generic(qkv, ldq, wn, wn, NULL, heads, kd, scale, bias, out, ldo, scratch);
}

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
    __m512 acc[8][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (size_t p = 0; p < kp; p++) {
        const __m512bh k0 = (__m512bh)_mm512_loadu_si512((const void *)(kt + p * wp + j));
        const __m512bh k1 = NC > 1 ? (__m512bh)_mm512_loadu_si512((const void *)(kt + p * wp + j + 16)) : k0;
        for (int r = 0; r < R; r++) {
            const __m512bh qv = (__m512bh)_mm512_set1_epi32((int)qp[(i0 + r) * kp + p]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], qv, k0);
            if (NC > 1) acc[r][1] = _mm512_dpbf16_ps(acc[r][1], qv, k1);
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
                 const uint16_t *rows, float *out, size_t ldo) {
    __m512 acc[8][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (size_t m = 0; m < np; m++) {
        const __m512bh v0 = (__m512bh)_mm512_loadu_si512((const void *)(vp + m * kd + d));
        const __m512bh v1 = (__m512bh)_mm512_loadu_si512((const void *)(vp + m * kd + d + 16));
        for (int r = 0; r < R; r++) {
            uint32_t pair;
            memcpy(&pair, p + (i0 + r) * lp + 2 * m, 4);
            const __m512bh pv = (__m512bh)_mm512_set1_epi32((int)pair);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], pv, v0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], pv, v1);
        }
    }
    for (int r = 0; r < R; r++) {
        float *o = out + (rows ? rows[i0 + r] : i0 + r) * ldo + d;
        _mm512_storeu_ps(o, acc[r][0]);
        _mm512_storeu_ps(o + 16, acc[r][1]);
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

/* kd a multiple of 32; queries rows[0 .. nq) of the wn (rows NULL: [0, nq); keys: all wn). Per head: q·scale, k (pairs through 16 × 16 transposes) and v (pairs of keys) to bf16,
 * score tiles of 8 queries × 32 keys, softmax per row (bf16 probabilities in place of the row's scores), value
 * tiles of 8 queries × 32 columns. */
PSAM_AVX512BF16 void psam_window_attention_bf16_rows__avx512bf16(const float *qkv, size_t ldq, size_t wn, size_t nq, const uint16_t *rows,
                                                       size_t heads, size_t kd, float scale, const float *bias, float *out,
                                                       size_t ldo, float *scratch) {
    const size_t wp = (wn + 31) & ~(size_t)31, kp = kd / 2, np = (wn + 1) / 2;
    float *s = scratch;
    uint32_t *kt = (uint32_t *)(s + wn * wp), *qp = kt + kp * wp, *vp = qp + wn * kp;
    const __m512 vs = _mm512_set1_ps(scale);
    for (size_t hd = 0; hd < heads; hd++) {
        const float *q = qkv + hd * 3 * kd, *kk = q + kd, *v = q + 2 * kd;
        const float *bh = bias ? bias + hd * wn * wn : NULL;
        for (size_t i = 0; i < nq; i++) {
            const float *qi = q + (rows ? rows[i] : i) * ldq;
            for (size_t d = 0; d < kd; d += 32)
                _mm512_storeu_si512((void *)(qp + i * kp + d / 2),
                                    (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(_mm512_loadu_ps(qi + d + 16), vs),
                                                                 _mm512_mul_ps(_mm512_loadu_ps(qi + d), vs)));
        }
        /* Key pairs (2m, 2m + 1) of each value column: the even key in the low half. */
        for (size_t m = 0; m < wp / 2; m++)
            for (size_t d = 0; d < kd; d += 16) {
                const size_t j = 2 * m;
                const __m512i lo = j < wn ? bf16_low(_mm512_loadu_ps(v + j * ldq + d)) : _mm512_setzero_si512();
                const __m512i hi = j + 1 < wn ? bf16_low(_mm512_loadu_ps(v + (j + 1) * ldq + d)) : _mm512_setzero_si512();
                _mm512_storeu_si512((void *)(vp + m * kd + d), _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
            }
        /* kᵀ: each key's 32 columns as 16 bf16 pairs, blocks of 16 keys (zero past wn) × 16 pairs transposed. */
        for (size_t j = 0; j < wp; j += 16)
            for (size_t d = 0; d < kd; d += 32) {
                __m512 r[16];
                for (size_t x = 0; x < 16; x++)
                    r[x] = j + x < wn ? (__m512)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(kk + (j + x) * ldq + d + 16),
                                                                    _mm512_loadu_ps(kk + (j + x) * ldq + d))
                                      : _mm512_setzero_ps();
                transpose16x16(r);
                for (size_t x = 0; x < 16; x++) _mm512_storeu_ps((float *)(kt + (d / 2 + x) * wp + j), r[x]);
            }
        /* Key tiles of 32, the last one 16 wide where the keys end within its first half (the softmax reads no
         * score past wn). */
        for (size_t j = 0; j < wp; j += 32) {
            size_t i = 0;
            if (j + 16 >= wn) {
                for (; i + 8 <= nq; i += 8) scores_tile_bf16(qp, kt, wn, wp, kp, i, j, 8, 1, bh, rows, s);
                scores_tail_bf16(qp, kt, wn, wp, kp, i, j, nq - i, 1, bh, rows, s);
            } else {
                for (; i + 8 <= nq; i += 8) scores_tile_bf16(qp, kt, wn, wp, kp, i, j, 8, 2, bh, rows, s);
                scores_tail_bf16(qp, kt, wn, wp, kp, i, j, nq - i, 2, bh, rows, s);
            }
        }
        /* Softmax over the wn keys of each row; the probabilities (0 past wn) overwrite the row's start as bf16
         * (each 16 scores are read before their 8 floats' worth of halves are written at or before them). Rows 8
         * at a time, so that their reductions' latencies overlap. */
        size_t i = 0;
        for (; i + 8 <= nq; i += 8) softmax_rows_bf16(s, wn, wp, i, 8);
        if (nq - i >= 4) {
            softmax_rows_bf16(s, wn, wp, i, 4);
            i += 4;
        }
        for (; i < nq; i++) softmax_rows_bf16(s, wn, wp, i, 1);
        const uint16_t *pp = (const uint16_t *)s;
        float *o = out + hd * kd;
        for (size_t d = 0; d < kd; d += 32) {
            size_t i = 0;
            for (; i + 8 <= nq; i += 8) values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 8, rows, o, ldo);
            switch (nq - i) {
            case 7: values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 7, rows, o, ldo); break;
            case 6: values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 6, rows, o, ldo); break;
            case 5: values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 5, rows, o, ldo); break;
            case 4: values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 4, rows, o, ldo); break;
            case 3: values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 3, rows, o, ldo); break;
            case 2: values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 2, rows, o, ldo); break;
            case 1: values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 1, rows, o, ldo); break;
            default: break;
            }
        }
    }
}

/* The whole window (the kernel test's vector variant). */
PSAM_AVX512BF16 void psam_window_attention_bf16__avx512bf16(const float *qkv, size_t ldq, size_t wn, size_t heads,
                                                                         size_t kd, float scale, const float *bias, float *out,
                                                                         size_t ldo, float *scratch) {
    psam_window_attention_bf16_rows__avx512bf16(qkv, ldq, wn, wn, NULL, heads, kd, scale, bias, out, ldo, scratch);
}
#endif

int psam_window_attention_bf16_fast(size_t kd) {
#if defined(__x86_64__)
    return kd > 0 && kd % 32 == 0 && has_avx512bf16();
#else
    (void)kd;
    return 0;
#endif
}

void psam_window_attention_bf16_rows(const float *qkv, size_t ldq, size_t wn, size_t nq, const uint16_t *rows, size_t heads,
                                     size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch) {
    if (nq > wn) nq = wn;
#if defined(__x86_64__)
    if (psam_window_attention_bf16_fast(kd)) {
        psam_window_attention_bf16_rows__avx512bf16(qkv, ldq, wn, nq, rows, heads, kd, scale, bias, out, ldo, scratch);
        return;
    }
#endif
    psam_window_attention_bf16_rows__generic(qkv, ldq, wn, nq, rows, heads, kd, scale, bias, out, ldo, scratch);
}

void psam_window_attention_bf16(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
                                const float *bias, float *out, size_t ldo, float *scratch) {
    psam_window_attention_bf16_rows(qkv, ldq, wn, wn, NULL, heads, kd, scale, bias, out, ldo, scratch);
}
