#include "rowops_internal.h"

static inline uint8_t clip8_22(int32_t acc) {
    acc >>= 22;
    return (uint8_t)(acc < 0 ? 0 : (acc > 255 ? 255 : acc));
}

void psam_resample_rows_h(const uint8_t *src, size_t stride, size_t channels, size_t y0, size_t y1, size_t ow,
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

void psam_resample_rows_v(const uint8_t *tmp, size_t ow3, size_t y0, size_t y1, const int32_t *bounds, const int32_t *weights,
                          size_t taps, uint8_t *out) {
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
