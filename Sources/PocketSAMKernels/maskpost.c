/* Automatic mask generation: low-res logits → mask at the image (or crop) size, stability counts, box,
 * and column-major run lengths, in one pass per mask. */
#include "maskpost_internal.h"
#include <math.h>
#include <string.h>

/* Each function here has a portable body and, on x86-64, the same body compiled for AVX2 + FMA (the loops
 * are written to vectorise), chosen at run time; some have AVX-512 bodies, and on aarch64 NEON bodies
 * (maskpost_internal.h declares them all). */
#if defined(__aarch64__)
#include "rowops_neon.h"
#endif
/* The upscale's bodies must give the generic's bits (its mask bytes and counts): no fused multiply-adds in them
 * (clang contracts by default; gcc does not in ISO C mode). At the start of a function body. aarch64 only: on x86-64
 * clang has always contracted the AVX2 and AVX-512 bodies' interpolation (their targets include FMA), so a clang
 * build's x86 masks can differ from the generic's by rounding at the thresholds; that is left as it was, to keep the
 * x86 results of earlier releases bit for bit (the kernel tests, built with gcc, see the exact form). */
#if defined(__clang__) && defined(__aarch64__)
#define PSAM_NO_CONTRACT _Pragma("clang fp contract(off)")
#else
#define PSAM_NO_CONTRACT
#endif
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

void psam_mask_upscale__generic(PSAM_UPSCALE_PARAMS) { PSAM_NO_CONTRACT UPSCALE_BODY }
#if defined(__x86_64__)
PSAM_AVX2_POST void psam_mask_upscale__avx2(PSAM_UPSCALE_PARAMS) { PSAM_NO_CONTRACT UPSCALE_BODY }
#endif
#if defined(__aarch64__)
/* The generic's products and sums in the same order (bit-identical). Horizontal pass, 4 output columns at a
 * time: their 4 taps by 4 loads and a 4 × 4 transpose, the weights deinterleaved by vld4q. Vertical pass, 16
 * at a time (then 4, then the last 1 … 3 masked): the thresholds as lane masks, counted by subtracting them
 * (−1 per hit), the mask bytes narrowed from them; the box's scan 16 bytes at a time. */
void psam_mask_upscale__neon(PSAM_UPSCALE_PARAMS) {
    PSAM_NO_CONTRACT
    const size_t r0 = (size_t)rs[0], r1 = (size_t)rs[rows - 1] + 4;
    for (size_t r = r0; r < r1 && r < n; r++) {
        const float *in = low + r * n;
        float *out = hbuf + r * cols;
        size_t x = 0;
        for (; x + 4 <= cols; x += 4) {
            const float32x4_t q0 = vld1q_f32(in + cs[x]), q1 = vld1q_f32(in + cs[x + 1]);
            const float32x4_t q2 = vld1q_f32(in + cs[x + 2]), q3 = vld1q_f32(in + cs[x + 3]);
            const float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(q0, q1)), t1 = vreinterpretq_f64_f32(vtrn2q_f32(q0, q1));
            const float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(q2, q3)), t3 = vreinterpretq_f64_f32(vtrn2q_f32(q2, q3));
            const float32x4x4_t c = vld4q_f32(cw + 4 * x);
            float32x4_t v = vmulq_f32(c.val[0], vreinterpretq_f32_f64(vtrn1q_f64(t0, t2)));
            v = vaddq_f32(v, vmulq_f32(c.val[1], vreinterpretq_f32_f64(vtrn1q_f64(t1, t3))));
            v = vaddq_f32(v, vmulq_f32(c.val[2], vreinterpretq_f32_f64(vtrn2q_f64(t0, t2))));
            v = vaddq_f32(v, vmulq_f32(c.val[3], vreinterpretq_f32_f64(vtrn2q_f64(t1, t3))));
            vst1q_f32(out + x, v);
        }
        for (; x < cols; x++) {
            const float *p = in + cs[x], *c = cw + 4 * x;
            out[x] = c[0] * p[0] + c[1] * p[1] + c[2] * p[2] + c[3] * p[3];
        }
    }
    const float32x4_t vhi = vdupq_n_f32(hi), vlo = vdupq_n_f32(lo), vthr = vdupq_n_f32(thr), vcore = vdupq_n_f32(core);
    const uint32x4_t one = vdupq_n_u32(1), two = vdupq_n_u32(2), lane = {0, 1, 2, 3};
    int64_t inter = 0, uni = 0, area = 0;
    int32_t x0 = INT32_MAX, y0 = INT32_MAX, x1 = -1, y1 = -1;
    for (size_t y = 0; y < rows; y++) {
        const float *w = rw + 4 * y;
        const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
        const float *p0 = hbuf + (size_t)rs[y] * cols, *p1 = p0 + cols, *p2 = p1 + cols, *p3 = p2 + cols;
        uint8_t *m = mask + y * cols;
        int32x4_t ci = vdupq_n_s32(0), cu = ci, ca = ci;
        size_t x = 0;
/* Lanes x + o …: v > thr and v > core as lane masks into g and k, the counts into ci, cu, ca. */
#define UPSCALE_NEON4(o, g, k)                                                                     \
    {                                                                                              \
        float32x4_t v = vmulq_n_f32(vld1q_f32(p0 + x + (o)), w0);                                  \
        v = vaddq_f32(v, vmulq_n_f32(vld1q_f32(p1 + x + (o)), w1));                                \
        v = vaddq_f32(v, vmulq_n_f32(vld1q_f32(p2 + x + (o)), w2));                                \
        v = vaddq_f32(v, vmulq_n_f32(vld1q_f32(p3 + x + (o)), w3));                                \
        g = vcgtq_f32(v, vthr);                                                                    \
        k = vcgtq_f32(v, vcore);                                                                   \
        ci = vsubq_s32(ci, vreinterpretq_s32_u32(vcgtq_f32(v, vhi)));                              \
        cu = vsubq_s32(cu, vreinterpretq_s32_u32(vcgtq_f32(v, vlo)));                              \
        ca = vsubq_s32(ca, vreinterpretq_s32_u32(g));                                              \
    }
/* Four lane masks (all ones or zeros) narrowed to 16 bytes. */
#define UPSCALE_NARROW16(a, b, c, d)                                                               \
    vuzp1q_u8(vreinterpretq_u8_u16(vuzp1q_u16(vreinterpretq_u16_u32(a), vreinterpretq_u16_u32(b))), \
              vreinterpretq_u8_u16(vuzp1q_u16(vreinterpretq_u16_u32(c), vreinterpretq_u16_u32(d))))
        for (; x + 16 <= cols; x += 16) {
            uint32x4_t g0, g1, g2, g3, k0, k1, k2, k3;
            UPSCALE_NEON4(0, g0, k0)
            UPSCALE_NEON4(4, g1, k1)
            UPSCALE_NEON4(8, g2, k2)
            UPSCALE_NEON4(12, g3, k3)
            /* Byte (v > core)·2 + (v > thr): (k & 2) − g, g being −1 or 0. */
            vst1q_u8(m + x, vsubq_u8(vandq_u8(UPSCALE_NARROW16(k0, k1, k2, k3), vdupq_n_u8(2)), UPSCALE_NARROW16(g0, g1, g2, g3)));
        }
        for (; x + 4 <= cols; x += 4) {
            uint32x4_t g0, k0;
            UPSCALE_NEON4(0, g0, k0)
            const uint16x4_t h = vmovn_u32(vorrq_u32(vandq_u32(g0, one), vandq_u32(k0, two)));
            uint8_t t[8];
            vst1_u8(t, vmovn_u16(vcombine_u16(h, h)));
            memcpy(m + x, t, 4);
        }
#undef UPSCALE_NARROW16
#undef UPSCALE_NEON4
        if (x < cols) {
            /* The last 1 … 3: the row's last 4 again (the same bytes rewritten), the lanes done already masked
             * off in the counts; a row of fewer than 4 read as zeros past cols, those lanes masked off. */
            const size_t nr = cols - x, at = cols >= 4 ? cols - 4 : 0;
            float32x4_t q0, q1, q2, q3;
            uint32x4_t in;
            if (cols >= 4) {
                q0 = vld1q_f32(p0 + at), q1 = vld1q_f32(p1 + at), q2 = vld1q_f32(p2 + at), q3 = vld1q_f32(p3 + at);
                in = vcgeq_u32(lane, vdupq_n_u32((uint32_t)(4 - nr)));
            } else {
                q0 = psam_load_tail4(p0, nr), q1 = psam_load_tail4(p1, nr), q2 = psam_load_tail4(p2, nr);
                q3 = psam_load_tail4(p3, nr);
                in = vcgtq_u32(vdupq_n_u32((uint32_t)nr), lane);
            }
            float32x4_t v = vmulq_n_f32(q0, w0);
            v = vaddq_f32(v, vmulq_n_f32(q1, w1));
            v = vaddq_f32(v, vmulq_n_f32(q2, w2));
            v = vaddq_f32(v, vmulq_n_f32(q3, w3));
            const uint32x4_t gt = vcgtq_f32(v, vthr);
            ci = vsubq_s32(ci, vreinterpretq_s32_u32(vandq_u32(vcgtq_f32(v, vhi), in)));
            cu = vsubq_s32(cu, vreinterpretq_s32_u32(vandq_u32(vcgtq_f32(v, vlo), in)));
            ca = vsubq_s32(ca, vreinterpretq_s32_u32(vandq_u32(gt, in)));
            const uint16x4_t h = vmovn_u32(vorrq_u32(vandq_u32(gt, one), vandq_u32(vcgtq_f32(v, vcore), two)));
            uint8_t t[8];
            vst1_u8(t, vmovn_u16(vcombine_u16(h, h)));
            if (cols >= 4) memcpy(m + at, t, 4);
            else memcpy(m, t, nr);
        }
        const int32_t ri = vaddvq_s32(ci), ru = vaddvq_s32(cu), ra = vaddvq_s32(ca);
        inter += ri;
        uni += ru;
        if (ra) {
            area += ra;
            if (y0 == INT32_MAX) y0 = (int32_t)y;
            y1 = (int32_t)y;
            /* A byte is set (ra > 0): both scans stop. */
            size_t f = 0, e = cols;
            while (f + 16 <= cols && vmaxvq_u8(vld1q_u8(m + f)) == 0) f += 16;
            while (!m[f]) f++;
            while (e >= 16 && vmaxvq_u8(vld1q_u8(m + e - 16)) == 0) e -= 16;
            while (!m[e - 1]) e--;
            if ((int32_t)f < x0) x0 = (int32_t)f;
            if ((int32_t)e - 1 > x1) x1 = (int32_t)e - 1;
        }
    }
    st->intersection = inter;
    st->union_ = uni;
    st->area = area;
    if (area == 0) {
        box[0] = box[1] = box[2] = box[3] = 0;
    } else {
        box[0] = x0;
        box[1] = y0;
        box[2] = x1;
        box[3] = y1;
    }
}
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
    void (*body)(PSAM_UPSCALE_PARAMS) = psam_cpu_avx2_fma() ? psam_mask_upscale__avx2 : psam_mask_upscale__generic;
#elif defined(__aarch64__)
    void (*body)(PSAM_UPSCALE_PARAMS) = psam_mask_upscale__neon;
#else
    void (*body)(PSAM_UPSCALE_PARAMS) = psam_mask_upscale__generic;
#endif
    body(lt, n, a->out_w, a->out_h, a->col_start, a->col_w, a->row_start, a->row_w, hi, lo, thr, core, h, mask, st, box);
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
void psam_scores_shared__generic(PSAM_SCORES_PARAMS) { SCORES_BODY }
void psam_weighted_rows__generic(PSAM_WEIGHTED_PARAMS) { WEIGHTED_BODY }
#if defined(__x86_64__)
PSAM_AVX2_POST void psam_scores_shared__avx2(PSAM_SCORES_PARAMS) { SCORES_BODY }
PSAM_AVX2_POST void psam_weighted_rows__avx2(PSAM_WEIGHTED_PARAMS) { WEIGHTED_BODY }
/* Eight rows of q at a time, 16 columns per step: one accumulator per row, kt's row loaded once per t. */
PSAM_AVX512_POST void psam_scores_shared__avx512(PSAM_SCORES_PARAMS) {
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
PSAM_AVX512_POST void psam_weighted_rows16__avx512(PSAM_WEIGHTED_PARAMS) {
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
#if defined(__aarch64__)
/* Both are products of a row-major matrix (q, p) with a shared one read in place: sgemm.c's NEON tiles (8 rows ×
 * 8 columns, 16 accumulators; the scale applied after the sum, as the AVX-512 scores do). */
void psam_scores_shared__neon(PSAM_SCORES_PARAMS) {
    psam_sgemm_inplace__neon(q, ldq, 1, kt, ldk, out, ldo, nq, nk, d, scale, NULL, 0);
}
void psam_weighted_rows__neon(PSAM_WEIGHTED_PARAMS) {
    psam_sgemm_inplace__neon(p, ldp, 1, v, ldv, out, ldo, nq, d, nk, 1.0f, NULL, 0);
}
#endif
void psam_scores_shared(PSAM_SCORES_PARAMS) {
#if defined(__x86_64__)
    if (psam_cpu_avx512()) {
        psam_scores_shared__avx512(q, ldq, kt, ldk, nq, nk, d, scale, out, ldo);
        return;
    }
    if (psam_cpu_avx2_fma()) {
        psam_scores_shared__avx2(q, ldq, kt, ldk, nq, nk, d, scale, out, ldo);
        return;
    }
#elif defined(__aarch64__)
    psam_scores_shared__neon(q, ldq, kt, ldk, nq, nk, d, scale, out, ldo);
    return;
#endif
    psam_scores_shared__generic(q, ldq, kt, ldk, nq, nk, d, scale, out, ldo);
}
void psam_weighted_rows(PSAM_WEIGHTED_PARAMS) {
#if defined(__x86_64__)
    if (d == 16 && psam_cpu_avx512()) {
        psam_weighted_rows16__avx512(p, ldp, v, ldv, nq, nk, d, out, ldo);
        return;
    }
    if (d <= 64 && psam_cpu_avx2_fma()) {
        psam_weighted_rows__avx2(p, ldp, v, ldv, nq, nk, d, out, ldo);
        return;
    }
#elif defined(__aarch64__)
    psam_weighted_rows__neon(p, ldp, v, ldv, nq, nk, d, out, ldo);
    return;
#endif
    if (d <= 64) {
        psam_weighted_rows__generic(p, ldp, v, ldv, nq, nk, d, out, ldo);
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

/* No NEON bodies for the layer norm rows, the keys norm and the rows affine below: their loops (element-wise, and
 * the 8 interleaved partial sums) are what clang, which SwiftPM builds with, vectorises for aarch64 as they stand. */

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

void psam_upscale_ln_row__generic(PSAM_LN_ROW_PARAMS) { LN_ROW_BODY }
#if defined(__x86_64__)
PSAM_AVX2_POST void psam_upscale_ln_row__avx2(PSAM_LN_ROW_PARAMS) { LN_ROW_BODY }
#endif

void psam_upscale_ln_gelu_row(const float *t, size_t w, size_t cout, size_t y, const float *bias, const float *ln_w,
                              const float *ln_b, float eps, float *out) {
#if defined(__x86_64__)
    if (psam_cpu_avx2_fma())
        psam_upscale_ln_row__avx2(t, w, cout, y, bias, ln_w, ln_b, eps, out);
    else
#endif
        psam_upscale_ln_row__generic(t, w, cout, y, bias, ln_w, ln_b, eps, out);
    psam_gelu_fast_rows(out + (2 * y) * 2 * w * cout, 4 * w * cout);
}

/* The vector bodies of psam_upscale_masks_t keep each mask's sums for sub-pixel s in scratch (rows·w values a mask,
 * np apart); this writes them to their transposed places in the masks, as the generic body does. */
static inline void masks_t_scatter(const float *scratch, size_t np, size_t count, size_t rows, size_t w, size_t ow,
                                   size_t y0, size_t s, float *masks) {
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
void psam_upscale_masks_t__generic(PSAM_MASKS_T_PARAMS) { MASKS_T_BODY }
#if defined(__x86_64__)
PSAM_AVX2_POST void psam_upscale_masks_t__avx2(PSAM_MASKS_T_PARAMS) { MASKS_T_BODY }
/* The same per 16 pixels in registers: bias, GELU and every mask's products over the cout channels without
 * storing the GELU values (count ≤ 4). */
PSAM_AVX512_POST void psam_upscale_masks_t__avx512(PSAM_MASKS_T_PARAMS) {
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
        masks_t_scatter(scratch, np, count, rows, w, ow, y0, s, masks);
    }
}
#endif

#if defined(__aarch64__)
/* psam_gelu_fast512 (gelu_fast512.h) on 4 lanes: the rational erf of psam_gelu_rows with fused multiply-adds,
 * the division as a reciprocal estimate refined by two Newton steps (the estimate has 8 bits where AVX-512's has
 * 14); within 1e-6·max(1, |x|) of psam_gelu_rows (maskpost_test.c). */
static inline float32x4_t gelu_fast_neon(float32x4_t v) {
    const float32x4_t lim = vdupq_n_f32(4.0f);
    const float32x4_t z = vmaxq_f32(vminq_f32(vmulq_n_f32(v, 0.70710678118654752f), lim), vnegq_f32(lim));
    const float32x4_t z2 = vmulq_f32(z, z);
    float32x4_t p = vfmaq_f32(vdupq_n_f32(2.77068142495902e-08f), vdupq_n_f32(-2.72614225801306e-10f), z2);
    p = vfmaq_f32(vdupq_n_f32(-2.10102402082508e-06f), p, z2);
    p = vfmaq_f32(vdupq_n_f32(-5.69250639462346e-05f), p, z2);
    p = vfmaq_f32(vdupq_n_f32(-7.34990630326855e-04f), p, z2);
    p = vfmaq_f32(vdupq_n_f32(-2.95459980854025e-03f), p, z2);
    p = vfmaq_f32(vdupq_n_f32(-1.60960333262415e-02f), p, z2);
    float32x4_t q = vfmaq_f32(vdupq_n_f32(-2.13374055278905e-04f), vdupq_n_f32(-1.45660718464996e-05f), z2);
    q = vfmaq_f32(vdupq_n_f32(-1.68282697438203e-03f), q, z2);
    q = vfmaq_f32(vdupq_n_f32(-7.37332916720468e-03f), q, z2);
    q = vfmaq_f32(vdupq_n_f32(-1.42647390514189e-02f), q, z2);
    float32x4_t r = vrecpeq_f32(q);
    r = vmulq_f32(r, vrecpsq_f32(q, r));
    r = vmulq_f32(r, vrecpsq_f32(q, r));
    const float32x4_t e = vmulq_f32(vmulq_f32(z, p), r);
    const float32x4_t hv = vmulq_n_f32(v, 0.5f);
    return vfmaq_f32(hv, hv, e);
}

/* Pixels p … p + len − 1 (len ≤ 8) of sub-pixel s for masks m0 … m0 + mc − 1 (mc ≤ 4): over the cout channels,
 * + bias and GELU in registers (stored back; when `first`, else t already holds them) and the masks' sums. */
static inline __attribute__((always_inline)) void
masks_t_neon8(float *t, size_t ld, size_t cout, size_t s, size_t p, size_t len, const float *bias, const float *hyper,
              size_t m0, size_t mc, int first, float *scratch, size_t np) {
    float32x4_t a00 = vdupq_n_f32(0.0f), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    const size_t l0 = len < 4 ? len : 4, l1 = len - l0;
    const float *h0 = hyper + m0 * cout, *h1 = mc > 1 ? h0 + cout : h0, *h2 = mc > 2 ? h0 + 2 * cout : h0,
                *h3 = mc > 3 ? h0 + 3 * cout : h0;
    for (size_t c = 0; c < cout; c++) {
        float *tc = t + (s * cout + c) * ld + p;
        float32x4_t g0, g1;
        if (len == 8) g0 = vld1q_f32(tc), g1 = vld1q_f32(tc + 4);
        else g0 = psam_load_tail4(tc, l0), g1 = psam_load_tail4(tc + 4, l1);
        if (first) {
            const float32x4_t bc = vdupq_n_f32(bias[c]);
            g0 = gelu_fast_neon(vaddq_f32(g0, bc));
            g1 = gelu_fast_neon(vaddq_f32(g1, bc));
            if (len == 8) vst1q_f32(tc, g0), vst1q_f32(tc + 4, g1);
            else psam_store_tail4(tc, g0, l0), psam_store_tail4(tc + 4, g1, l1);
        }
        /* Masks past mc repeat mask m0's weights (their sums are not stored). */
        a00 = vfmaq_n_f32(a00, g0, h0[c]), a01 = vfmaq_n_f32(a01, g1, h0[c]);
        a10 = vfmaq_n_f32(a10, g0, h1[c]), a11 = vfmaq_n_f32(a11, g1, h1[c]);
        a20 = vfmaq_n_f32(a20, g0, h2[c]), a21 = vfmaq_n_f32(a21, g1, h2[c]);
        a30 = vfmaq_n_f32(a30, g0, h3[c]), a31 = vfmaq_n_f32(a31, g1, h3[c]);
    }
    const float32x4_t acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
    for (size_t m = 0; m < mc; m++) {
        float *o = scratch + (m0 + m) * np + p;
        if (len == 8) vst1q_f32(o, acc[m][0]), vst1q_f32(o + 4, acc[m][1]);
        else psam_store_tail4(o, acc[m][0], l0), psam_store_tail4(o + 4, acc[m][1], l1);
    }
}

/* As the AVX-512 body: per 8 pixels in registers, bias, GELU and up to 4 masks' products over the cout channels
 * (more masks: 4 at a time, the first four's pass leaving the GELU values in t for the others). */
void psam_upscale_masks_t__neon(PSAM_MASKS_T_PARAMS) {
    const size_t np = rows * w, ow = 2 * w;
    if (count == 0) {
        /* Only + bias and GELU. */
        for (size_t r = 0; r < 4 * cout; r++) {
            float *tr = t + r * ld;
            const float32x4_t bc = vdupq_n_f32(bias[r % cout]);
            size_t p = 0;
            for (; p + 4 <= np; p += 4) vst1q_f32(tr + p, gelu_fast_neon(vaddq_f32(vld1q_f32(tr + p), bc)));
            if (p < np) psam_store_tail4(tr + p, gelu_fast_neon(vaddq_f32(psam_load_tail4(tr + p, np - p), bc)), np - p);
        }
        return;
    }
    for (size_t s = 0; s < 4; s++) {
        for (size_t m0 = 0; m0 < count; m0 += 4) {
            const size_t mc = count - m0 < 4 ? count - m0 : 4;
            size_t p = 0;
            for (; p + 8 <= np; p += 8) masks_t_neon8(t, ld, cout, s, p, 8, bias, hyper, m0, mc, m0 == 0, scratch, np);
            if (p < np) masks_t_neon8(t, ld, cout, s, p, np - p, bias, hyper, m0, mc, m0 == 0, scratch, np);
        }
        masks_t_scatter(scratch, np, count, rows, w, ow, y0, s, masks);
    }
}
#endif

void psam_upscale_masks_t(float *t, size_t ld, size_t rows, size_t w, size_t cout, size_t y0, const float *bias,
                          const float *hyper, size_t count, float *masks, float *scratch) {
#if defined(__x86_64__)
    if (count <= 4 && psam_cpu_avx512()) {
        psam_upscale_masks_t__avx512(t, ld, rows, w, cout, y0, bias, hyper, count, masks, scratch);
        return;
    }
    if (psam_cpu_avx2_fma()) {
        psam_upscale_masks_t__avx2(t, ld, rows, w, cout, y0, bias, hyper, count, masks, scratch);
        return;
    }
#elif defined(__aarch64__)
    psam_upscale_masks_t__neon(t, ld, rows, w, cout, y0, bias, hyper, count, masks, scratch);
    return;
#endif
    psam_upscale_masks_t__generic(t, ld, rows, w, cout, y0, bias, hyper, count, masks, scratch);
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
void psam_keys_norm__generic(PSAM_KEYS_NORM_PARAMS) { KEYS_NORM_BODY }
#if defined(__x86_64__)
PSAM_AVX2_POST void psam_keys_norm__avx2(PSAM_KEYS_NORM_PARAMS) { KEYS_NORM_BODY }
#endif
void psam_keys_norm(PSAM_KEYS_NORM_PARAMS) {
#if defined(__x86_64__)
    if (psam_cpu_avx2_fma()) {
        psam_keys_norm__avx2(x, add, m, c, w, b, eps, mean, rstd, pe, xpe);
        return;
    }
#endif
    psam_keys_norm__generic(x, add, m, c, w, b, eps, mean, rstd, pe, xpe);
}

/* t[j][k] = rstd[j]·(t[j][k] − mean[j]·u[k]) + v[k] for m rows of n values. */
#define ROWS_AFFINE_BODY                                                                 \
    for (size_t j = 0; j < m; j++) {                                                     \
        float *r = t + j * n;                                                            \
        const float a = rstd[j], b = mean[j];                                            \
        for (size_t k = 0; k < n; k++) r[k] = a * (r[k] - b * u[k]) + v[k];              \
    }
void psam_rows_affine__generic(PSAM_ROWS_AFFINE_PARAMS) { ROWS_AFFINE_BODY }
#if defined(__x86_64__)
PSAM_AVX2_POST void psam_rows_affine__avx2(PSAM_ROWS_AFFINE_PARAMS) { ROWS_AFFINE_BODY }
#endif
void psam_rows_affine(float *t, size_t m, size_t n, const float *mean, const float *rstd, const float *u, const float *v) {
#if defined(__x86_64__)
    if (psam_cpu_avx2_fma()) {
        psam_rows_affine__avx2(t, m, n, mean, rstd, u, v);
        return;
    }
#endif
    psam_rows_affine__generic(t, m, n, mean, rstd, u, v);
}
