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
    psam_attention_few_keys__generic(q, ldq, k, ldk, v, ldv, nk, heads, d, scale, out, ldo, r0, r1);
}
