/* int8 GEMM for ARMv8.6 I8MM: usmmla multiplies a 2 × 8 u8 matrix (two activation rows, 8 k) by a 2 × 8 s8 one (two
 * channels, the same 8 k) into a 2 × 2 int32 tile, so u8 × s8 needs no sign trick. Tiles of up to 4 rows × 16 columns
 * (16 accumulators) on the panels16x4 weights as they are: block q's 16 bytes for channels 4j..4j+3 (4 k each) zipped
 * by 32-bit lanes with block q + 1's give [c0 k0..7 | c1 k0..7] (zip1) and [c2 k0..7 | c3 k0..7] (zip2); a group
 * with an odd number of k-quads zips its last block with zeros. Accumulator [r0c0 r0c1 r1c0 r1c1] tiles are unzipped
 * by 64-bit lanes into rows at the end of each scale group. Int32 sums exact, the scalar kernel's fmaf epilogue:
 * bit-identical to psam_qgemm__scalar. A missing odd row is computed as a copy of the row before it and discarded. */
#include "pocketsam_kernels.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

#define PSAM_I8MM __attribute__((target("arch=armv8.2-a+i8mm")))

/* See qgemm_neon.c: GCC's scheduler before register allocation would spill accumulators in the k-loop. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-schedule-insns")
#endif

static inline int8x16_t zip_lo(int8x16_t x, int8x16_t y) {
    return vreinterpretq_s8_u32(vzip1q_u32(vreinterpretq_u32_s8(x), vreinterpretq_u32_s8(y)));
}
static inline int8x16_t zip_hi(int8x16_t x, int8x16_t y) {
    return vreinterpretq_s8_u32(vzip2q_u32(vreinterpretq_u32_s8(x), vreinterpretq_u32_s8(y)));
}

/* Rows m0 .. m0 + rows − 1 (rows ≤ 2·MP) as MP row pairs. */
static inline PSAM_I8MM __attribute__((always_inline)) void
tile(const psam_qgemm_args *p, size_t m0, size_t n, const int MP, size_t rows) {
    const size_t kq = p->kp / 4, gq = p->group / 4, groups = p->kp / p->group, np = psam_round_up(p->n, 16);
    const int8_t *panel = p->w + (n / 16) * kq * 64;
    const uint8_t *row[4];
    int32_t zero[4];
    float ascale[4];
    _Pragma("GCC unroll 4")
    for (int i = 0; i < 2 * MP; i++) {
        size_t r = m0 + ((size_t)i < rows ? (size_t)i : rows - 1);
        row[i] = p->a + r * p->lda;
        zero[i] = p->a_zero[r];
        ascale[i] = p->a_scale[r];
    }
    /* The fp32 sums over the groups, in memory (registers hold the accumulators). */
    float f[4][16];
    memset(f, 0, sizeof f);
    for (size_t g = 0; g < groups; g++) {
        /* acc[h][c]: rows 2h, 2h + 1 × channels 2c, 2c + 1 of the panel. */
        int32x4_t acc[2][8];
        _Pragma("GCC unroll 2")
        for (int h = 0; h < MP; h++)
            _Pragma("GCC unroll 8")
            for (int c = 0; c < 8; c++) acc[h][c] = vdupq_n_s32(0);
        const int8_t *b = panel + g * gq * 64;
        const size_t k0 = g * gq * 4;
        size_t q = 0;
        for (; q + 2 <= gq; q += 2) {
            uint8x16_t av[2];
            _Pragma("GCC unroll 2")
            for (int h = 0; h < MP; h++) av[h] = vcombine_u8(vld1_u8(row[2 * h] + k0 + q * 4), vld1_u8(row[2 * h + 1] + k0 + q * 4));
            _Pragma("GCC unroll 4")
            for (int j = 0; j < 4; j++) {
                int8x16_t b0 = vld1q_s8(b + q * 64 + 16 * j), b1 = vld1q_s8(b + q * 64 + 64 + 16 * j);
                int8x16_t w01 = zip_lo(b0, b1), w23 = zip_hi(b0, b1);
                _Pragma("GCC unroll 2")
                for (int h = 0; h < MP; h++) {
                    acc[h][2 * j] = vusmmlaq_s32(acc[h][2 * j], av[h], w01);
                    acc[h][2 * j + 1] = vusmmlaq_s32(acc[h][2 * j + 1], av[h], w23);
                }
            }
        }
        if (q < gq) { /* an odd number of k-quads in the group: the last one against a zero block (4 bytes read) */
            uint8x16_t av[2];
            _Pragma("GCC unroll 2")
            for (int h = 0; h < MP; h++) {
                uint32_t x0, x1;
                memcpy(&x0, row[2 * h] + k0 + q * 4, 4);
                memcpy(&x1, row[2 * h + 1] + k0 + q * 4, 4);
                av[h] = vreinterpretq_u8_u64(vcombine_u64(vcreate_u64(x0), vcreate_u64(x1)));
            }
            const int8x16_t z = vdupq_n_s8(0);
            _Pragma("GCC unroll 4")
            for (int j = 0; j < 4; j++) {
                int8x16_t b0 = vld1q_s8(b + q * 64 + 16 * j);
                int8x16_t w01 = zip_lo(b0, z), w23 = zip_hi(b0, z);
                _Pragma("GCC unroll 2")
                for (int h = 0; h < MP; h++) {
                    acc[h][2 * j] = vusmmlaq_s32(acc[h][2 * j], av[h], w01);
                    acc[h][2 * j + 1] = vusmmlaq_s32(acc[h][2 * j + 1], av[h], w23);
                }
            }
        }
        _Pragma("GCC unroll 4")
        for (int j = 0; j < 4; j++) {
            int32x4_t cs = vld1q_s32(p->w_sum + g * np + n + 4 * j);
            float32x4_t ws = vld1q_f32(p->w_scale + g * np + n + 4 * j);
            _Pragma("GCC unroll 2")
            for (int h = 0; h < MP; h++) {
                uint64x2_t x = vreinterpretq_u64_s32(acc[h][2 * j]), y = vreinterpretq_u64_s32(acc[h][2 * j + 1]);
                int32x4_t s[2] = {vreinterpretq_s32_u64(vuzp1q_u64(x, y)), vreinterpretq_s32_u64(vuzp2q_u64(x, y))};
                _Pragma("GCC unroll 2")
                for (int e = 0; e < 2; e++) {
                    int i = 2 * h + e;
                    int32x4_t t = vmlsq_s32(s[e], cs, vdupq_n_s32(zero[i]));
                    vst1q_f32(f[i] + 4 * j, vfmaq_f32(vld1q_f32(f[i] + 4 * j), vcvtq_f32_s32(t), ws));
                }
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
        for (int i = 0; i < 2 * MP; i++) {
            if ((size_t)i >= rows) break;
            float32x4_t v = vfmaq_f32(bv, vld1q_f32(f[i] + 4 * j), vdupq_n_f32(ascale[i]));
            float *dst = p->c + (m0 + (size_t)i) * p->ldc + c0;
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

PSAM_I8MM void psam_qgemm__i8mm(const psam_qgemm_args *p, size_t n0, size_t n1) {
    if (n1 > p->n) n1 = p->n;
    if (n0 >= n1) return;
    const size_t mb = 64;
    for (size_t mb0 = 0; mb0 < p->m; mb0 += mb) {
        size_t mb1 = mb0 + mb < p->m ? mb0 + mb : p->m;
        for (size_t n = n0; n < n1; n += 16) {
            size_t m = mb0;
            for (; m + 4 <= mb1; m += 4) tile(p, m, n, 2, 4);
            switch (mb1 - m) {
            case 3: tile(p, m, n, 2, 3); break;
            case 2: tile(p, m, n, 1, 2); break;
            case 1: tile(p, m, n, 1, 1); break;
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
