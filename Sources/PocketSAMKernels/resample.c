#include "rowops_internal.h"

/* Integer arithmetic throughout: every body gives the generic one's bytes. x86 runs the generic bodies (there are
 * no AVX2/AVX-512 ones); aarch64 the NEON ones below. */

static inline uint8_t clip8_22(int32_t acc) {
    acc >>= 22;
    return (uint8_t)(acc < 0 ? 0 : (acc > 255 ? 255 : acc));
}

void psam_resample_h__generic(const uint8_t *src, size_t stride, size_t channels, size_t y0, size_t y1, size_t ow,
                              const int32_t *bounds, const int32_t *weights, size_t taps, uint8_t *tmp) {
    for (size_t y = y0; y < y1; y++) {
        const uint8_t *row = src + y * stride;
        uint8_t *o = tmp + y * ow * 3;
        for (size_t xx = 0; xx < ow; xx++) {
            const uint8_t *p = row + (size_t)bounds[2 * xx] * channels;
            const int32_t *k = weights + xx * taps, n = bounds[2 * xx + 1];
            if (channels == 3) {
                int32_t a0 = 1 << 21, a1 = 1 << 21, a2 = 1 << 21;
                for (int32_t x = 0; x < n; x++) {
                    a0 += (int32_t)p[3 * x] * k[x];
                    a1 += (int32_t)p[3 * x + 1] * k[x];
                    a2 += (int32_t)p[3 * x + 2] * k[x];
                }
                o[3 * xx] = clip8_22(a0);
                o[3 * xx + 1] = clip8_22(a1);
                o[3 * xx + 2] = clip8_22(a2);
            } else {
                int32_t a = 1 << 21;
                for (int32_t x = 0; x < n; x++) a += (int32_t)p[(size_t)x * channels] * k[x];
                o[3 * xx] = o[3 * xx + 1] = o[3 * xx + 2] = clip8_22(a);
            }
        }
    }
}

void psam_resample_v__generic(const uint8_t *tmp, size_t ow3, size_t y0, size_t y1, const int32_t *bounds,
                              const int32_t *weights, size_t taps, uint8_t *out) {
    int32_t acc[512];
    for (size_t yy = y0; yy < y1; yy++) {
        const uint8_t *base = tmp + (size_t)bounds[2 * yy] * ow3;
        const int32_t *k = weights + yy * taps, n = bounds[2 * yy + 1];
        for (size_t i0 = 0; i0 < ow3; i0 += 512) {
            const size_t len = ow3 - i0 < 512 ? ow3 - i0 : 512;
            for (size_t i = 0; i < len; i++) acc[i] = 1 << 21;
            for (int32_t y = 0; y < n; y++) {
                const uint8_t *r = base + (size_t)y * ow3 + i0;
                const int32_t ky = k[y];
                for (size_t i = 0; i < len; i++) acc[i] += (int32_t)r[i] * ky;
            }
            for (size_t i = 0; i < len; i++) out[yy * ow3 + i0 + i] = clip8_22(acc[i]);
        }
    }
}

#if defined(__aarch64__)
/* Sums of 32-bit products (the weights have 22 bits: no 16-bit multiply); the sums are exact, so their order is
 * free. (2^21 + acc) >> 22 clamped to 0…255 as clip8_22: arithmetic shift, then saturating narrowings. */
static inline uint8x8_t clip8_22_neon(int32x4_t a, int32x4_t b) {
    const uint16x8_t u = vcombine_u16(vqmovun_s32(vshrq_n_s32(a, 22)), vqmovun_s32(vshrq_n_s32(b, 22)));
    return vqmovn_u16(u);
}

/* One block of 4 taps: v's first 4 pixels (R, G, B interleaved, or gray) spread by the lookups into 32-bit lanes,
 * times the taps' weights wv, into ar, ag, ab (gray: ar alone). */
static inline __attribute__((always_inline)) void resample_h_block_neon(uint8x16_t v, int32x4_t wv, uint8x16_t tr,
                                                                        uint8x16_t tg, uint8x16_t tb, const size_t ch,
                                                                        int32x4_t *ar, int32x4_t *ag, int32x4_t *ab) {
    *ar = vmlaq_s32(*ar, vreinterpretq_s32_u8(vqtbl1q_u8(v, tr)), wv);
    if (ch == 3) {
        *ag = vmlaq_s32(*ag, vreinterpretq_s32_u8(vqtbl1q_u8(v, tg)), wv);
        *ab = vmlaq_s32(*ab, vreinterpretq_s32_u8(vqtbl1q_u8(v, tb)), wv);
    }
}

/* Horizontal pass, one row: each output pixel's taps 4 at a time, 16 bytes loaded and spread by table lookups
 * into the 32-bit lanes of R, G, B (or gray) of 4 input pixels, times the 4 taps' weights; the last block's
 * weights past the tap count masked off. Bytes [0, lim) of the row are readable (those the generic loop reads),
 * lim ≥ 16, and the weight table ends at wend. When a pixel's last block would load past either (the row's last
 * few pixels, the table's last), its blocks take the careful path: a 16-byte load that would pass lim takes the
 * row's last 16 bytes instead, the lookup indexes moved up to match (those of lanes past the taps may leave the 16
 * bytes: they read 0), and weights past wend are not loaded. */
static inline __attribute__((always_inline)) void resample_h_row_neon(const uint8_t *row, size_t lim, const size_t ch,
                                                                      size_t ow, const int32_t *bounds,
                                                                      const int32_t *weights, size_t taps,
                                                                      const int32_t *wend, uint8_t *o) {
    static const uint8_t spread[4][16] = {
        {0, 255, 255, 255, 3, 255, 255, 255, 6, 255, 255, 255, 9, 255, 255, 255},   /* R of pixels 0…3 */
        {1, 255, 255, 255, 4, 255, 255, 255, 7, 255, 255, 255, 10, 255, 255, 255},  /* G */
        {2, 255, 255, 255, 5, 255, 255, 255, 8, 255, 255, 255, 11, 255, 255, 255},  /* B */
        {0, 255, 255, 255, 1, 255, 255, 255, 2, 255, 255, 255, 3, 255, 255, 255}};  /* gray */
    static const int32_t low[8] = {-1, -1, -1, -1, 0, 0, 0, 0}; /* low + 4 − r: the r lowest lanes */
    const uint8x16_t tr = vld1q_u8(spread[ch == 3 ? 0 : 3]), tg = vld1q_u8(spread[1]), tb = vld1q_u8(spread[2]);
    for (size_t xx = 0; xx < ow; xx++) {
        const size_t b = (size_t)bounds[2 * xx] * ch, n = (size_t)bounds[2 * xx + 1];
        const int32_t *k = weights + xx * taps;
        const uint8_t *p = row + b;
        int32x4_t ar = vdupq_n_s32(0), ag = vdupq_n_s32(0), ab = vdupq_n_s32(0);
        const size_t xl = n ? (n - 1) & ~(size_t)3 : 0; /* the last block's first tap */
        if (n && b + xl * ch + 16 <= lim && k + xl + 4 <= wend) {
            for (size_t x = 0; x < xl; x += 4)
                resample_h_block_neon(vld1q_u8(p + x * ch), vld1q_s32(k + x), tr, tg, tb, ch, &ar, &ag, &ab);
            const int32x4_t wv = vandq_s32(vld1q_s32(k + xl), vld1q_s32(low + 4 - (n - xl)));
            resample_h_block_neon(vld1q_u8(p + xl * ch), wv, tr, tg, tb, ch, &ar, &ag, &ab);
        } else
            for (size_t x = 0; x < n; x += 4) {
                const size_t off = b + x * ch, r = n - x < 4 ? n - x : 4;
                int32x4_t wv;
                if (k + x + 4 <= wend) wv = vandq_s32(vld1q_s32(k + x), vld1q_s32(low + 4 - r));
                else {
                    const int32_t t[4] = {k[x], r > 1 ? k[x + 1] : 0, r > 2 ? k[x + 2] : 0, 0};
                    wv = vld1q_s32(t);
                }
                if (off + 16 <= lim) resample_h_block_neon(vld1q_u8(row + off), wv, tr, tg, tb, ch, &ar, &ag, &ab);
                else {
                    const uint8x16_t d = vdupq_n_u8((uint8_t)(off + 16 - lim));
                    resample_h_block_neon(vld1q_u8(row + lim - 16), wv, vqaddq_u8(tr, d), vqaddq_u8(tg, d),
                                          vqaddq_u8(tb, d), ch, &ar, &ag, &ab);
                }
            }
        uint8_t *op = o + 3 * xx;
        if (ch == 3) {
            /* [ΣR, ΣG, ΣB, ΣB] */
            const int32x4_t s = vaddq_s32(vpaddq_s32(vpaddq_s32(ar, ag), vpaddq_s32(ab, ab)), vdupq_n_s32(1 << 21));
            const uint32_t px = vget_lane_u32(vreinterpret_u32_u8(clip8_22_neon(s, s)), 0);
            if (xx + 1 < ow) memcpy(op, &px, 4); /* the fourth byte is the next pixel's, written next */
            else memcpy(op, &px, 3);
        } else {
            const uint8_t g = clip8_22((1 << 21) + vaddvq_s32(ar));
            op[0] = op[1] = op[2] = g;
        }
    }
}

void psam_resample_h__neon(const uint8_t *src, size_t stride, size_t channels, size_t y0, size_t y1, size_t ow,
                           const int32_t *bounds, const int32_t *weights, size_t taps, uint8_t *tmp) {
    size_t lim = 0;
    for (size_t xx = 0; xx < ow; xx++) {
        const size_t e = ((size_t)bounds[2 * xx] + (size_t)bounds[2 * xx + 1]) * channels;
        if (bounds[2 * xx + 1] > 0 && e > lim) lim = e;
    }
    /* Rows of fewer than 16 bytes read (images a few pixels wide), other channel counts: the generic body. */
    if ((channels != 3 && channels != 1) || lim < 16) {
        psam_resample_h__generic(src, stride, channels, y0, y1, ow, bounds, weights, taps, tmp);
        return;
    }
    const int32_t *wend = weights + ow * taps;
    for (size_t y = y0; y < y1; y++) {
        if (channels == 3) resample_h_row_neon(src + y * stride, lim, 3, ow, bounds, weights, taps, wend, tmp + y * ow * 3);
        else resample_h_row_neon(src + y * stride, lim, 1, ow, bounds, weights, taps, wend, tmp + y * ow * 3);
    }
}

/* Vertical pass: the same n weights down a whole row, so 16·B bytes of it at a time in 4·B accumulators across
 * the taps (widened u8 → u16 → s32, 32-bit multiply-accumulates by the tap's weight). */
static inline __attribute__((always_inline)) void resample_v_block_neon(const uint8_t *src, size_t ld, const int32_t *k,
                                                                        int32_t n, uint8_t *o, const int B) {
    int32x4_t a[8];
#pragma GCC unroll 8
    for (int i = 0; i < 4 * B; i++) a[i] = vdupq_n_s32(1 << 21);
    for (int32_t y = 0; y < n; y++) {
        const uint8_t *r = src + (size_t)y * ld;
        const int32_t ky = k[y];
#pragma GCC unroll 2
        for (int b = 0; b < B; b++) {
            const uint8x16_t v = vld1q_u8(r + 16 * b);
            const uint16x8_t lo = vmovl_u8(vget_low_u8(v)), hi = vmovl_high_u8(v);
            a[4 * b] = vmlaq_n_s32(a[4 * b], vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(lo))), ky);
            a[4 * b + 1] = vmlaq_n_s32(a[4 * b + 1], vreinterpretq_s32_u32(vmovl_high_u16(lo)), ky);
            a[4 * b + 2] = vmlaq_n_s32(a[4 * b + 2], vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(hi))), ky);
            a[4 * b + 3] = vmlaq_n_s32(a[4 * b + 3], vreinterpretq_s32_u32(vmovl_high_u16(hi)), ky);
        }
    }
#pragma GCC unroll 2
    for (int b = 0; b < B; b++)
        vst1q_u8(o + 16 * b, vcombine_u8(clip8_22_neon(a[4 * b], a[4 * b + 1]), clip8_22_neon(a[4 * b + 2], a[4 * b + 3])));
}

/* Rows of fewer than 16 bytes: the generic body. Else 32 bytes at a time, then 16, and a last 16 ending at the
 * row's end (overlapping: the same bytes again). */
void psam_resample_v__neon(const uint8_t *tmp, size_t ow3, size_t y0, size_t y1, const int32_t *bounds,
                           const int32_t *weights, size_t taps, uint8_t *out) {
    if (ow3 < 16) {
        psam_resample_v__generic(tmp, ow3, y0, y1, bounds, weights, taps, out);
        return;
    }
    for (size_t yy = y0; yy < y1; yy++) {
        const uint8_t *base = tmp + (size_t)bounds[2 * yy] * ow3;
        const int32_t *k = weights + yy * taps, n = bounds[2 * yy + 1];
        uint8_t *o = out + yy * ow3;
        size_t i = 0;
        for (; i + 32 <= ow3; i += 32) resample_v_block_neon(base + i, ow3, k, n, o + i, 2);
        if (i + 16 <= ow3) {
            resample_v_block_neon(base + i, ow3, k, n, o + i, 1);
            i += 16;
        }
        if (i < ow3) resample_v_block_neon(base + ow3 - 16, ow3, k, n, o + ow3 - 16, 1);
    }
}
#endif

void psam_resample_rows_h(const uint8_t *src, size_t stride, size_t channels, size_t y0, size_t y1, size_t ow,
                          const int32_t *bounds, const int32_t *weights, size_t taps, uint8_t *tmp) {
#if defined(__aarch64__)
    psam_resample_h__neon(src, stride, channels, y0, y1, ow, bounds, weights, taps, tmp);
#else
    psam_resample_h__generic(src, stride, channels, y0, y1, ow, bounds, weights, taps, tmp);
#endif
}

void psam_resample_rows_v(const uint8_t *tmp, size_t ow3, size_t y0, size_t y1, const int32_t *bounds, const int32_t *weights,
                          size_t taps, uint8_t *out) {
#if defined(__aarch64__)
    psam_resample_v__neon(tmp, ow3, y0, y1, bounds, weights, taps, out);
#else
    psam_resample_v__generic(tmp, ow3, y0, y1, bounds, weights, taps, out);
#endif
}
