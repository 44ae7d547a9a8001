#include "attention_bf16_internal.h"

/* ---- SAM ViT attention in bf16 (int8 models where the CPU has AVX-512 BF16) ----
 * One head: queries q0 .. q0 + nq − 1 of a side × side grid against all side² keys, with SAM's decomposed relative
 * positions. The keys and values are packed once per head (psam_vit_attention_bf16_pack) and shared by every query
 * block of it; a call packs its queries (q·scale to bf16), computes the scores as the window kernel does, adds the
 * relative terms th, tw ([nq][2·side − 1], fp32 products of the unscaled queries, made by the caller) exactly as
 * psam_relpos_add does, then softmax, bf16 probabilities and the weighted values. The rounding is the window
 * kernel's (attention_bf16_internal.h); the generic body emulates it in scalar code and is the tests' reference. */

size_t psam_vit_attention_bf16_packed_floats(size_t side, size_t kd) {
    const size_t wp = bf16_keys_padded(side * side);
    return kd / 2 * wp + wp / 2 * kd;
}

size_t psam_vit_attention_bf16_scratch(size_t nq, size_t side, size_t kd) {
    return nq * bf16_keys_padded(side * side) + nq * (kd / 2);
}

/* Generic: the packed form is the bf16 bits in rows (k then v, [nk][kd] halves each), no larger than the vector one. */
void psam_vit_attention_bf16_pack__generic(const float *k, const float *v, size_t ld, size_t nk, size_t kd, float *packed) {
    uint16_t *kb = (uint16_t *)packed, *vb = kb + nk * kd;
    for (size_t j = 0; j < nk; j++)
        for (size_t d = 0; d < kd; d++) {
            kb[j * kd + d] = bf16_bits(k[j * ld + d]);
            vb[j * kd + d] = bf16_bits(v[j * ld + d]);
        }
}

void psam_vit_attention_bf16__generic(const float *q, size_t ldq, size_t nq, size_t q0, size_t side, const float *packed,
                                      size_t kd, float scale, const float *th, const float *tw, float *out, size_t ldo,
                                      float *scratch) {
    const size_t nk = side * side, r = 2 * side - 1;
    const uint16_t *kb = (const uint16_t *)packed, *vb = kb + nk * kd;
    float *s = scratch;
    for (size_t i = 0; i < nq; i++) {
        const float *qi = q + i * ldq;
        /* Pairs (2t, 2t + 1): the odd element's product is added first; products are exact in fp32, so each +=
         * rounds once, as the instruction does; volatile keeps the compiler from reassociating. */
        for (size_t j = 0; j < nk; j++) {
            volatile float acc = 0.0f;
            for (size_t d = 0; d < kd; d += 2) {
                if (d + 1 < kd) acc = acc + bf16_value(qi[d + 1] * scale) * bf16_float(kb[j * kd + d + 1]);
                acc = acc + bf16_value(qi[d] * scale) * bf16_float(kb[j * kd + d]);
            }
            s[j] = acc;
        }
        psam_relpos_add(s, nk, 1, q0 + i, side, th + i * r, tw + i * r, r);
        float mx = -INFINITY;
        for (size_t j = 0; j < nk; j++) mx = s[j] > mx ? s[j] : mx;
        float sum = 0.0f;
        for (size_t j = 0; j < nk; j++) {
            s[j] = expf(s[j] - mx);
            sum += s[j];
        }
        const float inv = 1.0f / sum;
        for (size_t j = 0; j < nk; j++) s[j] = bf16_value(s[j] * inv);
        for (size_t d = 0; d < kd; d++) {
            volatile float acc = 0.0f;
            for (size_t j = 0; j < nk; j += 2) {
                if (j + 1 < nk) acc = acc + s[j + 1] * bf16_float(vb[(j + 1) * kd + d]);
                acc = acc + s[j] * bf16_float(vb[j * kd + d]);
            }
            out[i * ldo + d] = acc;
        }
    }
}

#if defined(__x86_64__)
PSAM_AVX512BF16 static void pack_avx512bf16(const float *k, const float *v, size_t ld, size_t nk, size_t kd, float *packed) {
    uint32_t *kt = (uint32_t *)packed;
    pack_kv_bf16(k, v, ld, nk, kd, kt, kt + kd / 2 * bf16_keys_padded(nk));
}

PSAM_AVX512BF16 void psam_vit_attention_bf16__avx512bf16(const float *q, size_t ldq, size_t nq, size_t q0, size_t side,
                                                         const float *packed, size_t kd, float scale, const float *th,
                                                         const float *tw, float *out, size_t ldo, float *scratch) {
    const size_t nk = side * side, wp = bf16_keys_padded(nk);
    const uint32_t *kt = (const uint32_t *)packed, *vp = kt + kd / 2 * wp;
    float *s = scratch;
    uint32_t *qp = (uint32_t *)(s + nq * wp);
    pack_q_bf16(q, ldq, nq, NULL, kd, scale, qp);
    scores_bf16(qp, kt, nq, nk, kd, NULL, NULL, kd % 64 == 0, s);
    psam_relpos_add(s, wp, nq, q0, side, th, tw, 2 * side - 1);
    softmax_bf16(s, nq, nk);
    values_bf16(s, vp, nq, nk, kd, NULL, kd % 64 == 0, out, ldo);
}
#endif

int psam_vit_attention_bf16_fast(size_t kd) { return psam_window_attention_bf16_fast(kd); }

void psam_vit_attention_bf16_pack(const float *k, const float *v, size_t ld, size_t side, size_t kd, float *packed) {
#if defined(__x86_64__)
    if (psam_vit_attention_bf16_fast(kd)) {
        pack_avx512bf16(k, v, ld, side * side, kd, packed);
        return;
    }
#endif
    psam_vit_attention_bf16_pack__generic(k, v, ld, side * side, kd, packed);
}

void psam_vit_attention_bf16(const float *q, size_t ldq, size_t nq, size_t q0, size_t side, const float *packed, size_t kd,
                             float scale, const float *th, const float *tw, float *out, size_t ldo, float *scratch) {
#if defined(__x86_64__)
    if (psam_vit_attention_bf16_fast(kd)) {
        psam_vit_attention_bf16__avx512bf16(q, ldq, nq, q0, side, packed, kd, scale, th, tw, out, ldo, scratch);
        return;
    }
#endif
    psam_vit_attention_bf16__generic(q, ldq, nq, q0, side, packed, kd, scale, th, tw, out, ldo, scratch);
}
