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

#if defined(__aarch64__)
/* t = x·inv + (AMAX + 0.5) clamped to [0, 2·AMAX + 0.5] (vmaxq/vminq: the generic's compares but for a NaN, which
 * stays NaN in both and converts to 0, as (int32_t)NaN does on aarch64) for 8 values, truncated, then narrowed to
 * 16 bits (0 … 2·AMAX fits) and AMAX subtracted there. */
static inline int16x8_t quantize8_s16_neon(const float *p, float32x4_t vinv) {
    const float32x4_t vadd = vdupq_n_f32((float)PSAM_S16_AMAX + 0.5f), vtop = vdupq_n_f32(2.0f * (float)PSAM_S16_AMAX + 0.5f);
    const float32x4_t z = vdupq_n_f32(0.0f);
    const float32x4_t a = vminq_f32(vmaxq_f32(vaddq_f32(vmulq_f32(vld1q_f32(p), vinv), vadd), z), vtop);
    const float32x4_t b = vminq_f32(vmaxq_f32(vaddq_f32(vmulq_f32(vld1q_f32(p + 4), vinv), vadd), z), vtop);
    const int16x8_t t = vuzp1q_s16(vreinterpretq_s16_s32(vcvtq_s32_f32(a)), vreinterpretq_s16_s32(vcvtq_s32_f32(b)));
    return vsubq_s16(t, vdupq_n_s16(PSAM_S16_AMAX));
}

/* As psam_quantize_s16__avx512: up to 4 rows' max |x| (vmaxnmq: a NaN keeps the maximum, as the generic loop), their
 * scales as one vector, then the rows, 16 values a step. */
void psam_quantize_s16__neon(const float *x, size_t m, size_t k, size_t ldx, int16_t *q, size_t ldq, float *scale) {
    const size_t batch = k <= 1024 ? 4 : k <= 2048 ? 2 : 1;
    for (size_t i0 = 0; i0 < m; i0 += batch) {
        const size_t g = m - i0 < batch ? m - i0 : batch;
        float amax[4] = {0.0f, 0.0f, 0.0f, 0.0f}, inv_row[4], sc[4];
        uint32_t ok[4];
        for (size_t i = 0; i < g; i++) {
            const float *r = x + (i0 + i) * ldx;
            float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
            size_t j = 0;
            for (; j + 16 <= k; j += 16) {
                a0 = vmaxnmq_f32(a0, vabsq_f32(vld1q_f32(r + j)));
                a1 = vmaxnmq_f32(a1, vabsq_f32(vld1q_f32(r + j + 4)));
                a2 = vmaxnmq_f32(a2, vabsq_f32(vld1q_f32(r + j + 8)));
                a3 = vmaxnmq_f32(a3, vabsq_f32(vld1q_f32(r + j + 12)));
            }
            for (; j + 4 <= k; j += 4) a0 = vmaxnmq_f32(a0, vabsq_f32(vld1q_f32(r + j)));
            if (j < k) /* the last 4 again, or zeros past a short row */
                a1 = vmaxnmq_f32(a1, vabsq_f32(k >= 4 ? vld1q_f32(r + k - 4) : psam_load_tail4(r, k)));
            amax[i] = vmaxnmvq_f32(vmaxnmq_f32(vmaxnmq_f32(a0, a1), vmaxnmq_f32(a2, a3)));
        }
        /* quantize_s16_scale on 4 lanes: the same two divisions */
        const float32x4_t s = vdivq_f32(vld1q_f32(amax), vdupq_n_f32((float)PSAM_S16_AMAX));
        const uint32x4_t okv = vandq_u32(vcgtq_f32(s, vdupq_n_f32(0.0f)), vcleq_f32(s, vdupq_n_f32(FLT_MAX)));
        vst1q_f32(sc, vbslq_f32(okv, s, vdupq_n_f32(1.0f)));
        vst1q_f32(inv_row, vdivq_f32(vdupq_n_f32(1.0f), s));
        vst1q_u32(ok, okv);
        for (size_t i = 0; i < g; i++) {
            const float *r = x + (i0 + i) * ldx;
            int16_t *o = q + (i0 + i) * ldq;
            scale[i0 + i] = sc[i];
            if (!ok[i]) { /* all zero (or not finite): zeros, as the generic loop */
                memset(o, 0, ldq * sizeof(int16_t));
                continue;
            }
            const float32x4_t vinv = vdupq_n_f32(inv_row[i]);
            size_t j = 0;
            for (; j + 16 <= k; j += 16) {
                vst1q_s16(o + j, quantize8_s16_neon(r + j, vinv));
                vst1q_s16(o + j + 8, quantize8_s16_neon(r + j + 8, vinv));
            }
            for (; j + 8 <= k; j += 8) vst1q_s16(o + j, quantize8_s16_neon(r + j, vinv));
            if (j < k) {
                if (k >= 8) { /* the last 8 again: the same values for the ones already written */
                    vst1q_s16(o + k - 8, quantize8_s16_neon(r + k - 8, vinv));
                } else {
                    float t[8] = {0.0f};
                    int16_t b[8];
                    memcpy(t, r, k * sizeof(float));
                    vst1q_s16(b, quantize8_s16_neon(t, vinv));
                    memcpy(o, b, k * sizeof(int16_t));
                }
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
#if defined(__aarch64__)
    psam_quantize_s16__neon(x, m, k, ldx, q, ldq, scale);
#else
    psam_quantize_s16__generic(x, m, k, ldx, q, ldq, scale);
#endif
}
