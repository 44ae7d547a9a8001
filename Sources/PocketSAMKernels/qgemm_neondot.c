/* int8 GEMM for ARMv8.2 NEON dot-product: tiles of up to 4 rows × 16 columns, sdot on signed bytes.
 * Activations are u8; a ^ 0x80 is a − 128 as s8, so Σ(a−128)·w + 128·Σw restores the u8 sum exactly. */
#include "pocketsam_kernels.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

#define PSAM_NEONDOT __attribute__((target("arch=armv8.2-a+dotprod")))

/* See qgemm_neon.c: GCC's scheduler before register allocation would spill accumulators in the k-loop. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-schedule-insns")
#endif

static inline PSAM_NEONDOT __attribute__((always_inline)) void
tile(const psam_qgemm_args *p, size_t m0, size_t n, const int MR) {
    const size_t kq = p->kp / 4, gq = p->group / 4, groups = p->kp / p->group, np = psam_round_up(p->n, 16);
    const int8_t *panel = p->w + (n / 16) * kq * 64;
    /* The fp32 sums over the groups, in memory (registers hold the accumulators). */
    float f[4][16];
    memset(f, 0, sizeof f);
    for (size_t g = 0; g < groups; g++) {
        int32x4_t acc[4][4];
        _Pragma("GCC unroll 4")
        for (int r = 0; r < MR; r++)
            _Pragma("GCC unroll 4")
            for (int j = 0; j < 4; j++) acc[r][j] = vdupq_n_s32(0);
        const int8_t *b = panel + g * gq * 64;
        const uint8_t *a = p->a + m0 * p->lda + g * gq * 4;
        for (size_t q = 0; q < gq; q++) {
            /* Source order is the schedule (GCC note above): every operand loaded, then the dot products. The
             * activation quads are replicated by ld1r and flipped in vector registers (eor), off the integer side. */
            int8x16_t w[4], av[4];
            _Pragma("GCC unroll 4")
            for (int r = 0; r < MR; r++) {
                uint32_t quad;
                memcpy(&quad, a + r * p->lda + q * 4, 4);
                av[r] = vreinterpretq_s8_u8(veorq_u8(vreinterpretq_u8_u32(vdupq_n_u32(quad)), vdupq_n_u8(0x80)));
            }
            _Pragma("GCC unroll 4")
            for (int j = 0; j < 4; j++) w[j] = vld1q_s8(b + q * 64 + 16 * j);
            _Pragma("GCC unroll 4")
            for (int r = 0; r < MR; r++)
                _Pragma("GCC unroll 4")
                for (int j = 0; j < 4; j++) acc[r][j] = vdotq_s32(acc[r][j], w[j], av[r]);
        }
        _Pragma("GCC unroll 4")
        for (int j = 0; j < 4; j++) {
            int32x4_t cs = vld1q_s32(p->w_sum + g * np + n + 4 * j);
            float32x4_t ws = vld1q_f32(p->w_scale + g * np + n + 4 * j);
            _Pragma("GCC unroll 4")
            for (int r = 0; r < MR; r++) {
                int32x4_t t = vmlaq_s32(acc[r][j], cs, vdupq_n_s32(128 - p->a_zero[m0 + r]));
                vst1q_f32(f[r] + 4 * j, vfmaq_f32(vld1q_f32(f[r] + 4 * j), vcvtq_f32_s32(t), ws));
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
        float32x4_t bv = vld1q_f32(bias);
        _Pragma("GCC unroll 4")
        for (int r = 0; r < MR; r++) {
            float32x4_t v = vfmaq_f32(bv, vld1q_f32(f[r] + 4 * j), vdupq_n_f32(p->a_scale[m0 + r]));
            float tmp[4];
            vst1q_f32(tmp, v);
            memcpy(p->c + (m0 + r) * p->ldc + c0, tmp, cols * sizeof(float));
        }
    }
}

PSAM_NEONDOT void psam_qgemm__neondot(const psam_qgemm_args *p, size_t n0, size_t n1) {
    if (n1 > p->n) n1 = p->n;
    if (n0 >= n1) return;
    const size_t mb = 64;
    for (size_t mb0 = 0; mb0 < p->m; mb0 += mb) {
        size_t mb1 = mb0 + mb < p->m ? mb0 + mb : p->m;
        for (size_t n = n0; n < n1; n += 16) {
            size_t m = mb0;
            for (; m + 4 <= mb1; m += 4) tile(p, m, n, 4);
            switch (mb1 - m) {
            case 3: tile(p, m, n, 3); break;
            case 2: tile(p, m, n, 2); break;
            case 1: tile(p, m, n, 1); break;
            default: break;
            }
            if (p->gelu) {
                size_t c1 = n + 16 < n1 ? n + 16 : n1;
                for (size_t r = mb0; r < mb1; r++) psam_gelu_mode_rows(p->c + r * p->ldc + n, c1 - n, p->gelu);
            }
        }
    }
}
#endif
