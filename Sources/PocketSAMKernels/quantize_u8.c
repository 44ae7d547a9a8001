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
        l0 = _mm512_min_ps(l0, v);
        h0 = _mm512_max_ps(h0, v);
        l1 = _mm512_min_ps(l1, u);
        h1 = _mm512_max_ps(h1, u);
    }
    for (; j < k; j += 16) {
        __m512 v = _mm512_maskz_loadu_ps(k - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (k - j)) - 1u), r + j);
        l0 = _mm512_min_ps(l0, v);
        h0 = _mm512_max_ps(h0, v);
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
    psam_quantize_u8__generic(x, m, k, ldx, q, ldq, scale, zero);
}
