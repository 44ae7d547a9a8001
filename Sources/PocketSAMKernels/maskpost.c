/* Automatic mask generation: low-res logits → mask at the image (or crop) size, stability counts, box,
 * and column-major run lengths, in one pass per mask. */
#include "pocketsam_kernels.h"
#include <math.h>
#include <string.h>

/* Each function here has a portable body and, on x86-64, the same body compiled for AVX2 + FMA (the loops
 * are written to vectorise), chosen at run time. */
#if defined(__x86_64__)
#define PSAM_AVX2_POST __attribute__((target("avx2,fma")))
static int post_has_avx2(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached;
}
#endif

/* The mask of `rows` output rows × `cols` output columns from low[n][n] (rows of `low` along the output
 * rows), taps per output row (rs, rw) and column (cs, cw). Stats in (row, column) terms; the box as
 * (first column, first row, last column, last row). */
#define UPSCALE_BODY                                                                                       \
    const size_t r0 = (size_t)rs[0], r1 = (size_t)rs[rows - 1] + 4;                                        \
    for (size_t r = r0; r < r1 && r < n; r++) {                                                            \
        const float *in = low + r * n;                                                                     \
        float *out = hbuf + r * cols;                                                                      \
        for (size_t x = 0; x < cols; x++) {                                                                \
            const float *p = in + cs[x], *c = cw + 4 * x;                                                  \
            out[x] = c[0] * p[0] + c[1] * p[1] + c[2] * p[2] + c[3] * p[3];                                \
        }                                                                                                  \
    }                                                                                                      \
    int64_t inter = 0, uni = 0, area = 0;                                                                  \
    int32_t x0 = INT32_MAX, y0 = INT32_MAX, x1 = -1, y1 = -1;                                              \
    for (size_t y = 0; y < rows; y++) {                                                                    \
        const float *w = rw + 4 * y;                                                                       \
        const float *p0 = hbuf + (size_t)rs[y] * cols, *p1 = p0 + cols, *p2 = p1 + cols, *p3 = p2 + cols;  \
        uint8_t *m = mask + y * cols;                                                                      \
        int32_t ri = 0, ru = 0, ra = 0;                                                                    \
        for (size_t x = 0; x < cols; x++) {                                                                \
            float v = w[0] * p0[x] + w[1] * p1[x] + w[2] * p2[x] + w[3] * p3[x];                           \
            ri += v > hi;                                                                                  \
            ru += v > lo;                                                                                  \
            uint8_t b = v > thr;                                                                           \
            ra += b;                                                                                       \
            m[x] = (uint8_t)(b | (v > core) << 1);                                                         \
        }                                                                                                  \
        inter += ri;                                                                                       \
        uni += ru;                                                                                         \
        if (ra) {                                                                                          \
            area += ra;                                                                                    \
            if (y0 == INT32_MAX) y0 = (int32_t)y;                                                          \
            y1 = (int32_t)y;                                                                               \
            for (size_t x = 0; x < cols; x++)                                                              \
                if (m[x]) {                                                                                \
                    if ((int32_t)x < x0) x0 = (int32_t)x;                                                  \
                    break;                                                                                 \
                }                                                                                          \
            for (size_t x = cols; x-- > 0;)                                                                \
                if (m[x]) {                                                                                \
                    if ((int32_t)x > x1) x1 = (int32_t)x;                                                  \
                    break;                                                                                 \
                }                                                                                          \
        }                                                                                                  \
    }                                                                                                      \
    st->intersection = inter;                                                                              \
    st->union_ = uni;                                                                                      \
    st->area = area;                                                                                       \
    if (area == 0) {                                                                                       \
        box[0] = box[1] = box[2] = box[3] = 0;                                                             \
    } else {                                                                                               \
        box[0] = x0;                                                                                       \
        box[1] = y0;                                                                                       \
        box[2] = x1;                                                                                       \
        box[3] = y1;                                                                                       \
    }

#define UPSCALE_PARAMS                                                                                     \
    const float *low, size_t n, size_t rows, size_t cols, const int32_t *rs, const float *rw, const int32_t *cs, \
        const float *cw, float hi, float lo, float thr, float core, float *hbuf, uint8_t *mask, psam_mask_stats *st, \
        int32_t *box

static void upscale_generic(UPSCALE_PARAMS) { UPSCALE_BODY }
#if defined(__x86_64__)
PSAM_AVX2_POST static void upscale_avx2(UPSCALE_PARAMS) { UPSCALE_BODY }
#endif

void psam_mask_upscale(const psam_mask_upscale_args *a, const float *low, float *hbuf, uint8_t *mask,
                       psam_mask_stats *st) {
    /* The mask is produced transposed (output columns as rows), so that it is column-major, the order of
     * COCO's runs: the low-res logits are transposed first and the row and column taps swap roles. */
    const size_t n = a->low;
    float *lt = hbuf, *h = hbuf + n * n;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) lt[j * n + i] = low[i * n + j];
    const float hi = a->threshold + a->offset, lo = a->threshold - a->offset, thr = a->threshold;
    const float core = a->threshold + a->core_offset;
    int32_t box[4];
#if defined(__x86_64__)
    if (post_has_avx2())
        upscale_avx2(lt, n, a->out_w, a->out_h, a->col_start, a->col_w, a->row_start, a->row_w, hi, lo, thr, core, h, mask, st,
                     box);
    else
#endif
        upscale_generic(lt, n, a->out_w, a->out_h, a->col_start, a->col_w, a->row_start, a->row_w, hi, lo, thr, core, h, mask,
                        st, box);
    /* In the transposed frame a "row" is an image column. */
    st->box[0] = box[1];
    st->box[1] = box[0];
    st->box[2] = box[3];
    st->box[3] = box[2];
    st->runs = a->counts ? psam_mask_rle(mask, a->out_h, a->out_w, a->frame_x0, a->frame_y0, a->frame_h, a->frame_w, a->counts,
                                           a->counts_capacity) : 0;
}

typedef struct {
    uint32_t *counts;
    size_t n, capacity;
    uint32_t run;
    uint8_t cur;
} rle_state;

static inline void rle_put(rle_state *s, uint8_t v, size_t count) {
    if (count == 0) return;
    if (v == s->cur) {
        s->run += (uint32_t)count;
    } else {
        if (s->n < s->capacity) s->counts[s->n] = s->run;
        s->n++;
        s->cur = v;
        s->run = (uint32_t)count;
    }
}

size_t psam_mask_rle(const uint8_t *mask, size_t h, size_t w, size_t x0, size_t y0, size_t full_h, size_t full_w,
                     uint32_t *counts, size_t capacity) {
    /* COCO's runs of the column-major h × w mask (mask[x·h + y]) placed at (x0, y0) in a full_h × full_w frame
     * of zeros. */
    rle_state s = {counts, 0, capacity, 0, 0};
    rle_put(&s, 0, x0 * full_h);
    for (size_t x = 0; x < w; x++) {
        rle_put(&s, 0, y0);
        const uint8_t *col = mask + x * h;
        size_t y = 0;
        while (y < h) {
            uint8_t v = col[y] ? 1 : 0;
            size_t e = y + 1;
            while (e < h && (col[e] ? 1 : 0) == v) e++;
            rle_put(&s, v, e - y);
            y = e;
        }
        rle_put(&s, 0, full_h - y0 - h);
    }
    rle_put(&s, 0, (full_w - x0 - w) * full_h);
    if (s.n < s.capacity) counts[s.n] = s.run;
    s.n++;
    return s.n <= s.capacity ? s.n : SIZE_MAX;
}

/* Sums of 8 interleaved partial sums (so the loops vectorise without reassociating) over n values. */
#define DOT8(acc, a, b, n)                                           \
    do {                                                             \
        float p_[8] = {0, 0, 0, 0, 0, 0, 0, 0};                      \
        size_t c_ = 0;                                               \
        for (; c_ + 8 <= (n); c_ += 8)                               \
            for (size_t j_ = 0; j_ < 8; j_++) p_[j_] += (a)[c_ + j_] * (b)[c_ + j_]; \
        float s_ = 0.0f;                                             \
        for (; c_ < (n); c_++) s_ += (a)[c_] * (b)[c_];              \
        acc = s_ + ((p_[0] + p_[4]) + (p_[1] + p_[5])) + ((p_[2] + p_[6]) + (p_[3] + p_[7])); \
    } while (0)
#define SUM8(acc, a, n)                                              \
    do {                                                             \
        float p_[8] = {0, 0, 0, 0, 0, 0, 0, 0};                      \
        size_t c_ = 0;                                               \
        for (; c_ + 8 <= (n); c_ += 8)                               \
            for (size_t j_ = 0; j_ < 8; j_++) p_[j_] += (a)[c_ + j_]; \
        float s_ = 0.0f;                                             \
        for (; c_ < (n); c_++) s_ += (a)[c_];                        \
        acc = s_ + ((p_[0] + p_[4]) + (p_[1] + p_[5])) + ((p_[2] + p_[6]) + (p_[3] + p_[7])); \
    } while (0)

#define VAR8(acc, a, mean, n)                                        \
    do {                                                             \
        float p_[8] = {0, 0, 0, 0, 0, 0, 0, 0};                      \
        size_t c_ = 0;                                               \
        for (; c_ + 8 <= (n); c_ += 8)                               \
            for (size_t j_ = 0; j_ < 8; j_++) {                      \
                float d_ = (a)[c_ + j_] - (mean);                    \
                p_[j_] += d_ * d_;                                   \
            }                                                        \
        float s_ = 0.0f;                                             \
        for (; c_ < (n); c_++) { float d_ = (a)[c_] - (mean); s_ += d_ * d_; } \
        acc = s_ + ((p_[0] + p_[4]) + (p_[1] + p_[5])) + ((p_[2] + p_[6]) + (p_[3] + p_[7])); \
    } while (0)

/* First transposed conv: + bias, layer norm over the cout channels of each output pixel, into
 * out[(2y+dy)·2w + 2x+dx][cout] (GELU after, by the caller of the body). */
#define LN_ROW_BODY                                                                   \
    for (size_t x = 0; x < w; x++) {                                                  \
        const float *tx = t + x * cout * 4;                                           \
        for (size_t s = 0; s < 4; s++) {                                              \
            size_t dy = s >> 1, dx = s & 1;                                           \
            float *o = out + ((2 * y + dy) * 2 * w + 2 * x + dx) * cout;              \
            for (size_t c = 0; c < cout; c++) o[c] = tx[c * 4 + s] + bias[c];         \
            float mean;                                                               \
            SUM8(mean, o, cout);                                                      \
            mean /= (float)cout;                                                      \
            float var;                                                                \
            VAR8(var, o, mean, cout);                                                 \
            var /= (float)cout;                                                       \
            float inv = 1.0f / sqrtf(var + eps);                                      \
            for (size_t c = 0; c < cout; c++) o[c] = (o[c] - mean) * inv * ln_w[c] + ln_b[c]; \
        }                                                                             \
    }

/* Second transposed conv: + bias into scratch (GELU by the caller), then the masks. */
#define MASKS_ROW_BODY                                                           \
    const size_t ow = 2 * w;                                                     \
    for (size_t m = 0; m < count; m++) {                                         \
        const float *hm = hyper + m * cout;                                      \
        float *row0 = masks + m * ow * ow + (2 * y) * ow, *row1 = row0 + ow;     \
        for (size_t x = 0; x < w; x++)                                           \
            for (size_t s = 0; s < 4; s++) {                                     \
                const float *v = scratch + (x * 4 + s) * cout;                   \
                float acc;                                                       \
                DOT8(acc, hm, v, cout);                                          \
                (s >> 1 ? row1 : row0)[2 * x + (s & 1)] = acc;                   \
            }                                                                    \
    }

static void ln_row_generic(const float *t, size_t w, size_t cout, size_t y, const float *bias, const float *ln_w,
                           const float *ln_b, float eps, float *out) {
    LN_ROW_BODY
}
static void masks_row_generic(size_t w, size_t cout, size_t y, const float *hyper, size_t count, float *masks,
                              const float *scratch) {
    MASKS_ROW_BODY
}
#if defined(__x86_64__)
PSAM_AVX2_POST static void ln_row_avx2(const float *t, size_t w, size_t cout, size_t y, const float *bias,
                                       const float *ln_w, const float *ln_b, float eps, float *out) {
    LN_ROW_BODY
}
PSAM_AVX2_POST static void masks_row_avx2(size_t w, size_t cout, size_t y, const float *hyper, size_t count,
                                          float *masks, const float *scratch) {
    MASKS_ROW_BODY
}
#endif

void psam_upscale_ln_gelu_row(const float *t, size_t w, size_t cout, size_t y, const float *bias, const float *ln_w,
                              const float *ln_b, float eps, float *out) {
#if defined(__x86_64__)
    if (post_has_avx2())
        ln_row_avx2(t, w, cout, y, bias, ln_w, ln_b, eps, out);
    else
#endif
        ln_row_generic(t, w, cout, y, bias, ln_w, ln_b, eps, out);
    psam_gelu_rows(out + (2 * y) * 2 * w * cout, 4 * w * cout);
}

void psam_upscale_gelu_masks_row(const float *t, size_t w, size_t cout, size_t y, const float *bias, const float *hyper,
                                 size_t count, float *masks, float *scratch) {
    for (size_t x = 0; x < w; x++)
        for (size_t s = 0; s < 4; s++) {
            float *v = scratch + (x * 4 + s) * cout;
            const float *tx = t + x * cout * 4;
            for (size_t c = 0; c < cout; c++) v[c] = tx[c * 4 + s] + bias[c];
        }
    psam_gelu_rows(scratch, 4 * w * cout);
#if defined(__x86_64__)
    if (post_has_avx2()) {
        masks_row_avx2(w, cout, y, hyper, count, masks, scratch);
        return;
    }
#endif
    masks_row_generic(w, cout, y, hyper, count, masks, scratch);
}

/* Row statistics for a layer norm: mean and 1/sqrt(var + eps) of each row of x[m][ld] (c values), two passes
 * as the layer norm kernels compute them. */
#define ROW_STATS_BODY                                       \
    for (size_t i = 0; i < m; i++) {                         \
        const float *r = x + i * ld;                         \
        float mu;                                            \
        SUM8(mu, r, c);                                      \
        mu /= (float)c;                                      \
        float var;                                           \
        VAR8(var, r, mu, c);                                 \
        var /= (float)c;                                     \
        mean[i] = mu;                                        \
        rstd[i] = 1.0f / sqrtf(var + eps);                   \
    }
/* t[j][k] = rstd[j]·(t[j][k] − mean[j]·u[k]) + v[k] for m rows of n values. */
#define ROWS_AFFINE_BODY                                                                 \
    for (size_t j = 0; j < m; j++) {                                                     \
        float *r = t + j * n;                                                            \
        const float a = rstd[j], b = mean[j];                                            \
        for (size_t k = 0; k < n; k++) r[k] = a * (r[k] - b * u[k]) + v[k];              \
    }

static void row_stats_generic(const float *x, size_t m, size_t c, size_t ld, float eps, float *mean, float *rstd) {
    ROW_STATS_BODY
}
static void rows_affine_generic(float *t, size_t m, size_t n, const float *mean, const float *rstd, const float *u,
                                const float *v) {
    ROWS_AFFINE_BODY
}
#if defined(__x86_64__)
PSAM_AVX2_POST static void row_stats_avx2(const float *x, size_t m, size_t c, size_t ld, float eps, float *mean,
                                          float *rstd) {
    ROW_STATS_BODY
}
PSAM_AVX2_POST static void rows_affine_avx2(float *t, size_t m, size_t n, const float *mean, const float *rstd,
                                            const float *u, const float *v) {
    ROWS_AFFINE_BODY
}
#endif

void psam_row_mean_rstd(const float *x, size_t m, size_t c, size_t ld, float eps, float *mean, float *rstd) {
#if defined(__x86_64__)
    if (post_has_avx2()) {
        row_stats_avx2(x, m, c, ld, eps, mean, rstd);
        return;
    }
#endif
    row_stats_generic(x, m, c, ld, eps, mean, rstd);
}

void psam_rows_affine(float *t, size_t m, size_t n, const float *mean, const float *rstd, const float *u, const float *v) {
#if defined(__x86_64__)
    if (post_has_avx2()) {
        rows_affine_avx2(t, m, n, mean, rstd, u, v);
        return;
    }
#endif
    rows_affine_generic(t, m, n, mean, rstd, u, v);
}
