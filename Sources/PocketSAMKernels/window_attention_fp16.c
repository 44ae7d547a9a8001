#include "rowops_internal.h"

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

void psam_window_attention_fp16__generic(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
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
PSAM_AVX512FP16 void psam_window_attention_fp16__avx512fp16(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd,
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
        psam_window_attention_fp16__avx512fp16(qkv, ldq, wn, heads, kd, scale, bias, out, ldo, scratch);
        return;
    }
#endif
    psam_window_attention_fp16__generic(qkv, ldq, wn, heads, kd, scale, bias, out, ldo, scratch);
}
