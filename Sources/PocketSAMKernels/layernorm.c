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

#if defined(__aarch64__)
/* Lanes [4 − r, 4) set: the last r (1 … 3) of 4 values. */
static const uint32_t ln_tail_mask[8] = {0, 0, 0, 0, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};

/* As psam_layernorm__avx2: four partial sums per pass, fused multiply-adds, and a tail of c mod 4 as the last 4 values
 * (masked in the sums; in the output computed before anything is stored, as out may be x). */
void psam_layernorm__neon(const float *x, size_t m, size_t c, size_t ldx, const float *w, const float *b, float eps,
                          float *out, size_t ldo) {
    if (c < 4) { /* no vector's worth */
        psam_layernorm__generic(x, m, c, ldx, w, b, eps, out, ldo);
        return;
    }
    const size_t rem = c % 4;
    const uint32x4_t tail = vld1q_u32(ln_tail_mask + rem);
    const float32x4_t z = vdupq_n_f32(0.0f);
    for (size_t i = 0; i < m; i++) {
        const float *r = x + i * ldx;
        float *o = out + i * ldo;
        const float32x4_t xt = vld1q_f32(r + c - 4);
        float32x4_t s0 = z, s1 = z, s2 = z, s3 = z;
        size_t j = 0;
        for (; j + 16 <= c; j += 16) {
            s0 = vaddq_f32(s0, vld1q_f32(r + j));
            s1 = vaddq_f32(s1, vld1q_f32(r + j + 4));
            s2 = vaddq_f32(s2, vld1q_f32(r + j + 8));
            s3 = vaddq_f32(s3, vld1q_f32(r + j + 12));
        }
        for (; j + 4 <= c; j += 4) s0 = vaddq_f32(s0, vld1q_f32(r + j));
        if (rem) s1 = vaddq_f32(s1, vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(xt), tail)));
        const float mean = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3))) / (float)c;
        const float32x4_t vm = vdupq_n_f32(mean);
        s0 = s1 = s2 = s3 = z;
        for (j = 0; j + 16 <= c; j += 16) {
            const float32x4_t d0 = vsubq_f32(vld1q_f32(r + j), vm), d1 = vsubq_f32(vld1q_f32(r + j + 4), vm);
            const float32x4_t d2 = vsubq_f32(vld1q_f32(r + j + 8), vm), d3 = vsubq_f32(vld1q_f32(r + j + 12), vm);
            s0 = vfmaq_f32(s0, d0, d0);
            s1 = vfmaq_f32(s1, d1, d1);
            s2 = vfmaq_f32(s2, d2, d2);
            s3 = vfmaq_f32(s3, d3, d3);
        }
        for (; j + 4 <= c; j += 4) {
            const float32x4_t d = vsubq_f32(vld1q_f32(r + j), vm);
            s0 = vfmaq_f32(s0, d, d);
        }
        if (rem) {
            const float32x4_t d = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(vsubq_f32(xt, vm)), tail));
            s1 = vfmaq_f32(s1, d, d);
        }
        const float var = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3))) / (float)c;
        const float32x4_t vi = vdupq_n_f32(1.0f / sqrtf(var + eps));
#define PSAM_LN_OUT(j) vfmaq_f32(vld1q_f32(b + (j)), vmulq_f32(vsubq_f32(vld1q_f32(r + (j)), vm), vi), vld1q_f32(w + (j)))
        const float32x4_t last = PSAM_LN_OUT(c - 4);
        for (j = 0; j + 16 <= c; j += 16) {
            const float32x4_t o0 = PSAM_LN_OUT(j), o1 = PSAM_LN_OUT(j + 4), o2 = PSAM_LN_OUT(j + 8), o3 = PSAM_LN_OUT(j + 12);
            vst1q_f32(o + j, o0), vst1q_f32(o + j + 4, o1), vst1q_f32(o + j + 8, o2), vst1q_f32(o + j + 12, o3);
        }
        for (; j + 4 <= c; j += 4) vst1q_f32(o + j, PSAM_LN_OUT(j));
#undef PSAM_LN_OUT
        if (rem) vst1q_f32(o + c - 4, last);
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
#if defined(__aarch64__)
    if (!psam_portable_kernels()) {
        psam_layernorm__neon(x, m, c, ldx, w, b, eps, out, ldo);
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

void psam_layernorm_seq__generic(const float *x, size_t m, size_t c, const float *w, const float *b, float eps, float *out) {
    size_t i = 0;
    for (; i + 8 <= m; i += 8) PSAM_LN_SEQ(8);
    for (; i < m; i++) PSAM_LN_SEQ(1);
}
#undef PSAM_LN_SEQ

#if defined(__aarch64__)
/* Columns j … j + 3 of the 4 rows p[0 … 3] as 4 vectors (lane r: row r). */
static inline void ln_seq_cols4(const float *const *p, size_t j, float32x4_t col[4]) {
    const float32x4_t r0 = vld1q_f32(p[0] + j), r1 = vld1q_f32(p[1] + j), r2 = vld1q_f32(p[2] + j), r3 = vld1q_f32(p[3] + j);
    const float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(r0, r1)), t1 = vreinterpretq_f64_f32(vtrn2q_f32(r0, r1));
    const float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(r2, r3)), t3 = vreinterpretq_f64_f32(vtrn2q_f32(r2, r3));
    col[0] = vreinterpretq_f32_f64(vtrn1q_f64(t0, t2));
    col[1] = vreinterpretq_f32_f64(vtrn1q_f64(t1, t3));
    col[2] = vreinterpretq_f32_f64(vtrn2q_f64(t0, t2));
    col[3] = vreinterpretq_f32_f64(vtrn2q_f64(t1, t3));
}

static inline float32x4_t ln_seq_col1(const float *const *p, size_t j) {
    const float t[4] = {p[0][j], p[1][j], p[2][j], p[3][j]};
    return vld1q_f32(t);
}

/* PSAM_LN_SEQ's statistics of 4·NV rows (NV = 1 or 2), a row to a lane: each lane's sums are that row's left-to-right
 * chains, the same operations in the same order (no FMA), so its bits. p holds 4·NV row pointers. */
static inline __attribute__((always_inline)) void ln_seq_stats(const float *const *p, size_t NV, size_t c, float eps,
                                                                float32x4_t mean[2], float32x4_t inv[2]) {
    const float32x4_t vc = vdupq_n_f32((float)c);
    float32x4_t s[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)}, col[2][4];
    size_t j = 0;
    for (; j + 4 <= c; j += 4) {
        for (size_t v = 0; v < NV; v++) ln_seq_cols4(p + 4 * v, j, col[v]);
        for (size_t k = 0; k < 4; k++)
            for (size_t v = 0; v < NV; v++) s[v] = vaddq_f32(s[v], col[v][k]);
    }
    for (; j < c; j++)
        for (size_t v = 0; v < NV; v++) s[v] = vaddq_f32(s[v], ln_seq_col1(p + 4 * v, j));
    for (size_t v = 0; v < NV; v++) mean[v] = vdivq_f32(s[v], vc), s[v] = vdupq_n_f32(0.0f);
    for (j = 0; j + 4 <= c; j += 4) {
        for (size_t v = 0; v < NV; v++) ln_seq_cols4(p + 4 * v, j, col[v]);
        for (size_t k = 0; k < 4; k++)
            for (size_t v = 0; v < NV; v++) {
                const float32x4_t d = vsubq_f32(col[v][k], mean[v]);
                s[v] = vaddq_f32(s[v], vmulq_f32(d, d));
            }
    }
    for (; j < c; j++)
        for (size_t v = 0; v < NV; v++) {
            const float32x4_t d = vsubq_f32(ln_seq_col1(p + 4 * v, j), mean[v]);
            s[v] = vaddq_f32(s[v], vmulq_f32(d, d));
        }
    for (size_t v = 0; v < NV; v++)
        inv[v] = vdivq_f32(vdupq_n_f32(1.0f), vsqrtq_f32(vaddq_f32(vdivq_f32(s[v], vc), vdupq_n_f32(eps))));
}

/* One row's output (x − mean)·inv·w + b, no FMA, 16 values a step; a tail of c mod 4 as the last 4, computed before
 * anything is stored (out may be x). */
static inline void ln_seq_out_row(const float *r, size_t c, const float *w, const float *b, float mean, float inv, float *o) {
    const float32x4_t vm = vdupq_n_f32(mean), vi = vdupq_n_f32(inv);
#define PSAM_LN_OUT(j) vaddq_f32(vmulq_f32(vmulq_f32(vsubq_f32(vld1q_f32(r + (j)), vm), vi), vld1q_f32(w + (j))), vld1q_f32(b + (j)))
    if (c < 4) {
        for (size_t j = 0; j < c; j++) o[j] = (r[j] - mean) * inv * w[j] + b[j];
        return;
    }
    const float32x4_t last = PSAM_LN_OUT(c - 4);
    size_t j = 0;
    for (; j + 16 <= c; j += 16) {
        const float32x4_t a = PSAM_LN_OUT(j), e = PSAM_LN_OUT(j + 4), f = PSAM_LN_OUT(j + 8), g = PSAM_LN_OUT(j + 12);
        vst1q_f32(o + j, a), vst1q_f32(o + j + 4, e), vst1q_f32(o + j + 8, f), vst1q_f32(o + j + 12, g);
    }
    for (; j + 4 <= c; j += 4) vst1q_f32(o + j, PSAM_LN_OUT(j));
    if (j < c) vst1q_f32(o + c - 4, last);
#undef PSAM_LN_OUT
}

/* psam_layernorm_rows_seq with 8 rows' statistics in the lanes of two vectors (their columns gathered by 4×4
 * transposes), then 4, then the last 1 … 3 with the last row repeated in the spare lanes; the output row by row.
 * llvm-mca puts the two statistics passes at about half the macro's cycles per value on Cortex-A53 and 0.9× on the
 * A57 (clang 21 -O2; it vectorises the macro's output pass itself). */
void psam_layernorm_seq__neon(const float *x, size_t m, size_t c, const float *w, const float *b, float eps, float *out) {
    for (size_t i = 0; i < m;) {
        const size_t g = m - i >= 8 ? 8 : m - i >= 4 ? 4 : m - i;
        const float *p[8];
        float32x4_t mean[2], inv[2];
        float mv[8], iv[8];
        for (size_t r = 0; r < 8; r++) p[r] = x + (i + (r < g ? r : g - 1)) * c;
        if (g == 8) ln_seq_stats(p, 2, c, eps, mean, inv);
        else ln_seq_stats(p, 1, c, eps, mean, inv);
        vst1q_f32(mv, mean[0]), vst1q_f32(iv, inv[0]);
        if (g == 8) vst1q_f32(mv + 4, mean[1]), vst1q_f32(iv + 4, inv[1]);
        for (size_t r = 0; r < g; r++) ln_seq_out_row(x + (i + r) * c, c, w, b, mv[r], iv[r], out + (i + r) * c);
        i += g;
    }
}
#endif

/* Layer norm with left-to-right sums per row (above), on NEON 4 or 8 rows at a time (the same bits). */
void psam_layernorm_rows_seq(const float *x, size_t m, size_t c, const float *w, const float *b, float eps, float *out) {
#if defined(__aarch64__)
    if (!psam_portable_kernels()) {
        psam_layernorm_seq__neon(x, m, c, w, b, eps, out);
        return;
    }
#endif
    psam_layernorm_seq__generic(x, m, c, w, b, eps, out);
}
