#include "rowops_internal.h"

void psam_quantize_u8__generic(const float *x, size_t m, size_t k, size_t ldx, uint8_t *q, size_t ldq, float *scale,
                             int32_t *zero) {
    for (size_t i = 0; i < m; i++) {
        const float *r = x + i * ldx;
        float lo = 0.0f, hi = 0.0f;
        for (size_t j = 0; j < k; j++) {
            lo = r[j] < lo ? r[j] : lo;
            hi = r[j] > hi ? r[j] : hi;
        }
        quantize_row(r, k, q + i * ldq, ldq, lo, hi, scale + i, zero + i);
    }
}

#if defined(__x86_64__)
/* Row extremes with two accumulator pairs (min and max are exact, so the order does not matter for finite values). */
PSAM_AVX512F static inline void minmax_row_avx512(const float *r, size_t k, float *lo, float *hi) {
    __m512 l0 = _mm512_setzero_ps(), h0 = _mm512_setzero_ps(), l1 = l0, h1 = h0;
    size_t j = 0;
    for (; j + 32 <= k; j += 32) {
        __m512 v = _mm512_loadu_ps(r + j), u = _mm512_loadu_ps(r + j + 16);
        l0 = _mm512_min_ps(v, l0); /* v < l0 ? v : l0: a NaN v keeps l0, as the generic loop */
        h0 = _mm512_max_ps(v, h0);
        l1 = _mm512_min_ps(u, l1);
        h1 = _mm512_max_ps(u, h1);
    }
    for (; j < k; j += 16) {
        __m512 v = _mm512_maskz_loadu_ps(k - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (k - j)) - 1u), r + j);
        l0 = _mm512_min_ps(v, l0);
        h0 = _mm512_max_ps(v, h0);
    }
    *lo = _mm512_reduce_min_ps(_mm512_min_ps(l0, l1));
    *hi = _mm512_reduce_max_ps(_mm512_max_ps(h0, h1));
}

/* Up to 16 rows at a time: every row's extremes, then the rows' scales and zero points as one vector (the same
 * IEEE divisions, products and sums quantize_row does one row at a time, so the same bits; a row's long chain of
 * dependent divisions no longer stalls the next), then the rows, 64 values to one 64-byte store. */
PSAM_AVX512F void psam_quantize_u8__avx512(const float *x, size_t m, size_t k, size_t ldx, uint8_t *q, size_t ldq,
                                         float *scale, int32_t *zero) {
    /* packus_epi32 then packus_epi16 of four vectors leaves, in 128-bit lane l, four values of each vector in turn:
     * dword (l·4 + v) holds vector v's values 4l … 4l + 3. */
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512 zf_max = _mm512_set1_ps(255.0f), vmax = _mm512_set1_ps(255.5f), half = _mm512_set1_ps(0.5f), z = _mm512_setzero_ps();
    /* Rows per batch: up to 16, about 16 KB of them, so that the second pass reads them from L1. */
    const size_t batch = k <= 256 ? 16 : k >= 2048 ? 2 : 4096 / k;
    for (size_t i0 = 0; i0 < m; i0 += batch) {
        const size_t g = m - i0 < batch ? m - i0 : batch;
        const __mmask16 gm = (__mmask16)((1u << g) - 1u);
        float lo[16], hi[16], inv_row[16], add_row[16];
        for (size_t i = 0; i < g; i++) minmax_row_avx512(x + (i0 + i) * ldx, k, lo + i, hi + i);
        __mmask16 ok = 0;
        if (g >= 2) {
            const __m512 l = _mm512_maskz_loadu_ps(gm, lo), s = _mm512_div_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(gm, hi), l), zf_max);
            ok = usable_scales(s, g);
            const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), s);
            const __m512 zf = _mm512_min_ps(_mm512_roundscale_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(z, l), inv), half),
                                                                 _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC), zf_max);
            _mm512_mask_storeu_ps(scale + i0, gm, _mm512_mask_blend_ps(ok, _mm512_set1_ps(1.0f), s));
            _mm512_mask_storeu_epi32(zero + i0, gm, _mm512_maskz_cvttps_epi32(ok, zf));
            _mm512_storeu_ps(inv_row, inv);
            _mm512_storeu_ps(add_row, _mm512_add_ps(zf, half));
        } else { /* one row: scalar, as quantize_row (the vector divisions' latency would cost more) */
            ok = (__mmask16)quantize_params(lo[0], hi[0], scale + i0, zero + i0, inv_row, add_row);
        }
        for (size_t i = 0; i < g; i++) {
            const float *r = x + (i0 + i) * ldx;
            uint8_t *o = q + (i0 + i) * ldq;
            if (!((ok >> i) & 1u)) { /* all zero (or not finite): zeros, as quantize_row */
                memset(o, 0, ldq);
                continue;
            }
            const __m512 vinv = _mm512_set1_ps(inv_row[i]), vadd = _mm512_set1_ps(add_row[i]);
/* No clamp to [0, 255.5] before the conversion here: the packs saturate to [0, 255], which is what the clamp gives,
 * for every t = x·inv + add of a finite row (|t| < 2^31; t < 0 truncates to 0 or packs to 0, t ≥ 256 packs to 255),
 * and a NaN converts to INT32_MIN, which packs to 0 as the clamp (max(NaN, 0) = 0) does. */
#define PSAM_Q32(p) _mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(p), vinv), vadd))
            size_t j = 0;
            for (; j + 64 <= k; j += 64) {
                const __m512i ab = _mm512_packus_epi32(PSAM_Q32(r + j), PSAM_Q32(r + j + 16));
                const __m512i cd = _mm512_packus_epi32(PSAM_Q32(r + j + 32), PSAM_Q32(r + j + 48));
                _mm512_storeu_si512((void *)(o + j), _mm512_permutexvar_epi32(order, _mm512_packus_epi16(ab, cd)));
            }
#undef PSAM_Q32
            for (; j < k; j += 16) {
                __mmask16 mk = k - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (k - j)) - 1u);
                __m512 t = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, r + j), vinv), vadd);
                t = _mm512_min_ps(_mm512_max_ps(t, z), vmax);
                _mm_mask_storeu_epi8(o + j, mk, _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(t)));
            }
            if (ldq > k) memset(o + k, 0, ldq - k);
        }
    }
}

/* 8 floats in [0, 255.5] to 8 bytes, truncating like (uint8_t)(int32_t)t. */
PSAM_AVX2 static inline __m128i cvt8_u8(__m256 t) {
    __m256i i = _mm256_cvttps_epi32(t);
    __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    return _mm_packus_epi16(w, w);
}

/* Without FMA: min/max are exact and r·inv + add rounds twice, exactly as quantize_row does. */
PSAM_AVX2 void psam_quantize_u8__avx2(const float *x, size_t m, size_t k, size_t ldx, uint8_t *q, size_t ldq,
                                    float *scale, int32_t *zero) {
    for (size_t i = 0; i < m; i++) {
        const float *r = x + i * ldx;
        __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
        size_t j = 0;
        for (; j + 8 <= k; j += 8) {
            __m256 v = _mm256_loadu_ps(r + j);
            lo = _mm256_min_ps(v, lo); /* v < lo ? v : lo, as the generic loop */
            hi = _mm256_max_ps(v, hi);
        }
        float l = hmin8(lo), h = hmax8(hi);
        for (; j < k; j++) {
            l = r[j] < l ? r[j] : l;
            h = r[j] > h ? r[j] : h;
        }
        uint8_t *o = q + i * ldq;
        float s = (h - l) / 255.0f;
        if (!(s > 0.0f) || !isfinite(s)) {
            quantize_row(r, k, o, ldq, l, h, scale + i, zero + i);
            continue;
        }
        float inv = 1.0f / s;
        float zf = floorf(-l * inv + 0.5f);
        if (zf > 255.0f) zf = 255.0f;
        scale[i] = s;
        zero[i] = (int32_t)zf;
        const float add = zf + 0.5f;
        const __m256 vinv = _mm256_set1_ps(inv), vadd = _mm256_set1_ps(add), vmax = _mm256_set1_ps(255.5f),
                     v0 = _mm256_setzero_ps();
#define PSAM_Q8(p) _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(p), vinv), vadd), v0), vmax)
        for (j = 0; j + 32 <= k; j += 32) {
            __m256i a = _mm256_cvttps_epi32(PSAM_Q8(r + j)), b = _mm256_cvttps_epi32(PSAM_Q8(r + j + 8));
            __m256i c = _mm256_cvttps_epi32(PSAM_Q8(r + j + 16)), d = _mm256_cvttps_epi32(PSAM_Q8(r + j + 24));
            /* The packs work per 128-bit lane: dwords come out as a0-3 b0-3 c0-3 d0-3 a4-7 b4-7 c4-7 d4-7. */
            __m256i u = _mm256_packus_epi16(_mm256_packus_epi32(a, b), _mm256_packus_epi32(c, d));
            u = _mm256_permutevar8x32_epi32(u, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(o + j), u);
        }
        for (; j + 8 <= k; j += 8) _mm_storel_epi64((__m128i *)(o + j), cvt8_u8(PSAM_Q8(r + j)));
#undef PSAM_Q8
        for (; j < k; j++) {
            float t = r[j] * inv + add;
            t = t < 0.0f ? 0.0f : (t > 255.5f ? 255.5f : t);
            o[j] = (uint8_t)(int32_t)t;
        }
        for (j = k; j < ldq; j++) o[j] = 0;
    }
}
#endif

#if defined(__aarch64__)
/* Row extremes with four accumulator pairs. vminnmq/vmaxnmq return the number when the other operand is NaN, as the
 * generic loop's compares keep lo and hi; they may make lo −0 where the generic keeps +0, which gives the same scale,
 * zero point and bytes (hi − (−0) = hi − 0, and −lo·inv + 0.5 = 0.5 either way). */
static inline void minmax_row_neon(const float *r, size_t k, float *lo, float *hi) {
    float32x4_t l0 = vdupq_n_f32(0.0f), l1 = l0, l2 = l0, l3 = l0, h0 = l0, h1 = l0, h2 = l0, h3 = l0;
    size_t j = 0;
    for (; j + 16 <= k; j += 16) {
        const float32x4_t a = vld1q_f32(r + j), b = vld1q_f32(r + j + 4), c = vld1q_f32(r + j + 8), d = vld1q_f32(r + j + 12);
        l0 = vminnmq_f32(l0, a), h0 = vmaxnmq_f32(h0, a);
        l1 = vminnmq_f32(l1, b), h1 = vmaxnmq_f32(h1, b);
        l2 = vminnmq_f32(l2, c), h2 = vmaxnmq_f32(h2, c);
        l3 = vminnmq_f32(l3, d), h3 = vmaxnmq_f32(h3, d);
    }
    for (; j + 4 <= k; j += 4) {
        const float32x4_t a = vld1q_f32(r + j);
        l0 = vminnmq_f32(l0, a), h0 = vmaxnmq_f32(h0, a);
    }
    if (j < k) { /* the last 4 again (extremes do not mind repeats), or zeros past a short row (lo ≤ 0 ≤ hi anyway) */
        const float32x4_t a = k >= 4 ? vld1q_f32(r + k - 4) : psam_load_tail4(r, k);
        l1 = vminnmq_f32(l1, a), h1 = vmaxnmq_f32(h1, a);
    }
    *lo = vminnmvq_f32(vminnmq_f32(vminnmq_f32(l0, l1), vminnmq_f32(l2, l3)));
    *hi = vmaxnmvq_f32(vmaxnmq_f32(vmaxnmq_f32(h0, h1), vmaxnmq_f32(h2, h3)));
}

/* t = x·inv + add (two roundings, as quantize_row) for 16 values, truncated to int32 and narrowed with saturation.
 * No clamp to [0, 255.5]: the saturating narrows give what the clamp then truncation gives for every t (t < 0
 * truncates to ≤ 0 and narrows to 0; t ≥ 256 truncates to ≥ 256 and narrows to 255; ±inf convert to INT32_MAX/MIN),
 * and a NaN converts to 0, as (int32_t)NaN does on aarch64. */
static inline uint8x16_t quantize16_neon(const float *p, float32x4_t vinv, float32x4_t vadd) {
    const int32x4_t a = vcvtq_s32_f32(vaddq_f32(vmulq_f32(vld1q_f32(p), vinv), vadd));
    const int32x4_t b = vcvtq_s32_f32(vaddq_f32(vmulq_f32(vld1q_f32(p + 4), vinv), vadd));
    const int32x4_t c = vcvtq_s32_f32(vaddq_f32(vmulq_f32(vld1q_f32(p + 8), vinv), vadd));
    const int32x4_t d = vcvtq_s32_f32(vaddq_f32(vmulq_f32(vld1q_f32(p + 12), vinv), vadd));
    const uint16x8_t ab = vqmovun_high_s32(vqmovun_s32(a), b), cd = vqmovun_high_s32(vqmovun_s32(c), d);
    return vqmovn_high_u16(vqmovn_u16(ab), cd);
}

/* As psam_quantize_u8__avx512: up to 4 rows' extremes, then their scales and zero points as one vector (the same
 * IEEE divisions, products and sums quantize_params does, so the same bits, without a row's chain of dependent
 * divisions stalling the next), then the rows, 16 values to a 16-byte store. */
void psam_quantize_u8__neon(const float *x, size_t m, size_t k, size_t ldx, uint8_t *q, size_t ldq, float *scale,
                            int32_t *zero) {
    /* Rows per batch: their floats (up to 16 KB) stay in L1 for the second pass. */
    const size_t batch = k <= 1024 ? 4 : k <= 2048 ? 2 : 1;
    for (size_t i0 = 0; i0 < m; i0 += batch) {
        const size_t g = m - i0 < batch ? m - i0 : batch;
        float lo[4] = {0.0f, 0.0f, 0.0f, 0.0f}, hi[4] = {0.0f, 0.0f, 0.0f, 0.0f}, inv_row[4], add_row[4];
        uint32_t ok[4];
        for (size_t i = 0; i < g; i++) minmax_row_neon(x + (i0 + i) * ldx, k, lo + i, hi + i);
        if (g >= 2) {
            const float32x4_t l = vld1q_f32(lo), s = vdivq_f32(vsubq_f32(vld1q_f32(hi), l), vdupq_n_f32(255.0f));
            const uint32x4_t okv = vandq_u32(vcgtq_f32(s, vdupq_n_f32(0.0f)), vcleq_f32(s, vdupq_n_f32(FLT_MAX)));
            const float32x4_t inv = vdivq_f32(vdupq_n_f32(1.0f), s);
            /* min(zf, 255) = (zf > 255 ? 255 : zf) but for a NaN zf, which vminq keeps too */
            const float32x4_t zf = vminq_f32(vrndmq_f32(vaddq_f32(vmulq_f32(vnegq_f32(l), inv), vdupq_n_f32(0.5f))),
                                             vdupq_n_f32(255.0f));
            float sc[4];
            int32_t zp[4];
            vst1q_f32(sc, vbslq_f32(okv, s, vdupq_n_f32(1.0f)));
            vst1q_s32(zp, vandq_s32(vreinterpretq_s32_u32(okv), vcvtq_s32_f32(zf)));
            vst1q_f32(inv_row, inv);
            vst1q_f32(add_row, vaddq_f32(zf, vdupq_n_f32(0.5f)));
            vst1q_u32(ok, okv);
            for (size_t i = 0; i < g; i++) scale[i0 + i] = sc[i], zero[i0 + i] = zp[i];
        } else { /* one row: scalar, as quantize_row */
            ok[0] = (uint32_t)quantize_params(lo[0], hi[0], scale + i0, zero + i0, inv_row, add_row);
        }
        for (size_t i = 0; i < g; i++) {
            const float *r = x + (i0 + i) * ldx;
            uint8_t *o = q + (i0 + i) * ldq;
            if (!ok[i]) { /* all zero (or not finite): zeros, as quantize_row */
                memset(o, 0, ldq);
                continue;
            }
            const float32x4_t vinv = vdupq_n_f32(inv_row[i]), vadd = vdupq_n_f32(add_row[i]);
            size_t j = 0;
            for (; j + 16 <= k; j += 16) vst1q_u8(o + j, quantize16_neon(r + j, vinv, vadd));
            if (j < k) {
                if (k >= 16) { /* the last 16 again: the same bytes for the ones already written */
                    vst1q_u8(o + k - 16, quantize16_neon(r + k - 16, vinv, vadd));
                } else {
                    float t[16] = {0.0f};
                    uint8_t b[16];
                    memcpy(t, r, k * sizeof(float));
                    vst1q_u8(b, quantize16_neon(t, vinv, vadd));
                    memcpy(o, b, k);
                }
            }
            if (ldq > k) memset(o + k, 0, ldq - k);
        }
    }
}
#endif

void psam_quantize_rows_u8(const float *x, size_t m, size_t k, size_t ldx, uint8_t *q, size_t ldq,
                           float *scale, int32_t *zero) {
#if defined(__x86_64__)
    if (has_avx512()) {
        psam_quantize_u8__avx512(x, m, k, ldx, q, ldq, scale, zero);
        return;
    }
    if (has_avx2()) {
        psam_quantize_u8__avx2(x, m, k, ldx, q, ldq, scale, zero);
        return;
    }
#endif
#if defined(__aarch64__)
    psam_quantize_u8__neon(x, m, k, ldx, q, ldq, scale, zero);
#else
    psam_quantize_u8__generic(x, m, k, ldx, q, ldq, scale, zero);
#endif
}
