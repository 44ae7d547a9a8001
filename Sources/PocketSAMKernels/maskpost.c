/* Automatic mask generation: low-res logits → mask at the image (or crop) size, stability counts, box,
 * and column-major run lengths, in one pass per mask. */
#include "pocketsam_kernels.h"
#include <math.h>
#include <string.h>

/* Each function here has a portable body and, on x86-64, the same body compiled for AVX2 + FMA (the loops
 * are written to vectorise), chosen at run time. */
#if defined(__x86_64__)
#define PSAM_AVX2_POST __attribute__((target("avx2,fma")))
#define PSAM_AVX512_POST __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#include <immintrin.h>
#include "gelu_fast512.h"
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
     * COCO's runs: from the transposed low-res logits, the row and column taps swapping roles. */
    const size_t n = a->low;
    const float *lt = low;
    float *h = hbuf + n * n;
    const float hi = a->threshold + a->offset, lo = a->threshold - a->offset, thr = a->threshold;
    const float core = a->threshold + a->core_offset;
    int32_t box[4];
#if defined(__x86_64__)
    if (psam_cpu_avx2_fma())
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
        /* One pixel at a time without branches (speckled masks have a run every few pixels, which a
         * branch per run would mispredict): the current run is stored at counts[n] on every pixel and n
         * advances when the value flips (beyond the capacity, into a scratch word). */
        const uint8_t *col = mask + x * h;
        uint32_t dummy, run = s.run;
        size_t n = s.n;
        uint8_t cur = s.cur;
        for (size_t y = 0; y < h; y++) {
            const uint8_t v = col[y] != 0;
            const size_t flip = v ^ cur;
            uint32_t *dst = n < capacity ? counts + n : &dummy;
            *dst = run;
            n += flip;
            run = flip ? 1u : run + 1u;
            cur = v;
        }
        s.run = run;
        s.n = n;
        s.cur = cur;
        rle_put(&s, 0, full_h - y0 - h);
    }
    rle_put(&s, 0, (full_w - x0 - w) * full_h);
    if (s.n < s.capacity) counts[s.n] = s.run;
    s.n++;
    return s.n <= s.capacity ? s.n : SIZE_MAX;
}

/* Products with a matrix shared by every prompt of an image and a few rows per prompt, without the
 * packing a BLAS call does (which copies the large shared operand on every call):
 * scores: out[i][j] = scale · Σ_t q[i·ldq + t] · kt[t·ldk + j] (kt: the shared matrix transposed, d rows of nk),
 * in blocks of 512 columns so each output row block stays in L1 while kt's rows stream;
 * weighted: out[i·ldo + t] = Σ_j p[i·ldp + j] · v[j·ldv + t] (t < d ≤ 64), eight rows of p at a time. */
#define SCORES_BODY                                                                           \
    for (size_t j0 = 0; j0 < nk; j0 += 512) {                                                 \
        const size_t nj = nk - j0 < 512 ? nk - j0 : 512;                                      \
        for (size_t i = 0; i < nq; i++) {                                                     \
            float *o = out + i * ldo + j0;                                                    \
            const float q0 = q[i * ldq] * scale, *k0 = kt + j0;                               \
            for (size_t j = 0; j < nj; j++) o[j] = q0 * k0[j];                                \
            for (size_t t = 1; t < d; t++) {                                                  \
                const float qt = q[i * ldq + t] * scale, *kr = kt + t * ldk + j0;             \
                for (size_t j = 0; j < nj; j++) o[j] += qt * kr[j];                           \
            }                                                                                 \
        }                                                                                     \
    }
#define SCORES_PARAMS                                                                         \
    const float *q, size_t ldq, const float *kt, size_t ldk, size_t nq, size_t nk, size_t d, float scale, float *out, \
        size_t ldo
#define WEIGHTED_BODY                                                                         \
    for (size_t i0 = 0; i0 < nq; i0 += 8) {                                                   \
        const size_t ni = nq - i0 < 8 ? nq - i0 : 8;                                          \
        float acc[8][64];                                                                     \
        for (size_t i = 0; i < ni; i++)                                                       \
            for (size_t t = 0; t < d; t++) acc[i][t] = 0.0f;                                  \
        for (size_t j = 0; j < nk; j++) {                                                     \
            const float *vj = v + j * ldv;                                                    \
            for (size_t i = 0; i < ni; i++) {                                                 \
                const float pij = p[(i0 + i) * ldp + j];                                      \
                for (size_t t = 0; t < d; t++) acc[i][t] += pij * vj[t];                      \
            }                                                                                 \
        }                                                                                     \
        for (size_t i = 0; i < ni; i++)                                                       \
            for (size_t t = 0; t < d; t++) out[(i0 + i) * ldo + t] = acc[i][t];               \
    }
#define WEIGHTED_PARAMS                                                                       \
    const float *p, size_t ldp, const float *v, size_t ldv, size_t nq, size_t nk, size_t d, float *out, size_t ldo
static void scores_generic(SCORES_PARAMS) { SCORES_BODY }
static void weighted_generic(WEIGHTED_PARAMS) { WEIGHTED_BODY }
#if defined(__x86_64__)
PSAM_AVX2_POST static void scores_avx2(SCORES_PARAMS) { SCORES_BODY }
PSAM_AVX2_POST static void weighted_avx2(WEIGHTED_PARAMS) { WEIGHTED_BODY }
/* Eight rows of q at a time, 16 columns per step: one accumulator per row, kt's row loaded once per t. */
PSAM_AVX512_POST static void scores_avx512(SCORES_PARAMS) {
    for (size_t i0 = 0; i0 < nq; i0 += 8) {
        const size_t ni = nq - i0 < 8 ? nq - i0 : 8;
        for (size_t j = 0; j < nk; j += 16) {
            const __mmask16 mk = nk - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nk - j)) - 1u);
            __m512 acc[8];
            for (size_t i = 0; i < 8; i++) acc[i] = _mm512_setzero_ps();
            for (size_t t = 0; t < d; t++) {
                const __m512 kv = _mm512_maskz_loadu_ps(mk, kt + t * ldk + j);
                for (size_t i = 0; i < ni; i++) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(q[(i0 + i) * ldq + t]), kv, acc[i]);
            }
            const __m512 sc = _mm512_set1_ps(scale);
            for (size_t i = 0; i < ni; i++) _mm512_mask_storeu_ps(out + (i0 + i) * ldo + j, mk, _mm512_mul_ps(acc[i], sc));
        }
    }
}
/* d = 16 (SAM's heads): one 16-lane accumulator per row of p. */
PSAM_AVX512_POST static void weighted16_avx512(WEIGHTED_PARAMS) {
    (void)d;
    for (size_t i0 = 0; i0 < nq; i0 += 8) {
        const size_t ni = nq - i0 < 8 ? nq - i0 : 8;
        __m512 acc[8];
        for (size_t i = 0; i < 8; i++) acc[i] = _mm512_setzero_ps();
        for (size_t j = 0; j < nk; j++) {
            const __m512 vj = _mm512_loadu_ps(v + j * ldv);
            for (size_t i = 0; i < ni; i++) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(p[(i0 + i) * ldp + j]), vj, acc[i]);
        }
        for (size_t i = 0; i < ni; i++) _mm512_storeu_ps(out + (i0 + i) * ldo, acc[i]);
    }
}
#endif
void psam_scores_shared(SCORES_PARAMS) {
#if defined(__x86_64__)
    if (psam_cpu_avx512()) {
        scores_avx512(q, ldq, kt, ldk, nq, nk, d, scale, out, ldo);
        return;
    }
    if (psam_cpu_avx2_fma()) {
        scores_avx2(q, ldq, kt, ldk, nq, nk, d, scale, out, ldo);
        return;
    }
#endif
    scores_generic(q, ldq, kt, ldk, nq, nk, d, scale, out, ldo);
}
void psam_weighted_rows(WEIGHTED_PARAMS) {
#if defined(__x86_64__)
    if (d == 16 && psam_cpu_avx512()) {
        weighted16_avx512(p, ldp, v, ldv, nq, nk, d, out, ldo);
        return;
    }
    if (d <= 64 && psam_cpu_avx2_fma()) {
        weighted_avx2(p, ldp, v, ldv, nq, nk, d, out, ldo);
        return;
    }
#endif
    if (d <= 64) {
        weighted_generic(p, ldp, v, ldv, nq, nk, d, out, ldo);
        return;
    }
    for (size_t i = 0; i < nq; i++)
        for (size_t t = 0; t < d; t++) {
            float a = 0.0f;
            for (size_t j = 0; j < nk; j++) a += p[i * ldp + j] * v[j * ldv + t];
            out[i * ldo + t] = a;
        }
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
            for (size_t c = 0; c < cout; c++) o[c] = tx[s * cout + c] + bias[c];      \
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

static void ln_row_generic(const float *t, size_t w, size_t cout, size_t y, const float *bias, const float *ln_w,
                           const float *ln_b, float eps, float *out) {
    LN_ROW_BODY
}
#if defined(__x86_64__)
PSAM_AVX2_POST static void ln_row_avx2(const float *t, size_t w, size_t cout, size_t y, const float *bias,
                                       const float *ln_w, const float *ln_b, float eps, float *out) {
    LN_ROW_BODY
}
#endif

void psam_upscale_ln_gelu_row(const float *t, size_t w, size_t cout, size_t y, const float *bias, const float *ln_w,
                              const float *ln_b, float eps, float *out) {
#if defined(__x86_64__)
    if (psam_cpu_avx2_fma())
        ln_row_avx2(t, w, cout, y, bias, ln_w, ln_b, eps, out);
    else
#endif
        ln_row_generic(t, w, cout, y, bias, ln_w, ln_b, eps, out);
    psam_gelu_fast_rows(out + (2 * y) * 2 * w * cout, 4 * w * cout);
}

/* Second transposed conv, transposed: t[4·cout][ld] holds row s·cout + c (s = 2·dy + dx) for the pixels
 * (r, x), r < rows, x < w, of the once-upscaled grid at column r·w + x. + bias and GELU in place, then per
 * sub-pixel s the dot products with every hyper[m] along the rows (vectorised across pixels, each row read
 * once, into scratch[count][rows·w]), written transposed to masks[m][(2x + dx)·2w + 2(y0 + r) + dy]. */
#define MASKS_T_BODY                                                                          \
    const size_t np = rows * w, ow = 2 * w;                                                   \
    for (size_t s = 0; s < 4; s++) {                                                          \
        for (size_t c = 0; c < cout; c++) {                                                   \
            float *tc = t + (s * cout + c) * ld;                                              \
            const float bc = bias[c];                                                         \
            for (size_t p = 0; p < np; p++) tc[p] += bc;                                      \
            psam_gelu_fast_rows(tc, np);                                                      \
            for (size_t m = 0; m < count; m++) {                                              \
                float *acc = scratch + m * np;                                                \
                const float hc = hyper[m * cout + c];                                         \
                if (c == 0)                                                                   \
                    for (size_t p = 0; p < np; p++) acc[p] = hc * tc[p];                      \
                else                                                                          \
                    for (size_t p = 0; p < np; p++) acc[p] += hc * tc[p];                     \
            }                                                                                 \
        }                                                                                     \
        const size_t dy = s >> 1, dx = s & 1;                                                 \
        for (size_t m = 0; m < count; m++) {                                                  \
            const float *acc = scratch + m * np;                                              \
            float *mm = masks + m * ow * ow;                                                  \
            for (size_t r = 0; r < rows; r++) {                                               \
                float *o = mm + dx * ow + 2 * (y0 + r) + dy;                                  \
                for (size_t x = 0; x < w; x++) o[2 * x * ow] = acc[r * w + x];                \
            }                                                                                 \
        }                                                                                     \
    }
#define MASKS_T_PARAMS                                                                        \
    float *t, size_t ld, size_t rows, size_t w, size_t cout, size_t y0, const float *bias, const float *hyper, size_t count, \
        float *masks, float *scratch
static void masks_t_generic(MASKS_T_PARAMS) { MASKS_T_BODY }
#if defined(__x86_64__)
PSAM_AVX2_POST static void masks_t_avx2(MASKS_T_PARAMS) { MASKS_T_BODY }
/* The same per 16 pixels in registers: bias, GELU and every mask's products over the cout channels without
 * storing the GELU values (count ≤ 4). */
PSAM_AVX512_POST static void masks_t_avx512(MASKS_T_PARAMS) {
    const size_t np = rows * w, ow = 2 * w;
    for (size_t s = 0; s < 4; s++) {
        for (size_t p = 0; p < np; p += 16) {
            const __mmask16 mk = np - p >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (np - p)) - 1u);
            __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
            for (size_t c = 0; c < cout; c++) {
                float *tc = t + (s * cout + c) * ld + p;
                const __m512 g = psam_gelu_fast512(_mm512_add_ps(_mm512_maskz_loadu_ps(mk, tc), _mm512_set1_ps(bias[c])));
                _mm512_mask_storeu_ps(tc, mk, g);
                for (size_t m = 0; m < count; m++) acc[m] = _mm512_fmadd_ps(_mm512_set1_ps(hyper[m * cout + c]), g, acc[m]);
            }
            for (size_t m = 0; m < count; m++) _mm512_mask_storeu_ps(scratch + m * np + p, mk, acc[m]);
        }
        const size_t dy = s >> 1, dx = s & 1;
        for (size_t m = 0; m < count; m++) {
            const float *acc = scratch + m * np;
            float *mm = masks + m * ow * ow;
            for (size_t r = 0; r < rows; r++) {
                float *o = mm + dx * ow + 2 * (y0 + r) + dy;
                for (size_t x = 0; x < w; x++) o[2 * x * ow] = acc[r * w + x];
            }
        }
    }
}
#endif

void psam_upscale_masks_t(float *t, size_t ld, size_t rows, size_t w, size_t cout, size_t y0, const float *bias,
                          const float *hyper, size_t count, float *masks, float *scratch) {
#if defined(__x86_64__)
    if (count <= 4 && psam_cpu_avx512()) {
        masks_t_avx512(t, ld, rows, w, cout, y0, bias, hyper, count, masks, scratch);
        return;
    }
    if (psam_cpu_avx2_fma()) {
        masks_t_avx2(t, ld, rows, w, cout, y0, bias, hyper, count, masks, scratch);
        return;
    }
#endif
    masks_t_generic(t, ld, rows, w, cout, y0, bias, hyper, count, masks, scratch);
}


/* The decoder's image-token update and norm4 in one pass per row: x[i] (+= add[i] when add is not NULL), its
 * mean and 1/σ (two passes, as the layer norm kernels) into mean[i], rstd[i], then x[i] = layer norm (w, b), and xpe[i] =
 * x[i] + pe[i] when xpe is not NULL. Rows are c = ld values. */
#define KEYS_NORM_BODY                                                          \
    for (size_t i = 0; i < m; i++) {                                            \
        float *r = x + i * c;                                                   \
        if (add)                                                                \
            for (size_t j = 0; j < c; j++) r[j] += add[i * c + j];              \
        float mu;                                                               \
        SUM8(mu, r, c);                                                         \
        mu /= (float)c;                                                         \
        float var;                                                              \
        VAR8(var, r, mu, c);                                                    \
        var /= (float)c;                                                        \
        const float inv = 1.0f / sqrtf(var + eps);                              \
        mean[i] = mu;                                                           \
        rstd[i] = inv;                                                          \
        for (size_t j = 0; j < c; j++) r[j] = (r[j] - mu) * inv * w[j] + b[j];  \
        if (xpe)                                                                \
            for (size_t j = 0; j < c; j++) xpe[i * c + j] = r[j] + pe[i * c + j]; \
    }
#define KEYS_NORM_PARAMS                                                                             \
    float *x, const float *add, size_t m, size_t c, const float *w, const float *b, float eps, float *mean, \
        float *rstd, const float *pe, float *xpe
static void keys_norm_generic(KEYS_NORM_PARAMS) { KEYS_NORM_BODY }
#if defined(__x86_64__)
PSAM_AVX2_POST static void keys_norm_avx2(KEYS_NORM_PARAMS) { KEYS_NORM_BODY }
#endif
void psam_keys_norm(KEYS_NORM_PARAMS) {
#if defined(__x86_64__)
    if (psam_cpu_avx2_fma()) {
        keys_norm_avx2(x, add, m, c, w, b, eps, mean, rstd, pe, xpe);
        return;
    }
#endif
    keys_norm_generic(x, add, m, c, w, b, eps, mean, rstd, pe, xpe);
}

/* t[j][k] = rstd[j]·(t[j][k] − mean[j]·u[k]) + v[k] for m rows of n values. */
#define ROWS_AFFINE_BODY                                                                 \
    for (size_t j = 0; j < m; j++) {                                                     \
        float *r = t + j * n;                                                            \
        const float a = rstd[j], b = mean[j];                                            \
        for (size_t k = 0; k < n; k++) r[k] = a * (r[k] - b * u[k]) + v[k];              \
    }
static void rows_affine_generic(float *t, size_t m, size_t n, const float *mean, const float *rstd, const float *u,
                                const float *v) {
    ROWS_AFFINE_BODY
}
#if defined(__x86_64__)
PSAM_AVX2_POST static void rows_affine_avx2(float *t, size_t m, size_t n, const float *mean, const float *rstd,
                                            const float *u, const float *v) {
    ROWS_AFFINE_BODY
}
#endif
void psam_rows_affine(float *t, size_t m, size_t n, const float *mean, const float *rstd, const float *u, const float *v) {
#if defined(__x86_64__)
    if (psam_cpu_avx2_fma()) {
        rows_affine_avx2(t, m, n, mean, rstd, u, v);
        return;
    }
#endif
    rows_affine_generic(t, m, n, mean, rstd, u, v);
}
