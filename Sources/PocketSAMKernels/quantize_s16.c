#include "rowops_internal.h"

/* Symmetric int16 rows (pocketsam_kernels.h): the scale from max|x|, then x·inv + (AMAX + 0.5) clamped and
 * truncated, as the u8 quantizer does with its zero point. Exact max, mul and add at any width, so the AVX-512
 * body gives the generic body's bits. */
static inline int quantize_s16_scale(float amax, float *scale, float *inv) {
    float s = amax / (float)PSAM_S16_AMAX;
    if (!(s > 0.0f) || !isfinite(s)) return 0;
    *scale = s;
    *inv = 1.0f / s;
    return 1;
}

void psam_quantize_s16__generic(const float *x, size_t m, size_t k, size_t ldx, int16_t *q, size_t ldq, float *scale) {
    const float add = (float)PSAM_S16_AMAX + 0.5f, top = 2.0f * (float)PSAM_S16_AMAX + 0.5f;
    for (size_t i = 0; i < m; i++) {
        const float *r = x + i * ldx;
        int16_t *o = q + i * ldq;
        float amax = 0.0f, inv = 0.0f;
        for (size_t j = 0; j < k; j++) {
            float a = fabsf(r[j]);
            amax = a > amax ? a : amax;
        }
        if (!quantize_s16_scale(amax, scale + i, &inv)) {
            scale[i] = 1.0f;
            for (size_t j = 0; j < ldq; j++) o[j] = 0;
            continue;
        }
        for (size_t j = 0; j < k; j++) {
            float t = r[j] * inv + add;
            t = t < 0.0f ? 0.0f : (t > top ? top : t);
            o[j] = (int16_t)((int32_t)t - PSAM_S16_AMAX);
        }
        for (size_t j = k; j < ldq; j++) o[j] = 0;
    }
}

#if defined(__x86_64__)
/* As psam_quantize_u8__avx512: up to 16 rows' max |x| first, then their scales as one vector (the division
 * quantize_s16_scale does), then the rows, 32 values to one 64-byte store. */
PSAM_AVX512F void psam_quantize_s16__avx512(const float *x, size_t m, size_t k, size_t ldx, int16_t *q, size_t ldq,
                                             float *scale) {
    const __m512 vadd = _mm512_set1_ps((float)PSAM_S16_AMAX + 0.5f), vtop = _mm512_set1_ps(2.0f * (float)PSAM_S16_AMAX + 0.5f);
    const __m512i voff = _mm512_set1_epi32(PSAM_S16_AMAX);
    /* packs_epi32 leaves, in 128-bit lane l, four values of the first vector then four of the second. */
    const __m512i order = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
    const __m512 z = _mm512_setzero_ps();
    for (size_t i0 = 0; i0 < m; i0 += 16) {
        const size_t g = m - i0 < 16 ? m - i0 : 16;
        const __mmask16 gm = (__mmask16)((1u << g) - 1u);
        float amax[16], inv_row[16];
        for (size_t i = 0; i < g; i++) {
            const float *r = x + (i0 + i) * ldx;
            __m512 a0 = z, a1 = z;
            size_t j = 0;
            for (; j + 32 <= k; j += 32) {
                a0 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(r + j)), a0); /* a NaN lane keeps the maximum, as the generic loop */
                a1 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(r + j + 16)), a1);
            }
            for (; j < k; j += 16) {
                __mmask16 mk = k - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (k - j)) - 1u);
                a0 = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(mk, r + j)), a0);
            }
            amax[i] = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
        }
        const __m512 s = _mm512_div_ps(_mm512_maskz_loadu_ps(gm, amax), _mm512_set1_ps((float)PSAM_S16_AMAX));
        const __mmask16 ok = usable_scales(s, g);
        _mm512_mask_storeu_ps(scale + i0, gm, _mm512_mask_blend_ps(ok, _mm512_set1_ps(1.0f), s));
        _mm512_storeu_ps(inv_row, _mm512_div_ps(_mm512_set1_ps(1.0f), s));
        for (size_t i = 0; i < g; i++) {
            const float *r = x + (i0 + i) * ldx;
            int16_t *o = q + (i0 + i) * ldq;
            if (!((ok >> i) & 1u)) { /* all zero (or not finite): zeros, as the generic loop */
                memset(o, 0, ldq * sizeof(int16_t));
                continue;
            }
            const __m512 vinv = _mm512_set1_ps(inv_row[i]);
/* No clamp to 2·AMAX + 0.5 before the conversion here: |x| ≤ max|x| bounds t = x·inv + AMAX + 0.5 to within rounding
 * of it, and the signed pack saturates at 32767 anyway. max(t, 0) stays: it sends a NaN to 0 (then −AMAX). */
#define PSAM_Q16(p) _mm512_sub_epi32(_mm512_cvttps_epi32(_mm512_max_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(p), vinv), vadd), z)), voff)
            size_t j = 0;
            for (; j + 32 <= k; j += 32)
                _mm512_storeu_si512((void *)(o + j), _mm512_permutexvar_epi64(order, _mm512_packs_epi32(PSAM_Q16(r + j), PSAM_Q16(r + j + 16))));
#undef PSAM_Q16
            for (; j < k; j += 16) {
                __mmask16 mk = k - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (k - j)) - 1u);
                __m512 t = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, r + j), vinv), vadd);
                t = _mm512_min_ps(_mm512_max_ps(t, z), vtop);
                _mm256_mask_storeu_epi16(o + j, mk, _mm512_cvtepi32_epi16(_mm512_sub_epi32(_mm512_cvttps_epi32(t), voff)));
            }
            if (ldq > k) memset(o + k, 0, (ldq - k) * sizeof(int16_t));
        }
    }
}
#endif

void psam_quantize_rows_s16(const float *x, size_t m, size_t k, size_t ldx, int16_t *q, size_t ldq, float *scale) {
#if defined(__x86_64__)
    if (has_avx512()) {
        psam_quantize_s16__avx512(x, m, k, ldx, q, ldq, scale);
        return;
    }
#endif
    psam_quantize_s16__generic(x, m, k, ldx, q, ldq, scale);
}
