/* fp32 products of a large matrix read in place with a small one: the generator's decoder multiplies each
 * prompt's 4096 × 256 image tokens by a few dozen token vectors several times per prompt. A BLAS copies
 * ("packs") the large operand and clears the output on every such call; here the large operand is read where
 * it is, by a register tile, and the small one (a few tens of KB, cache resident) row by row. */
#include "pocketsam_kernels.h"
#include "maskpost_internal.h"
#include <stddef.h>
#include <string.h>

/* The reference: a plain loop over C's elements, k innermost in order. C = alpha·A·B + bias (+ C when
 * accumulate). */
#define SGEMM_PARAMS                                                                                          \
    const float *a, size_t ars, size_t aks, const float *b, size_t ldb, float *c, size_t ldc, size_t m, size_t n, \
        size_t k, float alpha, const float *bias, int accumulate
static void sgemm_generic(SGEMM_PARAMS) {
    for (size_t r = 0; r < m; r++)
        for (size_t j = 0; j < n; j++) {
            float s = 0.0f;
            for (size_t t = 0; t < k; t++) s += a[r * ars + t * aks] * b[t * ldb + j];
            float v = alpha * s + (bias ? bias[j] : 0.0f);
            c[r * ldc + j] = accumulate ? c[r * ldc + j] + v : v;
        }
}

/* Without x86 or NEON vectors: each row of C accumulated in a stack row, B row by row (vectorises). */
static void sgemm_rows(SGEMM_PARAMS) {
    float acc[256];
    for (size_t r = 0; r < m; r++)
        for (size_t j0 = 0; j0 < n; j0 += 256) {
            const size_t nj = n - j0 < 256 ? n - j0 : 256;
            for (size_t j = 0; j < nj; j++) acc[j] = 0.0f;
            for (size_t t = 0; t < k; t++) {
                const float av = a[r * ars + t * aks];
                const float *bt = b + t * ldb + j0;
                for (size_t j = 0; j < nj; j++) acc[j] += av * bt[j];
            }
            float *cr = c + r * ldc + j0;
            for (size_t j = 0; j < nj; j++) {
                const float v = alpha * acc[j] + (bias ? bias[j0 + j] : 0.0f);
                cr[j] = accumulate ? cr[j] + v : v;
            }
        }
}

#if defined(__x86_64__)
#include <immintrin.h>
#define PSAM_SG512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define PSAM_SG256 __attribute__((target("avx2,fma")))
/* Both x86 kernels: k in blocks of KC (so that a block of a tall B stays in L2 while every row tile passes
 * over it), then column blocks of NZ vectors (the block of B a row tile streams stays in L1), then tiles of
 * MR rows. A tile keeps MR × NZ accumulators in registers; per k step it broadcasts MR values of A and
 * loads NZ vectors of B's row. The epilogue of the first k block applies `accumulate`, of the last `bias`;
 * between blocks C holds the partial sums scaled by alpha. */
#define SG_KC 256

/* ---- AVX-512: 16 lanes; 6 rows × 4 vectors (64 columns) or 12 rows × 2 vectors (32) ---- */
static inline PSAM_SG512 __attribute__((always_inline)) void
tile512(const float *a, size_t ars, size_t aks, const float *b, size_t ldb, float *c, size_t ldc, size_t kc, size_t cols,
        const int MR, const int NZ, size_t mr, float alpha, const float *bias, int add_c) {
    __m512 acc[12][4];
    __mmask16 mk[4];
    for (int j = 0; j < NZ; j++) {
        size_t left = cols > 16 * (size_t)j ? cols - 16 * (size_t)j : 0;
        mk[j] = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
        for (int r = 0; r < MR; r++) acc[r][j] = _mm512_setzero_ps();
    }
    for (size_t t = 0; t < kc; t++) {
        __m512 bv[4];
        for (int j = 0; j < NZ; j++) bv[j] = _mm512_maskz_loadu_ps(mk[j], b + t * ldb + 16 * j);
        for (int r = 0; r < MR; r++) {
            if ((size_t)r >= mr) break;
            const __m512 av = _mm512_set1_ps(a[r * ars + t * aks]);
            for (int j = 0; j < NZ; j++) acc[r][j] = _mm512_fmadd_ps(av, bv[j], acc[r][j]);
        }
    }
    const __m512 al = _mm512_set1_ps(alpha);
    for (int j = 0; j < NZ; j++) {
        if (!mk[j]) break;
        const __m512 bb = bias ? _mm512_maskz_loadu_ps(mk[j], bias + 16 * j) : _mm512_setzero_ps();
        for (int r = 0; r < MR; r++) {
            if ((size_t)r >= mr) break;
            float *cp = c + r * ldc + 16 * j;
            __m512 v = _mm512_fmadd_ps(acc[r][j], al, bb);
            if (add_c) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk[j], cp));
            _mm512_mask_storeu_ps(cp, mk[j], v);
        }
    }
}

static inline PSAM_SG512 __attribute__((always_inline)) void
blocks512(SGEMM_PARAMS, const int MR, const int NZ) {
    const size_t nb = 16 * (size_t)NZ;
    for (size_t k0 = 0; k0 < k; k0 += SG_KC) {
        const size_t kc = k - k0 < SG_KC ? k - k0 : SG_KC;
        const int add_c = k0 > 0 || accumulate;
        const float *bi = k0 + kc == k ? bias : NULL;
        for (size_t j0 = 0; j0 < n; j0 += nb) {
            const size_t cols = n - j0 < nb ? n - j0 : nb;
            const float *bk = b + k0 * ldb + j0, *bj = bi ? bi + j0 : NULL;
            size_t r0 = 0;
            for (; r0 + MR <= m; r0 += MR)
                tile512(a + r0 * ars + k0 * aks, ars, aks, bk, ldb, c + r0 * ldc + j0, ldc, kc, cols, MR, NZ, MR, alpha, bj, add_c);
            if (r0 < m)
                tile512(a + r0 * ars + k0 * aks, ars, aks, bk, ldb, c + r0 * ldc + j0, ldc, kc, cols, MR, NZ, m - r0, alpha, bj,
                        add_c);
        }
    }
}

PSAM_SG512 static void sgemm_avx512(SGEMM_PARAMS) {
    if (n <= 32) blocks512(a, ars, aks, b, ldb, c, ldc, m, n, k, alpha, bias, accumulate, 12, 2);
    else blocks512(a, ars, aks, b, ldb, c, ldc, m, n, k, alpha, bias, accumulate, 6, 4);
}

/* ---- AVX2: 8 lanes; 6 rows × 2 vectors (16 columns) ---- */
static inline PSAM_SG256 __attribute__((always_inline)) __m256i sg_mask8(size_t left) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(left < 8 ? left : 8)), lane);
}

static inline PSAM_SG256 __attribute__((always_inline)) void
tile256(const float *a, size_t ars, size_t aks, const float *b, size_t ldb, float *c, size_t ldc, size_t kc, size_t cols,
        const int MR, size_t mr, float alpha, const float *bias, int add_c) {
    __m256 acc[6][2];
    __m256i mk[2];
    for (int j = 0; j < 2; j++) {
        mk[j] = sg_mask8(cols > 8 * (size_t)j ? cols - 8 * (size_t)j : 0);
        for (int r = 0; r < MR; r++) acc[r][j] = _mm256_setzero_ps();
    }
    /* Full vectors by plain loads and stores: AMD's Zen cores run masked stores as slow microcode. */
    const int two = cols > 8, full0 = cols >= 8, full1 = cols >= 16;
    for (size_t t = 0; t < kc; t++) {
        const __m256 b0 = full0 ? _mm256_loadu_ps(b + t * ldb) : _mm256_maskload_ps(b + t * ldb, mk[0]);
        const __m256 b1 = full1 ? _mm256_loadu_ps(b + t * ldb + 8)
                                : two ? _mm256_maskload_ps(b + t * ldb + 8, mk[1]) : _mm256_setzero_ps();
        for (int r = 0; r < MR; r++) {
            if ((size_t)r >= mr) break;
            const __m256 av = _mm256_broadcast_ss(a + r * ars + t * aks);
            acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
        }
    }
    const __m256 al = _mm256_set1_ps(alpha);
    for (int j = 0; j < 1 + two; j++) {
        const __m256 bb = bias ? _mm256_maskload_ps(bias + 8 * j, mk[j]) : _mm256_setzero_ps();
        for (int r = 0; r < MR; r++) {
            if ((size_t)r >= mr) break;
            float *cp = c + r * ldc + 8 * j;
            const int full = j == 0 ? full0 : full1;
            __m256 v = _mm256_fmadd_ps(acc[r][j], al, bb);
            if (add_c) v = _mm256_add_ps(v, full ? _mm256_loadu_ps(cp) : _mm256_maskload_ps(cp, mk[j]));
            if (full) _mm256_storeu_ps(cp, v);
            else _mm256_maskstore_ps(cp, mk[j], v);
        }
    }
}

PSAM_SG256 static void sgemm_avx2(SGEMM_PARAMS) {
    for (size_t k0 = 0; k0 < k; k0 += SG_KC) {
        const size_t kc = k - k0 < SG_KC ? k - k0 : SG_KC;
        const int add_c = k0 > 0 || accumulate;
        const float *bi = k0 + kc == k ? bias : NULL;
        for (size_t j0 = 0; j0 < n; j0 += 16) {
            const size_t cols = n - j0 < 16 ? n - j0 : 16;
            const float *bk = b + k0 * ldb + j0, *bj = bi ? bi + j0 : NULL;
            size_t r0 = 0;
            for (; r0 + 6 <= m; r0 += 6)
                tile256(a + r0 * ars + k0 * aks, ars, aks, bk, ldb, c + r0 * ldc + j0, ldc, kc, cols, 6, 6, alpha, bj, add_c);
            if (r0 < m)
                tile256(a + r0 * ars + k0 * aks, ars, aks, bk, ldb, c + r0 * ldc + j0, ldc, kc, cols, 6, m - r0, alpha, bj, add_c);
        }
    }
}
#endif

#if defined(__aarch64__)
#include <arm_neon.h>
/* NEON: tiles of 8 rows × 8 columns (16 accumulators), k in blocks of SGN_KC. Per k block, each row tile of A
 * (8 × kc: 8 KB, L1 resident) passes over every 8-column tile of B (kc × n, L2 resident), so A is read from
 * memory once. Row-major A (aks = 1) is loaded 4 k steps at a time per row (one 16-byte load) and multiplied
 * by lane; transposed A (ars = 1) 8 rows per k step in two loads. A last tile of fewer rows repeats its last row
 * (no predicates in the k loop; the copies are not stored); the last columns past n come from a zero-padded
 * copy of B's tail (kc × 8), so every load of B is a full vector. The rows are spelled out by macros so that
 * the accumulators are indexed by constants only (kept in registers at -O2 by gcc as well as clang). */
#define SGN_KC 256
#define SGN_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define SGN_LANE(r, av, L)                                                                 \
    if ((r) < MR) {                                                                        \
        acc[r][0] = vfmaq_laneq_f32(acc[r][0], b0, av, L);                                 \
        acc[r][1] = vfmaq_laneq_f32(acc[r][1], b1, av, L);                                 \
    }
#define SGN_LOAD_B(bt)                                                                     \
    const float32x4_t b0 = vld1q_f32(bt), b1 = vld1q_f32((bt) + 4)
/* Row-major A: k step t + L with lane L of each row's 4 values. */
#define SGN_ROW_RM(r) SGN_LANE(r, av[r], SGN_L)
#define SGN_STEP_RM(L)                                                                     \
    {                                                                                      \
        SGN_LOAD_B(b + (t + (L)) * ldb);                                                   \
        enum { SGN_L = (L) };                                                              \
        SGN_ROWS(SGN_ROW_RM)                                                               \
    }
/* Transposed A: rows 0–3 in a0, 4–7 in a1. */
#define SGN_ROW_T(r) SGN_LANE(r, (r) < 4 ? a0 : a1, (r) & 3)
/* Any strides: one broadcast value per row. */
#define SGN_ROW_N(r)                                                                       \
    if ((r) < MR) {                                                                        \
        const float s_ = ar[r][t * aks];                                                   \
        acc[r][0] = vfmaq_n_f32(acc[r][0], b0, s_);                                        \
        acc[r][1] = vfmaq_n_f32(acc[r][1], b1, s_);                                        \
    }
#define SGN_INIT(r)                                                                        \
    if ((r) < MR) {                                                                        \
        acc[r][0] = acc[r][1] = vdupq_n_f32(0.0f);                                         \
        ar[r] = a + ((size_t)(r) < mr ? (size_t)(r) : mr - 1) * ars;                       \
    }
#define SGN_OUT(r)                                                                         \
    if ((r) < MR && (size_t)(r) < mr) {                                                    \
        float *cp = c + (r) * ldc;                                                         \
        float32x4_t v0 = vfmaq_f32(bb0, acc[r][0], al), v1 = vfmaq_f32(bb1, acc[r][1], al); \
        if (cols == 8) {                                                                   \
            if (add_c) v0 = vaddq_f32(v0, vld1q_f32(cp)), v1 = vaddq_f32(v1, vld1q_f32(cp + 4)); \
            vst1q_f32(cp, v0);                                                             \
            vst1q_f32(cp + 4, v1);                                                         \
        } else {                                                                           \
            float tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                       \
            if (add_c) {                                                                   \
                memcpy(tmp, cp, cols * sizeof(float));                                     \
                v0 = vaddq_f32(v0, vld1q_f32(tmp)), v1 = vaddq_f32(v1, vld1q_f32(tmp + 4)); \
            }                                                                              \
            vst1q_f32(tmp, v0);                                                            \
            vst1q_f32(tmp + 4, v1);                                                        \
            memcpy(cp, tmp, cols * sizeof(float));                                         \
        }                                                                                  \
    }

/* C[0 .. mr)[0 .. cols) (= alpha·A·B + bias, + C when add_c) for MR ∈ {1, 4, 8} rows, mr ≤ MR of them real;
 * B's rows hold 8 readable values (cols ≤ 8 of them used). */
static inline __attribute__((always_inline)) void
tile_neon(const float *a, size_t ars, size_t aks, const float *b, size_t ldb, float *c, size_t ldc, size_t kc, size_t cols,
          const int MR, size_t mr, float alpha, const float *bias, int add_c) {
    float32x4_t acc[8][2];
    const float *ar[8];
    SGN_ROWS(SGN_INIT)
    if (aks == 1) {
        size_t t = 0;
        for (; t + 4 <= kc; t += 4) {
            float32x4_t av[8];
#define SGN_LOAD_A(r) if ((r) < MR) av[r] = vld1q_f32(ar[r] + t);
            SGN_ROWS(SGN_LOAD_A)
#undef SGN_LOAD_A
            SGN_STEP_RM(0)
            SGN_STEP_RM(1)
            SGN_STEP_RM(2)
            SGN_STEP_RM(3)
        }
        for (; t < kc; t++) {
            SGN_LOAD_B(b + t * ldb);
            SGN_ROWS(SGN_ROW_N)
        }
    } else if (ars == 1 && MR >= 4 && mr == (size_t)MR) {
        for (size_t t = 0; t < kc; t++) {
            const float32x4_t a0 = vld1q_f32(a + t * aks), a1 = MR > 4 ? vld1q_f32(a + t * aks + 4) : a0;
            SGN_LOAD_B(b + t * ldb);
            SGN_ROWS(SGN_ROW_T)
        }
    } else {
        for (size_t t = 0; t < kc; t++) {
            SGN_LOAD_B(b + t * ldb);
            SGN_ROWS(SGN_ROW_N)
        }
    }
    const float32x4_t al = vdupq_n_f32(alpha);
    float32x4_t bb0 = vdupq_n_f32(0.0f), bb1 = bb0;
    if (bias) {
        float tb[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        memcpy(tb, bias, cols * sizeof(float));
        bb0 = vld1q_f32(tb), bb1 = vld1q_f32(tb + 4);
    }
    SGN_ROWS(SGN_OUT)
}

/* One row tile against every column tile of B's k block (bt: B's last n % 8 columns, zero-padded to 8). */
static inline __attribute__((always_inline)) void
rowtile_neon(const float *a, size_t ars, size_t aks, const float *b, size_t ldb, const float *bt, float *c, size_t ldc,
             size_t n, size_t kc, const int MR, size_t mr, float alpha, const float *bias, int add_c) {
    for (size_t j0 = 0; j0 < n; j0 += 8) {
        const size_t cols = n - j0 < 8 ? n - j0 : 8;
        tile_neon(a, ars, aks, cols == 8 ? b + j0 : bt, cols == 8 ? ldb : 8, c + j0, ldc, kc, cols, MR, mr, alpha,
                  bias ? bias + j0 : NULL, add_c);
    }
}

void psam_sgemm_inplace__neon(SGEMM_PARAMS) {
    if (m == 0 || n == 0) return;
    if (k == 0) {
        sgemm_generic(a, ars, aks, b, ldb, c, ldc, m, n, k, alpha, bias, accumulate);
        return;
    }
    float bt[SGN_KC * 8];
    const size_t nt = n % 8;
    for (size_t k0 = 0; k0 < k; k0 += SGN_KC) {
        const size_t kc = k - k0 < SGN_KC ? k - k0 : SGN_KC;
        const int add_c = k0 > 0 || accumulate;
        const float *bi = k0 + kc == k ? bias : NULL, *bk = b + k0 * ldb;
        if (nt)
            for (size_t t = 0; t < kc; t++)
                for (size_t j = 0; j < 8; j++) bt[t * 8 + j] = j < nt ? bk[t * ldb + n - nt + j] : 0.0f;
        size_t r0 = 0;
        for (; r0 + 8 <= m; r0 += 8)
            rowtile_neon(a + r0 * ars + k0 * aks, ars, aks, bk, ldb, bt, c + r0 * ldc, ldc, n, kc, 8, 8, alpha, bi, add_c);
        const size_t mr = m - r0;
        const float *ak = a + r0 * ars + k0 * aks;
        if (mr > 4) rowtile_neon(ak, ars, aks, bk, ldb, bt, c + r0 * ldc, ldc, n, kc, 8, mr, alpha, bi, add_c);
        else if (mr > 1) rowtile_neon(ak, ars, aks, bk, ldb, bt, c + r0 * ldc, ldc, n, kc, 4, mr, alpha, bi, add_c);
        else if (mr == 1) rowtile_neon(ak, ars, aks, bk, ldb, bt, c + r0 * ldc, ldc, n, kc, 1, 1, alpha, bi, add_c);
    }
}
#endif

void psam_sgemm_inplace(SGEMM_PARAMS) {
    if (m == 0 || n == 0) return;
    if (psam_portable_kernels()) {
        psam_sgemm_portable(a, ars, aks, b, ldb, 1, c, ldc, m, n, k, alpha, bias, accumulate);
        return;
    }
    if (k == 0) {
        sgemm_generic(a, ars, aks, b, ldb, c, ldc, m, n, k, alpha, bias, accumulate);
        return;
    }
#if defined(__x86_64__)
    if (psam_cpu_avx512()) {
        sgemm_avx512(a, ars, aks, b, ldb, c, ldc, m, n, k, alpha, bias, accumulate);
        return;
    }
    if (psam_cpu_avx2_fma()) {
        sgemm_avx2(a, ars, aks, b, ldb, c, ldc, m, n, k, alpha, bias, accumulate);
        return;
    }
#elif defined(__aarch64__)
    psam_sgemm_inplace__neon(a, ars, aks, b, ldb, c, ldc, m, n, k, alpha, bias, accumulate);
    return;
#endif
    sgemm_rows(a, ars, aks, b, ldb, c, ldc, m, n, k, alpha, bias, accumulate);
}

/* dst[j·ldd + i] = src[i·lds + j] for i < rows, j < cols, in 16 × 16 blocks (both sides touch 16 cache lines per
 * block instead of one line per element on the strided side). */
void psam_transpose(const float *src, size_t rows, size_t cols, size_t lds, float *dst, size_t ldd) {
    for (size_t i0 = 0; i0 < rows; i0 += 16) {
        const size_t ni = rows - i0 < 16 ? rows - i0 : 16;
        for (size_t j0 = 0; j0 < cols; j0 += 16) {
            const size_t nj = cols - j0 < 16 ? cols - j0 : 16;
            for (size_t j = 0; j < nj; j++)
                for (size_t i = 0; i < ni; i++) dst[(j0 + j) * ldd + i0 + i] = src[(i0 + i) * lds + j0 + j];
        }
    }
}

/* im2col rows of a k × k convolution of a channels-last x[h][w][cin] with zero padding, for output pixels
 * p0 … p1 − 1 (wo per output row): col[(p − p0)·ldc + (c·k + ky)·k + kx] = x[iy][ix][c], PyTorch's weight order
 * (cin, ky, kx). Each tap's cin input values are read contiguously. */
void psam_im2col(const float *x, size_t h, size_t w, size_t cin, size_t k, size_t stride, size_t pad, size_t wo, size_t p0,
                 size_t p1, float *col, size_t ldc) {
    const size_t kk = k * k;
    for (size_t p = p0; p < p1; p++) {
        const size_t oy = p / wo, ox = p % wo;
        float *dst = col + (p - p0) * ldc;
        for (size_t ky = 0; ky < k; ky++) {
            const ptrdiff_t iy = (ptrdiff_t)(oy * stride + ky) - (ptrdiff_t)pad;
            for (size_t kx = 0; kx < k; kx++) {
                const ptrdiff_t ix = (ptrdiff_t)(ox * stride + kx) - (ptrdiff_t)pad;
                float *d = dst + ky * k + kx;
                if (iy < 0 || iy >= (ptrdiff_t)h || ix < 0 || ix >= (ptrdiff_t)w) {
                    for (size_t c = 0; c < cin; c++) d[c * kk] = 0.0f;
                } else {
                    const float *src = x + ((size_t)iy * w + (size_t)ix) * cin;
                    for (size_t c = 0; c < cin; c++) d[c * kk] = src[c];
                }
            }
        }
    }
}
