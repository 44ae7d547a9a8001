#include "rowops_internal.h"

/* ---- Window attention in fp16 (the int8 models' path) ----
 * q·scale, k, v and the probabilities are rounded to fp16; each score is one chain of fp16 fused multiply-adds
 * over kd, then fp32 (+ bias, softmax); each output sums, in fp32, chains of fp16 multiply-adds over 16 keys
 * at a time (one chain over all of a 196-token window's keys would lose ~2e-5 of the embedding's cosine on
 * LiteMedSAM; chains of 16 lose 3e-7). With AVX-512 FP16, or ARMv8.2 FP16 arithmetic on aarch64, that is twice
 * the fp32 rate. The generic body emulates the same rounding with _Float16 (a product of fp16 values plus an fp16
 * value is exact in double, so one rounding from double to fp16 is the fused multiply-add's) and is the
 * reference, and what runs where the CPU lacks both (the runtime does not pick this path there). The vector
 * bodies' scores and chains are the generic's bit for bit; only their softmax's exp (a polynomial, not expf)
 * and order of summation differ. Scratch per call, in floats:
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

#if defined(__aarch64__)
/* ARMv8.2 half-precision arithmetic (FEAT_FP16: Cortex-A55/A75/A76/A78, Neoverse N1, Apple, Graviton 2+; not
 * A53/A72), checked at run time by psam_cpu_neon_fp16(). FMLA on .8h rounds once, like the generic's emulation. */
#define PSAM_NEONFP16 __attribute__((target("arch=armv8.2-a+fp16")))
/* The tiles' accumulators stay in registers only if their loops are unrolled (GCC does not by itself). */
#define PSAM_UNROLL _Pragma("GCC unroll 16")

/* acc += b · lane l (a literal) of a, by FMLA by element. GCC 12 shares one DUP among the FMLAs of a lane, an
 * extra instruction per two FMLAs; the asm keeps the by-element form (a in v0–v15, as its encoding needs). */
#if defined(__clang__)
#define PSAM_FMLA_LANE(acc, b, a, l) ((acc) = vfmaq_laneq_f16((acc), (b), (a), l))
#else
#define PSAM_FMLA_LANE(acc, b, a, l) __asm__("fmla %0.8h, %1.8h, %2.h[" #l "]" : "+w"(acc) : "w"(b), "x"(a))
#endif
#define PSAM_FMA_LANES(acc, a, b, R, NC, l)    \
    PSAM_UNROLL for (int r_ = 0; r_ < (R); r_++) \
        PSAM_UNROLL for (int c_ = 0; c_ < (NC); c_++) PSAM_FMLA_LANE(acc[r_][c_], b[c_], a[r_], l);

/* 8 floats (times scale) → 8 fp16, to nearest even. */
static inline PSAM_NEONFP16 __attribute__((always_inline)) float16x8_t fp16x8(const float *x, float32x4_t scale) {
    return vcvt_high_f16_f32(vcvt_f16_f32(vmulq_f32(vld1q_f32(x), scale)), vmulq_f32(vld1q_f32(x + 4), scale));
}

/* Scores of R queries (rows i0… of fp16 q[i][kd]) against keys [j, j + 8·NC) (fp16 kᵀ[kd][wp]): per key one fp16
 * chain over kd in order (d = 0, 1, …, as the generic), widened to fp32 into s[r][wp] (the softmax adds the bias). */
static inline PSAM_NEONFP16 __attribute__((always_inline)) void
scores_tile_neonfp16(const float16_t *qh, const float16_t *kt, size_t wp, size_t kd, size_t i0, size_t j, const int R,
                     const int NC, float *s) {
    float16x8_t acc[8][2];
    PSAM_UNROLL for (int r = 0; r < R; r++) PSAM_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = vdupq_n_f16(0);
    for (size_t d = 0; d < kd; d += 8) {
        float16x8_t qv[8], kv[2];
        PSAM_UNROLL for (int r = 0; r < R; r++) qv[r] = vld1q_f16(qh + (i0 + (size_t)r) * kd + d);
        const float16_t *kp = kt + d * wp + j;
#define PSAM_SCORE_STEP(l)                                                                       \
        PSAM_UNROLL for (int c = 0; c < NC; c++) kv[c] = vld1q_f16(kp + (l) * wp + 8 * (size_t)c); \
        PSAM_FMA_LANES(acc, qv, kv, R, NC, l)
        PSAM_SCORE_STEP(0) PSAM_SCORE_STEP(1) PSAM_SCORE_STEP(2) PSAM_SCORE_STEP(3)
        PSAM_SCORE_STEP(4) PSAM_SCORE_STEP(5) PSAM_SCORE_STEP(6) PSAM_SCORE_STEP(7)
#undef PSAM_SCORE_STEP
    }
    PSAM_UNROLL for (int r = 0; r < R; r++)
        PSAM_UNROLL for (int c = 0; c < NC; c++) {
            float *o = s + (size_t)r * wp + j + 8 * (size_t)c;
            vst1q_f32(o, vcvt_f32_f16(vget_low_f16(acc[r][c])));
            vst1q_f32(o + 4, vcvt_high_f32_f16(acc[r][c]));
        }
}

/* Output columns [d, d + 8·NC) of R queries (fp16 probabilities p[r][·], row stride lp halves; fp16 v[j][kd], zero
 * past the window) into out[r][·]: an fp16 chain over each 16 keys in order, the chains summed in fp32 in order. */
static inline PSAM_NEONFP16 __attribute__((always_inline)) void
values_tile_neonfp16(const float16_t *p, size_t lp, const float16_t *vh, size_t kd, size_t nk, size_t d, const int R,
                     const int NC, float *out, size_t ldo) {
    for (size_t j0 = 0; j0 < nk; j0 += PSAM_FP16_CHUNK) {
        float16x8_t acc[8][2];
        PSAM_UNROLL for (int r = 0; r < R; r++) PSAM_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = vdupq_n_f16(0);
        for (size_t jb = j0; jb < j0 + PSAM_FP16_CHUNK; jb += 8) {
            float16x8_t pv[8], vv[2];
            PSAM_UNROLL for (int r = 0; r < R; r++) pv[r] = vld1q_f16(p + (size_t)r * lp + jb);
            const float16_t *vp = vh + jb * kd + d;
#define PSAM_VALUE_STEP(l)                                                                       \
            PSAM_UNROLL for (int c = 0; c < NC; c++) vv[c] = vld1q_f16(vp + (l) * kd + 8 * (size_t)c); \
            PSAM_FMA_LANES(acc, pv, vv, R, NC, l)
            PSAM_VALUE_STEP(0) PSAM_VALUE_STEP(1) PSAM_VALUE_STEP(2) PSAM_VALUE_STEP(3)
            PSAM_VALUE_STEP(4) PSAM_VALUE_STEP(5) PSAM_VALUE_STEP(6) PSAM_VALUE_STEP(7)
#undef PSAM_VALUE_STEP
        }
        PSAM_UNROLL for (int r = 0; r < R; r++)
            PSAM_UNROLL for (int c = 0; c < NC; c++) {
                float *o = out + (size_t)r * ldo + d + 8 * (size_t)c;
                float32x4_t lo = vcvt_f32_f16(vget_low_f16(acc[r][c])), hi = vcvt_high_f32_f16(acc[r][c]);
                if (j0) { /* total += chain (the first is stored as is: a chain from +0 is never −0) */
                    lo = vaddq_f32(vld1q_f32(o), lo);
                    hi = vaddq_f32(vld1q_f32(o + 4), hi);
                }
                vst1q_f32(o, lo);
                vst1q_f32(o + 4, hi);
            }
    }
}

/* Each tile shape its own function, so that its loop has the registers to itself. GCC 12's scheduler before
 * register allocation would hoist all 16 k (v) loads of a step ahead of the FMLAs and spill; not scheduling there
 * keeps the source order, which needs 26 registers. */
#if defined(__clang__)
#define PSAM_TILE_FN static PSAM_NEONFP16 __attribute__((noinline))
#else
#define PSAM_TILE_FN static PSAM_NEONFP16 __attribute__((noinline, optimize("no-schedule-insns")))
#endif
typedef void (*scores_fn_neonfp16)(const float16_t *, const float16_t *, size_t, size_t, size_t, size_t, float *);
typedef void (*values_fn_neonfp16)(const float16_t *, size_t, const float16_t *, size_t, size_t, size_t, float *, size_t);
#define PSAM_TILES_NEONFP16(R, NC)                                                                                  \
    PSAM_TILE_FN void scores_##R##x##NC(const float16_t *qh, const float16_t *kt, size_t wp, size_t kd, size_t i0,   \
                                        size_t j, float *s) {                                                        \
        scores_tile_neonfp16(qh, kt, wp, kd, i0, j, R, NC, s);                                                       \
    }                                                                                                                \
    PSAM_TILE_FN void values_##R##x##NC(const float16_t *p, size_t lp, const float16_t *vh, size_t kd, size_t nk,    \
                                        size_t d, float *out, size_t ldo) {                                          \
        values_tile_neonfp16(p, lp, vh, kd, nk, d, R, NC, out, ldo);                                                 \
    }
PSAM_TILES_NEONFP16(8, 2)
PSAM_TILES_NEONFP16(8, 1)
PSAM_TILES_NEONFP16(7, 2)
PSAM_TILES_NEONFP16(7, 1)
PSAM_TILES_NEONFP16(4, 2)
PSAM_TILES_NEONFP16(4, 1)
PSAM_TILES_NEONFP16(2, 2)
PSAM_TILES_NEONFP16(2, 1)
PSAM_TILES_NEONFP16(1, 2)
PSAM_TILES_NEONFP16(1, 1)

/* Softmax of a row's wn scores s[0, nk8) (+ bias b, may be NULL), in fp32: the fp16 probabilities, zero past wn,
 * overwrite the row's start as halves [0, nk) (each 8 floats are read before their 4 floats' worth of halves are
 * written at or before them). */
static PSAM_NEONFP16 void softmax_row_neonfp16(float *s, const float *b, size_t wn, size_t nk8, size_t nk) {
    const uint32x4_t iota = {0, 1, 2, 3}, n = vdupq_n_u32((uint32_t)wn), four = vdupq_n_u32(4);
    const float32x4_t ninf = vdupq_n_f32(-INFINITY), zero = vdupq_n_f32(0.0f);
    float32x4_t m0 = ninf, m1 = ninf;
    for (size_t j = 0; j < nk8; j += 8) {
        float32x4_t t0 = vld1q_f32(s + j), t1 = vld1q_f32(s + j + 4);
        if (j + 8 <= wn) {
            if (b) {
                t0 = vaddq_f32(t0, vld1q_f32(b + j));
                t1 = vaddq_f32(t1, vld1q_f32(b + j + 4));
            }
        } else { /* the last 8: keys ≥ wn to −∞ (their bias is not read) */
            const size_t left = wn - j;
            if (b) {
                t0 = vaddq_f32(t0, psam_load_tail4(b + j, left < 4 ? left : 4));
                t1 = vaddq_f32(t1, psam_load_tail4(b + j + 4, left > 4 ? left - 4 : 0));
            }
            const uint32x4_t l0 = vaddq_u32(iota, vdupq_n_u32((uint32_t)j));
            t0 = vbslq_f32(vcltq_u32(l0, n), t0, ninf);
            t1 = vbslq_f32(vcltq_u32(vaddq_u32(l0, four), n), t1, ninf);
        }
        vst1q_f32(s + j, t0);
        vst1q_f32(s + j + 4, t1);
        m0 = vmaxq_f32(m0, t0);
        m1 = vmaxq_f32(m1, t1);
    }
    const float32x4_t mx = vdupq_n_f32(vmaxvq_f32(vmaxq_f32(m0, m1)));
    float32x4_t sum0 = zero, sum1 = zero;
    for (size_t j = 0; j < nk8; j += 8) {
        /* Keys ≥ wn: exp(−∞ − mx) is clamped to at most 2^-148, which neither moves the sum (≥ 1) nor survives
         * the rounding to fp16. */
        const float32x4_t e0 = psam_exp_neon(vsubq_f32(vld1q_f32(s + j), mx));
        const float32x4_t e1 = psam_exp_neon(vsubq_f32(vld1q_f32(s + j + 4), mx));
        vst1q_f32(s + j, e0);
        vst1q_f32(s + j + 4, e1);
        sum0 = vaddq_f32(sum0, e0);
        sum1 = vaddq_f32(sum1, e1);
    }
    for (size_t j = nk8; j < nk; j += 4) vst1q_f32(s + j, zero);
    const float32x4_t inv = vdupq_n_f32(1.0f / vaddvq_f32(vaddq_f32(sum0, sum1)));
    float16_t *p = (float16_t *)s;
    for (size_t j = 0; j < nk; j += 8) vst1q_f16(p + j, fp16x8(s + j, inv));
}

/* R queries from i0: their scores against all keys (tiles of 16 keys, then 8), softmax, outputs (tiles of 16
 * columns, then 8). */
static PSAM_NEONFP16 void query_block_neonfp16(const float16_t *qh, const float16_t *kt, const float16_t *vh, size_t wn,
                                               size_t wp, size_t nk8, size_t nk, size_t kd, size_t i0, size_t R,
                                               scores_fn_neonfp16 s2, scores_fn_neonfp16 s1, values_fn_neonfp16 v2,
                                               values_fn_neonfp16 v1, const float *bias, float *s, float *out, size_t ldo) {
    size_t j = 0;
    for (; j + 16 <= nk8; j += 16) s2(qh, kt, wp, kd, i0, j, s);
    if (j < nk8) s1(qh, kt, wp, kd, i0, j, s);
    for (size_t r = 0; r < R; r++) softmax_row_neonfp16(s + r * wp, bias ? bias + (i0 + r) * wn : NULL, wn, nk8, nk);
    const float16_t *p = (const float16_t *)s;
    size_t d = 0;
    for (; d + 16 <= kd; d += 16) v2(p, 2 * wp, vh, kd, nk, d, out + i0 * ldo, ldo);
    if (d < kd) v1(p, 2 * wp, vh, kd, nk, d, out + i0 * ldo, ldo);
}

/* kd a multiple of 8. Per head: q·scale and v to fp16, k to fp16 kᵀ (8 × 8 transposes); then per block of 8 (or
 * 7) queries: score tiles of 8 queries × 16 keys (16 accumulators; q's lanes broadcast by FMLA by element), the
 * block's softmax (psam_exp_neon, as the AVX-512 body's polynomial; see rowops_test.c for the bound), value tiles
 * of 8 queries × 16 columns. A block's scores (8 × wp floats) stay in L1. */
PSAM_NEONFP16 void psam_window_attention_fp16__neonfp16(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd,
                                                        float scale, const float *bias, float *out, size_t ldo,
                                                        float *scratch) {
    const size_t wp = (wn + 31) & ~(size_t)31, nk = (wn + PSAM_FP16_CHUNK - 1) & ~(size_t)(PSAM_FP16_CHUNK - 1);
    const size_t nk8 = (wn + 7) & ~(size_t)7;
    float *s = scratch;
    float16_t *kt = (float16_t *)(s + wn * wp), *qh = kt + kd * wp, *vh = qh + wn * kd;
    const float32x4_t vs = vdupq_n_f32(scale), one = vdupq_n_f32(1.0f);
    for (size_t hd = 0; hd < heads; hd++) {
        const float *q = qkv + hd * 3 * kd, *kk = q + kd, *v = q + 2 * kd;
        const float *bh = bias ? bias + hd * wn * wn : NULL;
        for (size_t i = 0; i < wn; i++)
            for (size_t d = 0; d < kd; d += 8) vst1q_f16(qh + i * kd + d, fp16x8(q + i * ldq + d, vs));
        for (size_t j = 0; j < nk; j++)
            for (size_t d = 0; d < kd; d += 8)
                vst1q_f16(vh + j * kd + d, j < wn ? fp16x8(v + j * ldq + d, one) : vdupq_n_f16(0));
        /* kᵀ: blocks of 8 keys (zero past wn) × 8 columns, transposed by 16-, 32- then 64-bit element pairs. */
        for (size_t j = 0; j < nk8; j += 8)
            for (size_t d = 0; d < kd; d += 8) {
                uint16x8_t r[8], t[8], u[8];
                PSAM_UNROLL for (size_t x = 0; x < 8; x++)
                    r[x] = vreinterpretq_u16_f16(j + x < wn ? fp16x8(kk + (j + x) * ldq + d, one) : vdupq_n_f16(0));
                PSAM_UNROLL for (int x = 0; x < 8; x += 2) {
                    t[x] = vtrn1q_u16(r[x], r[x + 1]);
                    t[x + 1] = vtrn2q_u16(r[x], r[x + 1]);
                }
                PSAM_UNROLL for (int x = 0; x < 8; x += 4)
                    PSAM_UNROLL for (int y = 0; y < 2; y++) {
                        const uint32x4_t a = vreinterpretq_u32_u16(t[x + y]), c = vreinterpretq_u32_u16(t[x + y + 2]);
                        u[x + y] = vreinterpretq_u16_u32(vtrn1q_u32(a, c));
                        u[x + y + 2] = vreinterpretq_u16_u32(vtrn2q_u32(a, c));
                    }
                PSAM_UNROLL for (int x = 0; x < 4; x++) {
                    const uint64x2_t a = vreinterpretq_u64_u16(u[x]), c = vreinterpretq_u64_u16(u[x + 4]);
                    vst1q_f16(kt + (d + (size_t)x) * wp + j, vreinterpretq_f16_u64(vtrn1q_u64(a, c)));
                    vst1q_f16(kt + (d + (size_t)x + 4) * wp + j, vreinterpretq_f16_u64(vtrn2q_u64(a, c)));
                }
            }
        /* Blocks of 8 queries, or of 7 where that divides wn and 8 does not (TinyViT's 49 and 196): the few rows
         * left over run in narrow tiles whose chains wait on the FMLA latency. */
        float *o = out + hd * kd;
        size_t i = 0;
#define PSAM_BLOCK(R)                                                                                             \
    query_block_neonfp16(qh, kt, vh, wn, wp, nk8, nk, kd, i, R, scores_##R##x2, scores_##R##x1, values_##R##x2, \
                         values_##R##x1, bh, s, o, ldo)
        if (wn % 8 != 0 && wn % 7 == 0)
            for (; i < wn; i += 7) PSAM_BLOCK(7);
        for (; i + 8 <= wn; i += 8) PSAM_BLOCK(8);
        if (i + 4 <= wn) PSAM_BLOCK(4), i += 4;
        if (i + 2 <= wn) PSAM_BLOCK(2), i += 2;
        if (i < wn) PSAM_BLOCK(1);
#undef PSAM_BLOCK
    }
}
#endif

int psam_window_attention_fp16_fast(size_t kd) {
#if defined(__x86_64__)
    return kd > 0 && kd % 32 == 0 && has_avx512fp16();
#elif defined(__aarch64__)
    return kd > 0 && kd % 8 == 0 && psam_cpu_neon_fp16() && !psam_portable_kernels();
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
#elif defined(__aarch64__)
    if (psam_window_attention_fp16_fast(kd)) {
        psam_window_attention_fp16__neonfp16(qkv, ldq, wn, heads, kd, scale, bias, out, ldo, scratch);
        return;
    }
#endif
    psam_window_attention_fp16__generic(qkv, ldq, wn, heads, kd, scale, bias, out, ldo, scratch);
}
