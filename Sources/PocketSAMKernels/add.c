#include "rowops_internal.h"

/* out[i] = a[i] + b[i] (one fp32 add each: every width gives the same bits; out may be a or b). */
void psam_add__generic(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

#if defined(__x86_64__)
PSAM_AVX512F void psam_add__avx512(float *out, const float *a, const float *b, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
    if (i < n) {
        const __mmask16 mk = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(out + i, mk, _mm512_add_ps(_mm512_maskz_loadu_ps(mk, a + i), _mm512_maskz_loadu_ps(mk, b + i)));
    }
}
#endif

#if defined(__aarch64__)
/* 16 values a step; a tail of n mod 4 as the last 4 values, their sums taken before anything is stored (out may be
 * a or b: the overlap is written twice with the same sums). */
void psam_add__neon(float *out, const float *a, const float *b, size_t n) {
    if (n < 4) {
        if (n) psam_store_tail4(out, vaddq_f32(psam_load_tail4(a, n), psam_load_tail4(b, n)), n);
        return;
    }
    const float32x4_t last = vaddq_f32(vld1q_f32(a + n - 4), vld1q_f32(b + n - 4));
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const float32x4_t s0 = vaddq_f32(vld1q_f32(a + i), vld1q_f32(b + i));
        const float32x4_t s1 = vaddq_f32(vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
        const float32x4_t s2 = vaddq_f32(vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
        const float32x4_t s3 = vaddq_f32(vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
        vst1q_f32(out + i, s0), vst1q_f32(out + i + 4, s1), vst1q_f32(out + i + 8, s2), vst1q_f32(out + i + 12, s3);
    }
    for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vaddq_f32(vld1q_f32(a + i), vld1q_f32(b + i)));
    if (i < n) vst1q_f32(out + n - 4, last);
}
#endif

void psam_add_rows(float *out, const float *a, const float *b, size_t n) {
#if defined(__x86_64__)
    if (has_avx512()) {
        psam_add__avx512(out, a, b, n);
        return;
    }
#endif
#if defined(__aarch64__)
    psam_add__neon(out, a, b, n);
#else
    psam_add__generic(out, a, b, n);
#endif
}
