/* fp32 products whose bits do not depend on the CPU, for the quantizer's calibration run (portable.c says why).
 * Every element is computed as
 *     s = 0; for t in 0 ..< k: s = s + A(r, t) · B(t, j)      (the product rounded, then the sum: no fused multiply-add)
 *     v = alpha · s (+ bias[j]) (C + v when accumulate)
 * in that order, by every body. IEEE multiplication and addition round the same whatever the vector width, so the
 * generic loop, the SSE code a compiler makes of it, and the AVX2 and AVX-512 tiles below give equal bits; the bodies
 * only choose how many elements advance at once. B has both strides (bks between its rows t, bjs between its
 * columns j), so a linear's weights (B = Wᵀ: bks 1, bjs k) need no transposed copy. Each column panel of 16 is
 * copied into a contiguous buffer once per call (heap: this path runs only while calibrating). */
#include "pocketsam_kernels.h"
#include <stdlib.h>
#include <string.h>
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define PANEL 16
#define PORTABLE_TILE_PARAMS                                                                                        \
    const float *a, size_t ars, size_t aks, const float *p, size_t k, size_t rows, size_t cols, float *c, size_t ldc, \
        float alpha, const float *bias, int accumulate

/* The epilogue of a tile of sums s[r][0 .. cols) (rows mr), the same for every body. */
static void store_tile(const float (*s)[PANEL], size_t mr, size_t cols, float *c, size_t ldc, float alpha, const float *bias,
                       int accumulate) {
    for (size_t r = 0; r < mr; r++)
        for (size_t j = 0; j < cols; j++) {
            float v = alpha * s[r][j];
            if (bias) v = v + bias[j];
            c[r * ldc + j] = accumulate ? c[r * ldc + j] + v : v;
        }
}

/* Rows [0, rows) of a column panel p[k][16] (columns past `cols` are zero), 4 rows at a time. */
void psam_sgemm_portable_panel__generic(PORTABLE_TILE_PARAMS) {
    for (size_t r0 = 0; r0 < rows; r0 += 4) {
        const size_t mr = rows - r0 < 4 ? rows - r0 : 4;
        float s[4][PANEL];
        memset(s, 0, sizeof s);
        for (size_t t = 0; t < k; t++) {
            const float *pt = p + t * PANEL;
            for (size_t r = 0; r < mr; r++) {
                const float av = a[(r0 + r) * ars + t * aks];
                for (size_t j = 0; j < PANEL; j++) s[r][j] = s[r][j] + av * pt[j];
            }
        }
        store_tile((const float (*)[PANEL])s, mr, cols, c + r0 * ldc, ldc, alpha, bias, accumulate);
    }
}

#if defined(__x86_64__)
#include <immintrin.h>
/* No "fma" in either target: the multiplies and adds below must stay separate instructions. */
__attribute__((target("avx2"))) void psam_sgemm_portable_panel__avx2(PORTABLE_TILE_PARAMS) {
    size_t r0 = 0;
    for (; r0 + 4 <= rows; r0 += 4) {
        __m256 s[4][2];
        for (int r = 0; r < 4; r++) s[r][0] = s[r][1] = _mm256_setzero_ps();
        for (size_t t = 0; t < k; t++) {
            const __m256 b0 = _mm256_loadu_ps(p + t * PANEL), b1 = _mm256_loadu_ps(p + t * PANEL + 8);
            for (int r = 0; r < 4; r++) {
                const __m256 av = _mm256_broadcast_ss(a + (r0 + (size_t)r) * ars + t * aks);
                s[r][0] = _mm256_add_ps(s[r][0], _mm256_mul_ps(av, b0));
                s[r][1] = _mm256_add_ps(s[r][1], _mm256_mul_ps(av, b1));
            }
        }
        float out[4][PANEL];
        for (int r = 0; r < 4; r++) {
            _mm256_storeu_ps(out[r], s[r][0]);
            _mm256_storeu_ps(out[r] + 8, s[r][1]);
        }
        store_tile((const float (*)[PANEL])out, 4, cols, c + r0 * ldc, ldc, alpha, bias, accumulate);
    }
    if (r0 < rows)
        psam_sgemm_portable_panel__generic(a + r0 * ars, ars, aks, p, k, rows - r0, cols, c + r0 * ldc, ldc, alpha, bias,
                                           accumulate);
}

__attribute__((target("avx512f"))) void psam_sgemm_portable_panel__avx512(PORTABLE_TILE_PARAMS) {
    size_t r0 = 0;
    for (; r0 + 8 <= rows; r0 += 8) {
        __m512 s[8];
        for (int r = 0; r < 8; r++) s[r] = _mm512_setzero_ps();
        for (size_t t = 0; t < k; t++) {
            const __m512 bv = _mm512_loadu_ps(p + t * PANEL);
            for (int r = 0; r < 8; r++)
                s[r] = _mm512_add_ps(s[r], _mm512_mul_ps(_mm512_set1_ps(a[(r0 + (size_t)r) * ars + t * aks]), bv));
        }
        float out[8][PANEL];
        for (int r = 0; r < 8; r++) _mm512_storeu_ps(out[r], s[r]);
        store_tile((const float (*)[PANEL])out, 8, cols, c + r0 * ldc, ldc, alpha, bias, accumulate);
    }
    if (r0 < rows)
        psam_sgemm_portable_panel__avx2(a + r0 * ars, ars, aks, p, k, rows - r0, cols, c + r0 * ldc, ldc, alpha, bias,
                                        accumulate);
}
#endif

typedef void (*panel_fn)(PORTABLE_TILE_PARAMS);

void psam_sgemm_portable_with(int body, const float *a, size_t ars, size_t aks, const float *b, size_t bks, size_t bjs,
                              float *c, size_t ldc, size_t m, size_t n, size_t k, float alpha, const float *bias,
                              int accumulate) {
    if (m == 0 || n == 0) return;
    panel_fn fn = psam_sgemm_portable_panel__generic;
#if defined(__x86_64__)
    if (body == 2 || (body < 0 && psam_cpu_avx512())) fn = psam_sgemm_portable_panel__avx512;
    else if (body == 1 || (body < 0 && psam_cpu_avx2_fma())) fn = psam_sgemm_portable_panel__avx2;
#else
    (void)body;
#endif
    float *p = malloc((k ? k : 1) * PANEL * sizeof(float));
    if (!p) {
        /* No buffer: element by element, in the same order (slow, but the same bits). */
        for (size_t r = 0; r < m; r++)
            for (size_t j = 0; j < n; j++) {
                float s = 0.0f;
                for (size_t t = 0; t < k; t++) s = s + a[r * ars + t * aks] * b[t * bks + j * bjs];
                float v = alpha * s;
                if (bias) v = v + bias[j];
                c[r * ldc + j] = accumulate ? c[r * ldc + j] + v : v;
            }
        return;
    }
    for (size_t j0 = 0; j0 < n; j0 += PANEL) {
        const size_t cols = n - j0 < PANEL ? n - j0 : PANEL;
        for (size_t t = 0; t < k; t++)
            for (size_t j = 0; j < PANEL; j++) p[t * PANEL + j] = j < cols ? b[t * bks + (j0 + j) * bjs] : 0.0f;
        fn(a, ars, aks, p, k, m, cols, c + j0, ldc, alpha, bias ? bias + j0 : NULL, accumulate);
    }
    free(p);
}

void psam_sgemm_portable(const float *a, size_t ars, size_t aks, const float *b, size_t bks, size_t bjs, float *c, size_t ldc,
                         size_t m, size_t n, size_t k, float alpha, const float *bias, int accumulate) {
    psam_sgemm_portable_with(-1, a, ars, aks, b, bks, bjs, c, ldc, m, n, k, alpha, bias, accumulate);
}
