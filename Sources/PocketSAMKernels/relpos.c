#include "pocketsam_kernels.h"

/* SAM's decomposed relative position terms, added to a block of attention scores in place:
 *   scores[i][ky·side + kx] += th[i][qy − ky + side − 1] + tw[i][qx − kx + side − 1]
 * for query q = q0 + i (qy = q / side, qx = q % side), th and tw `[rows][r]` (r = 2·side − 1: the query's
 * products with rel_pos_h / rel_pos_w, unscaled). The two terms are summed first, then added (the order the
 * runtime has always used). One body: each row is a run of contiguous adds that the compiler vectorises
 * (the tw index falls as kx rises; it is read through a pointer that walks backwards). */
void psam_relpos_add(float *scores, size_t ld, size_t rows, size_t q0, size_t side, const float *th, const float *tw,
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
