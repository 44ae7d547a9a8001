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

static inline float from_bf16(uint16_t b) {
    const uint32_t u = (uint32_t)b << 16;
    float y;
    memcpy(&y, &u, 4);
    return y;
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
                if (d + 1 < kd) acc = acc + bf16_value(qi[d + 1] * scale) * from_bf16(kb[j * kd + d + 1]);
                acc = acc + bf16_value(qi[d] * scale) * from_bf16(kb[j * kd + d]);
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
                if (j + 1 < nk) acc = acc + s[j + 1] * from_bf16(vb[(j + 1) * kd + d]);
                acc = acc + s[j] * from_bf16(vb[j * kd + d]);
            }
            out[i * ldo + d] = acc;
        }
    }
}

#if defined(__x86_64__)
/* Scores in tiles of 6 queries × 64 keys (each query pair broadcast feeds four key vectors: 10 loads per 24
 * vdpbf16ps instead of 10 per 16), the last 32 keys, if any, as scores_bf16 does. Same sums as scores_bf16. */
static inline PSAM_AVX512BF16 __attribute__((always_inline)) void
scores_wide_bf16(const uint32_t *qp, const uint32_t *kt, size_t nq, size_t nk, size_t kd, float *s) {
    const size_t wp = bf16_keys_padded(nk), kp = kd / 2;
    size_t j = 0;
    for (; j + 64 <= wp; j += 64) {
        size_t i = 0;
        for (; i + 6 <= nq; i += 6) scores_tile_bf16(qp, kt, nk, wp, kp, i, j, 6, 4, NULL, NULL, s);
        scores_tail_bf16(qp, kt, nk, wp, kp, i, j, nq - i, 4, NULL, NULL, s);
    }
    if (j < wp) {
        const int nc = j + 16 >= nk ? 1 : 2;
        size_t i = 0;
        for (; i + 8 <= nq; i += 8)
            if (nc == 1) scores_tile_bf16(qp, kt, nk, wp, kp, i, j, 8, 1, NULL, NULL, s);
            else scores_tile_bf16(qp, kt, nk, wp, kp, i, j, 8, 2, NULL, NULL, s);
        if (nc == 1) scores_tail_bf16(qp, kt, nk, wp, kp, i, j, nq - i, 1, NULL, NULL, s);
        else scores_tail_bf16(qp, kt, nk, wp, kp, i, j, nq - i, 2, NULL, NULL, s);
    }
}

/* The weighted values in tiles of 6 queries × 64 columns (kd a multiple of 64). Same sums as values_bf16. */
static inline PSAM_AVX512BF16 __attribute__((always_inline)) void
values_wide_bf16(const float *s, const uint32_t *vp, size_t nq, size_t nk, size_t kd, float *o, size_t ldo) {
    const size_t wp = bf16_keys_padded(nk), np = (nk + 1) / 2;
    const uint16_t *pp = (const uint16_t *)s;
    for (size_t d = 0; d < kd; d += 64) {
        size_t i = 0;
        for (; i + 6 <= nq; i += 6) values_tile_bf16_n(pp, 2 * wp, vp, kd, np, i, d, 6, 4, NULL, o, ldo);
        switch (nq - i) {
        case 5: values_tile_bf16_n(pp, 2 * wp, vp, kd, np, i, d, 5, 4, NULL, o, ldo); break;
        case 4: values_tile_bf16_n(pp, 2 * wp, vp, kd, np, i, d, 4, 4, NULL, o, ldo); break;
        case 3: values_tile_bf16_n(pp, 2 * wp, vp, kd, np, i, d, 3, 4, NULL, o, ldo); break;
        case 2: values_tile_bf16_n(pp, 2 * wp, vp, kd, np, i, d, 2, 4, NULL, o, ldo); break;
        case 1: values_tile_bf16_n(pp, 2 * wp, vp, kd, np, i, d, 1, 4, NULL, o, ldo); break;
        default: break;
        }
    }
}

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
    if (kd % 64 == 0) scores_wide_bf16(qp, kt, nq, nk, kd, s);
    else scores_bf16(qp, kt, nq, nk, kd, NULL, NULL, s);
    psam_relpos_add(s, wp, nq, q0, side, th, tw, 2 * side - 1);
    softmax_bf16(s, nq, nk);
    if (kd % 64 == 0) values_wide_bf16(s, vp, nq, nk, kd, out, ldo);
    else values_bf16(s, vp, nq, nk, kd, NULL, out, ldo);
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
