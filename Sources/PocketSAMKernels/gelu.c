#include "rowops_internal.h"

static inline float erf_approx(float v) {
    float x = v < -4.0f ? -4.0f : (v > 4.0f ? 4.0f : v);
    float x2 = x * x;
    float p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 - 2.10102402082508e-06f;
    p = p * x2 - 5.69250639462346e-05f;
    p = p * x2 - 7.34990630326855e-04f;
    p = p * x2 - 2.95459980854025e-03f;
    p = p * x2 - 1.60960333262415e-02f;
    float q = -1.45660718464996e-05f;
    q = q * x2 - 2.13374055278905e-04f;
    q = q * x2 - 1.68282697438203e-03f;
    q = q * x2 - 7.37332916720468e-03f;
    q = q * x2 - 1.42647390514189e-02f;
    return x * p / q;
}

#define GELU_LOOP                                                          \
    for (size_t i = 0; i < n; i++) {                                       \
        float v = x[i];                                                    \
        x[i] = 0.5f * v * (1.0f + erf_approx(v * 0.70710678118654752f));  \
    }

void psam_gelu__generic(float *x, size_t n) { GELU_LOOP }
#if defined(__x86_64__)
PSAM_AVX512F void psam_gelu__avx512(float *x, size_t n) { GELU_LOOP }
PSAM_AVX2 void psam_gelu__avx2(float *x, size_t n) { GELU_LOOP }
#endif

#if defined(__aarch64__)
/* GELU_LOOP on 4 lanes, the same operations in the same order (no FMA; vmaxq/vminq give the clamp's results, a NaN
 * included, which both keep). */
static inline float32x4_t gelu4_neon(float32x4_t v) {
    const float32x4_t x = vminq_f32(vmaxq_f32(vmulq_f32(v, vdupq_n_f32(0.70710678118654752f)), vdupq_n_f32(-4.0f)),
                                    vdupq_n_f32(4.0f));
    const float32x4_t x2 = vmulq_f32(x, x);
    float32x4_t p = vdupq_n_f32(-2.72614225801306e-10f);
    p = vaddq_f32(vmulq_f32(p, x2), vdupq_n_f32(2.77068142495902e-08f));
    p = vsubq_f32(vmulq_f32(p, x2), vdupq_n_f32(2.10102402082508e-06f));
    p = vsubq_f32(vmulq_f32(p, x2), vdupq_n_f32(5.69250639462346e-05f));
    p = vsubq_f32(vmulq_f32(p, x2), vdupq_n_f32(7.34990630326855e-04f));
    p = vsubq_f32(vmulq_f32(p, x2), vdupq_n_f32(2.95459980854025e-03f));
    p = vsubq_f32(vmulq_f32(p, x2), vdupq_n_f32(1.60960333262415e-02f));
    float32x4_t q = vdupq_n_f32(-1.45660718464996e-05f);
    q = vsubq_f32(vmulq_f32(q, x2), vdupq_n_f32(2.13374055278905e-04f));
    q = vsubq_f32(vmulq_f32(q, x2), vdupq_n_f32(1.68282697438203e-03f));
    q = vsubq_f32(vmulq_f32(q, x2), vdupq_n_f32(7.37332916720468e-03f));
    q = vsubq_f32(vmulq_f32(q, x2), vdupq_n_f32(1.42647390514189e-02f));
    const float32x4_t erf = vdivq_f32(vmulq_f32(x, p), q);
    return vmulq_f32(vmulq_f32(vdupq_n_f32(0.5f), v), vaddq_f32(vdupq_n_f32(1.0f), erf));
}

/* f on x[0..n) in place, 16 values a step (independent chains for the in-order cores); a tail of n mod 4 as the last
 * 4 values, computed from them before anything is stored (their first ones are written twice, with the same bits). */
#define PSAM_MAP_NEON(f)                                                                                    \
    do {                                                                                                    \
        if (n < 4) {                                                                                        \
            if (n) psam_store_tail4(x, f(psam_load_tail4(x, n)), n);                                        \
            return;                                                                                         \
        }                                                                                                   \
        const float32x4_t last = n % 4 ? f(vld1q_f32(x + n - 4)) : vdupq_n_f32(0.0f);                       \
        size_t i = 0;                                                                                       \
        for (; i + 16 <= n; i += 16) {                                                                      \
            const float32x4_t a = f(vld1q_f32(x + i)), b = f(vld1q_f32(x + i + 4));                         \
            const float32x4_t c = f(vld1q_f32(x + i + 8)), d = f(vld1q_f32(x + i + 12));                    \
            vst1q_f32(x + i, a), vst1q_f32(x + i + 4, b), vst1q_f32(x + i + 8, c), vst1q_f32(x + i + 12, d); \
        }                                                                                                   \
        for (; i + 4 <= n; i += 4) vst1q_f32(x + i, f(vld1q_f32(x + i)));                                   \
        if (i < n) vst1q_f32(x + n - 4, last);                                                              \
    } while (0)

void psam_gelu__neon(float *x, size_t n) { PSAM_MAP_NEON(gelu4_neon); }
#endif

void psam_gelu_rows(float *x, size_t n) {
#if defined(__x86_64__)
    if (has_avx512()) {
        psam_gelu__avx512(x, n);
        return;
    }
    if (has_avx2()) {
        psam_gelu__avx2(x, n);
        return;
    }
#endif
#if defined(__aarch64__)
    psam_gelu__neon(x, n);
#else
    psam_gelu__generic(x, n);
#endif
}

/* The int8 path's GELU (gelu_lut.h). */
void psam_gelu_lut__generic(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = psam_gelu_lut1(x[i]);
}
#if defined(__x86_64__)
PSAM_AVX512FMA void psam_gelu_lut__avx512(float *x, size_t n) {
    __m512 tb[8];
    psam_gelu_lut512_table(tb);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 mk = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(x + i, mk, psam_gelu_lut512(_mm512_maskz_loadu_ps(mk, x + i), tb));
    }
}
#endif
#if defined(__aarch64__)
void psam_gelu_lut__neon(float *x, size_t n) { PSAM_MAP_NEON(psam_gelu_lut_neon); }
#undef PSAM_MAP_NEON
#endif

/* On aarch64 the NEON cubic has about half the NEON exact GELU's vector instructions and no division; llvm-mca's
 * steady state per 16 values (clang 21 / GCC 12 -O2): Cortex-A53 181 / 209 cycles against 240 / 227, Cortex-A57 (the
 * A72's model) 122 / 103 against 239 / 198. */
int psam_gelu_lut_fast(void) {
#if defined(__x86_64__)
    return has_avx512();
#elif defined(__aarch64__)
    return !psam_portable_kernels();
#else
    return 0;
#endif
}

void psam_gelu_lut_rows(float *x, size_t n) {
#if defined(__x86_64__)
    if (has_avx512()) {
        psam_gelu_lut__avx512(x, n);
        return;
    }
#endif
#if defined(__aarch64__)
    psam_gelu_lut__neon(x, n);
#else
    psam_gelu_lut__generic(x, n);
#endif
}

void psam_gelu_mode_rows(float *x, size_t n, int mode) {
    if (mode == PSAM_GELU_LUT) psam_gelu_lut_rows(x, n);
    else if (mode) psam_gelu_rows(x, n);
}

/* GELU for the mask decoder's upscaling (not the encoder's quantized path, which needs gelu's bit-exact
 * results at every width): the same rational erf with fused multiply-adds and the division as a reciprocal
 * estimate refined by one Newton step; within a few 1e-7 of psam_gelu_rows. */
#if defined(__x86_64__)
PSAM_AVX512FMA void psam_gelu_fast__avx512(float *x, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 mk = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(x + i, mk, psam_gelu_fast512(_mm512_maskz_loadu_ps(mk, x + i)));
    }
}
#endif

/* Elsewhere psam_gelu_rows (its NEON body on aarch64). */
void psam_gelu_fast_rows(float *x, size_t n) {
#if defined(__x86_64__)
    if (has_avx512()) {
        psam_gelu_fast__avx512(x, n);
        return;
    }
#endif
    psam_gelu_rows(x, n);
}

/* x[r][0..n) += bias (if any), then GELU (if gelu), for m rows of stride ld. */
void psam_bias_gelu_rows(float *x, size_t m, size_t n, size_t ld, const float *bias, int gelu) {
    for (size_t r = 0; r < m; r++) {
        float *row = x + r * ld;
        if (bias)
            for (size_t j = 0; j < n; j++) row[j] += bias[j];
        if (gelu) psam_gelu_rows(row, n);
    }
}
