/* fp32 row operations. Each has a portable body and, on x86-64, the same body compiled for AVX-512;
 * contraction into fused multiply-adds is off, so both give bit-identical results (min/max, mul, add,
 * div and truncating conversion round the same at any vector width). */
#include "pocketsam_kernels.h"
#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define PSAM_AVX512F __attribute__((target("avx512f,avx512bw,avx512vl")))
#define PSAM_AVX512FMA __attribute__((target("avx512f,avx512bw,avx512vl,fma")))
static int has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
#endif
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif /* GCC in ISO C mode (-std=c11) does not contract */

static inline void quantize_row(const float *r, size_t k, uint8_t *o, size_t ldq, float lo, float hi, float *scale,
                                int32_t *zero) {
    float s = (hi - lo) / 255.0f;
    if (!(s > 0.0f) || !isfinite(s)) {
        /* All zero (or non-finite input, which upstream validation excludes): quantize to zero. */
        *scale = 1.0f;
        *zero = 0;
        for (size_t j = 0; j < ldq; j++) o[j] = 0;
        return;
    }
    float inv = 1.0f / s;
    float zf = floorf(-lo * inv + 0.5f);
    if (zf > 255.0f) zf = 255.0f;
    *scale = s;
    *zero = (int32_t)zf;
    float add = zf + 0.5f;
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
PSAM_AVX512F static void quantize_avx512(const float *x, size_t m, size_t k, size_t ldx, uint8_t *q, size_t ldq,
                                         float *scale, int32_t *zero) {
    for (size_t i = 0; i < m; i++) {
        const float *r = x + i * ldx;
        __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
        size_t j = 0;
        for (; j + 16 <= k; j += 16) {
            __m512 v = _mm512_loadu_ps(r + j);
            lo = _mm512_min_ps(lo, v);
            hi = _mm512_max_ps(hi, v);
        }
        if (j < k) {
            __m512 v = _mm512_maskz_loadu_ps((__mmask16)((1u << (k - j)) - 1u), r + j);
            lo = _mm512_min_ps(lo, v);
            hi = _mm512_max_ps(hi, v);
        }
        float l = _mm512_reduce_min_ps(lo), h = _mm512_reduce_max_ps(hi);
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
        const __m512 vinv = _mm512_set1_ps(inv), vadd = _mm512_set1_ps(zf + 0.5f), vmax = _mm512_set1_ps(255.5f);
        for (j = 0; j < k; j += 16) {
            __mmask16 mk = k - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (k - j)) - 1u);
            __m512 t = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, r + j), vinv), vadd);
            t = _mm512_min_ps(_mm512_max_ps(t, _mm512_setzero_ps()), vmax);
            _mm_mask_storeu_epi8(o + j, mk, _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(t)));
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
#endif
    quantize_generic(x, m, k, ldx, q, ldq, scale, zero);
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
#endif

void psam_gelu_rows(float *x, size_t n) {
#if defined(__x86_64__)
    if (has_avx512()) {
        gelu_avx512(x, n);
        return;
    }
#endif
    gelu_generic(x, n);
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

PSAM_AVX512FMA static void depthwise_avx512(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias,
                                            size_t k, size_t stride, size_t pad, float *out, size_t wo, size_t y0, size_t y1,
                                            int gelu, uint8_t *q, size_t ldq, float *scale, int32_t *zero) {
    for (size_t oy = y0; oy < y1; oy++)
        for (size_t ox = 0; ox < wo; ox++) {
            size_t p = oy * wo + ox;
            float *o = q ? out : out + p * c;
            dw_pixel_avx512(x, h, w, c, wt, bias, k, stride, pad, oy, ox, o);
            if (gelu) gelu_avx512(o, c);
            if (q) quantize_avx512(o, 1, c, c, q + p * ldq, ldq, scale + p, zero + p);
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
            if (gelu) gelu_generic(o, c);
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
#endif

void psam_layernorm_rows(const float *x, size_t m, size_t c, size_t ldx, const float *w, const float *b, float eps,
                         float *out, size_t ldo) {
#if defined(__x86_64__)
    if (has_avx512()) {
        layernorm_avx512(x, m, c, ldx, w, b, eps, out, ldo);
        return;
    }
#endif
    layernorm_generic(x, m, c, ldx, w, b, eps, out, ldo);
}

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
#endif

void psam_softmax_rows(float *x, size_t m, size_t n, size_t ld) {
#if defined(__x86_64__)
    if (has_avx512()) {
        softmax_avx512(x, m, n, ld);
        return;
    }
#endif
    softmax_generic(x, m, n, ld);
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
#endif

void psam_window_attention(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
                           const float *bias, float *out, size_t ldo, float *scratch) {
#if defined(__x86_64__)
    if (has_avx512()) {
        attention_avx512(qkv, ldq, wn, heads, kd, scale, bias, out, ldo, scratch);
        return;
    }
#endif
    attention_generic(qkv, ldq, wn, heads, kd, scale, bias, out, ldo, scratch);
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

/* Attention with few keys (SAM's image→token attention: thousands of queries, a handful of tokens).
 * Rows r0..r1 of q[nq][ldq]; per head h (columns h·d of q, k, v and out): scores over the nk ≤ 64
 * keys k[nk][ldk] scaled by `scale`, softmax, weighted sum of v[nk][ldv] into out[row][ldo]. */
void psam_attention_few_keys(const float *q, size_t ldq, const float *k, size_t ldk, const float *v, size_t ldv,
                             size_t nk, size_t heads, size_t d, float scale, float *out, size_t ldo,
                             size_t r0, size_t r1) {
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
