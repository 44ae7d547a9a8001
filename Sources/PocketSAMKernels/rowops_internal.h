/* The row operations' internals: each operation has a file of its own (quantize_u8.c, layernorm.c, softmax.c, …)
 * holding its portable ("generic") body and its ISA bodies side by side, and the public function that dispatches
 * among them at run time (AVX-512, then AVX2 + FMA, then generic on x86-64). The bodies are declared here so that
 * the kernel tests can run each against the generic one. Internal (not installed).
 *
 * Quantization and GELU give bit-identical results at every width: contraction into fused multiply-adds is off and
 * their x86 versions are compiled without FMA (min/max, mul, add, div and truncating conversion round the same at
 * any vector width). The others (layer norm, softmax, attention, depthwise) use FMA and sum in a different order,
 * and softmax's x86 exp is a polynomial (rowops_x86.h); they agree with the generic body to rounding, not bit for
 * bit. The int8 path's GELU (gelu_lut.h) uses explicit fused multiply-adds in every form, so it too is
 * bit-identical. Tests/KernelTests/rowops_test.c checks both. */
#ifndef POCKETSAM_ROWOPS_INTERNAL_H
#define POCKETSAM_ROWOPS_INTERNAL_H
#include "pocketsam_kernels.h"
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "gelu_lut.h"
#include "rowops_x86.h"
#include "rowops_neon.h"
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif /* GCC in ISO C mode (-std=c11) does not contract */

/* exp(x) for the generic bodies, with plain multiplies and adds: libm's expf is chosen by glibc per CPU (an FMA build
 * and an SSE2 one, which differ in the last bit now and then), and the portable kernels (portable.c) must give the
 * same bits on every CPU. The vector bodies' method (rowops_x86.h's exp512): reduction by ln 2 in two parts, a
 * degree-6 Taylor polynomial, 2^n as two normal factors (so results go smoothly into the subnormals); relative error
 * about 2e-7. NaN stays NaN; below −103 (under the smallest subnormal) the result is 0. */
static inline float exp_generic(float x) {
    if (x != x) return x;
    if (x <= -103.0f) return 0.0f;
    if (x > 88.3762626647949f) x = 88.3762626647949f;
    const int32_t ni = (int32_t)floorf(x * 1.44269504088896341f + 0.5f);
    const float n = (float)ni;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t n1 = ni >> 1, n2 = ni - n1;
    union { uint32_t u; float f; } f1 = {(uint32_t)(n1 + 127) << 23}, f2 = {(uint32_t)(n2 + 127) << 23};
    return p * f1.f * f2.f;
}


/* A row's scale and zero point from its extremes (lo ≤ 0 ≤ hi), and the factor and offset its values are quantized
 * with (x·inv + add, truncated). Returns 0, with scale 1 and zero 0, for an all-zero (or non-finite, which upstream
 * validation excludes) row, which quantizes to zeros. */
static inline int quantize_params(float lo, float hi, float *scale, int32_t *zero, float *inv, float *add) {
    const float s = (hi - lo) / 255.0f;
    if (!(s > 0.0f) || !isfinite(s)) {
        *scale = 1.0f;
        *zero = 0;
        return 0;
    }
    *inv = 1.0f / s;
    float zf = floorf(-lo * *inv + 0.5f);
    if (zf > 255.0f) zf = 255.0f;
    *scale = s;
    *zero = (int32_t)zf;
    *add = zf + 0.5f;
    return 1;
}

static inline void quantize_row(const float *r, size_t k, uint8_t *o, size_t ldq, float lo, float hi, float *scale,
                                int32_t *zero) {
    float inv = 0.0f, add = 0.0f;
    if (!quantize_params(lo, hi, scale, zero, &inv, &add)) {
        for (size_t j = 0; j < ldq; j++) o[j] = 0;
        return;
    }
    for (size_t j = 0; j < k; j++) {
        float t = r[j] * inv + add;
        t = t < 0.0f ? 0.0f : (t > 255.5f ? 255.5f : t);
        o[j] = (uint8_t)(int32_t)t;
    }
    for (size_t j = k; j < ldq; j++) o[j] = 0;
}

/* Floats of kᵀ kept on the stack by the AVX2 and NEON few-key attentions: one head's d × ⌈nk/8⌉·8 (NEON: ⌈nk/4⌉·4)
 * must fit, else the generic body runs. */
#define PSAM_FEW_KEYS_KT 4096

/* quantize_u8.c */
void psam_quantize_u8__generic(const float *x, size_t m, size_t k, size_t ldx, uint8_t *q, size_t ldq, float *scale, int32_t *zero);
#if defined(__x86_64__)
void psam_quantize_u8__avx512(const float *x, size_t m, size_t k, size_t ldx, uint8_t *q, size_t ldq, float *scale, int32_t *zero);
void psam_quantize_u8__avx2(const float *x, size_t m, size_t k, size_t ldx, uint8_t *q, size_t ldq, float *scale, int32_t *zero);
#endif
#if defined(__aarch64__)
void psam_quantize_u8__neon(const float *x, size_t m, size_t k, size_t ldx, uint8_t *q, size_t ldq, float *scale, int32_t *zero);
#endif
/* quantize_s16.c */
void psam_quantize_s16__generic(const float *x, size_t m, size_t k, size_t ldx, int16_t *q, size_t ldq, float *scale);
#if defined(__x86_64__)
void psam_quantize_s16__avx512(const float *x, size_t m, size_t k, size_t ldx, int16_t *q, size_t ldq, float *scale);
#endif
#if defined(__aarch64__)
void psam_quantize_s16__neon(const float *x, size_t m, size_t k, size_t ldx, int16_t *q, size_t ldq, float *scale);
#endif
/* gelu.c */
void psam_gelu__generic(float *x, size_t n);
void psam_gelu_lut__generic(float *x, size_t n);
#if defined(__x86_64__)
void psam_gelu__avx512(float *x, size_t n);
void psam_gelu__avx2(float *x, size_t n);
void psam_gelu_lut__avx512(float *x, size_t n);
void psam_gelu_fast__avx512(float *x, size_t n);
#endif
#if defined(__aarch64__)
void psam_gelu__neon(float *x, size_t n);
void psam_gelu_lut__neon(float *x, size_t n);
#endif
/* depthwise.c */
void psam_depthwise__generic(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t k, size_t stride, size_t pad, float *out, size_t wo, size_t y0, size_t y1, int gelu, uint8_t *q, size_t ldq, float *scale, int32_t *zero);
#if defined(__x86_64__)
void psam_depthwise__avx512(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t k, size_t stride, size_t pad, float *out, size_t wo, size_t y0, size_t y1, int gelu, uint8_t *q, size_t ldq, float *scale, int32_t *zero);
void psam_depthwise__avx2(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t k, size_t stride, size_t pad, float *out, size_t wo, size_t y0, size_t y1, int gelu, uint8_t *q, size_t ldq, float *scale, int32_t *zero);
#endif
#if defined(__aarch64__)
void psam_depthwise__neon(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t k, size_t stride, size_t pad, float *out, size_t wo, size_t y0, size_t y1, int gelu, uint8_t *q, size_t ldq, float *scale, int32_t *zero);
#endif
/* layernorm.c */
void psam_layernorm__generic(const float *x, size_t m, size_t c, size_t ldx, const float *w, const float *b, float eps, float *out, size_t ldo);
#if defined(__x86_64__)
void psam_layernorm__avx512(const float *x, size_t m, size_t c, size_t ldx, const float *w, const float *b, float eps, float *out, size_t ldo);
void psam_layernorm__avx2(const float *x, size_t m, size_t c, size_t ldx, const float *w, const float *b, float eps, float *out, size_t ldo);
#endif
/* psam_layernorm_rows_seq's bodies (the same bits) */
void psam_layernorm_seq__generic(const float *x, size_t m, size_t c, const float *w, const float *b, float eps, float *out);
#if defined(__aarch64__)
void psam_layernorm__neon(const float *x, size_t m, size_t c, size_t ldx, const float *w, const float *b, float eps, float *out, size_t ldo);
void psam_layernorm_seq__neon(const float *x, size_t m, size_t c, const float *w, const float *b, float eps, float *out);
#endif
/* softmax.c */
void psam_softmax__generic(float *x, size_t m, size_t n, size_t ld);
void psam_softmax_cols__generic(float *x, size_t groups, size_t n, size_t cols, size_t ld, const float *bias);
void psam_softmax_online__generic(float *s, size_t rows, size_t cols, size_t ld, float *m, float *l, float *acc, size_t ldacc, size_t accw);
void psam_softmax_lanes__generic(float *x, size_t m, size_t ld, size_t n, size_t g);
#if defined(__x86_64__)
void psam_softmax__avx512(float *x, size_t m, size_t n, size_t ld);
void psam_softmax__avx2(float *x, size_t m, size_t n, size_t ld);
void psam_softmax_cols__avx512(float *x, size_t groups, size_t n, size_t cols, size_t ld, const float *bias);
void psam_softmax_cols__avx2(float *x, size_t groups, size_t n, size_t cols, size_t ld, const float *bias);
void psam_softmax_online__avx512(float *s, size_t rows, size_t cols, size_t ld, float *m, float *l, float *acc, size_t ldacc, size_t accw);
void psam_softmax_lanes8__avx2(float *x, size_t m, size_t ld, size_t n, size_t g);
#endif
#if defined(__aarch64__)
void psam_softmax__neon(float *x, size_t m, size_t n, size_t ld);
void psam_softmax_cols__neon(float *x, size_t groups, size_t n, size_t cols, size_t ld, const float *bias);
void psam_softmax_online__neon(float *s, size_t rows, size_t cols, size_t ld, float *m, float *l, float *acc, size_t ldacc, size_t accw);
void psam_softmax_lanes__neon(float *x, size_t m, size_t ld, size_t n, size_t g);
#endif
/* window_attention.c */
void psam_window_attention__generic(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch);
#if defined(__x86_64__)
void psam_window_attention__avx512(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch);
void psam_window_attention__avx2(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch);
#endif
#if defined(__aarch64__)
void psam_window_attention__neon(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch);
#endif
/* window_attention_fp16.c */
void psam_window_attention_fp16__generic(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch);
#if defined(__x86_64__)
void psam_window_attention_fp16__avx512fp16(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch);
#endif
#if defined(__aarch64__)
/* kd a multiple of 8; only where psam_cpu_neon_fp16() (ARMv8.2 FP16 arithmetic). */
void psam_window_attention_fp16__neonfp16(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch);
#endif
/* window_attention_bf16.c */
void psam_window_attention_bf16_rows__generic(const float *qkv, size_t ldq, size_t wn, size_t nq, const uint16_t *rows, size_t heads, size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch);
void psam_window_attention_bf16__generic(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch);
#if defined(__x86_64__)
void psam_window_attention_bf16_rows__avx512bf16(const float *qkv, size_t ldq, size_t wn, size_t nq, const uint16_t *rows, size_t heads, size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch);
void psam_window_attention_bf16__avx512bf16(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch);
#endif
/* relpos.c */
void psam_relpos_add__generic(float *scores, size_t ld, size_t rows, size_t q0, size_t side, const float *th, const float *tw, size_t r);
#if defined(__x86_64__)
void psam_relpos_add__avx512(float *scores, size_t ld, size_t rows, size_t q0, size_t side, const float *th, const float *tw, size_t r);
#endif
/* vit_attention_bf16.c */
void psam_vit_attention_bf16_pack__generic(const float *k, const float *v, size_t ld, size_t nk, size_t kd, float *packed);
void psam_vit_attention_bf16__generic(const float *q, size_t ldq, size_t nq, size_t q0, size_t side, const float *packed, size_t kd, float scale, const float *th, const float *tw, float *out, size_t ldo, float *scratch);
#if defined(__x86_64__)
void psam_vit_attention_bf16__avx512bf16(const float *q, size_t ldq, size_t nq, size_t q0, size_t side, const float *packed, size_t kd, float scale, const float *th, const float *tw, float *out, size_t ldo, float *scratch);
#endif
/* add.c */
void psam_add__generic(float *out, const float *a, const float *b, size_t n);
#if defined(__x86_64__)
void psam_add__avx512(float *out, const float *a, const float *b, size_t n);
#endif
#if defined(__aarch64__)
void psam_add__neon(float *out, const float *a, const float *b, size_t n);
#endif
/* attention_few_keys.c */
void psam_attention_few_keys__generic(const float *q, size_t ldq, const float *k, size_t ldk, const float *v, size_t ldv, size_t nk, size_t heads, size_t d, float scale, float *out, size_t ldo, size_t r0, size_t r1);
#if defined(__x86_64__)
void psam_attention_few_keys__avx2(const float *q, size_t ldq, const float *k, size_t ldk, const float *v, size_t ldv, size_t nk, size_t heads, size_t d, float scale, float *out, size_t ldo, size_t r0, size_t r1);
#endif
#if defined(__aarch64__)
void psam_attention_few_keys__neon(const float *q, size_t ldq, const float *k, size_t ldk, const float *v, size_t ldv, size_t nk, size_t heads, size_t d, float scale, float *out, size_t ldo, size_t r0, size_t r1);
#endif
/* resample.c */
void psam_resample_h__generic(const uint8_t *src, size_t stride, size_t channels, size_t y0, size_t y1, size_t ow, const int32_t *bounds, const int32_t *weights, size_t taps, uint8_t *tmp);
void psam_resample_v__generic(const uint8_t *tmp, size_t ow3, size_t y0, size_t y1, const int32_t *bounds, const int32_t *weights, size_t taps, uint8_t *out);
#if defined(__aarch64__)
void psam_resample_h__neon(const uint8_t *src, size_t stride, size_t channels, size_t y0, size_t y1, size_t ow, const int32_t *bounds, const int32_t *weights, size_t taps, uint8_t *tmp);
void psam_resample_v__neon(const uint8_t *tmp, size_t ow3, size_t y0, size_t y1, const int32_t *bounds, const int32_t *weights, size_t taps, uint8_t *out);
#endif
#endif
