#include "rowops_internal.h"

/* SAM's decomposed relative position terms, added to a block of attention scores in place:
 *   scores[i][ky·side + kx] += th[i][qy − ky + side − 1] + tw[i][qx − kx + side − 1]
 * for query q = q0 + i (qy = q / side, qx = q % side), th and tw `[rows][r]` (r = 2·side − 1: the query's
 * products with rel_pos_h / rel_pos_w, unscaled). The two terms are summed first, then added (the order the
 * runtime has always used). One body: each row is a run of contiguous adds that the compiler vectorises
 * (the tw index falls as kx rises; it is read through a pointer that walks backwards). The AVX-512 body does the
 * same two adds per score 16 at a time, the row's tw terms reversed once into a buffer: the same bits. */
void psam_relpos_add__generic(float *scores, size_t ld, size_t rows, size_t q0, size_t side, const float *th, const float *tw,
                              size_t r) {
    for (size_t i = 0; i < rows; i++) {
        const size_t q = q0 + i, qy = q / side, qx = q % side;
        float *row = scores + i * ld;
        const float *h = th + i * r, *w = tw + i * r + qx + side - 1;
        for (size_t ky = 0; ky < side; ky++) {
            const float bh = h[qy + side - 1 - ky];
            float *s = row + ky * side;
            for (size_t kx = 0; kx < side; kx++) s[kx] += bh + w[-(ptrdiff_t)kx];
        }
    }
}

#if defined(__x86_64__)
PSAM_AVX512F void psam_relpos_add__avx512(float *scores, size_t ld, size_t rows, size_t q0, size_t side, const float *th,
                                          const float *tw, size_t r) {
    float wr[256];
    for (size_t i = 0; i < rows; i++) {
        const size_t q = q0 + i, qy = q / side, qx = q % side;
        float *row = scores + i * ld;
        const float *h = th + i * r, *w = tw + i * r + qx + side - 1;
        for (size_t kx = 0; kx < side; kx++) wr[kx] = w[-(ptrdiff_t)kx];
        for (size_t ky = 0; ky < side; ky++) {
            const float bh = h[qy + side - 1 - ky];
            const __m512 vb = _mm512_set1_ps(bh);
            float *s = row + ky * side;
            size_t kx = 0;
            for (; kx + 16 <= side; kx += 16)
                _mm512_storeu_ps(s + kx, _mm512_add_ps(_mm512_loadu_ps(s + kx), _mm512_add_ps(vb, _mm512_loadu_ps(wr + kx))));
            if (kx < side) {
                const __mmask16 m = (__mmask16)((1u << (side - kx)) - 1u);
                _mm512_mask_storeu_ps(s + kx, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, s + kx),
                                                                _mm512_add_ps(vb, _mm512_maskz_loadu_ps(m, wr + kx))));
            }
        }
    }
}
#endif

void psam_relpos_add(float *scores, size_t ld, size_t rows, size_t q0, size_t side, const float *th, const float *tw,
                     size_t r) {
#if defined(__x86_64__)
    if (side <= 256 && has_avx512()) {
        psam_relpos_add__avx512(scores, ld, rows, q0, side, th, tw, r);
        return;
    }
#endif
    psam_relpos_add__generic(scores, ld, rows, q0, side, th, tw, r);
}
