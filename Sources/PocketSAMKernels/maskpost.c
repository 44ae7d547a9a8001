/* Automatic mask generation: low-res logits → mask at the image (or crop) size, stability counts, box,
 * and column-major run lengths, in one pass per mask. */
#include "pocketsam_kernels.h"
#include <math.h>
#include <string.h>

/* out[x] = Σ_t w[4x+t] · in[start[x]+t] for x < n (a 4-tap resampling of one row). */
static void resample_row(const float *in, const int32_t *start, const float *w, size_t n, float *out) {
    for (size_t x = 0; x < n; x++) {
        const float *p = in + start[x], *c = w + 4 * x;
        out[x] = c[0] * p[0] + c[1] * p[1] + c[2] * p[2] + c[3] * p[3];
    }
}

void psam_mask_upscale(const psam_mask_upscale_args *a, const float *low, float *hbuf, uint8_t *mask,
                       psam_mask_stats *st) {
    const size_t n = a->low, ow = a->out_w, oh = a->out_h;
    /* Horizontal pass on the low-res rows the vertical taps read. */
    const size_t r0 = (size_t)a->row_start[0], r1 = (size_t)a->row_start[oh - 1] + 4;
    for (size_t r = r0; r < r1 && r < n; r++) resample_row(low + r * n, a->col_start, a->col_w, ow, hbuf + r * ow);
    int64_t inter = 0, uni = 0, area = 0;
    int32_t x0 = INT32_MAX, y0 = INT32_MAX, x1 = -1, y1 = -1;
    const float hi = a->threshold + a->offset, lo = a->threshold - a->offset, thr = a->threshold;
    const float core = a->threshold + a->core_offset;
    for (size_t y = 0; y < oh; y++) {
        const float *w = a->row_w + 4 * y;
        const float *p0 = hbuf + (size_t)a->row_start[y] * ow, *p1 = p0 + ow, *p2 = p1 + ow, *p3 = p2 + ow;
        uint8_t *m = mask + y * ow;
        int64_t ri = 0, ru = 0, ra = 0;
        for (size_t x = 0; x < ow; x++) {
            float v = w[0] * p0[x] + w[1] * p1[x] + w[2] * p2[x] + w[3] * p3[x];
            ri += v > hi;
            ru += v > lo;
            uint8_t b = v > thr;
            ra += b;
            m[x] = (uint8_t)(b | (v > core) << 1);
        }
        inter += ri;
        uni += ru;
        if (ra) {
            area += ra;
            if (y0 == INT32_MAX) y0 = (int32_t)y;
            y1 = (int32_t)y;
            for (size_t x = 0; x < ow; x++)
                if (m[x]) {
                    if ((int32_t)x < x0) x0 = (int32_t)x;
                    break;
                }
            for (size_t x = ow; x-- > 0;)
                if (m[x]) {
                    if ((int32_t)x > x1) x1 = (int32_t)x;
                    break;
                }
        }
    }
    st->intersection = inter;
    st->union_ = uni;
    st->area = area;
    if (area == 0) {
        st->box[0] = st->box[1] = st->box[2] = st->box[3] = 0;
    } else {
        st->box[0] = x0;
        st->box[1] = y0;
        st->box[2] = x1;
        st->box[3] = y1;
    }
}

typedef struct {
    uint32_t *counts;
    size_t n;
    uint32_t run;
    uint8_t cur;
} rle_state;

static inline void rle_put(rle_state *s, uint8_t v, size_t count) {
    if (count == 0) return;
    if (v == s->cur) {
        s->run += (uint32_t)count;
    } else {
        s->counts[s->n++] = s->run;
        s->cur = v;
        s->run = (uint32_t)count;
    }
}

size_t psam_mask_rle(const uint8_t *mask, size_t h, size_t w, size_t x0, size_t y0, size_t full_h, size_t full_w,
                     uint32_t *counts) {
    /* Column-major runs (COCO order) of the mask placed at (x0, y0) in a full_h × full_w frame of zeros. */
    rle_state s = {counts, 0, 0, 0};
    rle_put(&s, 0, x0 * full_h);
    for (size_t x = 0; x < w; x++) {
        rle_put(&s, 0, y0);
        for (size_t y = 0; y < h; y++) rle_put(&s, mask[y * w + x] ? 1 : 0, 1);
        rle_put(&s, 0, full_h - y0 - h);
    }
    rle_put(&s, 0, (full_w - x0 - w) * full_h);
    counts[s.n++] = s.run;
    return s.n;
}

/* SAM's output upscaling, one input row at a time, after the caller's GEMM of that row:
 * t[x][o·4 + dy·2 + dx] = Σ_i in[x][i] · W[i][o][dy][dx] for the w pixels x of input row y. */

/* First transposed conv: + bias, layer norm over the cout channels of each output pixel, GELU, into
 * out[(2y+dy)·2w + 2x+dx][cout]. */
void psam_upscale_ln_gelu_row(const float *t, size_t w, size_t cout, size_t y, const float *bias, const float *ln_w,
                              const float *ln_b, float eps, float *out) {
    for (size_t x = 0; x < w; x++) {
        const float *tx = t + x * cout * 4;
        for (size_t s = 0; s < 4; s++) {
            size_t dy = s >> 1, dx = s & 1;
            float *o = out + ((2 * y + dy) * 2 * w + 2 * x + dx) * cout;
            float mean = 0.0f;
            for (size_t c = 0; c < cout; c++) {
                o[c] = tx[c * 4 + s] + bias[c];
                mean += o[c];
            }
            mean /= (float)cout;
            float var = 0.0f;
            for (size_t c = 0; c < cout; c++) {
                float d = o[c] - mean;
                var += d * d;
            }
            var /= (float)cout;
            float inv = 1.0f / sqrtf(var + eps);
            for (size_t c = 0; c < cout; c++) o[c] = (o[c] - mean) * inv * ln_w[c] + ln_b[c];
        }
    }
    psam_gelu_rows(out + (2 * y) * 2 * w * cout, 4 * w * cout);
}

/* Second transposed conv: + bias, GELU, then the masks: masks[m][(2y+dy)·2w + 2x+dx] = hyper[m] · v for
 * the `count` hypernetwork outputs (cout each). `scratch` holds 4·w·cout floats. */
void psam_upscale_gelu_masks_row(const float *t, size_t w, size_t cout, size_t y, const float *bias, const float *hyper,
                                 size_t count, float *masks, float *scratch) {
    for (size_t x = 0; x < w; x++)
        for (size_t s = 0; s < 4; s++) {
            float *v = scratch + (x * 4 + s) * cout;
            const float *tx = t + x * cout * 4;
            for (size_t c = 0; c < cout; c++) v[c] = tx[c * 4 + s] + bias[c];
        }
    psam_gelu_rows(scratch, 4 * w * cout);
    const size_t ow = 2 * w;
    for (size_t m = 0; m < count; m++) {
        const float *hm = hyper + m * cout;
        float *row0 = masks + m * ow * ow + (2 * y) * ow, *row1 = row0 + ow;
        for (size_t x = 0; x < w; x++)
            for (size_t s = 0; s < 4; s++) {
                const float *v = scratch + (x * 4 + s) * cout;
                float acc = 0.0f;
                for (size_t c = 0; c < cout; c++) acc += hm[c] * v[c];
                (s >> 1 ? row1 : row0)[2 * x + (s & 1)] = acc;
            }
    }
}
