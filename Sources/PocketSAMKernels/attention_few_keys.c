#include "rowops_internal.h"

/* Attention with few keys (SAM's image→token attention: thousands of queries, a handful of tokens).
 * Rows r0..r1 of q[nq][ldq]; per head h (columns h·d of q, k, v and out): scores over the nk ≤ 64
 * keys k[nk][ldk] scaled by `scale`, softmax, weighted sum of v[nk][ldv] into out[row][ldo]. */
void psam_attention_few_keys__generic(const float *q, size_t ldq, const float *k, size_t ldk, const float *v, size_t ldv,
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
                s[j] = exp_generic(s[j] - mx);
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

/* kᵀ ([d][nk rounded up to 8], zero-padded) of as many heads as fit is built once per call. Queries go in
 * groups of 8: scores as 8 queries × 8 keys tiles (as in window attention), transposed so that one vector
 * holds one key's scores for the 8 queries; the softmax over keys then needs no horizontal reductions.
 * Leftover queries go one at a time (row softmax). Values: 8 queries × 8 columns tiles. */
PSAM_AVX2FMA void psam_attention_few_keys__avx2(const float *q, size_t ldq, const float *k, size_t ldk, const float *v, size_t ldv,
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
                psam_softmax__avx2(p, 1, nk, nkp);
                for (size_t t = 0; t < d; t += 8) values_tile_avx2(p, 0, 1, nk, v + h * d, ldv, d, 0, t, 1, out + r * ldo + h * d, ldo);
            }
    }
}
#endif

#if defined(__aarch64__)
/* GCC at -O2 does not unroll these small loops by itself, and the tiles' arrays then live on the stack. */
#define PSAM_UNROLL _Pragma("GCC unroll 8")

/* Scores of 4 queries (rows qr[0…3], head offset applied) against keys [j, j + 4V) of kt[d][nkp], scaled, stored
 * transposed: p[key][query], one vector per key. */
static inline __attribute__((always_inline)) void
fk_scores_tile_neon(const float *const qr[4], const float *kt, size_t nkp, size_t d, size_t j, const int V, float32x4_t vs,
                    float *p) {
    float32x4_t acc[2][4], x[4], y[4][2];
    PSAM_UNROLL for (int v = 0; v < V; v++)
        PSAM_UNROLL for (int i = 0; i < 4; i++) acc[v][i] = vdupq_n_f32(0.0f);
    const float *kj = kt + j;
    size_t t = 0;
    for (; t + 4 <= d; t += 4) {
        PSAM_UNROLL for (int i = 0; i < 4; i++) x[i] = vld1q_f32(qr[i] + t);
        PSAM_UNROLL for (int l = 0; l < 4; l++)
            PSAM_UNROLL for (int v = 0; v < V; v++) y[l][v] = vld1q_f32(kj + (t + l) * nkp + 4 * v);
#define PSAM_FK_LANE(L)                                                                                                \
    PSAM_UNROLL for (int v = 0; v < V; v++)                                                                            \
        PSAM_UNROLL for (int i = 0; i < 4; i++) acc[v][i] = vfmaq_laneq_f32(acc[v][i], y[L][v], x[i], L)
        PSAM_FK_LANE(0);
        PSAM_FK_LANE(1);
        PSAM_FK_LANE(2);
        PSAM_FK_LANE(3);
#undef PSAM_FK_LANE
    }
    for (; t < d; t++)
        PSAM_UNROLL for (int v = 0; v < V; v++) {
            const float32x4_t kv = vld1q_f32(kj + t * nkp + 4 * v);
            PSAM_UNROLL for (int i = 0; i < 4; i++) acc[v][i] = vfmaq_n_f32(acc[v][i], kv, qr[i][t]);
        }
    PSAM_UNROLL for (int v = 0; v < V; v++) {
        PSAM_UNROLL for (int i = 0; i < 4; i++) acc[v][i] = vmulq_f32(acc[v][i], vs);
        psam_transpose4_neon(acc[v]);
        PSAM_UNROLL for (int c = 0; c < 4; c++) vst1q_f32(p + (j + 4 * (size_t)v + (size_t)c) * 4, acc[v][c]);
    }
}

/* Outputs of 4 queries for columns [t, t + 4V) of a head's d (with V = 1, the first w ≤ 4 through the stack
 * helpers): Σ_j p[j][query]·v_j over the nk keys, times 1/Σ (inv, per query lane); rows past nr not stored. */
static inline __attribute__((always_inline)) void
fk_values_tile_neon(const float *p, size_t nk, const float *v, size_t ldv, float32x4_t inv, const int V, size_t w,
                    float *o, size_t ldo, size_t nr) {
    const int part = V == 1 && w < 4;
    float32x4_t acc[4][4];
    PSAM_UNROLL for (int i = 0; i < 4; i++)
        PSAM_UNROLL for (int c = 0; c < V; c++) acc[i][c] = vdupq_n_f32(0.0f);
    for (size_t j = 0; j < nk; j++) {
        const float32x4_t pj = vld1q_f32(p + 4 * j);
        PSAM_UNROLL for (int c = 0; c < V; c++) {
            const float32x4_t y = part ? psam_load_tail4(v + j * ldv, w) : vld1q_f32(v + j * ldv + 4 * c);
            acc[0][c] = vfmaq_laneq_f32(acc[0][c], y, pj, 0);
            acc[1][c] = vfmaq_laneq_f32(acc[1][c], y, pj, 1);
            acc[2][c] = vfmaq_laneq_f32(acc[2][c], y, pj, 2);
            acc[3][c] = vfmaq_laneq_f32(acc[3][c], y, pj, 3);
        }
    }
    PSAM_UNROLL for (int c = 0; c < V; c++) {
        acc[0][c] = vmulq_laneq_f32(acc[0][c], inv, 0);
        acc[1][c] = vmulq_laneq_f32(acc[1][c], inv, 1);
        acc[2][c] = vmulq_laneq_f32(acc[2][c], inv, 2);
        acc[3][c] = vmulq_laneq_f32(acc[3][c], inv, 3);
    }
    PSAM_UNROLL for (int i = 0; i < 4; i++) {
        if ((size_t)i >= nr) break;
        PSAM_UNROLL for (int c = 0; c < V; c++) {
            if (part) psam_store_tail4(o + (size_t)i * ldo, acc[i][c], w);
            else vst1q_f32(o + (size_t)i * ldo + 4 * c, acc[i][c]);
        }
    }
}

/* As psam_attention_few_keys__avx2, 4 queries at a time: kᵀ ([d][nk rounded up to 4], zero-padded) of as many heads
 * as fit PSAM_FEW_KEYS_KT floats, built once per call; scores as 4 queries × 8 keys tiles, transposed so that one
 * vector holds one key's scores of the 4 queries (the softmax over keys then needs no horizontal reductions);
 * values as 4 queries × 16 columns tiles, the probabilities broadcast by lane, 1/Σ applied at the end. A last group
 * of fewer than 4 queries repeats its last row and stores only its own. The last d mod 4 value columns go in one
 * vector ending at d (recomputing a few columns with the same operations), d < 4 through the stack. When one head's
 * kᵀ does not fit (d · nk > 4096 or so), the generic body. */
void psam_attention_few_keys__neon(const float *q, size_t ldq, const float *k, size_t ldk, const float *v, size_t ldv,
                                   size_t nk, size_t heads, size_t d, float scale, float *out, size_t ldo, size_t r0,
                                   size_t r1) {
    const size_t nkp = (nk + 3) & ~(size_t)3, per = d * nkp;
    if (nk == 0 || nk > 64 || d == 0 || per > PSAM_FEW_KEYS_KT) {
        psam_attention_few_keys__generic(q, ldq, k, ldk, v, ldv, nk, heads, d, scale, out, ldo, r0, r1);
        return;
    }
    float kt[PSAM_FEW_KEYS_KT], p[64 * 4];
    const size_t hg = PSAM_FEW_KEYS_KT / per;
    const float32x4_t vs = vdupq_n_f32(scale);
    for (size_t h0 = 0; h0 < heads; h0 += hg) {
        const size_t h1 = h0 + hg < heads ? h0 + hg : heads;
        for (size_t h = h0; h < h1; h++)
            for (size_t t = 0; t < d; t++)
                for (size_t j = 0; j < nkp; j++) kt[(h - h0) * per + t * nkp + j] = j < nk ? k[j * ldk + h * d + t] : 0.0f;
        for (size_t r = r0; r < r1; r += 4) {
            const size_t nr = r1 - r < 4 ? r1 - r : 4;
            for (size_t h = h0; h < h1; h++) {
                const float *qr[4], *kh = kt + (h - h0) * per, *vh = v + h * d;
                for (size_t i = 0; i < 4; i++) qr[i] = q + (r + (i < nr ? i : nr - 1)) * ldq + h * d;
                size_t j = 0;
                for (; j + 8 <= nkp; j += 8) fk_scores_tile_neon(qr, kh, nkp, d, j, 2, vs, p);
                if (j < nkp) fk_scores_tile_neon(qr, kh, nkp, d, j, 1, vs, p);
                /* Softmax over the nk keys, per query lane; two exp chains. */
                float32x4_t m0 = vld1q_f32(p), m1 = m0;
                for (j = 1; j + 2 <= nk; j += 2) {
                    m0 = vmaxq_f32(m0, vld1q_f32(p + 4 * j));
                    m1 = vmaxq_f32(m1, vld1q_f32(p + 4 * j + 4));
                }
                if (j < nk) m0 = vmaxq_f32(m0, vld1q_f32(p + 4 * j));
                const float32x4_t mx = vmaxq_f32(m0, m1);
                float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0;
                for (j = 0; j + 2 <= nk; j += 2) {
                    const float32x4_t e0 = psam_exp_neon(vsubq_f32(vld1q_f32(p + 4 * j), mx));
                    const float32x4_t e1 = psam_exp_neon(vsubq_f32(vld1q_f32(p + 4 * j + 4), mx));
                    s0 = vaddq_f32(s0, e0), s1 = vaddq_f32(s1, e1);
                    vst1q_f32(p + 4 * j, e0), vst1q_f32(p + 4 * j + 4, e1);
                }
                if (j < nk) {
                    const float32x4_t e = psam_exp_neon(vsubq_f32(vld1q_f32(p + 4 * j), mx));
                    s0 = vaddq_f32(s0, e);
                    vst1q_f32(p + 4 * j, e);
                }
                const float32x4_t inv = vdivq_f32(vdupq_n_f32(1.0f), vaddq_f32(s0, s1));
                float *o = out + r * ldo + h * d;
                size_t t = 0;
                for (; t + 16 <= d; t += 16) fk_values_tile_neon(p, nk, vh + t, ldv, inv, 4, 4, o + t, ldo, nr);
                for (; t + 8 <= d; t += 8) fk_values_tile_neon(p, nk, vh + t, ldv, inv, 2, 4, o + t, ldo, nr);
                for (; t + 4 <= d; t += 4) fk_values_tile_neon(p, nk, vh + t, ldv, inv, 1, 4, o + t, ldo, nr);
                if (t < d) {
                    if (d >= 4) fk_values_tile_neon(p, nk, vh + d - 4, ldv, inv, 1, 4, o + d - 4, ldo, nr);
                    else fk_values_tile_neon(p, nk, vh, ldv, inv, 1, d, o, ldo, nr);
                }
            }
        }
    }
}
#undef PSAM_UNROLL
#endif

void psam_attention_few_keys(const float *q, size_t ldq, const float *k, size_t ldk, const float *v, size_t ldv,
                             size_t nk, size_t heads, size_t d, float scale, float *out, size_t ldo,
                             size_t r0, size_t r1) {
    if (nk > 64) return;
#if defined(__x86_64__)
    if (nk > 0 && d > 0 && d * ((nk + 7) & ~(size_t)7) <= PSAM_FEW_KEYS_KT && has_avx2()) {
        psam_attention_few_keys__avx2(q, ldq, k, ldk, v, ldv, nk, heads, d, scale, out, ldo, r0, r1);
        return;
    }
#endif
#if defined(__aarch64__)
    if (!psam_portable_kernels()) {
        psam_attention_few_keys__neon(q, ldq, k, ldk, v, ldv, nk, heads, d, scale, out, ldo, r0, r1);
        return;
    }
#endif
    psam_attention_few_keys__generic(q, ldq, k, ldk, v, ldv, nk, heads, d, scale, out, ldo, r0, r1);
}
