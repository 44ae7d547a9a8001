/* int16 GEMM for aarch64 NEON on panels16x2 (pocketsam_kernels.h): tiles of up to 3 rows × 16 columns. A 16-byte
 * weight vector holds 4 channels × 2 k; the activation pair, replicated, multiplies it with smlal/smlal2 into int32
 * lanes [c0 c0 c1 c1] and [c2 c2 c3 c3], folded with addp at the end. Within the documented bounds no partial sum
 * leaves int32, so the sums are exact and the fmaf epilogue gives psam_s16gemm__scalar's bits. */
#include "pocketsam_kernels.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

/* See qgemm_neon.c: GCC's scheduler before register allocation would spill accumulators in the k-loop. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-schedule-insns")
#endif

static inline __attribute__((always_inline)) void tile(const psam_s16gemm_args *p, size_t m0, size_t n, const int MR) {
    const size_t kq = p->kp / 2;
    const int16_t *panel = p->w + (n / 16) * kq * 32;
    int32x4_t acc[3][4][2];
    _Pragma("GCC unroll 4")
    for (int r = 0; r < MR; r++)
        _Pragma("GCC unroll 4")
        for (int j = 0; j < 4; j++) acc[r][j][0] = acc[r][j][1] = vdupq_n_s32(0);
    const int16_t *a = p->a + m0 * p->lda;
    for (size_t q = 0; q < kq; q++) {
        int16x8_t av[3];
        _Pragma("GCC unroll 4")
        for (int r = 0; r < MR; r++) {
            uint32_t pair;
            memcpy(&pair, a + r * p->lda + 2 * q, 4);
            av[r] = vreinterpretq_s16_u32(vdupq_n_u32(pair));
        }
        _Pragma("GCC unroll 4")
        for (int j = 0; j < 4; j++) {
            int16x8_t w = vld1q_s16(panel + q * 32 + 8 * j);
            _Pragma("GCC unroll 4")
            for (int r = 0; r < MR; r++) {
                acc[r][j][0] = vmlal_s16(acc[r][j][0], vget_low_s16(w), vget_low_s16(av[r]));
                acc[r][j][1] = vmlal_high_s16(acc[r][j][1], w, av[r]);
            }
        }
    }
    _Pragma("GCC unroll 4")
    for (int j = 0; j < 4; j++) {
        size_t c0 = n + 4 * (size_t)j;
        if (c0 >= p->n) break;
        size_t cols = p->n - c0 < 4 ? p->n - c0 : 4;
        float bias[4] = {0};
        if (p->bias) memcpy(bias, p->bias + c0, cols * sizeof(float));
        float32x4_t bv = vld1q_f32(bias), ws = vld1q_f32(p->w_scale + c0);
        _Pragma("GCC unroll 4")
        for (int r = 0; r < MR; r++) {
            float32x4_t x = vcvtq_f32_s32(vpaddq_s32(acc[r][j][0], acc[r][j][1]));
            float32x4_t v = vfmaq_f32(bv, vfmaq_f32(vdupq_n_f32(0.0f), x, ws), vdupq_n_f32(p->a_scale[m0 + r]));
            float *dst = p->c + (m0 + r) * p->ldc + c0;
            if (cols == 4) {
                vst1q_f32(dst, v);
            } else {
                float tmp[4];
                vst1q_f32(tmp, v);
                memcpy(dst, tmp, cols * sizeof(float));
            }
        }
    }
}

void psam_s16gemm__neon(const psam_s16gemm_args *p, size_t n0, size_t n1) {
    if (n1 > p->n) n1 = p->n;
    if (n0 >= n1) return;
    const size_t mb = 64;
    for (size_t mb0 = 0; mb0 < p->m; mb0 += mb) {
        size_t mb1 = mb0 + mb < p->m ? mb0 + mb : p->m;
        for (size_t n = n0; n < n1; n += 16) {
            size_t m = mb0;
            for (; m + 3 <= mb1; m += 3) tile(p, m, n, 3);
            if (mb1 - m == 2) tile(p, m, n, 2);
            if (mb1 - m == 1) tile(p, m, n, 1);
            if (p->gelu) {
                size_t c1 = n + 16 < n1 ? n + 16 : n1;
                for (size_t r = mb0; r < mb1; r++) psam_gelu_mode_rows(p->c + r * p->ldc + n, c1 - n, p->gelu);
            }
        }
    }
}
#endif
