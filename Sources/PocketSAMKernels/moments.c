/* Second moments of a layer's inputs, H += XᵀX, for the quantizer's calibration (GPTQ's Hessians), in double with
 * the same bits on every CPU: each element is  h = ((h + x₀ᵢx₀ⱼ) + x₁ᵢx₁ⱼ) + …  over the rows in order. A product of
 * two floats is exact in double (24 + 24 significant bits ≤ 53), so a fused multiply-add rounds exactly as a
 * multiply and an add do, and the vector bodies give the generic loop's bits.
 *
 * Rows go in blocks of RB: a block is converted to double and packed in panels of 16 columns (panel p holds columns
 * 16p … 16p + 15 of every row of the block, rows contiguous), so that a tile of 8 × 16 elements streams two short
 * contiguous runs per row; between blocks the partial sums live in h (a double stored and reloaded is exact).
 * The rows of h go to `parts` callers in turn by blocks of 8 (part p takes blocks p, p + parts, …: about equal work,
 * and no element written by two), so threads can share a call without changing any sum.
 * Tiles that touch the diagonal also compute a few elements with j < i, which are the same sums (H is symmetric). */
#include "pocketsam_kernels.h"
#include <stdlib.h>
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define TI 8
#define TJ 16
#define RB 64

/* Rows [i0, i1) × columns [j0, j1) of h over nr packed rows: xi(r, i) = pi[r·16 + i mod 16] with pi the panel of i, and
 * likewise for j. */
static void tile_generic(const double *pi, const double *pj, size_t nr, size_t k, double *h, size_t i0, size_t i1,
                         size_t j0, size_t j1) {
    for (size_t i = i0; i < i1; i++)
        for (size_t j = j0; j < j1; j++) {
            double s = h[i * k + j];
            for (size_t r = 0; r < nr; r++) s = s + pi[r * TJ + i % TJ] * pj[r * TJ + j % TJ];
            h[i * k + j] = s;
        }
}

typedef void (*tile_fn)(const double *, const double *, size_t, size_t, double *, size_t, size_t);

#if defined(__x86_64__)
#include <immintrin.h>
/* A full tile (rows i0 … i0 + 7, columns j0 … j0 + 15 < k): 8 × 2 vectors of 8 doubles. */
__attribute__((target("avx512f"))) static void tile_avx512(const double *pi, const double *pj, size_t nr, size_t k,
                                                            double *h, size_t i0, size_t j0) {
    __m512d s[TI][2];
    for (int i = 0; i < TI; i++) {
        s[i][0] = _mm512_loadu_pd(h + (i0 + (size_t)i) * k + j0);
        s[i][1] = _mm512_loadu_pd(h + (i0 + (size_t)i) * k + j0 + 8);
    }
    const size_t io = i0 % TJ;
    for (size_t r = 0; r < nr; r++) {
        const __m512d x0 = _mm512_loadu_pd(pj + r * TJ), x1 = _mm512_loadu_pd(pj + r * TJ + 8);
        for (int i = 0; i < TI; i++) {
            const __m512d xi = _mm512_set1_pd(pi[r * TJ + io + (size_t)i]);
            s[i][0] = _mm512_fmadd_pd(xi, x0, s[i][0]);
            s[i][1] = _mm512_fmadd_pd(xi, x1, s[i][1]);
        }
    }
    for (int i = 0; i < TI; i++) {
        _mm512_storeu_pd(h + (i0 + (size_t)i) * k + j0, s[i][0]);
        _mm512_storeu_pd(h + (i0 + (size_t)i) * k + j0 + 8, s[i][1]);
    }
}

/* The same tile as two of 4 rows × 4 vectors of 4 doubles (AVX2 has 16 registers). */
__attribute__((target("avx2,fma"))) static void tile_avx2(const double *pi, const double *pj, size_t nr, size_t k, double *h,
                                                          size_t i0, size_t j0) {
    for (size_t half = 0; half < TI; half += 4) {
        __m256d s[4][4];
        for (int i = 0; i < 4; i++)
            for (int v = 0; v < 4; v++) s[i][v] = _mm256_loadu_pd(h + (i0 + half + (size_t)i) * k + j0 + 4 * (size_t)v);
        const size_t io = (i0 + half) % TJ;
        for (size_t r = 0; r < nr; r++) {
            __m256d xj[4];
            for (int v = 0; v < 4; v++) xj[v] = _mm256_loadu_pd(pj + r * TJ + 4 * (size_t)v);
            for (int i = 0; i < 4; i++) {
                const __m256d xi = _mm256_set1_pd(pi[r * TJ + io + (size_t)i]);
                for (int v = 0; v < 4; v++) s[i][v] = _mm256_fmadd_pd(xi, xj[v], s[i][v]);
            }
        }
        for (int i = 0; i < 4; i++)
            for (int v = 0; v < 4; v++) _mm256_storeu_pd(h + (i0 + half + (size_t)i) * k + j0 + 4 * (size_t)v, s[i][v]);
    }
}
#endif

void psam_moments_f64_with(int body, const float *x, size_t ldx, size_t rows, size_t k, double *h, size_t part, size_t parts) {
    if (rows == 0 || k == 0 || parts == 0 || part >= parts) return;
    tile_fn full = NULL;
#if defined(__x86_64__)
    if (body == 2 || (body < 0 && psam_cpu_avx512())) full = tile_avx512;
    else if (body == 1 || (body < 0 && psam_cpu_avx2_fma())) full = tile_avx2;
#else
    (void)body;
#endif
    const size_t panels = (k + TJ - 1) / TJ;
    double *pack = malloc(panels * RB * TJ * sizeof(double));
    if (!pack) {
        /* No buffer: element by element, in the same order (slow, but the same bits). */
        for (size_t i = 0; i < k; i++) {
            if ((i / TI) % parts != part) continue;
            for (size_t j = i; j < k; j++) {
                double s = h[i * k + j];
                for (size_t r = 0; r < rows; r++) s = s + (double)x[r * ldx + i] * (double)x[r * ldx + j];
                h[i * k + j] = s;
            }
        }
        return;
    }
    for (size_t r0 = 0; r0 < rows; r0 += RB) {
        const size_t nr = rows - r0 < RB ? rows - r0 : RB;
        for (size_t p = 0; p < panels; p++)
            for (size_t r = 0; r < nr; r++)
                for (size_t j = 0; j < TJ; j++) {
                    const size_t col = p * TJ + j;
                    pack[(p * RB + r) * TJ + j] = col < k ? (double)x[(r0 + r) * ldx + col] : 0.0;
                }
        for (size_t i0 = part * TI; i0 < k; i0 += parts * TI) {
            const size_t i1 = i0 + TI < k ? i0 + TI : k;
            const double *pi = pack + (i0 / TJ) * RB * TJ;
            for (size_t p = i0 / TJ; p < panels; p++) {
                const size_t j0 = p * TJ, j1 = j0 + TJ < k ? j0 + TJ : k;
                if (full && i1 - i0 == TI && j1 - j0 == TJ) full(pi, pack + p * RB * TJ, nr, k, h, i0, j0);
                else tile_generic(pi, pack + p * RB * TJ, nr, k, h, i0, i1, j0, j1);
            }
        }
    }
    free(pack);
}

void psam_moments_f64(const float *x, size_t ldx, size_t rows, size_t k, double *h, size_t part, size_t parts) {
    psam_moments_f64_with(-1, x, ldx, rows, k, h, part, parts);
}
