#include "attention_bf16_internal.h"

/* ---- Window attention in bf16 (the int8 models' path where the CPU has AVX-512 BF16 but not FP16) ----
 * q·scale, k, v and the probabilities are rounded to bf16 (to nearest even, subnormals flushed to zero, as
 * vcvtneps2bf16 does); scores and outputs are fp32 sums of products of bf16 pairs, each pair added odd element
 * first, one rounding per product (a product of two bf16 values is exact in fp32), as vdpbf16ps specifies. The
 * sums run in fp32, so only the 8-bit inputs cost accuracy: on LiteMedSAM bf16 attention moves 1 − cosine of the
 * embedding by about 2e-6 (Tests/Reference/int8_sensitivity.py), against the int8 weights' 9e-4; vdpbf16ps does
 * twice the fp32 rate (AMD Zen 4: 117 against 58 GMAC/s per thread). The generic body computes the same
 * roundings in scalar code and is the reference, and what runs where the CPU lacks AVX-512 BF16 (the runtime
 * does not pick this path there). Scratch per call, in floats: psam_window_attention_bf16_scratch(wn, kd). */
size_t psam_window_attention_bf16_scratch(size_t wn, size_t kd) {
    const size_t wp = (wn + 31) & ~(size_t)31, kp = (kd + 1) / 2;
    /* scores (then bf16 probabilities) wn × wp floats; kᵀ pairs kp × wp, q pairs wn × kp, v pairs wp/2 × kd. */
    return wn * wp + kp * wp + wn * kp + wp / 2 * kd;
}


void psam_window_attention_bf16_rows__generic(const float *qkv, size_t ldq, size_t wn, size_t nq, const uint16_t *rows, size_t heads,
                                        size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch) {
    float *s = scratch;
    /* Pairs (2t, 2t + 1): the odd element's product is added first. Products are exact in fp32, so
     * each += rounds once, as the instruction does; volatile keeps the compiler from reassociating. */
    for (size_t hd = 0; hd < heads; hd++) {
        const float *q = qkv + hd * 3 * kd, *kk = q + kd, *v = q + 2 * kd;
        for (size_t qi = 0; qi < nq; qi++) {
            const size_t i = rows ? rows[qi] : qi;
            float mx = -INFINITY;
            for (size_t j = 0; j < wn; j++) {
                volatile float acc = 0.0f;
                for (size_t d = 0; d < kd; d += 2) {
                    if (d + 1 < kd) acc = acc + bf16_value(q[i * ldq + d + 1] * scale) * bf16_value(kk[j * ldq + d + 1]);
                    acc = acc + bf16_value(q[i * ldq + d] * scale) * bf16_value(kk[j * ldq + d]);
                }
                s[j] = acc + (bias ? bias[(hd * wn + i) * wn + j] : 0.0f);
                mx = s[j] > mx ? s[j] : mx;
            }
            float sum = 0.0f;
            for (size_t j = 0; j < wn; j++) { s[j] = expf(s[j] - mx); sum += s[j]; }
            const float inv = 1.0f / sum;
            for (size_t j = 0; j < wn; j++) s[j] = bf16_value(s[j] * inv);
            float *o = out + i * ldo + hd * kd;
            for (size_t d = 0; d < kd; d++) {
                volatile float acc = 0.0f;
                for (size_t j = 0; j < wn; j += 2) {
                    if (j + 1 < wn) acc = acc + s[j + 1] * bf16_value(v[(j + 1) * ldq + d]);
                    acc = acc + s[j] * bf16_value(v[j * ldq + d]);
                }
                o[d] = acc;
            }
        }
    }
}

/* The whole window (the kernel test's reference; the library calls the _rows forms). */
void psam_window_attention_bf16__generic(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd,
                                                           float scale, const float *bias, float *out, size_t ldo,
                                                           float *scratch) {
    psam_window_attention_bf16_rows__generic(qkv, ldq, wn, wn, NULL, heads, kd, scale, bias, out, ldo, scratch);
}

#if defined(__x86_64__)

/* kd a multiple of 32; queries rows[0 .. nq) of the wn (rows NULL: [0, nq); keys: all wn). Per head: q·scale, k and
 * v to bf16, the scores (+ bias), softmax per row, the weighted values (attention_bf16_internal.h). */
PSAM_AVX512BF16 void psam_window_attention_bf16_rows__avx512bf16(const float *qkv, size_t ldq, size_t wn, size_t nq, const uint16_t *rows,
                                                       size_t heads, size_t kd, float scale, const float *bias, float *out,
                                                       size_t ldo, float *scratch) {
    const size_t wp = bf16_keys_padded(wn), kp = kd / 2;
    float *s = scratch;
    uint32_t *kt = (uint32_t *)(s + wn * wp), *qp = kt + kp * wp, *vp = qp + wn * kp;
    for (size_t hd = 0; hd < heads; hd++) {
        const float *q = qkv + hd * 3 * kd, *kk = q + kd, *v = q + 2 * kd;
        pack_q_bf16(q, ldq, nq, rows, kd, scale, qp);
        pack_kv_bf16(kk, v, ldq, wn, kd, kt, vp);
        scores_bf16(qp, kt, nq, wn, kd, bias ? bias + hd * wn * wn : NULL, rows, 0, s);
        softmax_bf16(s, nq, wn);
        values_bf16(s, vp, nq, wn, kd, rows, 0, out + hd * kd, ldo);
    }
}

/* The whole window (the kernel test's vector variant). */
PSAM_AVX512BF16 void psam_window_attention_bf16__avx512bf16(const float *qkv, size_t ldq, size_t wn, size_t heads,
                                                                         size_t kd, float scale, const float *bias, float *out,
                                                                         size_t ldo, float *scratch) {
    psam_window_attention_bf16_rows__avx512bf16(qkv, ldq, wn, wn, NULL, heads, kd, scale, bias, out, ldo, scratch);
}
#endif

int psam_window_attention_bf16_fast(size_t kd) {
#if defined(__x86_64__)
    return kd > 0 && kd % 32 == 0 && has_avx512bf16();
#else
    (void)kd;
    return 0;
#endif
}

void psam_window_attention_bf16_rows(const float *qkv, size_t ldq, size_t wn, size_t nq, const uint16_t *rows, size_t heads,
                                     size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch) {
    if (nq > wn) nq = wn;
#if defined(__x86_64__)
    if (psam_window_attention_bf16_fast(kd)) {
        psam_window_attention_bf16_rows__avx512bf16(qkv, ldq, wn, nq, rows, heads, kd, scale, bias, out, ldo, scratch);
        return;
    }
#endif
    psam_window_attention_bf16_rows__generic(qkv, ldq, wn, nq, rows, heads, kd, scale, bias, out, ldo, scratch);
}

void psam_window_attention_bf16(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
                                const float *bias, float *out, size_t ldo, float *scratch) {
    psam_window_attention_bf16_rows(qkv, ldq, wn, wn, NULL, heads, kd, scale, bias, out, ldo, scratch);
}
