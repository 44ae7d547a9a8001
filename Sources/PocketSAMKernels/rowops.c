/* fp32 row operations. Each has a portable ("generic") body and, on x86-64, an AVX-512 and an AVX2 (+FMA)
 * version, dispatched at run time (AVX-512, then AVX2 + FMA, then generic).
 * Quantization and GELU give bit-identical results at every width: contraction into fused multiply-adds
 * is off and their x86 versions are compiled without FMA (min/max, mul, add, div and truncating conversion
 * round the same at any vector width). The others (layer norm, softmax, attention, depthwise) use FMA and
 * sum in a different order, and softmax's x86 exp is a polynomial (below); they agree with the generic
 * body to rounding, not bit for bit. The int8 path's GELU (gelu_lut.h) uses explicit fused multiply-adds in every
 * form, so it too is bit-identical. Tests/KernelTests/rowops_test.c checks both. */
#include "pocketsam_kernels.h"
#include <float.h>
#include <math.h>
#include <string.h>
#include "gelu_lut.h"
#if defined(__x86_64__)
#include <immintrin.h>
#include "gelu_fast512.h"
#define PSAM_AVX512F __attribute__((target("avx512f,avx512bw,avx512vl")))
#define PSAM_AVX512FMA __attribute__((target("avx512f,avx512bw,avx512vl,fma")))
/* AVX2 without FMA (bit-identical kernels: quantization, GELU) and with FMA (the rest). */
#define PSAM_AVX2 __attribute__((target("avx2")))
#define PSAM_AVX2FMA __attribute__((target("avx2,fma")))
static int has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
static int has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* Lane mask of the first r (0 < r < 8) of 8 floats, for _mm256_maskload_ps. */
static const int32_t psam_tail_bits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
PSAM_AVX2 static inline __m256i tail_mask8(size_t r) {
    return _mm256_loadu_si256((const __m256i *)(psam_tail_bits + 8 - r));
}

/* Stores the first r (< 8) lanes of v. Not _mm256_maskstore_ps: AMD's Zen cores run masked stores as
 * slow microcode (masked loads are fast). */
PSAM_AVX2 static inline void store_tail8(float *p, __m256 v, size_t r) {
    __m128 h = _mm256_castps256_ps128(v);
    if (r & 4) {
        _mm_storeu_ps(p, h);
        h = _mm256_extractf128_ps(v, 1);
        p += 4;
    }
    if (r & 2) {
        _mm_storel_pi((__m64 *)p, h);
        h = _mm_movehl_ps(h, h);
        p += 2;
    }
    if (r & 1) _mm_store_ss(p, h);
}

/* Horizontal sum, min and max of 8 floats. */
PSAM_AVX2 static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
PSAM_AVX2 static inline float hmin8(__m256 v) {
    __m128 s = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_min_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_min_ss(s, _mm_movehdup_ps(s)));
}
PSAM_AVX2 static inline float hmax8(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}
/* In-place transpose of 8 vectors of 8 (row i lane j ↔ row j lane i). */
PSAM_AVX2 static inline void transpose8x8(__m256 *r) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}
#endif
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif /* GCC in ISO C mode (-std=c11) does not contract */

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

static void quantize_generic(const float *x, size_t m, size_t k, size_t ldx, uint8_t *q, size_t ldq, float *scale,
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

/* 0 < s <= FLT_MAX per lane of the first n (false for NaN): quantize_row's test for a usable scale. */
PSAM_AVX512F static inline __mmask16 usable_scales(__m512 s, size_t n) {
    return _mm512_cmp_ps_mask(s, _mm512_setzero_ps(), _CMP_GT_OQ) & _mm512_cmp_ps_mask(s, _mm512_set1_ps(FLT_MAX), _CMP_LE_OQ) &
           (__mmask16)((1u << n) - 1u);
}

/* Up to 16 rows at a time: every row's extremes, then the rows' scales and zero points as one vector (the same
 * IEEE divisions, products and sums quantize_row does one row at a time, so the same bits; a row's long chain of
 * dependent divisions no longer stalls the next), then the rows, 64 values to one 64-byte store. */
PSAM_AVX512F static void quantize_avx512(const float *x, size_t m, size_t k, size_t ldx, uint8_t *q, size_t ldq,
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
PSAM_AVX2 static void quantize_avx2(const float *x, size_t m, size_t k, size_t ldx, uint8_t *q, size_t ldq,
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
        quantize_avx512(x, m, k, ldx, q, ldq, scale, zero);
        return;
    }
    if (has_avx2()) {
        quantize_avx2(x, m, k, ldx, q, ldq, scale, zero);
        return;
    }
#endif
    quantize_generic(x, m, k, ldx, q, ldq, scale, zero);
}

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

static void quantize_s16_generic(const float *x, size_t m, size_t k, size_t ldx, int16_t *q, size_t ldq, float *scale) {
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
/* As quantize_avx512: up to 16 rows' max |x| first, then their scales as one vector (the division
 * quantize_s16_scale does), then the rows, 32 values to one 64-byte store. */
PSAM_AVX512F static void quantize_s16_avx512(const float *x, size_t m, size_t k, size_t ldx, int16_t *q, size_t ldq,
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
        quantize_s16_avx512(x, m, k, ldx, q, ldq, scale);
        return;
    }
#endif
    quantize_s16_generic(x, m, k, ldx, q, ldq, scale);
}

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

static void gelu_generic(float *x, size_t n) { GELU_LOOP }
#if defined(__x86_64__)
PSAM_AVX512F static void gelu_avx512(float *x, size_t n) { GELU_LOOP }
PSAM_AVX2 static void gelu_avx2(float *x, size_t n) { GELU_LOOP }
#endif

void psam_gelu_rows(float *x, size_t n) {
#if defined(__x86_64__)
    if (has_avx512()) {
        gelu_avx512(x, n);
        return;
    }
    if (has_avx2()) {
        gelu_avx2(x, n);
        return;
    }
#endif
    gelu_generic(x, n);
}

/* The int8 path's GELU (gelu_lut.h). */
static void gelu_lut_generic(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = psam_gelu_lut1(x[i]);
}
#if defined(__x86_64__)
PSAM_AVX512FMA static void gelu_lut_avx512(float *x, size_t n) {
    __m512 tb[8];
    psam_gelu_lut512_table(tb);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 mk = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(x + i, mk, psam_gelu_lut512(_mm512_maskz_loadu_ps(mk, x + i), tb));
    }
}
#endif

int psam_gelu_lut_fast(void) {
#if defined(__x86_64__)
    return has_avx512();
#else
    return 0;
#endif
}

void psam_gelu_lut_rows(float *x, size_t n) {
#if defined(__x86_64__)
    if (has_avx512()) {
        gelu_lut_avx512(x, n);
        return;
    }
#endif
    gelu_lut_generic(x, n);
}

void psam_gelu_mode_rows(float *x, size_t n, int mode) {
    if (mode == PSAM_GELU_LUT) psam_gelu_lut_rows(x, n);
    else if (mode) psam_gelu_rows(x, n);
}

/* GELU for the mask decoder's upscaling (not the encoder's quantized path, which needs gelu's bit-exact
 * results at every width): the same rational erf with fused multiply-adds and the division as a reciprocal
 * estimate refined by one Newton step; within a few 1e-7 of psam_gelu_rows. */
#if defined(__x86_64__)
PSAM_AVX512FMA static void gelu_fast_avx512(float *x, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 mk = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(x + i, mk, psam_gelu_fast512(_mm512_maskz_loadu_ps(mk, x + i)));
    }
}
#endif

void psam_gelu_fast_rows(float *x, size_t n) {
#if defined(__x86_64__)
    if (has_avx512()) {
        gelu_fast_avx512(x, n);
        return;
    }
#endif
    psam_gelu_rows(x, n);
}

/* One output pixel (oy, ox) of a depthwise convolution, all c channels, into o. */
#define DEPTHWISE_PIXEL                                                                         \
    for (size_t j = 0; j < c; j++) o[j] = bias ? bias[j] : 0.0f;                                \
    for (size_t ky = 0; ky < k; ky++) {                                                         \
        ptrdiff_t iy = (ptrdiff_t)(oy * stride + ky) - (ptrdiff_t)pad;                          \
        if (iy < 0 || iy >= (ptrdiff_t)h) continue;                                             \
        for (size_t kx = 0; kx < k; kx++) {                                                     \
            ptrdiff_t ix = (ptrdiff_t)(ox * stride + kx) - (ptrdiff_t)pad;                      \
            if (ix < 0 || ix >= (ptrdiff_t)w) continue;                                         \
            const float *s = x + ((size_t)iy * w + (size_t)ix) * c;                             \
            const float *wk = wt + (ky * k + kx) * c;                                           \
            for (size_t j = 0; j < c; j++) o[j] = o[j] + s[j] * wk[j];                          \
        }                                                                                       \
    }

static inline void dw_pixel_generic(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias,
                                    size_t k, size_t stride, size_t pad, size_t oy, size_t ox, float *o) {
    DEPTHWISE_PIXEL
}

#if defined(__x86_64__)
/* Channels in blocks of 16 held in a register across all k·k taps (fused multiply-adds). */
static inline PSAM_AVX512FMA __attribute__((always_inline)) void
dw_pixel_avx512(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t k, size_t stride,
                size_t pad, size_t oy, size_t ox, float *o) {
    for (size_t j = 0; j < c; j += 16) {
        __mmask16 mk = c - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (c - j)) - 1u);
        __m512 acc = bias ? _mm512_maskz_loadu_ps(mk, bias + j) : _mm512_setzero_ps();
        for (size_t ky = 0; ky < k; ky++) {
            ptrdiff_t iy = (ptrdiff_t)(oy * stride + ky) - (ptrdiff_t)pad;
            if (iy < 0 || iy >= (ptrdiff_t)h) continue;
            for (size_t kx = 0; kx < k; kx++) {
                ptrdiff_t ix = (ptrdiff_t)(ox * stride + kx) - (ptrdiff_t)pad;
                if (ix < 0 || ix >= (ptrdiff_t)w) continue;
                const float *sp = x + ((size_t)iy * w + (size_t)ix) * c + j;
                acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, sp), _mm512_maskz_loadu_ps(mk, wt + (ky * k + kx) * c + j), acc);
            }
        }
        _mm512_mask_storeu_ps(o + j, mk, acc);
    }
}

/* DW_PIX output pixels (oy, ox …) whose every tap is inside the input, all c channels, into rows o[i]: per block of
 * 16 channels and tap, one load of the weights and DW_PIX independent fused multiply-adds (no bounds checks). */
#define DW_PIX 4
static inline PSAM_AVX512FMA __attribute__((always_inline)) void
dw_pixels_avx512(const float *x, size_t w, size_t c, const float *wt, const float *bias, size_t k, size_t stride, size_t iy0,
                 size_t ix0, float *const *o) {
    const size_t step = stride * c;
    for (size_t j = 0; j < c; j += 16) {
        const __mmask16 mk = c - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (c - j)) - 1u);
        const __m512 b0 = bias ? _mm512_maskz_loadu_ps(mk, bias + j) : _mm512_setzero_ps();
        __m512 acc[DW_PIX];
        for (int i = 0; i < DW_PIX; i++) acc[i] = b0;
        for (size_t ky = 0; ky < k; ky++) {
            const float *row = x + ((iy0 + ky) * w + ix0) * c + j;
            for (size_t kx = 0; kx < k; kx++) {
                const __m512 wv = _mm512_maskz_loadu_ps(mk, wt + (ky * k + kx) * c + j);
                const float *sp = row + kx * c;
                for (int i = 0; i < DW_PIX; i++) acc[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, sp + (size_t)i * step), wv, acc[i]);
            }
        }
        for (int i = 0; i < DW_PIX; i++) _mm512_mask_storeu_ps(o[i] + j, mk, acc[i]);
    }
}

/* 3 × 3 kernels (every depthwise convolution of TinyViT): DW3_PIX output pixels whose every tap is inside the
 * input, per block of 16 channels with the 9 weights in registers, each input row's DW3_PIX·stride + 3 − stride
 * vectors loaded once for its three taps. The multiply-adds of each output are those of dw_pixels_avx512, in the
 * same order (bias, then taps row by row, left to right), so the results are the same bit for bit. */
#define DW3_PIX 8
static inline PSAM_AVX512FMA __attribute__((always_inline)) void
dw3_block_avx512(const float *x, size_t w, size_t c, const float *wt, const float *bias, const size_t stride, size_t iy0,
                 size_t ix0, float *const *o, size_t j, __mmask16 mk, const int lut) {
    __m512 wk[9], acc[DW3_PIX], in[2 * DW3_PIX + 1];
    for (int t = 0; t < 9; t++) wk[t] = _mm512_maskz_loadu_ps(mk, wt + (size_t)t * c + j);
    const __m512 b0 = bias ? _mm512_maskz_loadu_ps(mk, bias + j) : _mm512_setzero_ps();
    for (int i = 0; i < DW3_PIX; i++) acc[i] = b0;
    const size_t nin = (DW3_PIX - 1) * stride + 3;
    for (size_t ky = 0; ky < 3; ky++) {
        const float *row = x + ((iy0 + ky) * w + ix0) * c + j;
        for (size_t t = 0; t < nin; t++) in[t] = _mm512_maskz_loadu_ps(mk, row + t * c);
        for (size_t kx = 0; kx < 3; kx++)
            for (int i = 0; i < DW3_PIX; i++) acc[i] = _mm512_fmadd_ps(in[(size_t)i * stride + kx], wk[ky * 3 + kx], acc[i]);
    }
    if (lut) {
        /* The integer path's GELU here, on the sums still in registers (psam_gelu_lut512, as the row function). */
        __m512 tb[8];
        psam_gelu_lut512_table(tb);
        for (int i = 0; i < DW3_PIX; i++) acc[i] = psam_gelu_lut512(acc[i], tb);
    }
    for (int i = 0; i < DW3_PIX; i++) _mm512_mask_storeu_ps(o[i] + j, mk, acc[i]);
}

static inline PSAM_AVX512FMA __attribute__((always_inline)) void
dw3_pixels_avx512(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, const size_t stride,
                  size_t iy0, size_t ix0, float *const *o, const int lut) {
    /* The input rows the next output row adds, this group's span of them, into L2 ahead of use (the blocks of 16
     * channels walk the rows with a stride of c floats, which the hardware prefetchers do not follow). */
    for (size_t r = iy0 + 3; r < iy0 + 3 + stride && r < h; r++) {
        const char *p = (const char *)(x + (r * w + ix0) * c), *e = (const char *)(x + (r * w + ix0 + DW3_PIX * stride) * c);
        for (; p < e; p += 64) _mm_prefetch(p, _MM_HINT_T1);
    }
    size_t j = 0;
    for (; j + 16 <= c; j += 16) dw3_block_avx512(x, w, c, wt, bias, stride, iy0, ix0, o, j, (__mmask16)0xFFFF, lut);
    if (j < c) dw3_block_avx512(x, w, c, wt, bias, stride, iy0, ix0, o, j, (__mmask16)((1u << (c - j)) - 1u), lut);
}

/* Interior pixels DW_PIX at a time (dw_pixels_avx512; DW3_PIX for 3 × 3 kernels), the border ones one by one;
 * the quantized output goes through scratch rows on the stack when c ≤ 1024 (else one at a time through `out`). */
PSAM_AVX512FMA static void depthwise_avx512(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias,
                                            size_t k, size_t stride, size_t pad, float *out, size_t wo, size_t y0, size_t y1,
                                            int gelu, uint8_t *q, size_t ldq, float *scale, int32_t *zero) {
    float rows[DW3_PIX][1024];
    const int grouped = !q || c <= 1024, k3 = k == 3 && (stride == 1 || stride == 2);
    const size_t gp = k3 ? DW3_PIX : DW_PIX;
    /* Interior columns [ox_lo, ox_hi): every tap inside the row. The last group of a row ends at ox_hi, overlapping
     * the one before: its first pixels are computed (and, with `gelu` or `q`, finished) again from the input, to
     * the same values. */
    const size_t ox_lo = (pad + stride - 1) / stride;
    const size_t ox_hi = w + pad < k ? 0 : (w + pad - k) / stride + 1 < wo ? (w + pad - k) / stride + 1 : wo;
    for (size_t oy = y0; oy < y1; oy++) {
        const ptrdiff_t iy0 = (ptrdiff_t)(oy * stride) - (ptrdiff_t)pad;
        const int rows_in = iy0 >= 0 && iy0 + (ptrdiff_t)k <= (ptrdiff_t)h;
        size_t ox = 0;
        while (ox < wo) {
            const int group = grouped && rows_in && ox >= ox_lo && ox < ox_hi && ox_hi - ox_lo >= gp;
            if (group && ox + gp > ox_hi) ox = ox_hi - gp;
            const ptrdiff_t ix0 = (ptrdiff_t)(ox * stride) - (ptrdiff_t)pad;
            const size_t np = group ? gp : 1;
            float *o[DW3_PIX];
            for (size_t i = 0; i < np; i++) o[i] = q ? (group ? rows[i] : out) : out + (oy * wo + ox + i) * c;
            /* The 3 × 3 groups apply the LUT GELU themselves. */
            const int lut = gelu == PSAM_GELU_LUT, fused = lut && group && k3;
            if (group && k3 && stride == 1 && lut) dw3_pixels_avx512(x, h, w, c, wt, bias, 1, (size_t)iy0, (size_t)ix0, o, 1);
            else if (group && k3 && stride == 1) dw3_pixels_avx512(x, h, w, c, wt, bias, 1, (size_t)iy0, (size_t)ix0, o, 0);
            else if (group && k3 && lut) dw3_pixels_avx512(x, h, w, c, wt, bias, 2, (size_t)iy0, (size_t)ix0, o, 1);
            else if (group && k3) dw3_pixels_avx512(x, h, w, c, wt, bias, 2, (size_t)iy0, (size_t)ix0, o, 0);
            else if (group) dw_pixels_avx512(x, w, c, wt, bias, k, stride, (size_t)iy0, (size_t)ix0, o);
            else dw_pixel_avx512(x, h, w, c, wt, bias, k, stride, pad, oy, ox, o[0]);
            for (size_t i = 0; i < np; i++) {
                if (lut && !fused) gelu_lut_avx512(o[i], c);
                else if (gelu && !lut) gelu_avx512(o[i], c);
            }
            /* The group's pixels are consecutive rows of `rows` (and of q): quantized together. */
            const size_t p = oy * wo + ox;
            if (q) quantize_avx512(o[0], np, c, group ? 1024 : c, q + p * ldq, ldq, scale + p, zero + p);
            ox += np;
        }
    }
}

/* Channels [j, j + 8·B) held in B registers across all k·k taps (fused multiply-adds); if `masked`, the
 * last register holds only the c − j − 8·(B − 1) < 8 channels that remain. */
static inline PSAM_AVX2FMA __attribute__((always_inline)) void
dw_block_avx2(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t k, size_t stride,
              size_t pad, size_t oy, size_t ox, size_t j, const int B, const int masked, float *o) {
    const __m256i mk = masked ? tail_mask8(c - j - 8 * (size_t)(B - 1)) : _mm256_set1_epi32(-1);
#define PSAM_LD(p, b) (masked && (b) == B - 1 ? _mm256_maskload_ps((p), mk) : _mm256_loadu_ps(p))
    __m256 acc[4];
    for (int b = 0; b < B; b++) acc[b] = bias ? PSAM_LD(bias + j + 8 * b, b) : _mm256_setzero_ps();
    for (size_t ky = 0; ky < k; ky++) {
        ptrdiff_t iy = (ptrdiff_t)(oy * stride + ky) - (ptrdiff_t)pad;
        if (iy < 0 || iy >= (ptrdiff_t)h) continue;
        for (size_t kx = 0; kx < k; kx++) {
            ptrdiff_t ix = (ptrdiff_t)(ox * stride + kx) - (ptrdiff_t)pad;
            if (ix < 0 || ix >= (ptrdiff_t)w) continue;
            const float *sp = x + ((size_t)iy * w + (size_t)ix) * c + j, *wk = wt + (ky * k + kx) * c + j;
            for (int b = 0; b < B; b++) acc[b] = _mm256_fmadd_ps(PSAM_LD(sp + 8 * b, b), PSAM_LD(wk + 8 * b, b), acc[b]);
        }
    }
#undef PSAM_LD
    for (int b = 0; b < B; b++) {
        if (masked && b == B - 1) store_tail8(o + j + 8 * b, acc[b], c - j - 8 * (size_t)b);
        else _mm256_storeu_ps(o + j + 8 * b, acc[b]);
    }
}

PSAM_AVX2FMA static void depthwise_avx2(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias,
                                        size_t k, size_t stride, size_t pad, float *out, size_t wo, size_t y0, size_t y1,
                                        int gelu, uint8_t *q, size_t ldq, float *scale, int32_t *zero) {
    for (size_t oy = y0; oy < y1; oy++)
        for (size_t ox = 0; ox < wo; ox++) {
            size_t p = oy * wo + ox;
            float *o = q ? out : out + p * c;
            size_t j = 0;
            for (; j + 32 <= c; j += 32) dw_block_avx2(x, h, w, c, wt, bias, k, stride, pad, oy, ox, j, 4, 0, o);
            for (; j + 8 <= c; j += 8) dw_block_avx2(x, h, w, c, wt, bias, k, stride, pad, oy, ox, j, 1, 0, o);
            if (j < c) dw_block_avx2(x, h, w, c, wt, bias, k, stride, pad, oy, ox, j, 1, 1, o);
            if (gelu == PSAM_GELU_LUT) gelu_lut_generic(o, c);
            else if (gelu) gelu_avx2(o, c);
            if (q) quantize_avx2(o, 1, c, c, q + p * ldq, ldq, scale + p, zero + p);
        }
}
#endif

static void depthwise_generic(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t k,
                              size_t stride, size_t pad, float *out, size_t wo, size_t y0, size_t y1, int gelu, uint8_t *q,
                              size_t ldq, float *scale, int32_t *zero) {
    for (size_t oy = y0; oy < y1; oy++)
        for (size_t ox = 0; ox < wo; ox++) {
            size_t p = oy * wo + ox;
            float *o = q ? out : out + p * c;
            dw_pixel_generic(x, h, w, c, wt, bias, k, stride, pad, oy, ox, o);
            if (gelu == PSAM_GELU_LUT) gelu_lut_generic(o, c);
            else if (gelu) gelu_generic(o, c);
            if (q) quantize_generic(o, 1, c, c, q + p * ldq, ldq, scale + p, zero + p);
        }
}

void psam_depthwise_rows(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias,
                         size_t k, size_t stride, size_t pad, float *out, size_t wo, size_t y0, size_t y1, int gelu) {
#if defined(__x86_64__)
    if (has_avx512()) {
        depthwise_avx512(x, h, w, c, wt, bias, k, stride, pad, out, wo, y0, y1, gelu, NULL, 0, NULL, NULL);
        return;
    }
    if (has_avx2()) {
        depthwise_avx2(x, h, w, c, wt, bias, k, stride, pad, out, wo, y0, y1, gelu, NULL, 0, NULL, NULL);
        return;
    }
#endif
    depthwise_generic(x, h, w, c, wt, bias, k, stride, pad, out, wo, y0, y1, gelu, NULL, 0, NULL, NULL);
}

void psam_depthwise_rows_u8(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t k,
                            size_t stride, size_t pad, size_t wo, size_t y0, size_t y1, int gelu, float *row,
                            uint8_t *q, size_t ldq, float *scale, int32_t *zero) {
#if defined(__x86_64__)
    if (has_avx512()) {
        depthwise_avx512(x, h, w, c, wt, bias, k, stride, pad, row, wo, y0, y1, gelu, q, ldq, scale, zero);
        return;
    }
    if (has_avx2()) {
        depthwise_avx2(x, h, w, c, wt, bias, k, stride, pad, row, wo, y0, y1, gelu, q, ldq, scale, zero);
        return;
    }
#endif
    depthwise_generic(x, h, w, c, wt, bias, k, stride, pad, row, wo, y0, y1, gelu, q, ldq, scale, zero);
}

/* Layer norm over each row: mean and variance in two passes, then (x − mean)/√(var + eps)·w + b. */
#define LAYERNORM_BODY                                                                   \
    for (size_t i = 0; i < m; i++) {                                                     \
        const float *r = x + i * ldx;                                                    \
        float *o = out + i * ldo;                                                        \
        float mean = 0.0f;                                                               \
        for (size_t j = 0; j < c; j++) mean += r[j];                                     \
        mean /= (float)c;                                                                \
        float var = 0.0f;                                                                \
        for (size_t j = 0; j < c; j++) { float d = r[j] - mean; var += d * d; }          \
        var /= (float)c;                                                                 \
        float inv = 1.0f / sqrtf(var + eps);                                             \
        for (size_t j = 0; j < c; j++) o[j] = (r[j] - mean) * inv * w[j] + b[j];         \
    }

static void layernorm_generic(const float *x, size_t m, size_t c, size_t ldx, const float *w, const float *b, float eps,
                              float *out, size_t ldo) {
    LAYERNORM_BODY
}
#if defined(__x86_64__)
PSAM_AVX512F static void layernorm_avx512(const float *x, size_t m, size_t c, size_t ldx, const float *w, const float *b,
                                          float eps, float *out, size_t ldo) {
    for (size_t i = 0; i < m; i++) {
        const float *r = x + i * ldx;
        float *o = out + i * ldo;
        __m512 s = _mm512_setzero_ps();
        size_t j = 0;
        for (; j + 16 <= c; j += 16) s = _mm512_add_ps(s, _mm512_loadu_ps(r + j));
        float mean = _mm512_reduce_add_ps(s);
        for (; j < c; j++) mean += r[j];
        mean /= (float)c;
        const __m512 vm = _mm512_set1_ps(mean);
        __m512 v = _mm512_setzero_ps();
        for (j = 0; j + 16 <= c; j += 16) {
            __m512 d = _mm512_sub_ps(_mm512_loadu_ps(r + j), vm);
            v = _mm512_add_ps(v, _mm512_mul_ps(d, d));
        }
        float var = _mm512_reduce_add_ps(v);
        for (; j < c; j++) { float d = r[j] - mean; var += d * d; }
        var /= (float)c;
        float inv = 1.0f / sqrtf(var + eps);
        const __m512 vi = _mm512_set1_ps(inv);
        for (j = 0; j + 16 <= c; j += 16) {
            __m512 t = _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(r + j), vm), vi), _mm512_loadu_ps(w + j));
            _mm512_storeu_ps(o + j, _mm512_add_ps(t, _mm512_loadu_ps(b + j)));
        }
        for (; j < c; j++) o[j] = (r[j] - mean) * inv * w[j] + b[j];
    }
}

/* As layernorm_avx512, with four partial sums per pass (the additions' latency, not their throughput,
 * bounds one chain). */
PSAM_AVX2FMA static void layernorm_avx2(const float *x, size_t m, size_t c, size_t ldx, const float *w, const float *b,
                                        float eps, float *out, size_t ldo) {
    for (size_t i = 0; i < m; i++) {
        const float *r = x + i * ldx;
        float *o = out + i * ldo;
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        size_t j = 0;
        for (; j + 32 <= c; j += 32) {
            s0 = _mm256_add_ps(s0, _mm256_loadu_ps(r + j));
            s1 = _mm256_add_ps(s1, _mm256_loadu_ps(r + j + 8));
            s2 = _mm256_add_ps(s2, _mm256_loadu_ps(r + j + 16));
            s3 = _mm256_add_ps(s3, _mm256_loadu_ps(r + j + 24));
        }
        for (; j + 8 <= c; j += 8) s0 = _mm256_add_ps(s0, _mm256_loadu_ps(r + j));
        float mean = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        for (; j < c; j++) mean += r[j];
        mean /= (float)c;
        const __m256 vm = _mm256_set1_ps(mean);
        s0 = s1 = s2 = s3 = _mm256_setzero_ps();
        for (j = 0; j + 32 <= c; j += 32) {
            __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(r + j), vm), d1 = _mm256_sub_ps(_mm256_loadu_ps(r + j + 8), vm);
            __m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(r + j + 16), vm), d3 = _mm256_sub_ps(_mm256_loadu_ps(r + j + 24), vm);
            s0 = _mm256_fmadd_ps(d0, d0, s0);
            s1 = _mm256_fmadd_ps(d1, d1, s1);
            s2 = _mm256_fmadd_ps(d2, d2, s2);
            s3 = _mm256_fmadd_ps(d3, d3, s3);
        }
        for (; j + 8 <= c; j += 8) {
            __m256 d = _mm256_sub_ps(_mm256_loadu_ps(r + j), vm);
            s0 = _mm256_fmadd_ps(d, d, s0);
        }
        float var = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        for (; j < c; j++) { float d = r[j] - mean; var += d * d; }
        var /= (float)c;
        float inv = 1.0f / sqrtf(var + eps);
        const __m256 vi = _mm256_set1_ps(inv);
        for (j = 0; j + 8 <= c; j += 8) {
            __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(r + j), vm), vi);
            _mm256_storeu_ps(o + j, _mm256_fmadd_ps(t, _mm256_loadu_ps(w + j), _mm256_loadu_ps(b + j)));
        }
        for (; j < c; j++) o[j] = (r[j] - mean) * inv * w[j] + b[j];
    }
}
#endif

void psam_layernorm_rows(const float *x, size_t m, size_t c, size_t ldx, const float *w, const float *b, float eps,
                         float *out, size_t ldo) {
#if defined(__x86_64__)
    if (has_avx512()) {
        layernorm_avx512(x, m, c, ldx, w, b, eps, out, ldo);
        return;
    }
    if (has_avx2()) {
        layernorm_avx2(x, m, c, ldx, w, b, eps, out, ldo);
        return;
    }
#endif
    layernorm_generic(x, m, c, ldx, w, b, eps, out, ldo);
}

/* Layer norm with every sum a left-to-right chain along the row, in one fixed order of operations (rows of c
 * floats, out may be x): mean = (Σ x)/c, var = (Σ (x − mean)²)/c, out = (x − mean)·(1/√(var + eps))·w + b. R rows'
 * chains run interleaved (each row's arithmetic is still its own chain, so the same values as one row at a time). */
#define PSAM_LN_SEQ(R)                                                                                                 \
    do {                                                                                                               \
        float mean[R], var[R], inv[R];                                                                                 \
        for (size_t r = 0; r < R; r++) mean[r] = 0.0f, var[r] = 0.0f;                                                  \
        for (size_t j = 0; j < c; j++)                                                                                 \
            for (size_t r = 0; r < R; r++) mean[r] += x[(i + r) * c + j];                                              \
        for (size_t r = 0; r < R; r++) mean[r] /= (float)c;                                                            \
        for (size_t j = 0; j < c; j++)                                                                                 \
            for (size_t r = 0; r < R; r++) {                                                                           \
                const float d = x[(i + r) * c + j] - mean[r];                                                          \
                var[r] += d * d;                                                                                       \
            }                                                                                                          \
        for (size_t r = 0; r < R; r++) inv[r] = 1.0f / sqrtf(var[r] / (float)c + eps);                                 \
        for (size_t r = 0; r < R; r++)                                                                                 \
            for (size_t j = 0; j < c; j++) out[(i + r) * c + j] = (x[(i + r) * c + j] - mean[r]) * inv[r] * w[j] + b[j]; \
    } while (0)

void psam_layernorm_rows_seq(const float *x, size_t m, size_t c, const float *w, const float *b, float eps, float *out) {
    size_t i = 0;
    for (; i + 8 <= m; i += 8) PSAM_LN_SEQ(8);
    for (; i < m; i++) PSAM_LN_SEQ(1);
}
#undef PSAM_LN_SEQ

/* Softmax of each row of x[m][ld] (n values), in place: exp(x − max) / Σ. The AVX-512 version uses a
 * degree-6 polynomial exp after range reduction by ln 2 (relative error about 2e-7), not libm's expf. */
static void softmax_generic(float *x, size_t m, size_t n, size_t ld) {
    for (size_t i = 0; i < m; i++) {
        float *r = x + i * ld;
        float mx = -INFINITY;
        for (size_t j = 0; j < n; j++) mx = r[j] > mx ? r[j] : mx;
        float s = 0.0f;
        for (size_t j = 0; j < n; j++) { float e = expf(r[j] - mx); r[j] = e; s += e; }
        float inv = 1.0f / s;
        for (size_t j = 0; j < n; j++) r[j] *= inv;
    }
}

#if defined(__x86_64__)
PSAM_AVX512FMA static inline __m512 exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f)), _mm512_set1_ps(-103.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

PSAM_AVX512FMA static void softmax_avx512(float *x, size_t m, size_t n, size_t ld) {
    for (size_t i = 0; i < m; i++) {
        float *r = x + i * ld;
        __m512 vm = _mm512_set1_ps(-INFINITY);
        for (size_t j = 0; j < n; j += 16) {
            __mmask16 mk = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1u);
            vm = _mm512_mask_max_ps(vm, mk, vm, _mm512_maskz_loadu_ps(mk, r + j));
        }
        const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vm));
        __m512 vs = _mm512_setzero_ps();
        for (size_t j = 0; j < n; j += 16) {
            __mmask16 mk = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1u);
            __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, r + j), mx));
            vs = _mm512_mask_add_ps(vs, mk, vs, e);
            _mm512_mask_storeu_ps(r + j, mk, e);
        }
        const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vs));
        for (size_t j = 0; j < n; j += 16) {
            __mmask16 mk = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1u);
            _mm512_mask_storeu_ps(r + j, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, r + j), inv));
        }
    }
}

/* exp512 at 8 lanes. Without scalef, 2^n (n in [−149, 128] after the clamp) is built as 2^⌊n/2⌋ · 2^(n − ⌊n/2⌋),
 * both factors normal numbers, so the result still goes smoothly into the subnormals. */
PSAM_AVX2FMA static inline __m256 exp256(__m256 x) {
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)), _mm256_set1_ps(-103.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i ni = _mm256_cvtps_epi32(n), n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    __m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    __m256 f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, f1), f2);
}

PSAM_AVX2FMA static void softmax_avx2(float *x, size_t m, size_t n, size_t ld) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    const size_t nf = n & ~(size_t)7;
    const __m256i mk = tail_mask8(n > nf ? n - nf : 8);
    for (size_t i = 0; i < m; i++) {
        float *r = x + i * ld;
        __m256 vm = ninf;
        for (size_t j = 0; j < nf; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(r + j));
        if (nf < n) vm = _mm256_max_ps(vm, _mm256_blendv_ps(ninf, _mm256_maskload_ps(r + nf, mk), _mm256_castsi256_ps(mk)));
        const __m256 mx = _mm256_set1_ps(hmax8(vm));
        __m256 vs = _mm256_setzero_ps();
        for (size_t j = 0; j < nf; j += 8) {
            __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(r + j), mx));
            vs = _mm256_add_ps(vs, e);
            _mm256_storeu_ps(r + j, e);
        }
        if (nf < n) {
            __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(_mm256_maskload_ps(r + nf, mk), mx)), _mm256_castsi256_ps(mk));
            vs = _mm256_add_ps(vs, e);
            store_tail8(r + nf, e, n - nf);
        }
        const __m256 inv = _mm256_set1_ps(1.0f / hsum8(vs));
        for (size_t j = 0; j < nf; j += 8) _mm256_storeu_ps(r + j, _mm256_mul_ps(_mm256_loadu_ps(r + j), inv));
        if (nf < n) store_tail8(r + nf, _mm256_mul_ps(_mm256_maskload_ps(r + nf, mk), inv), n - nf);
    }
}
#endif

void psam_softmax_rows(float *x, size_t m, size_t n, size_t ld) {
#if defined(__x86_64__)
    if (has_avx512()) {
        softmax_avx512(x, m, n, ld);
        return;
    }
    if (has_avx2()) {
        softmax_avx2(x, m, n, ld);
        return;
    }
#endif
    softmax_generic(x, m, n, ld);
}

/* Softmax down the columns of row groups: x holds `groups` blocks of n rows (row r at x + r·ld, `cols`
 * values each); for each block and column, softmax over its n rows of x (+ bias[r] when bias is not NULL),
 * in place. The transposed layout of attention to a few keys (SAM's image→token attention: n = tokens,
 * cols = image tokens) vectorises along the columns with no horizontal reductions. */
static void softmax_cols_generic(float *x, size_t groups, size_t n, size_t cols, size_t ld, const float *bias) {
    for (size_t g = 0; g < groups; g++) {
        float *blk = x + g * n * ld;
        const float *bb = bias ? bias + g * n : NULL;
        for (size_t c = 0; c < cols; c++) {
            float mx = -INFINITY;
            for (size_t i = 0; i < n; i++) {
                float v = blk[i * ld + c] + (bb ? bb[i] : 0.0f);
                mx = v > mx ? v : mx;
            }
            float s = 0.0f;
            for (size_t i = 0; i < n; i++) {
                float e = expf(blk[i * ld + c] + (bb ? bb[i] : 0.0f) - mx);
                blk[i * ld + c] = e;
                s += e;
            }
            float inv = 1.0f / s;
            for (size_t i = 0; i < n; i++) blk[i * ld + c] *= inv;
        }
    }
}

#if defined(__x86_64__)
PSAM_AVX512FMA static void softmax_cols_avx512(float *x, size_t groups, size_t n, size_t cols, size_t ld, const float *bias) {
    for (size_t g = 0; g < groups; g++) {
        float *blk = x + g * n * ld;
        const float *bb = bias ? bias + g * n : NULL;
        for (size_t c = 0; c < cols; c += 16) {
            const __mmask16 mk = cols - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (cols - c)) - 1u);
            __m512 mx = _mm512_set1_ps(-INFINITY);
            for (size_t i = 0; i < n; i++) {
                __m512 v = _mm512_maskz_loadu_ps(mk, blk + i * ld + c);
                if (bb) v = _mm512_add_ps(v, _mm512_set1_ps(bb[i]));
                mx = _mm512_max_ps(mx, v);
            }
            __m512 s = _mm512_setzero_ps();
            for (size_t i = 0; i < n; i++) {
                __m512 v = _mm512_maskz_loadu_ps(mk, blk + i * ld + c);
                if (bb) v = _mm512_add_ps(v, _mm512_set1_ps(bb[i]));
                __m512 e = exp512(_mm512_sub_ps(v, mx));
                s = _mm512_add_ps(s, e);
                _mm512_mask_storeu_ps(blk + i * ld + c, mk, e);
            }
            const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), s);
            for (size_t i = 0; i < n; i++)
                _mm512_mask_storeu_ps(blk + i * ld + c, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, blk + i * ld + c), inv));
        }
    }
}

/* 8 columns at a time; the last cols mod 8 through the lane-masked loads and store_tail8. */
PSAM_AVX2FMA static void softmax_cols_avx2(float *x, size_t groups, size_t n, size_t cols, size_t ld, const float *bias) {
    for (size_t g = 0; g < groups; g++) {
        float *blk = x + g * n * ld;
        const float *bb = bias ? bias + g * n : NULL;
        for (size_t c = 0; c < cols; c += 8) {
            const size_t r = cols - c >= 8 ? 8 : cols - c;
            const __m256i mk = tail_mask8(r);
            __m256 mx = _mm256_set1_ps(-INFINITY);
            for (size_t i = 0; i < n; i++) {
                __m256 v = _mm256_maskload_ps(blk + i * ld + c, mk);
                if (bb) v = _mm256_add_ps(v, _mm256_set1_ps(bb[i]));
                mx = _mm256_max_ps(mx, v);
            }
            __m256 s = _mm256_setzero_ps();
            for (size_t i = 0; i < n; i++) {
                __m256 v = _mm256_maskload_ps(blk + i * ld + c, mk);
                if (bb) v = _mm256_add_ps(v, _mm256_set1_ps(bb[i]));
                __m256 e = exp256(_mm256_sub_ps(v, mx));
                s = _mm256_add_ps(s, e);
                if (r == 8) _mm256_storeu_ps(blk + i * ld + c, e);
                else store_tail8(blk + i * ld + c, e, r);
            }
            const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), s);
            for (size_t i = 0; i < n; i++) {
                __m256 e = _mm256_mul_ps(_mm256_maskload_ps(blk + i * ld + c, mk), inv);
                if (r == 8) _mm256_storeu_ps(blk + i * ld + c, e);
                else store_tail8(blk + i * ld + c, e, r);
            }
        }
    }
}
#endif

void psam_softmax_cols(float *x, size_t groups, size_t n, size_t cols, size_t ld, const float *bias) {
#if defined(__x86_64__)
    if (has_avx512()) {
        softmax_cols_avx512(x, groups, n, cols, ld, bias);
        return;
    }
    if (has_avx2()) {
        softmax_cols_avx2(x, groups, n, cols, ld, bias);
        return;
    }
#endif
    softmax_cols_generic(x, groups, n, cols, ld, bias);
}

/* Online softmax down columns (psam_softmax_online_cols): one block of rows of an attention whose keys run down
 * the rows, the running column maxima m and sums l kept across blocks, as flash attention does. For each column
 * c: m' = max(m, the block's max), the accumulator row acc[c] and l[c] scaled by exp(m − m'), the block's values
 * replaced by exp(s − m'), their sum added to l[c]. */
static void softmax_online_generic(float *s, size_t rows, size_t cols, size_t ld, float *m, float *l, float *acc, size_t ldacc,
                                   size_t accw) {
    for (size_t c = 0; c < cols; c++) {
        float mx = m[c];
        for (size_t i = 0; i < rows; i++) mx = s[i * ld + c] > mx ? s[i * ld + c] : mx;
        if (mx > m[c]) {
            const float f = expf(m[c] - mx);
            l[c] *= f;
            for (size_t j = 0; j < accw; j++) acc[c * ldacc + j] *= f;
            m[c] = mx;
        }
        float sum = 0.0f;
        for (size_t i = 0; i < rows; i++) {
            const float e = expf(s[i * ld + c] - mx);
            s[i * ld + c] = e;
            sum += e;
        }
        l[c] += sum;
    }
}

#if defined(__x86_64__)
PSAM_AVX512FMA static void softmax_online_avx512(float *s, size_t rows, size_t cols, size_t ld, float *m, float *l, float *acc,
                                                 size_t ldacc, size_t accw) {
    for (size_t c0 = 0; c0 < cols; c0 += 16) {
        const __mmask16 mk = cols - c0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (cols - c0)) - 1u);
        const __m512 mold = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), mk, m + c0);
        __m512 mx = mold;
        for (size_t i = 0; i < rows; i++) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mold, mk, s + i * ld + c0));
        const __mmask16 grew = _mm512_mask_cmp_ps_mask(mk, mx, mold, _CMP_GT_OQ);
        if (grew) {
            float f[16];
            _mm512_storeu_ps(f, exp512(_mm512_sub_ps(mold, mx)));
            for (size_t c = 0; c < 16; c++) {
                if (!(grew >> c & 1)) continue;
                float *a = acc + (c0 + c) * ldacc;
                for (size_t j = 0; j < accw; j++) a[j] *= f[c];
                l[c0 + c] *= f[c];
            }
            _mm512_mask_storeu_ps(m + c0, mk, mx);
        }
        __m512 sum = _mm512_setzero_ps();
        for (size_t i = 0; i < rows; i++) {
            const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, s + i * ld + c0), mx));
            sum = _mm512_add_ps(sum, e);
            _mm512_mask_storeu_ps(s + i * ld + c0, mk, e);
        }
        _mm512_mask_storeu_ps(l + c0, mk, _mm512_add_ps(_mm512_maskz_loadu_ps(mk, l + c0), sum));
    }
}
#endif

void psam_softmax_online_cols(float *s, size_t rows, size_t cols, size_t ld, float *m, float *l, float *acc, size_t ldacc,
                              size_t accw) {
#if defined(__x86_64__)
    if (has_avx512()) {
        softmax_online_avx512(s, rows, cols, ld, m, l, acc, ldacc, accw);
        return;
    }
#endif
    softmax_online_generic(s, rows, cols, ld, m, l, acc, ldacc, accw);
}

/* Softmax across groups per lane (psam_softmax_lanes): row i of x holds n groups of g values, and lane h's
 * softmax runs over x[t·g + h], t < n. Image→token attention stored token-major (g = heads) vectorises along the
 * heads this way, with no horizontal reductions. */
static void softmax_lanes_generic(float *x, size_t m, size_t ld, size_t n, size_t g) {
    for (size_t i = 0; i < m; i++) {
        float *r = x + i * ld;
        for (size_t h = 0; h < g; h++) {
            float mx = -INFINITY;
            for (size_t t = 0; t < n; t++) mx = r[t * g + h] > mx ? r[t * g + h] : mx;
            float s = 0.0f;
            for (size_t t = 0; t < n; t++) {
                const float e = expf(r[t * g + h] - mx);
                r[t * g + h] = e;
                s += e;
            }
            const float inv = 1.0f / s;
            for (size_t t = 0; t < n; t++) r[t * g + h] *= inv;
        }
    }
}

#if defined(__x86_64__)
/* g = 8 (SAM's heads): one 8-lane vector per group. */
PSAM_AVX2FMA static void softmax_lanes8_avx2(float *x, size_t m, size_t ld, size_t n, size_t g) {
    (void)g;
    for (size_t i = 0; i < m; i++) {
        float *r = x + i * ld;
        __m256 mx = _mm256_set1_ps(-INFINITY);
        for (size_t t = 0; t < n; t++) mx = _mm256_max_ps(mx, _mm256_loadu_ps(r + 8 * t));
        __m256 s = _mm256_setzero_ps();
        for (size_t t = 0; t < n; t++) {
            const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(r + 8 * t), mx));
            s = _mm256_add_ps(s, e);
            _mm256_storeu_ps(r + 8 * t, e);
        }
        const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), s);
        for (size_t t = 0; t < n; t++) _mm256_storeu_ps(r + 8 * t, _mm256_mul_ps(_mm256_loadu_ps(r + 8 * t), inv));
    }
}
#endif

void psam_softmax_lanes(float *x, size_t m, size_t ld, size_t n, size_t g) {
#if defined(__x86_64__)
    if (g == 8 && has_avx2()) {
        softmax_lanes8_avx2(x, m, ld, n, g);
        return;
    }
#endif
    softmax_lanes_generic(x, m, ld, n, g);
}

/* Attention of one window for all heads: qkv[wn][ldq] holds per head h [q | k | v] at columns
 * h·3·kd (kd wide each); scores = q·kᵀ·scale (+ bias[h][wn][wn]), softmax over keys, out[wn][ldo]
 * (head h at columns h·kd) = scores·v. `scratch` holds wn·wn + kd·wn floats. */
static void attention_generic(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
                              const float *bias, float *out, size_t ldo, float *scratch) {
    float *s = scratch;
    for (size_t hd = 0; hd < heads; hd++) {
        const float *q = qkv + hd * 3 * kd, *kk = q + kd, *v = q + 2 * kd;
        for (size_t i = 0; i < wn; i++)
            for (size_t j = 0; j < wn; j++) {
                float acc = 0.0f;
                for (size_t d = 0; d < kd; d++) acc += q[i * ldq + d] * kk[j * ldq + d];
                s[i * wn + j] = acc * scale + (bias ? bias[(hd * wn + i) * wn + j] : 0.0f);
            }
        softmax_generic(s, wn, wn, wn);
        for (size_t i = 0; i < wn; i++) {
            float *o = out + i * ldo + hd * kd;
            for (size_t d = 0; d < kd; d++) o[d] = 0.0f;
            for (size_t j = 0; j < wn; j++) {
                float p = s[i * wn + j];
                for (size_t d = 0; d < kd; d++) o[d] += p * v[j * ldq + d];
            }
        }
    }
}

#if defined(__x86_64__)
/* Scores of R queries (rows i0…) against keys [j, j+16): R independent accumulation chains over kd. */
static inline PSAM_AVX512FMA __attribute__((always_inline)) void
scores_tile(const float *q, size_t ldq, const float *kt, size_t wn, size_t kd, size_t i0, size_t j, const int R,
            __m512 vs, const float *bias, float *s) {
    __mmask16 mk = wn - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (wn - j)) - 1u);
    __m512 acc[8];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    for (size_t d = 0; d < kd; d++) {
        __m512 kv = _mm512_maskz_loadu_ps(mk, kt + d * wn + j);
        for (int r = 0; r < R; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(q[(i0 + r) * ldq + d]), kv, acc[r]);
    }
    for (int r = 0; r < R; r++) {
        __m512 t = _mm512_mul_ps(acc[r], vs);
        if (bias) t = _mm512_add_ps(t, _mm512_maskz_loadu_ps(mk, bias + (i0 + r) * wn + j));
        _mm512_mask_storeu_ps(s + (i0 + r) * wn + j, mk, t);
    }
}

/* Output of R queries for value columns [d, d+16): R independent chains over the wn keys. */
static inline PSAM_AVX512FMA __attribute__((always_inline)) void
values_tile(const float *s, size_t wn, const float *v, size_t ldq, size_t kd, size_t i0, size_t d, const int R,
            float *out, size_t ldo) {
    __mmask16 mk = kd - d >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (kd - d)) - 1u);
    __m512 acc[8];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    for (size_t j = 0; j < wn; j++) {
        __m512 vv = _mm512_maskz_loadu_ps(mk, v + j * ldq + d);
        for (int r = 0; r < R; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(s[(i0 + r) * wn + j]), vv, acc[r]);
    }
    for (int r = 0; r < R; r++) _mm512_mask_storeu_ps(out + (i0 + r) * ldo + d, mk, acc[r]);
}

PSAM_AVX512FMA static void attention_avx512(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
                                            const float *bias, float *out, size_t ldo, float *scratch) {
    float *s = scratch, *kt = scratch + wn * wn;
    const __m512 vs = _mm512_set1_ps(scale);
    for (size_t hd = 0; hd < heads; hd++) {
        const float *q = qkv + hd * 3 * kd, *kk = q + kd, *v = q + 2 * kd;
        const float *bh = bias ? bias + hd * wn * wn : NULL;
        /* kᵀ: [kd][wn], so one vector holds 16 keys' values of one dimension. */
        for (size_t d = 0; d < kd; d++)
            for (size_t j = 0; j < wn; j++) kt[d * wn + j] = kk[j * ldq + d];
        for (size_t j = 0; j < wn; j += 16) {
            size_t i = 0;
            for (; i + 8 <= wn; i += 8) scores_tile(q, ldq, kt, wn, kd, i, j, 8, vs, bh, s);
            for (; i < wn; i++) scores_tile(q, ldq, kt, wn, kd, i, j, 1, vs, bh, s);
        }
        softmax_avx512(s, wn, wn, wn);
        float *o = out + hd * kd;
        for (size_t d = 0; d < kd; d += 16) {
            size_t i = 0;
            for (; i + 8 <= wn; i += 8) values_tile(s, wn, v, ldq, kd, i, d, 8, o, ldo);
            for (; i < wn; i++) values_tile(s, wn, v, ldq, kd, i, d, 1, o, ldo);
        }
    }
}

/* Scores of R queries (rows i0… of q) against keys [j, j+8) (columns of kt[kd][ldk], nkeys of them):
 * s[i][j] = (q_i · k_j)·scale (+ bias[i][j], bias of stride lds like s). R independent chains over kd. */
static inline PSAM_AVX2FMA __attribute__((always_inline)) void
scores_tile_avx2(const float *q, size_t ldq, const float *kt, size_t ldk, size_t nkeys, size_t kd, size_t i0, size_t j,
                 const int R, __m256 vs, const float *bias, float *s, size_t lds) {
    __m256 acc[8];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    if (nkeys - j >= 8) {
        for (size_t d = 0; d < kd; d++) {
            __m256 kv = _mm256_loadu_ps(kt + d * ldk + j);
            for (int r = 0; r < R; r++) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(q + (i0 + r) * ldq + d), kv, acc[r]);
        }
        for (int r = 0; r < R; r++) {
            __m256 t = _mm256_mul_ps(acc[r], vs);
            if (bias) t = _mm256_add_ps(t, _mm256_loadu_ps(bias + (i0 + r) * lds + j));
            _mm256_storeu_ps(s + (i0 + r) * lds + j, t);
        }
    } else {
        const __m256i mk = tail_mask8(nkeys - j);
        for (size_t d = 0; d < kd; d++) {
            __m256 kv = _mm256_maskload_ps(kt + d * ldk + j, mk);
            for (int r = 0; r < R; r++) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(q + (i0 + r) * ldq + d), kv, acc[r]);
        }
        for (int r = 0; r < R; r++) {
            __m256 t = _mm256_mul_ps(acc[r], vs);
            if (bias) t = _mm256_add_ps(t, _mm256_maskload_ps(bias + (i0 + r) * lds + j, mk));
            store_tail8(s + (i0 + r) * lds + j, t, nkeys - j);
        }
    }
}

/* Output of R queries for value columns [d, d+8) (of kd): out_i = Σ_j p[i][j]·v_j over nk keys, the
 * probability of query i, key j at p[i·lpr + j·lpc]. R independent chains over the keys. */
static inline PSAM_AVX2FMA __attribute__((always_inline)) void
values_tile_avx2(const float *p, size_t lpr, size_t lpc, size_t nk, const float *v, size_t ldv, size_t kd, size_t i0,
                 size_t d, const int R, float *out, size_t ldo) {
    __m256 acc[8];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    if (kd - d >= 8) {
        for (size_t j = 0; j < nk; j++) {
            __m256 vv = _mm256_loadu_ps(v + j * ldv + d);
            for (int r = 0; r < R; r++) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + (i0 + r) * lpr + j * lpc), vv, acc[r]);
        }
        for (int r = 0; r < R; r++) _mm256_storeu_ps(out + (i0 + r) * ldo + d, acc[r]);
    } else {
        const __m256i mk = tail_mask8(kd - d);
        for (size_t j = 0; j < nk; j++) {
            __m256 vv = _mm256_maskload_ps(v + j * ldv + d, mk);
            for (int r = 0; r < R; r++) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + (i0 + r) * lpr + j * lpc), vv, acc[r]);
        }
        for (int r = 0; r < R; r++) store_tail8(out + (i0 + r) * ldo + d, acc[r], kd - d);
    }
}

/* t[c][j] = x[j·ldx + c] for j < n, c < w: 8×8 blocks through registers, scalar edges. */
PSAM_AVX2 static void transpose_rows_avx2(const float *x, size_t ldx, size_t n, size_t w, float *t, size_t ldt) {
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        size_t c = 0;
        for (; c + 8 <= w; c += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(x + (j + (size_t)i) * ldx + c);
            transpose8x8(r);
            for (int i = 0; i < 8; i++) _mm256_storeu_ps(t + (c + (size_t)i) * ldt + j, r[i]);
        }
        for (; c < w; c++)
            for (size_t i = j; i < j + 8; i++) t[c * ldt + i] = x[i * ldx + c];
    }
    for (; j < n; j++)
        for (size_t c = 0; c < w; c++) t[c * ldt + j] = x[j * ldx + c];
}

/* As attention_avx512: kᵀ in scratch, 8 queries × 8 keys score tiles, softmax, 8 queries × 8 columns value tiles. */
PSAM_AVX2FMA static void attention_avx2(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
                                        const float *bias, float *out, size_t ldo, float *scratch) {
    float *s = scratch, *kt = scratch + wn * wn;
    const __m256 vs = _mm256_set1_ps(scale);
    for (size_t hd = 0; hd < heads; hd++) {
        const float *q = qkv + hd * 3 * kd, *kk = q + kd, *v = q + 2 * kd;
        const float *bh = bias ? bias + hd * wn * wn : NULL;
        transpose_rows_avx2(kk, ldq, wn, kd, kt, wn);
        for (size_t j = 0; j < wn; j += 8) {
            size_t i = 0;
            for (; i + 8 <= wn; i += 8) scores_tile_avx2(q, ldq, kt, wn, wn, kd, i, j, 8, vs, bh, s, wn);
            for (; i < wn; i++) scores_tile_avx2(q, ldq, kt, wn, wn, kd, i, j, 1, vs, bh, s, wn);
        }
        softmax_avx2(s, wn, wn, wn);
        float *o = out + hd * kd;
        for (size_t d = 0; d < kd; d += 8) {
            size_t i = 0;
            for (; i + 8 <= wn; i += 8) values_tile_avx2(s, wn, 1, wn, v, ldq, kd, i, d, 8, o, ldo);
            for (; i < wn; i++) values_tile_avx2(s, wn, 1, wn, v, ldq, kd, i, d, 1, o, ldo);
        }
    }
}
#endif

void psam_window_attention(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
                           const float *bias, float *out, size_t ldo, float *scratch) {
#if defined(__x86_64__)
    if (has_avx512()) {
        attention_avx512(qkv, ldq, wn, heads, kd, scale, bias, out, ldo, scratch);
        return;
    }
    if (has_avx2()) {
        attention_avx2(qkv, ldq, wn, heads, kd, scale, bias, out, ldo, scratch);
        return;
    }
#endif
    attention_generic(qkv, ldq, wn, heads, kd, scale, bias, out, ldo, scratch);
}

/* ---- Window attention in fp16 (the int8 models' path) ----
 * q·scale, k, v and the probabilities are rounded to fp16; each score is one chain of fp16 fused multiply-adds
 * over kd, then fp32 (+ bias, softmax); each output sums, in fp32, chains of fp16 multiply-adds over 16 keys
 * at a time (one chain over all of a 196-token window's keys would lose ~2e-5 of the embedding's cosine on
 * LiteMedSAM; chains of 16 lose 3e-7). With AVX-512 FP16 that is twice the fp32 rate. The generic body
 * emulates the same rounding with _Float16 (a product of fp16 values plus an fp16 value is exact in double, so
 * one rounding from double to fp16 is the fused multiply-add's) and is the reference, and what runs where the
 * CPU lacks AVX-512 FP16 (the runtime does not pick this path there). Scratch per call, in floats:
 * psam_window_attention_fp16_scratch(wn, kd). */
#define PSAM_FP16_CHUNK 16

size_t psam_window_attention_fp16_scratch(size_t wn, size_t kd) {
    const size_t wp = (wn + 31) & ~(size_t)31;
    /* scores (then fp16 probabilities) wn × wp floats; fp16 kᵀ kd × wp, q wn × kd, v wp × kd. */
    return wn * wp + (kd * wp + wn * kd + wp * kd + 1) / 2;
}

static void attention_fp16_generic(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
                                   const float *bias, float *out, size_t ldo, float *scratch) {
    float *s = scratch;
    for (size_t hd = 0; hd < heads; hd++) {
        const float *q = qkv + hd * 3 * kd, *kk = q + kd, *v = q + 2 * kd;
        for (size_t i = 0; i < wn; i++) {
            float mx = -INFINITY;
            for (size_t j = 0; j < wn; j++) {
                _Float16 acc = 0;
                for (size_t d = 0; d < kd; d++)
                    acc = (_Float16)((double)acc + (double)(_Float16)(q[i * ldq + d] * scale) * (double)(_Float16)kk[j * ldq + d]);
                s[j] = (float)acc + (bias ? bias[(hd * wn + i) * wn + j] : 0.0f);
                mx = s[j] > mx ? s[j] : mx;
            }
            float sum = 0.0f;
            for (size_t j = 0; j < wn; j++) { s[j] = expf(s[j] - mx); sum += s[j]; }
            const float inv = 1.0f / sum;
            for (size_t j = 0; j < wn; j++) s[j] = (float)(_Float16)(s[j] * inv);
            float *o = out + i * ldo + hd * kd;
            for (size_t d = 0; d < kd; d++) {
                float total = 0.0f;
                for (size_t j0 = 0; j0 < wn; j0 += PSAM_FP16_CHUNK) {
                    _Float16 acc = 0;
                    for (size_t j = j0; j < j0 + PSAM_FP16_CHUNK && j < wn; j++)
                        acc = (_Float16)((double)acc + (double)s[j] * (double)(_Float16)v[j * ldq + d]);
                    total += (float)acc;
                }
                o[d] = total;
            }
        }
    }
}

#if defined(__x86_64__)
#define PSAM_AVX512FP16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512fp16,fma")))
static int has_avx512fp16(void) {
    __builtin_cpu_init();
    return has_avx512() && __builtin_cpu_supports("avx512fp16");
}

/* In-place transpose of 16 vectors of 16 floats (row i lane j ↔ row j lane i). */
PSAM_AVX512F static inline void transpose16x16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* u[4g + c], 128-bit lane L: column 4L + c of rows 4g … 4g + 3. */
    for (int g = 0; g < 4; g++) {
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[4 * g]), _mm512_castps_pd(t[4 * g + 2])));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[4 * g]), _mm512_castps_pd(t[4 * g + 2])));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[4 * g + 1]), _mm512_castps_pd(t[4 * g + 3])));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[4 * g + 1]), _mm512_castps_pd(t[4 * g + 3])));
    }
    for (int c = 0; c < 4; c++) {
        __m512 x0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88), x1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
        __m512 y0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88), y1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
        r[c] = _mm512_shuffle_f32x4(x0, y0, 0x88);
        r[8 + c] = _mm512_shuffle_f32x4(x0, y0, 0xDD);
        r[4 + c] = _mm512_shuffle_f32x4(x1, y1, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(x1, y1, 0xDD);
    }
}

#define PSAM_RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* Softmax of a score row of the half-precision attentions, before rounding: r[j] = exp(r[j] − max) for the wn
 * keys, 0 for [wn, nk) (nk a multiple of 16); returns 1 / Σ in every lane (the caller scales and rounds).
 * Always inlined: clang may reassociate _mm512_reduce_add_ps's lanes differently out of line, which moves the
 * sum's last bit (and, through the int8 model's chaotic worst mask, its IoU by 0.02). */
static inline PSAM_AVX512FMA __attribute__((always_inline)) __m512 softmax_row_exp(float *r, size_t wn, size_t nk) {
    __m512 vm = _mm512_set1_ps(-INFINITY);
    for (size_t j = 0; j < wn; j += 16) {
        __mmask16 mk = wn - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (wn - j)) - 1u);
        vm = _mm512_mask_max_ps(vm, mk, vm, _mm512_loadu_ps(r + j));
    }
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vm));
    __m512 sum = _mm512_setzero_ps();
    for (size_t j = 0; j < nk; j += 16) {
        __mmask16 mk = j >= wn ? 0 : wn - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (wn - j)) - 1u);
        __m512 e = _mm512_maskz_mov_ps(mk, exp512(_mm512_sub_ps(_mm512_loadu_ps(r + j), mx)));
        sum = _mm512_add_ps(sum, e);
        _mm512_storeu_ps(r + j, e);
    }
    return _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
}


/* 32 floats → 32 fp16 in order. */
PSAM_AVX512FP16 static inline __m512i fp16x32(const float *x, __m512 scale) {
    const __m256i lo = _mm512_cvtps_ph(_mm512_mul_ps(_mm512_loadu_ps(x), scale), PSAM_RNE);
    const __m256i hi = _mm512_cvtps_ph(_mm512_mul_ps(_mm512_loadu_ps(x + 16), scale), PSAM_RNE);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* Scores of R queries (rows i0…, fp16 q[i][kd]) against keys [j, j + 32·NC) (fp16 kᵀ[kd][wp]): an fp16 chain
 * over kd, then fp32 + bias (stride wn; keys ≥ wn unbiased, softmax skips them) into s[i][wp]. */
static inline PSAM_AVX512FP16 __attribute__((always_inline)) void
scores_tile_fp16(const uint16_t *qh, const uint16_t *kt, size_t wn, size_t wp, size_t kd, size_t i0, size_t j, const int R,
                 const int NC, const float *bias, float *s) {
    __m512h acc[8][2];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_ph();
    for (size_t d = 0; d < kd; d++) {
        const __m512h k0 = _mm512_castsi512_ph(_mm512_loadu_si512((const void *)(kt + d * wp + j)));
        const __m512h k1 = NC > 1 ? _mm512_castsi512_ph(_mm512_loadu_si512((const void *)(kt + d * wp + j + 32))) : k0;
        for (int r = 0; r < R; r++) {
            const __m512h qv = _mm512_castsi512_ph(_mm512_set1_epi16((short)qh[(i0 + r) * kd + d]));
            acc[r][0] = _mm512_fmadd_ph(qv, k0, acc[r][0]);
            if (NC > 1) acc[r][1] = _mm512_fmadd_ph(qv, k1, acc[r][1]);
        }
    }
    for (int c = 0; c < 2 * NC; c++) {
        const size_t jc = j + 16 * (size_t)c;
        const __mmask16 mk = jc >= wn ? 0 : wn - jc >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (wn - jc)) - 1u);
        for (int r = 0; r < R; r++) {
            const __m512i a = _mm512_castph_si512(acc[r][c / 2]);
            __m512 t = _mm512_cvtph_ps(c & 1 ? _mm512_extracti64x4_epi64(a, 1) : _mm512_castsi512_si256(a));
            if (bias) t = _mm512_add_ps(t, _mm512_maskz_loadu_ps(mk, bias + (i0 + r) * wn + jc));
            _mm512_storeu_ps(s + (i0 + r) * wp + jc, t);
        }
    }
}

/* Output of R queries (fp16 probabilities p[i][·], row stride lp halves) for value columns [d, d + 32) of fp16
 * v[j][kd]: fp16 chains over 16 keys, summed in fp32, over the keys [0, nk) (nk a multiple of 16, v zero past
 * the window). */
static inline PSAM_AVX512FP16 __attribute__((always_inline)) void
values_tile_fp16(const uint16_t *p, size_t lp, const uint16_t *vh, size_t kd, size_t nk, size_t i0, size_t d, const int R,
                 float *out, size_t ldo) {
    __m512 tot[8][2];
    for (int r = 0; r < R; r++) tot[r][0] = tot[r][1] = _mm512_setzero_ps();
    for (size_t j0 = 0; j0 < nk; j0 += PSAM_FP16_CHUNK) {
        __m512h acc[8];
        for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ph();
        for (size_t j = j0; j < j0 + PSAM_FP16_CHUNK; j++) {
            const __m512h vv = _mm512_castsi512_ph(_mm512_loadu_si512((const void *)(vh + j * kd + d)));
            for (int r = 0; r < R; r++)
                acc[r] = _mm512_fmadd_ph(_mm512_castsi512_ph(_mm512_set1_epi16((short)p[(i0 + r) * lp + j])), vv, acc[r]);
        }
        for (int r = 0; r < R; r++) {
            const __m512i a = _mm512_castph_si512(acc[r]);
            tot[r][0] = _mm512_add_ps(tot[r][0], _mm512_cvtph_ps(_mm512_castsi512_si256(a)));
            tot[r][1] = _mm512_add_ps(tot[r][1], _mm512_cvtph_ps(_mm512_extracti64x4_epi64(a, 1)));
        }
    }
    for (int r = 0; r < R; r++) {
        _mm512_storeu_ps(out + (i0 + r) * ldo + d, tot[r][0]);
        _mm512_storeu_ps(out + (i0 + r) * ldo + d + 16, tot[r][1]);
    }
}

/* kd a multiple of 32. Per head: q·scale, k (through 16 × 16 transposes) and v to fp16, score tiles of 8
 * queries × 64 keys, softmax per row (fp16 probabilities in place of the row's scores), value tiles of 8
 * queries × 32 columns. */
PSAM_AVX512FP16 static void attention_fp16_avx512(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd,
                                                  float scale, const float *bias, float *out, size_t ldo, float *scratch) {
    const size_t wp = (wn + 31) & ~(size_t)31, nk = (wn + PSAM_FP16_CHUNK - 1) & ~(size_t)(PSAM_FP16_CHUNK - 1);
    float *s = scratch;
    uint16_t *kt = (uint16_t *)(s + wn * wp), *qh = kt + kd * wp, *vh = qh + wn * kd;
    const __m512 one = _mm512_set1_ps(1.0f), vs = _mm512_set1_ps(scale);
    for (size_t hd = 0; hd < heads; hd++) {
        const float *q = qkv + hd * 3 * kd, *kk = q + kd, *v = q + 2 * kd;
        const float *bh = bias ? bias + hd * wn * wn : NULL;
        for (size_t i = 0; i < wn; i++)
            for (size_t d = 0; d < kd; d += 32) _mm512_storeu_si512((void *)(qh + i * kd + d), fp16x32(q + i * ldq + d, vs));
        for (size_t j = 0; j < wp; j++)
            for (size_t d = 0; d < kd; d += 32)
                _mm512_storeu_si512((void *)(vh + j * kd + d), j < wn ? fp16x32(v + j * ldq + d, one) : _mm512_setzero_si512());
        /* kᵀ: blocks of 16 keys (zero past wn) × 16 columns. */
        for (size_t j = 0; j < wp; j += 16)
            for (size_t d = 0; d < kd; d += 16) {
                __m512 r[16];
                for (size_t x = 0; x < 16; x++) r[x] = j + x < wn ? _mm512_loadu_ps(kk + (j + x) * ldq + d) : _mm512_setzero_ps();
                transpose16x16(r);
                for (size_t x = 0; x < 16; x++) _mm256_storeu_si256((__m256i *)(kt + (d + x) * wp + j), _mm512_cvtps_ph(r[x], PSAM_RNE));
            }
        for (size_t j = 0; j < wp; j += 64) {
            const int two = j + 32 < wp;
            size_t i = 0;
            for (; i + 8 <= wn; i += 8)
                two ? scores_tile_fp16(qh, kt, wn, wp, kd, i, j, 8, 2, bh, s) : scores_tile_fp16(qh, kt, wn, wp, kd, i, j, 8, 1, bh, s);
            for (; i < wn; i++)
                two ? scores_tile_fp16(qh, kt, wn, wp, kd, i, j, 1, 2, bh, s) : scores_tile_fp16(qh, kt, wn, wp, kd, i, j, 1, 1, bh, s);
        }
        /* Softmax over the wn keys of each row; the probabilities (0 past wn) overwrite the row's start as fp16
         * (each 16 scores are read before their 8 floats' worth of halves are written at or before them). */
        for (size_t i = 0; i < wn; i++) {
            float *r = s + i * wp;
            const __m512 inv = softmax_row_exp(r, wn, nk);
            for (size_t j = 0; j < nk; j += 16)
                _mm256_storeu_si256((__m256i *)(r + j / 2), _mm512_cvtps_ph(_mm512_mul_ps(_mm512_loadu_ps(r + j), inv), PSAM_RNE));
        }
        const uint16_t *pp = (const uint16_t *)s;
        float *o = out + hd * kd;
        for (size_t d = 0; d < kd; d += 32) {
            size_t i = 0;
            for (; i + 8 <= wn; i += 8) values_tile_fp16(pp, 2 * wp, vh, kd, nk, i, d, 8, o, ldo);
            for (; i < wn; i++) values_tile_fp16(pp, 2 * wp, vh, kd, nk, i, d, 1, o, ldo);
        }
    }
}
#endif

int psam_window_attention_fp16_fast(size_t kd) {
#if defined(__x86_64__)
    return kd > 0 && kd % 32 == 0 && has_avx512fp16();
#else
    (void)kd;
    return 0;
#endif
}

void psam_window_attention_fp16(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
                                const float *bias, float *out, size_t ldo, float *scratch) {
#if defined(__x86_64__)
    if (psam_window_attention_fp16_fast(kd)) {
        attention_fp16_avx512(qkv, ldq, wn, heads, kd, scale, bias, out, ldo, scratch);
        return;
    }
#endif
    attention_fp16_generic(qkv, ldq, wn, heads, kd, scale, bias, out, ldo, scratch);
}

/* ---- Window attention in bf16 (the int8 models' path where the CPU has AVX-512 BF16 but not FP16) ----
 * q·scale, k, v and the probabilities are rounded to bf16 (to nearest even, subnormals flushed to zero, as
 * vcvtneps2bf16 does); scores and outputs are fp32 sums of products of bf16 pairs, each pair added odd element
 * first, one rounding per product (a product of two bf16 values is exact in fp32), as vdpbf16ps specifies. The
 * sums run in fp32, so only the 8-bit inputs cost accuracy: on LiteMedSAM bf16 attention moves 1 − cosine of the
 * embedding by about 2e-6 (Tests/Reference/int8_sensitivity.py), against the int8 weights' 9e-4; vdpbf16ps does
 * twice the fp32 rate (AMD Zen 4: 117 against 58 GMAC/s per thread). The generic body computes the same
 * roundings in scalar code and is the reference, and what runs where the CPU lacks AVX-512 BF16 (the runtime
 * does not pick this path there). Scratch per call, in floats: psam_window_attention_bf16_scratch(wn, kd). */
size_t psam_window_attention_bf16_scratch(size_t wn, size_t kd) {
    const size_t wp = (wn + 31) & ~(size_t)31, kp = (kd + 1) / 2;
    /* scores (then bf16 probabilities) wn × wp floats; kᵀ pairs kp × wp, q pairs wn × kp, v pairs wp/2 × kd. */
    return wn * wp + kp * wp + wn * kp + wp / 2 * kd;
}

/* fp32 → bf16 bits, round to nearest even, subnormals to signed zero, NaN kept quiet. */
static inline uint16_t bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40u);
    if ((u & 0x7F800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float bf16_value(float x) {
    uint32_t u = (uint32_t)bf16_bits(x) << 16;
    float y;
    memcpy(&y, &u, 4);
    return y;
}

static void attention_bf16_generic_rows(const float *qkv, size_t ldq, size_t wn, size_t nq, const uint16_t *rows, size_t heads,
                                        size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch) {
    float *s = scratch;
    /* Pairs (2t, 2t + 1): the odd element's product is added first. Products are exact in fp32, so
     * each += rounds once, as the instruction does; volatile keeps the compiler from reassociating. */
    for (size_t hd = 0; hd < heads; hd++) {
        const float *q = qkv + hd * 3 * kd, *kk = q + kd, *v = q + 2 * kd;
        for (size_t qi = 0; qi < nq; qi++) {
            const size_t i = rows ? rows[qi] : qi;
            float mx = -INFINITY;
            for (size_t j = 0; j < wn; j++) {
                volatile float acc = 0.0f;
                for (size_t d = 0; d < kd; d += 2) {
                    if (d + 1 < kd) acc = acc + bf16_value(q[i * ldq + d + 1] * scale) * bf16_value(kk[j * ldq + d + 1]);
                    acc = acc + bf16_value(q[i * ldq + d] * scale) * bf16_value(kk[j * ldq + d]);
                }
                s[j] = acc + (bias ? bias[(hd * wn + i) * wn + j] : 0.0f);
                mx = s[j] > mx ? s[j] : mx;
            }
            float sum = 0.0f;
            for (size_t j = 0; j < wn; j++) { s[j] = expf(s[j] - mx); sum += s[j]; }
            const float inv = 1.0f / sum;
            for (size_t j = 0; j < wn; j++) s[j] = bf16_value(s[j] * inv);
            float *o = out + i * ldo + hd * kd;
            for (size_t d = 0; d < kd; d++) {
                volatile float acc = 0.0f;
                for (size_t j = 0; j < wn; j += 2) {
                    if (j + 1 < wn) acc = acc + s[j + 1] * bf16_value(v[(j + 1) * ldq + d]);
                    acc = acc + s[j] * bf16_value(v[j * ldq + d]);
                }
                o[d] = acc;
            }
        }
    }
}

/* The whole window (the kernel test's reference; the library calls the _rows forms). */
static __attribute__((unused)) void attention_bf16_generic(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd,
                                                           float scale, const float *bias, float *out, size_t ldo,
                                                           float *scratch) {
    attention_bf16_generic_rows(qkv, ldq, wn, wn, NULL, heads, kd, scale, bias, out, ldo, scratch);
}

#if defined(__x86_64__)
#define PSAM_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))
static int has_avx512bf16(void) {
    __builtin_cpu_init();
    return has_avx512() && __builtin_cpu_supports("avx512bf16");
}

/* 16 floats → 16 bf16 in the low halves of 16 32-bit lanes (high halves zero). */
PSAM_AVX512BF16 static inline __m512i bf16_low(__m512 x) {
    return _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x));
}

/* Scores of R queries (rows i0…, bf16 pairs qp[i][kp]) against keys [j, j + 16·NC) (pairs kᵀ[kp][wp]): fp32 sums of
 * pair products, + bias (stride wn; keys ≥ wn unbiased, softmax skips them) into s[i][wp]. */
static inline PSAM_AVX512BF16 __attribute__((always_inline)) void
scores_tile_bf16(const uint32_t *qp, const uint32_t *kt, size_t wn, size_t wp, size_t kp, size_t i0, size_t j, const int R,
                 const int NC, const float *bias, const uint16_t *rows, float *s) {
    __m512 acc[8][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (size_t p = 0; p < kp; p++) {
        const __m512bh k0 = (__m512bh)_mm512_loadu_si512((const void *)(kt + p * wp + j));
        const __m512bh k1 = NC > 1 ? (__m512bh)_mm512_loadu_si512((const void *)(kt + p * wp + j + 16)) : k0;
        for (int r = 0; r < R; r++) {
            const __m512bh qv = (__m512bh)_mm512_set1_epi32((int)qp[(i0 + r) * kp + p]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], qv, k0);
            if (NC > 1) acc[r][1] = _mm512_dpbf16_ps(acc[r][1], qv, k1);
        }
    }
    for (int c = 0; c < NC; c++) {
        const size_t jc = j + 16 * (size_t)c;
        const __mmask16 mk = jc >= wn ? 0 : wn - jc >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (wn - jc)) - 1u);
        for (int r = 0; r < R; r++) {
            __m512 t = acc[r][c];
            if (bias) t = _mm512_add_ps(t, _mm512_maskz_loadu_ps(mk, bias + (rows ? rows[i0 + r] : i0 + r) * wn + jc));
            _mm512_storeu_ps(s + (i0 + r) * wp + jc, t);
        }
    }
}

/* Score tiles of the R < 8 rows from i0 (a switch to constant tile heights). */
static inline PSAM_AVX512BF16 __attribute__((always_inline)) void
scores_tail_bf16(const uint32_t *qp, const uint32_t *kt, size_t wn, size_t wp, size_t kp, size_t i0, size_t j, size_t R,
                 const int NC, const float *bias, const uint16_t *rows, float *s) {
    switch (R) {
    case 7: scores_tile_bf16(qp, kt, wn, wp, kp, i0, j, 7, NC, bias, rows, s); break;
    case 6: scores_tile_bf16(qp, kt, wn, wp, kp, i0, j, 6, NC, bias, rows, s); break;
    case 5: scores_tile_bf16(qp, kt, wn, wp, kp, i0, j, 5, NC, bias, rows, s); break;
    case 4: scores_tile_bf16(qp, kt, wn, wp, kp, i0, j, 4, NC, bias, rows, s); break;
    case 3: scores_tile_bf16(qp, kt, wn, wp, kp, i0, j, 3, NC, bias, rows, s); break;
    case 2: scores_tile_bf16(qp, kt, wn, wp, kp, i0, j, 2, NC, bias, rows, s); break;
    case 1: scores_tile_bf16(qp, kt, wn, wp, kp, i0, j, 1, NC, bias, rows, s); break;
    default: break;
    }
}

/* Output of R queries (bf16 probabilities p[i][·], row stride lp halves, zero past the window) for value columns
 * [d, d + 32) of the key pairs vp[m][kd] (keys 2m, 2m + 1; zero past the window), over the first np pairs. */
static inline PSAM_AVX512BF16 __attribute__((always_inline)) void
values_tile_bf16(const uint16_t *p, size_t lp, const uint32_t *vp, size_t kd, size_t np, size_t i0, size_t d, const int R,
                 const uint16_t *rows, float *out, size_t ldo) {
    __m512 acc[8][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (size_t m = 0; m < np; m++) {
        const __m512bh v0 = (__m512bh)_mm512_loadu_si512((const void *)(vp + m * kd + d));
        const __m512bh v1 = (__m512bh)_mm512_loadu_si512((const void *)(vp + m * kd + d + 16));
        for (int r = 0; r < R; r++) {
            uint32_t pair;
            memcpy(&pair, p + (i0 + r) * lp + 2 * m, 4);
            const __m512bh pv = (__m512bh)_mm512_set1_epi32((int)pair);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], pv, v0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], pv, v1);
        }
    }
    for (int r = 0; r < R; r++) {
        float *o = out + (rows ? rows[i0 + r] : i0 + r) * ldo + d;
        _mm512_storeu_ps(o, acc[r][0]);
        _mm512_storeu_ps(o + 16, acc[r][1]);
    }
}

/* Softmax of R score rows i0… (stride wp) over their wn keys, each row as softmax_row_exp and the scaling to bf16
 * in place: the same operations on each row (the same bits), the R rows' independent chains interleaved. Vectors
 * of keys all past wn are zeros (exp is not evaluated there; adding their zeros to the sums changes nothing). */
static inline PSAM_AVX512BF16 __attribute__((always_inline)) void
softmax_rows_bf16(float *s, size_t wn, size_t wp, size_t i0, const int R) {
    __m512 vm[8], mx[8], sum[8], inv[8];
    for (int r = 0; r < R; r++) vm[r] = _mm512_set1_ps(-INFINITY);
    for (size_t j = 0; j < wn; j += 16) {
        const __mmask16 mk = wn - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (wn - j)) - 1u);
        for (int r = 0; r < R; r++) vm[r] = _mm512_mask_max_ps(vm[r], mk, vm[r], _mm512_loadu_ps(s + (i0 + r) * wp + j));
    }
    for (int r = 0; r < R; r++) {
        mx[r] = _mm512_set1_ps(_mm512_reduce_max_ps(vm[r]));
        sum[r] = _mm512_setzero_ps();
    }
    for (size_t j = 0; j < wp; j += 16) {
        if (j >= wn) {
            for (int r = 0; r < R; r++) _mm512_storeu_ps(s + (i0 + r) * wp + j, _mm512_setzero_ps());
            continue;
        }
        const __mmask16 mk = wn - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (wn - j)) - 1u);
        for (int r = 0; r < R; r++) {
            float *row = s + (i0 + r) * wp + j;
            const __m512 e = _mm512_maskz_mov_ps(mk, exp512(_mm512_sub_ps(_mm512_loadu_ps(row), mx[r])));
            sum[r] = _mm512_add_ps(sum[r], e);
            _mm512_storeu_ps(row, e);
        }
    }
    for (int r = 0; r < R; r++) inv[r] = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum[r]));
    for (int r = 0; r < R; r++) {
        float *row = s + (i0 + r) * wp;
        for (size_t j = 0; j < wp; j += 16)
            _mm256_storeu_si256((__m256i *)(row + j / 2), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(row + j), inv[r])));
    }
}

/* kd a multiple of 32; queries rows[0 .. nq) of the wn (rows NULL: [0, nq); keys: all wn). Per head: q·scale, k (pairs through 16 × 16 transposes) and v (pairs of keys) to bf16,
 * score tiles of 8 queries × 32 keys, softmax per row (bf16 probabilities in place of the row's scores), value
 * tiles of 8 queries × 32 columns. */
PSAM_AVX512BF16 static void attention_bf16_avx512_rows(const float *qkv, size_t ldq, size_t wn, size_t nq, const uint16_t *rows,
                                                       size_t heads, size_t kd, float scale, const float *bias, float *out,
                                                       size_t ldo, float *scratch) {
    const size_t wp = (wn + 31) & ~(size_t)31, kp = kd / 2, np = (wn + 1) / 2;
    float *s = scratch;
    uint32_t *kt = (uint32_t *)(s + wn * wp), *qp = kt + kp * wp, *vp = qp + wn * kp;
    const __m512 vs = _mm512_set1_ps(scale);
    for (size_t hd = 0; hd < heads; hd++) {
        const float *q = qkv + hd * 3 * kd, *kk = q + kd, *v = q + 2 * kd;
        const float *bh = bias ? bias + hd * wn * wn : NULL;
        for (size_t i = 0; i < nq; i++) {
            const float *qi = q + (rows ? rows[i] : i) * ldq;
            for (size_t d = 0; d < kd; d += 32)
                _mm512_storeu_si512((void *)(qp + i * kp + d / 2),
                                    (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(_mm512_loadu_ps(qi + d + 16), vs),
                                                                 _mm512_mul_ps(_mm512_loadu_ps(qi + d), vs)));
        }
        /* Key pairs (2m, 2m + 1) of each value column: the even key in the low half. */
        for (size_t m = 0; m < wp / 2; m++)
            for (size_t d = 0; d < kd; d += 16) {
                const size_t j = 2 * m;
                const __m512i lo = j < wn ? bf16_low(_mm512_loadu_ps(v + j * ldq + d)) : _mm512_setzero_si512();
                const __m512i hi = j + 1 < wn ? bf16_low(_mm512_loadu_ps(v + (j + 1) * ldq + d)) : _mm512_setzero_si512();
                _mm512_storeu_si512((void *)(vp + m * kd + d), _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
            }
        /* kᵀ: each key's 32 columns as 16 bf16 pairs, blocks of 16 keys (zero past wn) × 16 pairs transposed. */
        for (size_t j = 0; j < wp; j += 16)
            for (size_t d = 0; d < kd; d += 32) {
                __m512 r[16];
                for (size_t x = 0; x < 16; x++)
                    r[x] = j + x < wn ? (__m512)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(kk + (j + x) * ldq + d + 16),
                                                                    _mm512_loadu_ps(kk + (j + x) * ldq + d))
                                      : _mm512_setzero_ps();
                transpose16x16(r);
                for (size_t x = 0; x < 16; x++) _mm512_storeu_ps((float *)(kt + (d / 2 + x) * wp + j), r[x]);
            }
        /* Key tiles of 32, the last one 16 wide where the keys end within its first half (the softmax reads no
         * score past wn). */
        for (size_t j = 0; j < wp; j += 32) {
            size_t i = 0;
            if (j + 16 >= wn) {
                for (; i + 8 <= nq; i += 8) scores_tile_bf16(qp, kt, wn, wp, kp, i, j, 8, 1, bh, rows, s);
                scores_tail_bf16(qp, kt, wn, wp, kp, i, j, nq - i, 1, bh, rows, s);
            } else {
                for (; i + 8 <= nq; i += 8) scores_tile_bf16(qp, kt, wn, wp, kp, i, j, 8, 2, bh, rows, s);
                scores_tail_bf16(qp, kt, wn, wp, kp, i, j, nq - i, 2, bh, rows, s);
            }
        }
        /* Softmax over the wn keys of each row; the probabilities (0 past wn) overwrite the row's start as bf16
         * (each 16 scores are read before their 8 floats' worth of halves are written at or before them). Rows 8
         * at a time, so that their reductions' latencies overlap. */
        size_t i = 0;
        for (; i + 8 <= nq; i += 8) softmax_rows_bf16(s, wn, wp, i, 8);
        if (nq - i >= 4) {
            softmax_rows_bf16(s, wn, wp, i, 4);
            i += 4;
        }
        for (; i < nq; i++) softmax_rows_bf16(s, wn, wp, i, 1);
        const uint16_t *pp = (const uint16_t *)s;
        float *o = out + hd * kd;
        for (size_t d = 0; d < kd; d += 32) {
            size_t i = 0;
            for (; i + 8 <= nq; i += 8) values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 8, rows, o, ldo);
            switch (nq - i) {
            case 7: values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 7, rows, o, ldo); break;
            case 6: values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 6, rows, o, ldo); break;
            case 5: values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 5, rows, o, ldo); break;
            case 4: values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 4, rows, o, ldo); break;
            case 3: values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 3, rows, o, ldo); break;
            case 2: values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 2, rows, o, ldo); break;
            case 1: values_tile_bf16(pp, 2 * wp, vp, kd, np, i, d, 1, rows, o, ldo); break;
            default: break;
            }
        }
    }
}

/* The whole window (the kernel test's vector variant). */
PSAM_AVX512BF16 static __attribute__((unused)) void attention_bf16_avx512(const float *qkv, size_t ldq, size_t wn, size_t heads,
                                                                         size_t kd, float scale, const float *bias, float *out,
                                                                         size_t ldo, float *scratch) {
    attention_bf16_avx512_rows(qkv, ldq, wn, wn, NULL, heads, kd, scale, bias, out, ldo, scratch);
}
#endif

int psam_window_attention_bf16_fast(size_t kd) {
#if defined(__x86_64__)
    return kd > 0 && kd % 32 == 0 && has_avx512bf16();
#else
    (void)kd;
    return 0;
#endif
}

void psam_window_attention_bf16_rows(const float *qkv, size_t ldq, size_t wn, size_t nq, const uint16_t *rows, size_t heads,
                                     size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch) {
    if (nq > wn) nq = wn;
#if defined(__x86_64__)
    if (psam_window_attention_bf16_fast(kd)) {
        attention_bf16_avx512_rows(qkv, ldq, wn, nq, rows, heads, kd, scale, bias, out, ldo, scratch);
        return;
    }
#endif
    attention_bf16_generic_rows(qkv, ldq, wn, nq, rows, heads, kd, scale, bias, out, ldo, scratch);
}

void psam_window_attention_bf16(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
                                const float *bias, float *out, size_t ldo, float *scratch) {
    psam_window_attention_bf16_rows(qkv, ldq, wn, wn, NULL, heads, kd, scale, bias, out, ldo, scratch);
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

/* out[i] = a[i] + b[i] (one fp32 add each: every width gives the same bits; out may be a or b). */
static void add_generic(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

#if defined(__x86_64__)
PSAM_AVX512F static void add_avx512(float *out, const float *a, const float *b, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
    if (i < n) {
        const __mmask16 mk = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(out + i, mk, _mm512_add_ps(_mm512_maskz_loadu_ps(mk, a + i), _mm512_maskz_loadu_ps(mk, b + i)));
    }
}
#endif

void psam_add_rows(float *out, const float *a, const float *b, size_t n) {
#if defined(__x86_64__)
    if (has_avx512()) {
        add_avx512(out, a, b, n);
        return;
    }
#endif
    add_generic(out, a, b, n);
}

/* Attention with few keys (SAM's image→token attention: thousands of queries, a handful of tokens).
 * Rows r0..r1 of q[nq][ldq]; per head h (columns h·d of q, k, v and out): scores over the nk ≤ 64
 * keys k[nk][ldk] scaled by `scale`, softmax, weighted sum of v[nk][ldv] into out[row][ldo]. */
static void few_keys_generic(const float *q, size_t ldq, const float *k, size_t ldk, const float *v, size_t ldv,
                             size_t nk, size_t heads, size_t d, float scale, float *out, size_t ldo, size_t r0, size_t r1) {
    float s[64];
    if (nk > 64) return;
    for (size_t r = r0; r < r1; r++) {
        for (size_t h = 0; h < heads; h++) {
            const float *qr = q + r * ldq + h * d;
            float mx = -INFINITY;
            for (size_t j = 0; j < nk; j++) {
                const float *kr = k + j * ldk + h * d;
                float acc = 0.0f;
                for (size_t t = 0; t < d; t++) acc += qr[t] * kr[t];
                s[j] = acc * scale;
                if (s[j] > mx) mx = s[j];
            }
            float sum = 0.0f;
            for (size_t j = 0; j < nk; j++) {
                s[j] = expf(s[j] - mx);
                sum += s[j];
            }
            float inv = 1.0f / sum;
            float *o = out + r * ldo + h * d;
            for (size_t t = 0; t < d; t++) o[t] = 0.0f;
            for (size_t j = 0; j < nk; j++) {
                const float p = s[j] * inv, *vr = v + j * ldv + h * d;
                for (size_t t = 0; t < d; t++) o[t] += p * vr[t];
            }
        }
    }
}

#if defined(__x86_64__)
/* Floats of kᵀ kept on the stack: one head's d × ⌈nk/8⌉·8 must fit, else the generic body runs. */
#define PSAM_FEW_KEYS_KT 4096

/* kᵀ ([d][nk rounded up to 8], zero-padded) of as many heads as fit is built once per call. Queries go in
 * groups of 8: scores as 8 queries × 8 keys tiles (as in window attention), transposed so that one vector
 * holds one key's scores for the 8 queries; the softmax over keys then needs no horizontal reductions.
 * Leftover queries go one at a time (row softmax). Values: 8 queries × 8 columns tiles. */
PSAM_AVX2FMA static void few_keys_avx2(const float *q, size_t ldq, const float *k, size_t ldk, const float *v, size_t ldv,
                                       size_t nk, size_t heads, size_t d, float scale, float *out, size_t ldo, size_t r0,
                                       size_t r1) {
    float kt[PSAM_FEW_KEYS_KT], p[64 * 8];
    const size_t nkp = (nk + 7) & ~(size_t)7, per = d * nkp, hg = PSAM_FEW_KEYS_KT / per;
    const __m256 vs = _mm256_set1_ps(scale);
    for (size_t h0 = 0; h0 < heads; h0 += hg) {
        const size_t h1 = h0 + hg < heads ? h0 + hg : heads;
        for (size_t h = h0; h < h1; h++)
            for (size_t t = 0; t < d; t++)
                for (size_t j = 0; j < nkp; j++) kt[(h - h0) * per + t * nkp + j] = j < nk ? k[j * ldk + h * d + t] : 0.0f;
        size_t r = r0;
        for (; r + 8 <= r1; r += 8)
            for (size_t h = h0; h < h1; h++) {
                const float *qh = q + r * ldq + h * d, *kh = kt + (h - h0) * per;
                for (size_t j = 0; j < nkp; j += 8) {
                    __m256 acc[8];
                    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
                    for (size_t t = 0; t < d; t++) {
                        __m256 kv = _mm256_loadu_ps(kh + t * nkp + j);
                        for (int i = 0; i < 8; i++) acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(qh + i * ldq + t), kv, acc[i]);
                    }
                    for (int i = 0; i < 8; i++) acc[i] = _mm256_mul_ps(acc[i], vs);
                    transpose8x8(acc);
                    for (int i = 0; i < 8; i++) _mm256_storeu_ps(p + (j + (size_t)i) * 8, acc[i]); /* p[key][query] */
                }
                __m256 mx = _mm256_loadu_ps(p);
                for (size_t j = 1; j < nk; j++) mx = _mm256_max_ps(mx, _mm256_loadu_ps(p + j * 8));
                __m256 sum = _mm256_setzero_ps();
                for (size_t j = 0; j < nk; j++) {
                    __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(p + j * 8), mx));
                    sum = _mm256_add_ps(sum, e);
                    _mm256_storeu_ps(p + j * 8, e);
                }
                const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), sum);
                for (size_t j = 0; j < nk; j++) _mm256_storeu_ps(p + j * 8, _mm256_mul_ps(_mm256_loadu_ps(p + j * 8), inv));
                for (size_t t = 0; t < d; t += 8) values_tile_avx2(p, 1, 8, nk, v + h * d, ldv, d, 0, t, 8, out + r * ldo + h * d, ldo);
            }
        for (; r < r1; r++)
            for (size_t h = h0; h < h1; h++) {
                const float *qh = q + r * ldq + h * d, *kh = kt + (h - h0) * per;
                for (size_t j = 0; j < nkp; j += 8) scores_tile_avx2(qh, 0, kh, nkp, nkp, d, 0, j, 1, vs, NULL, p, 0);
                softmax_avx2(p, 1, nk, nkp);
                for (size_t t = 0; t < d; t += 8) values_tile_avx2(p, 0, 1, nk, v + h * d, ldv, d, 0, t, 1, out + r * ldo + h * d, ldo);
            }
    }
}
#endif

void psam_attention_few_keys(const float *q, size_t ldq, const float *k, size_t ldk, const float *v, size_t ldv,
                             size_t nk, size_t heads, size_t d, float scale, float *out, size_t ldo,
                             size_t r0, size_t r1) {
    if (nk > 64) return;
#if defined(__x86_64__)
    if (nk > 0 && d > 0 && d * ((nk + 7) & ~(size_t)7) <= PSAM_FEW_KEYS_KT && has_avx2()) {
        few_keys_avx2(q, ldq, k, ldk, v, ldv, nk, heads, d, scale, out, ldo, r0, r1);
        return;
    }
#endif
    few_keys_generic(q, ldq, k, ldk, v, ldv, nk, heads, d, scale, out, ldo, r0, r1);
}

static inline uint8_t clip8_22(int32_t acc) {
    acc >>= 22;
    return (uint8_t)(acc < 0 ? 0 : (acc > 255 ? 255 : acc));
}

void psam_resample_rows_h(const uint8_t *src, size_t stride, size_t channels, size_t y0, size_t y1, size_t ow,
                          const int32_t *bounds, const int32_t *weights, size_t taps, uint8_t *tmp) {
    for (size_t y = y0; y < y1; y++) {
        const uint8_t *row = src + y * stride;
        uint8_t *o = tmp + y * ow * 3;
        for (size_t xx = 0; xx < ow; xx++) {
            const uint8_t *p = row + (size_t)bounds[2 * xx] * channels;
            const int32_t *k = weights + xx * taps, n = bounds[2 * xx + 1];
            if (channels == 3) {
                int32_t a0 = 1 << 21, a1 = 1 << 21, a2 = 1 << 21;
                for (int32_t x = 0; x < n; x++) {
                    a0 += (int32_t)p[3 * x] * k[x];
                    a1 += (int32_t)p[3 * x + 1] * k[x];
                    a2 += (int32_t)p[3 * x + 2] * k[x];
                }
                o[3 * xx] = clip8_22(a0);
                o[3 * xx + 1] = clip8_22(a1);
                o[3 * xx + 2] = clip8_22(a2);
            } else {
                int32_t a = 1 << 21;
                for (int32_t x = 0; x < n; x++) a += (int32_t)p[(size_t)x * channels] * k[x];
                o[3 * xx] = o[3 * xx + 1] = o[3 * xx + 2] = clip8_22(a);
            }
        }
    }
}

void psam_resample_rows_v(const uint8_t *tmp, size_t ow3, size_t y0, size_t y1, const int32_t *bounds, const int32_t *weights,
                          size_t taps, uint8_t *out) {
    int32_t acc[512];
    for (size_t yy = y0; yy < y1; yy++) {
        const uint8_t *base = tmp + (size_t)bounds[2 * yy] * ow3;
        const int32_t *k = weights + yy * taps, n = bounds[2 * yy + 1];
        for (size_t i0 = 0; i0 < ow3; i0 += 512) {
            const size_t len = ow3 - i0 < 512 ? ow3 - i0 : 512;
            for (size_t i = 0; i < len; i++) acc[i] = 1 << 21;
            for (int32_t y = 0; y < n; y++) {
                const uint8_t *r = base + (size_t)y * ow3 + i0;
                const int32_t ky = k[y];
                for (size_t i = 0; i < len; i++) acc[i] += (int32_t)r[i] * ky;
            }
            for (size_t i = 0; i < len; i++) out[yy * ow3 + i0 + i] = clip8_22(acc[i]);
        }
    }
}
