/* Portable reference int8 GEMM on packed panels: one output at a time, in the summation order every
 * SIMD variant must reproduce exactly (int32 sums are exact; the fp32 epilogue is the same fmaf chain). */
#include "pocketsam_kernels.h"
#include <math.h>

void psam_qgemm__scalar(const psam_qgemm_args *p, size_t n0, size_t n1) {
    const size_t kq = p->kp / 4, gq = p->group / 4, groups = p->kp / p->group, np = psam_round_up(p->n, 16);
    if (n1 > p->n) n1 = p->n;
    for (size_t m = 0; m < p->m; m++) {
        const uint8_t *a = p->a + m * p->lda;
        float *c = p->c + m * p->ldc;
        for (size_t n = n0; n < n1; n++) {
            const int8_t *col = p->w + (n / 16) * kq * 64 + (n % 16) * 4;
            float f = 0.0f;
            for (size_t g = 0; g < groups; g++) {
                int32_t acc = 0;
                for (size_t q = g * gq; q < (g + 1) * gq; q++)
                    for (size_t j = 0; j < 4; j++) acc += (int32_t)a[q * 4 + j] * (int32_t)col[q * 64 + j];
                acc -= p->a_zero[m] * p->w_sum[g * np + n];
                f = fmaf((float)acc, p->w_scale[g * np + n], f);
            }
            c[n] = fmaf(f, p->a_scale[m], p->bias ? p->bias[n] : 0.0f);
        }
        if (p->gelu && n1 > n0) psam_gelu_mode_rows(c + n0, n1 - n0, p->gelu);
    }
}

/* Portable reference int16 GEMM on panels16x2 (pocketsam_kernels.h): the exact int32 sum, then the fmaf chain. */
void psam_s16gemm__scalar(const psam_s16gemm_args *p, size_t n0, size_t n1) {
    const size_t kq = p->kp / 2;
    if (n1 > p->n) n1 = p->n;
    for (size_t m = 0; m < p->m; m++) {
        const int16_t *a = p->a + m * p->lda;
        float *c = p->c + m * p->ldc;
        for (size_t n = n0; n < n1; n++) {
            const int16_t *col = p->w + (n / 16) * kq * 32 + (n % 16) * 2;
            int32_t acc = 0;
            for (size_t q = 0; q < kq; q++) acc += (int32_t)a[2 * q] * col[q * 32] + (int32_t)a[2 * q + 1] * col[q * 32 + 1];
            c[n] = fmaf(fmaf((float)acc, p->w_scale[n], 0.0f), p->a_scale[m], p->bias ? p->bias[n] : 0.0f);
        }
        if (p->gelu && n1 > n0) psam_gelu_mode_rows(c + n0, n1 - n0, p->gelu);
    }
}
