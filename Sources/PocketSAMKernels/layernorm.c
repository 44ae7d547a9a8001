#include "rowops_internal.h"

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

void psam_layernorm__generic(const float *x, size_t m, size_t c, size_t ldx, const float *w, const float *b, float eps,
                              float *out, size_t ldo) {
    LAYERNORM_BODY
}
#if defined(__x86_64__)
PSAM_AVX512F void psam_layernorm__avx512(const float *x, size_t m, size_t c, size_t ldx, const float *w, const float *b,
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

/* As psam_layernorm__avx512, with four partial sums per pass (the additions' latency, not their throughput,
 * bounds one chain). */
PSAM_AVX2FMA void psam_layernorm__avx2(const float *x, size_t m, size_t c, size_t ldx, const float *w, const float *b,
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
        psam_layernorm__avx512(x, m, c, ldx, w, b, eps, out, ldo);
        return;
    }
    if (has_avx2()) {
        psam_layernorm__avx2(x, m, c, ldx, w, b, eps, out, ldo);
        return;
    }
#endif
    psam_layernorm__generic(x, m, c, ldx, w, b, eps, out, ldo);
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
