/* int8 GEMM for AVX-512 VNNI: tiles of up to 8 rows × 32 columns (two packed panels), 16 int32
 * accumulators updated by vpdpbusd (u8 activations × s8 weights, 4 products per lane). */
#include "pocketsam_kernels.h"
#include "gelu_lut.h"
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#define PSAM_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma")))

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* GELU on a vector with exactly the operations of psam_gelu_rows (no contraction), so the fused
 * epilogue gives the same bits as GELU applied afterwards. */
static inline PSAM_AVX512 __attribute__((always_inline)) __m512 gelu16(__m512 v) {
    __m512 x = _mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f));
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-4.0f)), _mm512_set1_ps(4.0f));
    __m512 x2 = _mm512_mul_ps(x, x);
    __m512 p = _mm512_set1_ps(-2.72614225801306e-10f);
    p = _mm512_add_ps(_mm512_mul_ps(p, x2), _mm512_set1_ps(2.77068142495902e-08f));
    p = _mm512_sub_ps(_mm512_mul_ps(p, x2), _mm512_set1_ps(2.10102402082508e-06f));
    p = _mm512_sub_ps(_mm512_mul_ps(p, x2), _mm512_set1_ps(5.69250639462346e-05f));
    p = _mm512_sub_ps(_mm512_mul_ps(p, x2), _mm512_set1_ps(7.34990630326855e-04f));
    p = _mm512_sub_ps(_mm512_mul_ps(p, x2), _mm512_set1_ps(2.95459980854025e-03f));
    p = _mm512_sub_ps(_mm512_mul_ps(p, x2), _mm512_set1_ps(1.60960333262415e-02f));
    __m512 q = _mm512_set1_ps(-1.45660718464996e-05f);
    q = _mm512_sub_ps(_mm512_mul_ps(q, x2), _mm512_set1_ps(2.13374055278905e-04f));
    q = _mm512_sub_ps(_mm512_mul_ps(q, x2), _mm512_set1_ps(1.68282697438203e-03f));
    q = _mm512_sub_ps(_mm512_mul_ps(q, x2), _mm512_set1_ps(7.37332916720468e-03f));
    q = _mm512_sub_ps(_mm512_mul_ps(q, x2), _mm512_set1_ps(1.42647390514189e-02f));
    __m512 erf = _mm512_div_ps(_mm512_mul_ps(x, p), q);
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(_mm512_set1_ps(1.0f), erf));
}

/* GELU by mode (PSAM_GELU_EXACT, PSAM_GELU_LUT with the table in tb, else none). */
static inline PSAM_AVX512 __attribute__((always_inline)) __m512 gelu_mode16(__m512 v, int gelu, const __m512 tb[8]) {
    return gelu == PSAM_GELU_LUT ? psam_gelu_lut512(v, tb) : gelu ? gelu16(v) : v;
}

/* Stores f·a_scale + bias (then GELU) for MR rows of 16·NP columns starting at n, for the int8 or the int16 GEMM
 * (STORE takes those fields from either argument struct). */
#define STORE(p, m0, n, MR, NP, f) store((p)->c, (p)->ldc, (p)->n, (p)->a_scale, (p)->bias, (p)->gelu, m0, n, MR, NP, f)
static inline PSAM_AVX512 __attribute__((always_inline)) void
store(float *c, size_t ldc, size_t ncols, const float *a_scale, const float *bias_row, int gelu, size_t m0, size_t n,
      const int MR, const int NP, __m512 f[8][2]) {
    __m512 tb[8];
    if (gelu == PSAM_GELU_LUT) psam_gelu_lut512_table(tb);
    for (int j = 0; j < NP; j++) {
        size_t c0 = n + 16 * (size_t)j;
        if (c0 >= ncols) break;
        size_t cols = ncols - c0 < 16 ? ncols - c0 : 16;
        __mmask16 mk = (__mmask16)((1u << cols) - 1u);
        __m512 bias = bias_row ? _mm512_maskz_loadu_ps(mk, bias_row + c0) : _mm512_setzero_ps();
        for (int r = 0; r < MR; r++) {
            __m512 v = _mm512_fmadd_ps(f[r][j], _mm512_set1_ps(a_scale[m0 + r]), bias);
            v = gelu_mode16(v, gelu, tb);
            _mm512_mask_storeu_ps(c + (m0 + r) * ldc + c0, mk, v);
        }
    }
}

/* acc[r][j] += Σ over nq 4-byte quads of rows a + r·lda against panels b (and b + bstride when NP = 2). */
static inline PSAM_AVX512 __attribute__((always_inline)) void
dot_quads(__m512i acc[8][2], const uint8_t *a, size_t lda, const int8_t *b, size_t bstride, size_t nq, const int MR,
          const int NP) {
    for (size_t q = 0; q < nq; q++) {
        __m512i w0 = _mm512_loadu_si512((const void *)(b + q * 64));
        __m512i w1 = NP > 1 ? _mm512_loadu_si512((const void *)(b + bstride + q * 64)) : w0;
        for (int r = 0; r < MR; r++) {
            int32_t quad;
            memcpy(&quad, a + r * lda + q * 4, 4);
            __m512i av = _mm512_set1_epi32(quad);
            acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, w0);
            if (NP > 1) acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, w1);
        }
    }
}

static inline PSAM_AVX512 __attribute__((always_inline)) void
tile(const psam_qgemm_args *p, size_t m0, size_t n, const int MR, const int NP) {
    const size_t kq = p->kp / 4, gq = p->group / 4, groups = p->kp / p->group, np = psam_round_up(p->n, 16);
    const int8_t *panel = p->w + (n / 16) * kq * 64;
    __m512 f[8][2];
    if (groups == 1) {
        /* One scale per channel: (acc − zero·Σw)·scale, then ·a_scale + bias (fmaf(x, s, 0) = x·s). */
        __m512i acc[8][2];
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < NP; j++) acc[r][j] = _mm512_setzero_si512();
        dot_quads(acc, p->a + m0 * p->lda, p->lda, panel, kq * 64, kq, MR, NP);
        __m512 tb[8];
        if (p->gelu == PSAM_GELU_LUT) psam_gelu_lut512_table(tb);
        for (int j = 0; j < NP; j++) {
            size_t c0 = n + 16 * (size_t)j;
            if (c0 >= p->n) break;
            size_t cols = p->n - c0 < 16 ? p->n - c0 : 16;
            __mmask16 mk = (__mmask16)((1u << cols) - 1u);
            __m512i cs = _mm512_loadu_si512((const void *)(p->w_sum + c0));
            __m512 ws = _mm512_loadu_ps(p->w_scale + c0);
            __m512 bias = p->bias ? _mm512_maskz_loadu_ps(mk, p->bias + c0) : _mm512_setzero_ps();
            for (int r = 0; r < MR; r++) {
                __m512i t = _mm512_sub_epi32(acc[r][j], _mm512_mullo_epi32(_mm512_set1_epi32(p->a_zero[m0 + r]), cs));
                __m512 v = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(t), ws), _mm512_set1_ps(p->a_scale[m0 + r]), bias);
                v = gelu_mode16(v, p->gelu, tb);
                _mm512_mask_storeu_ps(p->c + (m0 + r) * p->ldc + c0, mk, v);
            }
        }
        return;
    }
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NP; j++) f[r][j] = _mm512_setzero_ps();
    for (size_t g = 0; g < groups; g++) {
        __m512i acc[8][2];
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < NP; j++) acc[r][j] = _mm512_setzero_si512();
        dot_quads(acc, p->a + m0 * p->lda + g * gq * 4, p->lda, panel + g * gq * 64, kq * 64, gq, MR, NP);
        for (int j = 0; j < NP; j++) {
            __m512i cs = _mm512_loadu_si512((const void *)(p->w_sum + g * np + n + 16 * j));
            __m512 ws = _mm512_loadu_ps(p->w_scale + g * np + n + 16 * j);
            for (int r = 0; r < MR; r++) {
                __m512i t = _mm512_sub_epi32(acc[r][j], _mm512_mullo_epi32(_mm512_set1_epi32(p->a_zero[m0 + r]), cs));
                f[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), ws, f[r][j]);
            }
        }
    }
    STORE(p, m0, n, MR, NP, f);
}

/* The loop both GEMMs share: row blocks small enough that their activations stay in L1/L2 while every column
 * tile reads them, 8-row tiles of two panels (one at the last odd panel), then the row tail. */
#define PSAM_TILES(TILE, p, n0, n1)                                                                                    \
    do {                                                                                                               \
        const size_t mb = 64;                                                                                          \
        for (size_t mb0 = 0; mb0 < (p)->m; mb0 += mb) {                                                                \
            size_t mb1 = mb0 + mb < (p)->m ? mb0 + mb : (p)->m;                                                        \
            for (size_t n = (n0); n < (n1); n += 32) {                                                                 \
                int two = n + 16 < (n1);                                                                               \
                size_t m = mb0;                                                                                        \
                for (; m + 8 <= mb1; m += 8) two ? TILE(p, m, n, 8, 2) : TILE(p, m, n, 8, 1);                          \
                switch (mb1 - m) {                                                                                     \
                case 7: two ? TILE(p, m, n, 7, 2) : TILE(p, m, n, 7, 1); break;                                        \
                case 6: two ? TILE(p, m, n, 6, 2) : TILE(p, m, n, 6, 1); break;                                        \
                case 5: two ? TILE(p, m, n, 5, 2) : TILE(p, m, n, 5, 1); break;                                        \
                case 4: two ? TILE(p, m, n, 4, 2) : TILE(p, m, n, 4, 1); break;                                        \
                case 3: two ? TILE(p, m, n, 3, 2) : TILE(p, m, n, 3, 1); break;                                        \
                case 2: two ? TILE(p, m, n, 2, 2) : TILE(p, m, n, 2, 1); break;                                        \
                case 1: two ? TILE(p, m, n, 1, 2) : TILE(p, m, n, 1, 1); break;                                        \
                default: break;                                                                                        \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    } while (0)

PSAM_AVX512 void psam_qgemm__avx512vnni(const psam_qgemm_args *p, size_t n0, size_t n1) {
    if (n1 > p->n) n1 = p->n;
    if (n0 >= n1) return;
    PSAM_TILES(tile, p, n0, n1);
}

/* acc + the pairwise int16 products of a and b. In asm because clang's generic tuning rewrites the intrinsic into
 * vpmaddwd + vpaddd (two instructions for one): on Zen 4, one thread, m 4096 × n 320 × k 320 took 5.0 ms that way
 * and 3.8 ms with vpdpwssd; the stage-0 MBConv's m 65536 × n 256 × k 64 with GELU 20.0 and 17.2 ms. */
static inline PSAM_AVX512 __attribute__((always_inline)) __m512i dpwssd(__m512i acc, __m512i a, __m512i b) {
    __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
}

/* int16 GEMM: the same tiles, vpdpwssd on int16 pairs (4 bytes of a row against 64-byte weight blocks, as above),
 * symmetric activations (no zero point), one scale per channel. */
static inline PSAM_AVX512 __attribute__((always_inline)) void
tile16(const psam_s16gemm_args *p, size_t m0, size_t n, const int MR, const int NP) {
    const size_t kq = p->kp / 2;
    const int16_t *b = p->w + (n / 16) * kq * 32, *a = p->a + m0 * p->lda;
    __m512i acc[8][2];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NP; j++) acc[r][j] = _mm512_setzero_si512();
    for (size_t q = 0; q < kq; q++) {
        __m512i w0 = _mm512_loadu_si512((const void *)(b + q * 32));
        __m512i w1 = NP > 1 ? _mm512_loadu_si512((const void *)(b + kq * 32 + q * 32)) : w0;
        for (int r = 0; r < MR; r++) {
            int32_t pair;
            memcpy(&pair, a + r * p->lda + q * 2, 4);
            __m512i av = _mm512_set1_epi32(pair);
            acc[r][0] = dpwssd(acc[r][0], av, w0);
            if (NP > 1) acc[r][1] = dpwssd(acc[r][1], av, w1);
        }
    }
    __m512 f[8][2];
    for (int j = 0; j < NP; j++) {
        __m512 ws = _mm512_loadu_ps(p->w_scale + n + 16 * j);
        for (int r = 0; r < MR; r++) f[r][j] = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[r][j]), ws);
    }
    STORE(p, m0, n, MR, NP, f);
}

PSAM_AVX512 void psam_s16gemm__avx512vnni(const psam_s16gemm_args *p, size_t n0, size_t n1) {
    if (n1 > p->n) n1 = p->n;
    if (n0 >= n1) return;
    PSAM_TILES(tile16, p, n0, n1);
}
#endif
