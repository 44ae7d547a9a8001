/* int8 GEMM for ARMv8.0 NEON without the dot product (Cortex-A53, Cortex-A72 / Raspberry Pi 4): tiles of up to
 * 2 rows × 16 columns on the panels16x4 weights as they are (no repacking). Activations are u8; a ^ 0x80 is a − 128
 * as s8, so Σ(a−128)·w + 128·Σw restores the u8 sum exactly (folded into the zero-point term: acc + (128 − a_zero)·w_sum).
 * A 16-byte weight block (4 channels × 4 k) times the activation quad replicated four times: smull/smull2 give int16
 * products, smlal/smlal2 add the next k-quad's products into the same int16 lanes, sadalp adds int16 pairs into
 * int32 accumulators ([c0 c0 c1 c1] and [c2 c2 c3 c3]), folded with addp at the end of each scale group.
 * Invariant: W in −127…127, never −128 (the loader enforces it), so |(a−128)·w| ≤ 128·127 = 16256 and the sum of two
 * in one int16 lane is at most 32512 < 32767: exact. The int32 sums are exact, the fp32 epilogue is the scalar
 * kernel's fmaf chain, so the output is bit-identical to psam_qgemm__scalar. */
#include "pocketsam_kernels.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

/* GCC's scheduler before register allocation hoists all the weight loads of the k-loop and spills accumulators to
 * the stack; without it the loop keeps everything in registers (clang needs nothing). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-schedule-insns")
#endif

/* The activation quad at a, replicated to 16 bytes, as a − 128 in s8 (ld1r + eor). */
static inline __attribute__((always_inline)) int8x16_t quad_s8(const uint8_t *a) {
    uint32_t quad;
    memcpy(&quad, a, 4);
    return vreinterpretq_s8_u8(veorq_u8(vreinterpretq_u8_u32(vdupq_n_u32(quad)), vdupq_n_u8(0x80)));
}

static inline __attribute__((always_inline)) void tile(const psam_qgemm_args *p, size_t m0, size_t n, const int MR) {
    const size_t kq = p->kp / 4, gq = p->group / 4, groups = p->kp / p->group, np = psam_round_up(p->n, 16);
    const int8_t *panel = p->w + (n / 16) * kq * 64;
    /* The fp32 sums over the groups, in memory: kept in registers they would crowd out the accumulators. */
    float f[2][16];
    memset(f, 0, sizeof f);
    for (size_t g = 0; g < groups; g++) {
        /* acc[r][j][h]: channels 4j + 2h, 4j + 2h + 1 of the panel, each as two int32 partial sums. */
        int32x4_t acc[2][4][2];
        _Pragma("GCC unroll 4")
        for (int r = 0; r < MR; r++)
            _Pragma("GCC unroll 4")
            for (int j = 0; j < 4; j++) acc[r][j][0] = acc[r][j][1] = vdupq_n_s32(0);
        const int8_t *b = panel + g * gq * 64;
        const uint8_t *a = p->a + m0 * p->lda + g * gq * 4;
        size_t q = 0;
        for (; q + 2 <= gq; q += 2) {
            int8x16_t a0[2], a1[2];
            _Pragma("GCC unroll 4")
            for (int r = 0; r < MR; r++) {
                a0[r] = quad_s8(a + r * p->lda + q * 4);
                a1[r] = quad_s8(a + r * p->lda + q * 4 + 4);
            }
            /* Source order is the schedule (see the GCC note above): block j + 1 loads while block j multiplies,
             * and each block's 2·MR independent smull, smlal, sadalp chains are interleaved. */
            int8x16_t w0 = vld1q_s8(b + q * 64), w1 = vld1q_s8(b + q * 64 + 64);
            _Pragma("GCC unroll 4")
            for (int j = 0; j < 4; j++) {
                int8x16_t v0 = w0, v1 = w1;
                if (j < 3) w0 = vld1q_s8(b + q * 64 + 16 * (j + 1)), w1 = vld1q_s8(b + q * 64 + 64 + 16 * (j + 1));
                int16x8_t lo[2], hi[2];
                _Pragma("GCC unroll 4")
                for (int r = 0; r < MR; r++) {
                    lo[r] = vmull_s8(vget_low_s8(v0), vget_low_s8(a0[r]));
                    hi[r] = vmull_high_s8(v0, a0[r]);
                }
                _Pragma("GCC unroll 4")
                for (int r = 0; r < MR; r++) {
                    lo[r] = vmlal_s8(lo[r], vget_low_s8(v1), vget_low_s8(a1[r]));
                    hi[r] = vmlal_high_s8(hi[r], v1, a1[r]);
                }
                _Pragma("GCC unroll 4")
                for (int r = 0; r < MR; r++) {
                    acc[r][j][0] = vpadalq_s16(acc[r][j][0], lo[r]);
                    acc[r][j][1] = vpadalq_s16(acc[r][j][1], hi[r]);
                }
            }
        }
        if (q < gq) { /* an odd number of k-quads in the group: the last one alone */
            int8x16_t a0[2];
            _Pragma("GCC unroll 4")
            for (int r = 0; r < MR; r++) a0[r] = quad_s8(a + r * p->lda + q * 4);
            _Pragma("GCC unroll 4")
            for (int j = 0; j < 4; j++) {
                int8x16_t w0 = vld1q_s8(b + q * 64 + 16 * j);
                _Pragma("GCC unroll 4")
                for (int r = 0; r < MR; r++) {
                    acc[r][j][0] = vpadalq_s16(acc[r][j][0], vmull_s8(vget_low_s8(w0), vget_low_s8(a0[r])));
                    acc[r][j][1] = vpadalq_s16(acc[r][j][1], vmull_high_s8(w0, a0[r]));
                }
            }
        }
        _Pragma("GCC unroll 4")
        for (int j = 0; j < 4; j++) {
            int32x4_t cs = vld1q_s32(p->w_sum + g * np + n + 4 * j);
            float32x4_t ws = vld1q_f32(p->w_scale + g * np + n + 4 * j);
            _Pragma("GCC unroll 4")
            for (int r = 0; r < MR; r++) {
                int32x4_t s = vpaddq_s32(acc[r][j][0], acc[r][j][1]);
                int32x4_t t = vmlaq_s32(s, cs, vdupq_n_s32(128 - p->a_zero[m0 + r]));
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

void psam_qgemm__neon(const psam_qgemm_args *p, size_t n0, size_t n1) {
    if (n1 > p->n) n1 = p->n;
    if (n0 >= n1) return;
    const size_t mb = 64;
    for (size_t mb0 = 0; mb0 < p->m; mb0 += mb) {
        size_t mb1 = mb0 + mb < p->m ? mb0 + mb : p->m;
        for (size_t n = n0; n < n1; n += 16) {
            size_t m = mb0;
            for (; m + 2 <= mb1; m += 2) tile(p, m, n, 2);
            if (m < mb1) tile(p, m, n, 1);
            if (p->gelu) {
                size_t c1 = n + 16 < n1 ? n + 16 : n1;
                for (size_t r = mb0; r < mb1; r++) psam_gelu_mode_rows(p->c + r * p->ldc + n, c1 - n, p->gelu);
            }
        }
    }
}
#endif
