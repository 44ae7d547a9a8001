#include "rowops_internal.h"

/* Attention of one window for all heads: qkv[wn][ldq] holds per head h [q | k | v] at columns
 * h·3·kd (kd wide each); scores = q·kᵀ·scale (+ bias[h][wn][wn]), softmax over keys, out[wn][ldo]
 * (head h at columns h·kd) = scores·v. `scratch` holds wn·wn + kd·wn floats. */
void psam_window_attention__generic(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
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
        psam_softmax__generic(s, wn, wn, wn);
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

PSAM_AVX512FMA void psam_window_attention__avx512(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
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
        psam_softmax__avx512(s, wn, wn, wn);
        float *o = out + hd * kd;
        for (size_t d = 0; d < kd; d += 16) {
            size_t i = 0;
            for (; i + 8 <= wn; i += 8) values_tile(s, wn, v, ldq, kd, i, d, 8, o, ldo);
            for (; i < wn; i++) values_tile(s, wn, v, ldq, kd, i, d, 1, o, ldo);
        }
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

/* As psam_window_attention__avx512: kᵀ in scratch, 8 queries × 8 keys score tiles, softmax, 8 queries × 8 columns value tiles. */
PSAM_AVX2FMA void psam_window_attention__avx2(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
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
        psam_softmax__avx2(s, wn, wn, wn);
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
        psam_window_attention__avx512(qkv, ldq, wn, heads, kd, scale, bias, out, ldo, scratch);
        return;
    }
    if (has_avx2()) {
        psam_window_attention__avx2(qkv, ldq, wn, heads, kd, scale, bias, out, ldo, scratch);
        return;
    }
#endif
    psam_window_attention__generic(qkv, ldq, wn, heads, kd, scale, bias, out, ldo, scratch);
}
