/* x86-64 helpers shared by the row operations' AVX2 and AVX-512 bodies: target attributes, CPU checks, tail masks,
 * horizontal reductions, transposes and the polynomial exp. Internal (not installed). */
#ifndef POCKETSAM_ROWOPS_X86_H
#define POCKETSAM_ROWOPS_X86_H
#if defined(__x86_64__)
#include <immintrin.h>
#include "gelu_fast512.h"
#define PSAM_AVX512F __attribute__((target("avx512f,avx512bw,avx512vl")))
#define PSAM_AVX512FMA __attribute__((target("avx512f,avx512bw,avx512vl,fma")))
/* AVX2 without FMA (bit-identical kernels: quantization, GELU) and with FMA (the rest). */
#define PSAM_AVX2 __attribute__((target("avx2")))
#define PSAM_AVX2FMA __attribute__((target("avx2,fma")))
/* Both are 0 while the portable-kernels switch is on (portable.c): every operation then runs its generic body. */
static inline int has_avx512(void) {
    if (psam_portable_kernels()) return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
static inline int has_avx2(void) {
    if (psam_portable_kernels()) return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* Lane mask of the first r (0 < r < 8) of 8 floats, for _mm256_maskload_ps. */
PSAM_AVX2 static inline __m256i tail_mask8(size_t r) {
    static const int32_t psam_tail_bits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
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

/* 0 < s <= FLT_MAX per lane of the first n (false for NaN): quantize_row's test for a usable scale. */
PSAM_AVX512F static inline __mmask16 usable_scales(__m512 s, size_t n) {
    return _mm512_cmp_ps_mask(s, _mm512_setzero_ps(), _CMP_GT_OQ) & _mm512_cmp_ps_mask(s, _mm512_set1_ps(FLT_MAX), _CMP_LE_OQ) &
           (__mmask16)((1u << n) - 1u);
}

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

#define PSAM_AVX512FP16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512fp16,fma")))

static inline int has_avx512fp16(void) {
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

#define PSAM_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))

static inline int has_avx512bf16(void) {
    __builtin_cpu_init();
    return has_avx512() && __builtin_cpu_supports("avx512bf16");
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
#endif /* __x86_64__ */
#endif
