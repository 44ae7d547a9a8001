#include "rowops_internal.h"

/* Attention of one window for all heads: qkv[wn][ldq] holds per head h [q | k | v] at columns
 * h·3·kd (kd wide each); scores = q·kᵀ·scale (+ bias[h][wn][wn]), softmax over keys, out[wn][ldo]
 * (head h at columns h·kd) = scores·v. `scratch` holds wn·wn + kd·wn floats. */
void psam_window_attention__generic(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
                              const float *bias, float *out, size_t ldo, float *scratch) {
    /* Each score is summed over d in order, as a dot product would be, but with the keys transposed into scratch the
     * inner loop runs along a row of scores (j), which a compiler vectorises without reordering any sum: the
     * portable kernels (portable.c) run this body, so its speed matters. */
    float *s = scratch, *kt = scratch + wn * wn;
    for (size_t hd = 0; hd < heads; hd++) {
        const float *q = qkv + hd * 3 * kd, *kk = q + kd, *v = q + 2 * kd;
        for (size_t j = 0; j < wn; j++)
            for (size_t d = 0; d < kd; d++) kt[d * wn + j] = kk[j * ldq + d];
        for (size_t i = 0; i < wn; i++) {
            float *si = s + i * wn;
            for (size_t j = 0; j < wn; j++) si[j] = 0.0f;
            for (size_t d = 0; d < kd; d++) {
                const float qd = q[i * ldq + d];
                const float *kd_row = kt + d * wn;
                for (size_t j = 0; j < wn; j++) si[j] += qd * kd_row[j];
            }
            for (size_t j = 0; j < wn; j++) si[j] = si[j] * scale + (bias ? bias[(hd * wn + i) * wn + j] : 0.0f);
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

#if defined(__aarch64__)
/* GCC at -O2 does not unroll these small loops by itself, and the tiles' arrays then live on the stack. */
#define PSAM_UNROLL _Pragma("GCC unroll 8")
/* acc[r][v] += x_r[lane L] · y_v for R rows and V vectors: a by-element FMA (the lane must be a constant). */
#define PSAM_LANE_FMA(L)                                                                                               \
    PSAM_UNROLL for (int r_ = 0; r_ < R; r_++)                                                                         \
        PSAM_UNROLL for (int v_ = 0; v_ < V; v_++) acc[r_][v_] = vfmaq_laneq_f32(acc[r_][v_], y[L][v_], x[r_], L)

/* Scores of R queries (rows i0… of q) against keys [j, j + 4V) (columns of kt[kd][wn]): s = (q·k)·scale (+ bias),
 * R·V independent chains over kd; q read 4 dimensions at a time, each lane then broadcast by the FMA. */
static inline __attribute__((always_inline)) void
wa_scores_tile_neon(const float *q, size_t ldq, const float *kt, size_t wn, size_t kd, size_t i0, size_t j, const int R,
                    const int V, float32x4_t vs, const float *bias, float *s) {
    float32x4_t acc[8][2], x[8], y[4][2];
    PSAM_UNROLL for (int r = 0; r < R; r++)
        PSAM_UNROLL for (int v = 0; v < V; v++) acc[r][v] = vdupq_n_f32(0.0f);
    const float *kj = kt + j;
    size_t d = 0;
    for (; d + 4 <= kd; d += 4) {
        PSAM_UNROLL for (int r = 0; r < R; r++) x[r] = vld1q_f32(q + (i0 + r) * ldq + d);
        PSAM_UNROLL for (int l = 0; l < 4; l++)
            PSAM_UNROLL for (int v = 0; v < V; v++) y[l][v] = vld1q_f32(kj + (d + l) * wn + 4 * v);
        PSAM_LANE_FMA(0);
        PSAM_LANE_FMA(1);
        PSAM_LANE_FMA(2);
        PSAM_LANE_FMA(3);
    }
    for (; d < kd; d++)
        PSAM_UNROLL for (int v = 0; v < V; v++) {
            const float32x4_t kv = vld1q_f32(kj + d * wn + 4 * v);
            PSAM_UNROLL for (int r = 0; r < R; r++) acc[r][v] = vfmaq_n_f32(acc[r][v], kv, q[(i0 + r) * ldq + d]);
        }
    PSAM_UNROLL for (int r = 0; r < R; r++)
        PSAM_UNROLL for (int v = 0; v < V; v++) {
            float32x4_t t = vmulq_f32(acc[r][v], vs);
            if (bias) t = vaddq_f32(t, vld1q_f32(bias + (i0 + r) * wn + j + 4 * v));
            vst1q_f32(s + (i0 + r) * wn + j + 4 * v, t);
        }
}

/* Output of R queries for value columns [d, d + 4V): Σ_j p[i][j]·v_j, R·V independent chains over the wn keys,
 * the probabilities read 4 keys at a time; the last wn mod 4 keys one at a time. */
static inline __attribute__((always_inline)) void
wa_values_tile_neon(const float *s, size_t wn, const float *vv, size_t ldq, size_t i0, size_t d, const int R, const int V,
                    float *out, size_t ldo) {
    float32x4_t acc[8][2], x[8], y[4][2];
    PSAM_UNROLL for (int r = 0; r < R; r++)
        PSAM_UNROLL for (int v = 0; v < V; v++) acc[r][v] = vdupq_n_f32(0.0f);
    const float *vd = vv + d;
    size_t j = 0;
    for (; j + 4 <= wn; j += 4) {
        PSAM_UNROLL for (int r = 0; r < R; r++) x[r] = vld1q_f32(s + (i0 + r) * wn + j);
        PSAM_UNROLL for (int l = 0; l < 4; l++)
            PSAM_UNROLL for (int v = 0; v < V; v++) y[l][v] = vld1q_f32(vd + (j + l) * ldq + 4 * v);
        PSAM_LANE_FMA(0);
        PSAM_LANE_FMA(1);
        PSAM_LANE_FMA(2);
        PSAM_LANE_FMA(3);
    }
    for (; j < wn; j++)
        PSAM_UNROLL for (int v = 0; v < V; v++) {
            const float32x4_t y0 = vld1q_f32(vd + j * ldq + 4 * v);
            PSAM_UNROLL for (int r = 0; r < R; r++) acc[r][v] = vfmaq_n_f32(acc[r][v], y0, s[(i0 + r) * wn + j]);
        }
    PSAM_UNROLL for (int r = 0; r < R; r++)
        PSAM_UNROLL for (int v = 0; v < V; v++) vst1q_f32(out + (i0 + r) * ldo + d + 4 * v, acc[r][v]);
}
#undef PSAM_LANE_FMA

/* kt[c][j] = x[j·ldx + c] for j < n, c < w: 4 × 4 blocks through registers, scalar edges. */
static void transpose_rows_neon(const float *x, size_t ldx, size_t n, size_t w, float *t, size_t ldt) {
    size_t j = 0;
    for (; j + 4 <= n; j += 4) {
        size_t c = 0;
        for (; c + 4 <= w; c += 4) {
            float32x4_t r[4];
            PSAM_UNROLL for (int i = 0; i < 4; i++) r[i] = vld1q_f32(x + (j + (size_t)i) * ldx + c);
            psam_transpose4_neon(r);
            PSAM_UNROLL for (int i = 0; i < 4; i++) vst1q_f32(t + (c + (size_t)i) * ldt + j, r[i]);
        }
        for (; c < w; c++)
            for (size_t i = j; i < j + 4; i++) t[c * ldt + i] = x[i * ldx + c];
    }
    for (; j < n; j++)
        for (size_t c = 0; c < w; c++) t[c * ldt + j] = x[j * ldx + c];
}

/* Score tiles of all queries against keys [j, j + 4V): 8 queries at a time, then 4, then one. */
static inline __attribute__((always_inline)) void
wa_scores_cols_neon(const float *q, size_t ldq, const float *kt, size_t wn, size_t kd, size_t j, const int V, float32x4_t vs,
                    const float *bias, float *s) {
    size_t i = 0;
    for (; i + 8 <= wn; i += 8) wa_scores_tile_neon(q, ldq, kt, wn, kd, i, j, 8, V, vs, bias, s);
    for (; i + 4 <= wn; i += 4) wa_scores_tile_neon(q, ldq, kt, wn, kd, i, j, 4, V, vs, bias, s);
    for (; i < wn; i++) wa_scores_tile_neon(q, ldq, kt, wn, kd, i, j, 1, V, vs, bias, s);
}

static inline __attribute__((always_inline)) void
wa_values_cols_neon(const float *s, size_t wn, const float *v, size_t ldq, size_t d, const int V, float *o, size_t ldo) {
    size_t i = 0;
    for (; i + 8 <= wn; i += 8) wa_values_tile_neon(s, wn, v, ldq, i, d, 8, V, o, ldo);
    for (; i + 4 <= wn; i += 4) wa_values_tile_neon(s, wn, v, ldq, i, d, 4, V, o, ldo);
    for (; i < wn; i++) wa_values_tile_neon(s, wn, v, ldq, i, d, 1, V, o, ldo);
}

/* As psam_window_attention__avx2, with 8 queries × 8 keys score tiles and 8 queries × 8 columns value tiles (16
 * accumulators, 8 vectors of q or p, 2 of k or v: 26 of the 32 registers). Keys (and value columns) past the
 * last multiple of 8 go 4 at a time and, for the last wn mod 4 (kd mod 4), in one vector ending at wn (kd):
 * it recomputes a few scores (outputs) with the same operations, so they are stored twice with the same values
 * and nothing is read past kᵀ (v). Windows of fewer than 4 tokens or kd < 4 (no such model) go to the generic
 * body. */
void psam_window_attention__neon(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
                                 const float *bias, float *out, size_t ldo, float *scratch) {
    if (wn < 4 || kd < 4) {
        psam_window_attention__generic(qkv, ldq, wn, heads, kd, scale, bias, out, ldo, scratch);
        return;
    }
    float *s = scratch, *kt = scratch + wn * wn;
    const float32x4_t vs = vdupq_n_f32(scale);
    for (size_t hd = 0; hd < heads; hd++) {
        const float *q = qkv + hd * 3 * kd, *kk = q + kd, *v = q + 2 * kd;
        const float *bh = bias ? bias + hd * wn * wn : NULL;
        transpose_rows_neon(kk, ldq, wn, kd, kt, wn);
        size_t j = 0;
        for (; j + 8 <= wn; j += 8) wa_scores_cols_neon(q, ldq, kt, wn, kd, j, 2, vs, bh, s);
        for (; j + 4 <= wn; j += 4) wa_scores_cols_neon(q, ldq, kt, wn, kd, j, 1, vs, bh, s);
        if (j < wn) wa_scores_cols_neon(q, ldq, kt, wn, kd, wn - 4, 1, vs, bh, s);
        psam_softmax__neon(s, wn, wn, wn);
        float *o = out + hd * kd;
        size_t d = 0;
        for (; d + 8 <= kd; d += 8) wa_values_cols_neon(s, wn, v, ldq, d, 2, o, ldo);
        for (; d + 4 <= kd; d += 4) wa_values_cols_neon(s, wn, v, ldq, d, 1, o, ldo);
        if (d < kd) wa_values_cols_neon(s, wn, v, ldq, kd - 4, 1, o, ldo);
    }
}
#undef PSAM_UNROLL
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
#if defined(__aarch64__)
    if (!psam_portable_kernels()) {
        psam_window_attention__neon(qkv, ldq, wn, heads, kd, scale, bias, out, ldo, scratch);
        return;
    }
#endif
    psam_window_attention__generic(qkv, ldq, wn, heads, kd, scale, bias, out, ldo, scratch);
}
