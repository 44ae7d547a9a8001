/* The mask decoder's post-processing internals (maskpost.c): each operation's portable body (`__generic`) and its
 * ISA bodies, declared so that Tests/KernelTests/maskpost_test.c can run each against the generic one; the public
 * functions (pocketsam_kernels.h) dispatch among them. Internal (not installed).
 *
 * The upscale's bodies are bit-identical (the same products and sums in the same order, contraction off), so its
 * mask bytes, stability counts and box are exactly the generic's. The others agree with the generic body to
 * rounding: they sum in other orders and use fused multiply-adds (1e-5 of the sum of the terms' magnitudes), and
 * the fused GELU of psam_upscale_masks_t's AVX-512 and NEON bodies is within 1e-6·max(1, |x|) of psam_gelu_rows. */
#ifndef POCKETSAM_MASKPOST_INTERNAL_H
#define POCKETSAM_MASKPOST_INTERNAL_H
#include "pocketsam_kernels.h"
#include <stddef.h>
#include <stdint.h>

/* psam_mask_upscale's work in the transposed frame: rows × cols of output from low[n][n], taps (rs, rw) per output
 * row and (cs, cw) per output column; box as (first column, first row, last column, last row). */
#define PSAM_UPSCALE_PARAMS                                                                                    \
    const float *low, size_t n, size_t rows, size_t cols, const int32_t *rs, const float *rw, const int32_t *cs, \
        const float *cw, float hi, float lo, float thr, float core, float *hbuf, uint8_t *mask, psam_mask_stats *st, \
        int32_t *box
void psam_mask_upscale__generic(PSAM_UPSCALE_PARAMS);
/* psam_scores_shared's arguments. */
#define PSAM_SCORES_PARAMS                                                                                     \
    const float *q, size_t ldq, const float *kt, size_t ldk, size_t nq, size_t nk, size_t d, float scale, float *out, \
        size_t ldo
void psam_scores_shared__generic(PSAM_SCORES_PARAMS);
/* psam_weighted_rows's arguments; the generic body takes d ≤ 64. */
#define PSAM_WEIGHTED_PARAMS                                                                                   \
    const float *p, size_t ldp, const float *v, size_t ldv, size_t nq, size_t nk, size_t d, float *out, size_t ldo
void psam_weighted_rows__generic(PSAM_WEIGHTED_PARAMS);
/* psam_upscale_ln_gelu_row without its GELU (bias and layer norm). */
#define PSAM_LN_ROW_PARAMS                                                                                     \
    const float *t, size_t w, size_t cout, size_t y, const float *bias, const float *ln_w, const float *ln_b, float eps, \
        float *out
void psam_upscale_ln_row__generic(PSAM_LN_ROW_PARAMS);
#define PSAM_MASKS_T_PARAMS                                                                                    \
    float *t, size_t ld, size_t rows, size_t w, size_t cout, size_t y0, const float *bias, const float *hyper, \
        size_t count, float *masks, float *scratch
void psam_upscale_masks_t__generic(PSAM_MASKS_T_PARAMS);
#define PSAM_KEYS_NORM_PARAMS                                                                                  \
    float *x, const float *add, size_t m, size_t c, const float *w, const float *b, float eps, float *mean, \
        float *rstd, const float *pe, float *xpe
void psam_keys_norm__generic(PSAM_KEYS_NORM_PARAMS);
#define PSAM_ROWS_AFFINE_PARAMS                                                                                \
    float *t, size_t m, size_t n, const float *mean, const float *rstd, const float *u, const float *v
void psam_rows_affine__generic(PSAM_ROWS_AFFINE_PARAMS);

#if defined(__x86_64__)
/* Only where psam_cpu_avx2_fma(). */
void psam_mask_upscale__avx2(PSAM_UPSCALE_PARAMS);
void psam_scores_shared__avx2(PSAM_SCORES_PARAMS);
void psam_weighted_rows__avx2(PSAM_WEIGHTED_PARAMS); /* d ≤ 64 */
void psam_upscale_ln_row__avx2(PSAM_LN_ROW_PARAMS);
void psam_upscale_masks_t__avx2(PSAM_MASKS_T_PARAMS);
void psam_keys_norm__avx2(PSAM_KEYS_NORM_PARAMS);
void psam_rows_affine__avx2(PSAM_ROWS_AFFINE_PARAMS);
/* Only where psam_cpu_avx512(). */
void psam_scores_shared__avx512(PSAM_SCORES_PARAMS);
void psam_weighted_rows16__avx512(PSAM_WEIGHTED_PARAMS); /* d = 16 */
void psam_upscale_masks_t__avx512(PSAM_MASKS_T_PARAMS);  /* count ≤ 4 */
#endif

#if defined(__aarch64__)
void psam_mask_upscale__neon(PSAM_UPSCALE_PARAMS);
void psam_scores_shared__neon(PSAM_SCORES_PARAMS);
void psam_weighted_rows__neon(PSAM_WEIGHTED_PARAMS); /* any d */
void psam_upscale_masks_t__neon(PSAM_MASKS_T_PARAMS);
/* sgemm.c's NEON body of psam_sgemm_inplace (what the scores and weighted rows run on). */
void psam_sgemm_inplace__neon(const float *a, size_t ars, size_t aks, const float *b, size_t ldb, float *c, size_t ldc,
                              size_t m, size_t n, size_t k, float alpha, const float *bias, int accumulate);
#endif
#endif
