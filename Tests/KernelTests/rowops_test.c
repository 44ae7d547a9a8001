/* Tests of the fp32 row operations (Sources/PocketSAMKernels/: a file per operation, e.g. layernorm.c), built with
 * the system C compiler and linked with every kernel source; rowops_internal.h declares each operation's bodies, so
 * that the generic ones are the reference; every x86 variant this CPU has (AVX2 + FMA, AVX-512) and the public, dispatched function are
 * run on the same inputs, over many shapes including tails that fill no vector (sizes not a multiple of
 * 8 or 16, one row, c = 1…300, 49- and 196-token windows with kd 16 and 32, 1…64 keys).
 *
 * Quantization, GELU and bias + GELU must match bit for bit (no FMA, same operations in the same order per
 * element). Layer norm, softmax, both attentions and the depthwise convolution may differ by rounding: the
 * vector bodies add in a different order (partial sums per lane, then across lanes), use fused
 * multiply-adds (one rounding instead of two) and, for softmax, a polynomial exp instead of libm's expf
 * (relative error ~2e-7). So those are compared with a tolerance relative to the magnitude of the row:
 * |a − b| ≤ 1e-5 · magnitude, the magnitude being max |reference| over the row for layer norm and softmax;
 * where cancellation can make the result itself small, that of what it is made of: max |v| for the
 * attentions (the output is a weighted mean of v), Σ |tap products| + |bias| for the depthwise convolution.
 * Bytes outside the written area (row padding, scratch guard) must be left untouched.
 *
 * Prints "tested: <variant>...", the largest relative difference of each operation, and a final
 * "N passed, M failed"; exit status 1 on any failure. */
#include "../../Sources/PocketSAMKernels/rowops_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;
static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint32_t next(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float frand(float lo, float hi) { return lo + (hi - lo) * (float)(next() & 0xFFFFFF) / 16777215.0f; }
static float *falloc(size_t n) { return calloc(n ? n : 1, sizeof(float)); }
static void fill(float *x, size_t n, float lo, float hi) { for (size_t i = 0; i < n; i++) x[i] = frand(lo, hi); }

#define CHECK(cond, ...) do { if (cond) passed++; else { failed++; fprintf(stderr, "FAILED: " __VA_ARGS__); fputc('\n', stderr); } } while (0)

/* A variant of each operation: the generic body's signature. */
typedef void (*quantize_fn)(const float *, size_t, size_t, size_t, uint8_t *, size_t, float *, int32_t *);
typedef void (*gelu_fn)(float *, size_t);
typedef void (*layernorm_fn)(const float *, size_t, size_t, size_t, const float *, const float *, float, float *, size_t);
typedef void (*softmax_fn)(float *, size_t, size_t, size_t);
typedef void (*attention_fn)(const float *, size_t, size_t, size_t, size_t, float, const float *, float *, size_t, float *);
typedef void (*depthwise_fn)(const float *, size_t, size_t, size_t, const float *, const float *, size_t, size_t, size_t,
                             float *, size_t, size_t, size_t, int, uint8_t *, size_t, float *, int32_t *);
typedef void (*fewkeys_fn)(const float *, size_t, const float *, size_t, const float *, size_t, size_t, size_t, size_t,
                           float, float *, size_t, size_t, size_t);

/* The dispatched public functions in the generic signatures. */
static void depthwise_public(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t k,
                             size_t stride, size_t pad, float *out, size_t wo, size_t y0, size_t y1, int gelu, uint8_t *q,
                             size_t ldq, float *scale, int32_t *zero) {
    if (q) psam_depthwise_rows_u8(x, h, w, c, wt, bias, k, stride, pad, wo, y0, y1, gelu, out, q, ldq, scale, zero);
    else psam_depthwise_rows(x, h, w, c, wt, bias, k, stride, pad, out, wo, y0, y1, gelu);
}

typedef struct {
    const char *name;
    quantize_fn quantize;
    gelu_fn gelu;
    layernorm_fn layernorm;
    softmax_fn softmax;
    attention_fn attention;
    depthwise_fn depthwise;
    fewkeys_fn fewkeys; /* NULL (any member): no own version (the dispatched function covers it) */
} variant;

static variant variants[4];
static size_t nvariants;

/* Largest |a − b| / magnitude seen per operation, reported at the end. */
static double worst_layernorm, worst_softmax, worst_attention, worst_depthwise, worst_fewkeys;

/* |a − b| ≤ 1e-5 · mag for n values; returns the largest relative difference (or +inf on NaN). */
static double reldiff(const float *a, const float *b, size_t n, double mag) {
    double worst = 0.0;
    if (!(mag > 0.0)) mag = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]) / mag;
        if (!(d == d)) return INFINITY;
        if (d > worst) worst = d;
    }
    return worst;
}
static double maxabs(const float *a, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}
static const double TOL = 1e-5;

/* ---- quantization: bit-exact ---- */
/* The quantized rows equal, but where the input is NaN (kind 6): the generic body converts a NaN there, which C
 * leaves undefined; a NaN must not change the row's extremes (scale, zero point) nor its other values. */
static int same_q(const void *ref, const void *got, size_t esz, const float *x, size_t m, size_t k, size_t ldx, size_t ldq) {
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < ldq; j++)
            if ((j >= k || !isnan(x[i * ldx + j])) &&
                memcmp((const char *)ref + (i * ldq + j) * esz, (const char *)got + (i * ldq + j) * esz, esz) != 0)
                return 0;
    return 1;
}

static void test_quantize(size_t m, size_t k, int kind) {
    size_t ldx = k + next() % 5, ldq = k + next() % 9;
    float *x = falloc(m * ldx);
    for (size_t i = 0; i < m * ldx; i++) {
        switch (kind) {
        case 0: x[i] = frand(-3.0f, 5.0f); break;
        case 1: x[i] = frand(0.5f, 7.0f); break;                            /* all positive: lo = 0 */
        case 2: x[i] = frand(-9.0f, -0.25f); break;                         /* all negative: hi = 0 */
        case 3: x[i] = (i / ldx) % 3 == 0 ? 0.0f : (next() & 1 ? -0.0f : 1.5f); break; /* zero rows, ±0 */
        case 4: x[i] = frand(-1e-3f, 1e-3f) * (float)(1u << (next() % 20)); break;   /* wide range */
        case 6: x[i] = next() % 7 == 0 ? NAN : next() % 7 == 0 ? -0.0f : frand(-3.0f, 5.0f); break; /* NaN, −0 */
        default: break;
        }
    }
    if (kind == 5) /* On rounding boundaries: x·inv + zero + 0.5 within an ulp or so of an integer, where one
                    * rounding (FMA) instead of two would change the truncated result. */
        for (size_t i = 0; i < m; i++) {
            float *r = x + i * ldx, lo = frand(-4.0f, -0.5f), hi = frand(0.5f, 4.0f), s = (hi - lo) / 255.0f;
            float inv = 1.0f / s, add = floorf(-lo * inv + 0.5f) + 0.5f;
            for (size_t j = 0; j < k; j++) {
                float t = ((float)(1 + next() % 254) - add) * s;
                r[j] = t < lo ? lo : (t > hi ? hi : t);
            }
            if (k > 1) { r[0] = lo; r[k - 1] = hi; }
        }
    if (kind == 7) /* Extremes for which hi·inv + zero + 0.5 rounds to 256 (about 1 row in 36000 of random ones): the
                    * clamp to 255.5 (or a saturating narrow) must give 255, not a wrapped 0. */
        for (size_t i = 0; i < m; i++) {
            static const float ext[5][2] = {{-0x1.0e99d8p+0f, 0x1.24b0d8p+0f}, {-0x1.d0cbp+1f, 0x1.5f0848p-1f},
                                            {-0x1.37818p-3f, 0x1.c55a2ep+1f}, {-0x1.8faef4p+0f, 0x1.718a2ap+1f},
                                            {-0x1.e23d72p+1f, 0x1.76b3bep+1f}};
            const float lo = ext[i % 5][0], hi = ext[i % 5][1];
            float *r = x + i * ldx;
            for (size_t j = 0; j < k; j++) r[j] = next() % 3 == 0 ? hi : frand(lo, hi);
            r[0] = lo;
            if (k > 1) r[k - 1] = hi;
        }
    uint8_t *ref = malloc(m * ldq + 1), *got = malloc(m * ldq + 1);
    float *rs = falloc(m), *gs = falloc(m);
    int32_t *rz = calloc(m, 4), *gz = calloc(m, 4);
    memset(ref, 0xA5, m * ldq + 1);
    psam_quantize_u8__generic(x, m, k, ldx, ref, ldq, rs, rz);
    for (size_t v = 0; v < nvariants; v++) {
        if (!variants[v].quantize) continue; /* this variant has no own body of it */
        memset(got, 0x5A, m * ldq + 1);
        variants[v].quantize(x, m, k, ldx, got, ldq, gs, gz);
        CHECK(same_q(ref, got, 1, x, m, k, ldx, ldq) && got[m * ldq] == 0x5A && memcmp(rs, gs, m * 4) == 0 && memcmp(rz, gz, m * 4) == 0,
              "quantize %s m=%zu k=%zu kind=%d", variants[v].name, m, k, kind);
    }
    free(x); free(ref); free(got); free(rs); free(gs); free(rz); free(gz);
}

/* Symmetric int16 rows: the generic body against the dispatched one and each own body, bit for bit, on
 * test_quantize's shapes and kinds (kind 5 here: x·inv + AMAX + 0.5 within rounding of an integer). */
typedef void (*quantize_s16_fn)(const float *, size_t, size_t, size_t, int16_t *, size_t, float *);
static const char *s16_names[3] = {"dispatched"};
static quantize_s16_fn s16_fns[3] = {psam_quantize_rows_s16};
static size_t s16_nv = 1;
static void test_quantize_s16(size_t m, size_t k, int kind) {
    size_t ldx = k + next() % 5, ldq = k + next() % 9;
    float *x = falloc(m * ldx);
    for (size_t i = 0; i < m * ldx; i++) {
        switch (kind) {
        case 0: case 7: x[i] = frand(-3.0f, 5.0f); break;
        case 1: x[i] = frand(0.5f, 7.0f); break;
        case 2: x[i] = frand(-9.0f, -0.25f); break;
        case 3: x[i] = (i / ldx) % 3 == 0 ? 0.0f : (next() & 1 ? -0.0f : 1.5f); break;
        case 4: x[i] = frand(-1e-3f, 1e-3f) * (float)(1u << (next() % 20)); break;
        case 6: x[i] = next() % 7 == 0 ? NAN : next() % 7 == 0 ? -0.0f : frand(-3.0f, 5.0f); break;
        default: break;
        }
    }
    if (kind == 5)
        for (size_t i = 0; i < m; i++) {
            float *r = x + i * ldx, amax = frand(0.5f, 4.0f), s = amax / (float)PSAM_S16_AMAX;
            for (size_t j = 0; j < k; j++) {
                float t = ((float)(1 + next() % (2 * PSAM_S16_AMAX)) - ((float)PSAM_S16_AMAX + 0.5f)) * s;
                r[j] = t < -amax ? -amax : (t > amax ? amax : t);
            }
            if (k > 1) { r[0] = -amax; r[k - 1] = amax; }
        }
    int16_t *ref = malloc((m * ldq + 1) * 2), *got = malloc((m * ldq + 1) * 2);
    float *rs = falloc(m), *gs = falloc(m);
    memset(ref, 0xA5, (m * ldq + 1) * 2);
    psam_quantize_s16__generic(x, m, k, ldx, ref, ldq, rs);
    for (size_t v = 0; v < s16_nv; v++) {
        memset(got, 0x5A, (m * ldq + 1) * 2);
        s16_fns[v](x, m, k, ldx, got, ldq, gs);
        CHECK(same_q(ref, got, 2, x, m, k, ldx, ldq) && got[m * ldq] == (int16_t)0x5A5A && memcmp(rs, gs, m * 4) == 0,
              "quantize_s16 %s m=%zu k=%zu kind=%d", s16_names[v], m, k, kind);
    }
    free(x); free(ref); free(got); free(rs); free(gs);
}

/* ---- GELU and bias + GELU: bit-exact ---- */
static void test_gelu(size_t n) {
    float *x = falloc(n + 1), *ref = falloc(n + 1), *got = falloc(n + 1);
    fill(x, n, -6.0f, 6.0f);
    if (n > 3) { x[0] = 0.0f; x[1] = -0.0f; x[2] = 40.0f; x[3] = -40.0f; }
    memcpy(ref, x, (n + 1) * 4);
    psam_gelu__generic(ref, n);
    for (size_t v = 0; v < nvariants; v++) {
        if (!variants[v].gelu) continue; /* this variant has no own body of it */
        memcpy(got, x, (n + 1) * 4);
        got[n] = 12345.0f;
        variants[v].gelu(got, n);
        CHECK(memcmp(ref, got, n * 4) == 0 && got[n] == 12345.0f, "gelu %s n=%zu", variants[v].name, n);
    }
    free(x); free(ref); free(got);
}

/* psam_add_rows: the dispatched kernel against the scalar loop for every width 0..300 (vector body, masked tail),
 * in place (out = a), with NaN and infinities; nothing written past n. */
static void test_add(void) {
    const size_t cap = 300;
    float *a = falloc(cap + 16), *b = falloc(cap + 16), *ref = falloc(cap + 16), *got = falloc(cap + 16);
    fill(a, cap, -4.0f, 4.0f);
    fill(b, cap, -4.0f, 4.0f);
    a[3] = NAN, a[5] = INFINITY, b[5] = -INFINITY, b[7] = INFINITY, a[8] = 1e38f, b[8] = 1e38f;
    for (size_t n = 0; n <= cap; n++) {
        for (size_t i = 0; i < n + 16; i++) ref[i] = got[i] = 777.0f;
        psam_add__generic(ref, a, b, n);
        psam_add_rows(got, a, b, n);
        int ok = memcmp(ref, got, (n + 16) * 4) == 0;
        memcpy(got, a, n * 4);
        psam_add_rows(got, got, b, n);
        ok &= memcmp(ref, got, n * 4) == 0;
        CHECK(ok, "add n=%zu", n);
#if defined(__aarch64__)
        for (size_t i = 0; i < n + 16; i++) got[i] = 777.0f;
        psam_add__neon(got, a, b, n);
        ok = memcmp(ref, got, (n + 16) * 4) == 0;
        memcpy(got, a, n * 4);
        psam_add__neon(got, got, b, n); /* out = a */
        ok &= memcmp(ref, got, n * 4) == 0;
        memcpy(got, b, n * 4);
        psam_add__neon(got, a, got, n); /* out = b */
        ok &= memcmp(ref, got, n * 4) == 0;
        CHECK(ok, "add neon n=%zu", n);
#endif
    }
    free(a); free(b); free(ref); free(got);
}

/* psam_layernorm_rows_seq: every row as the one-row chain (left-to-right sums, the documented order), bit for bit,
 * for row counts around its 8-row groups, in place too. */
static void test_layernorm_seq(size_t m, size_t c) {
    float *x = falloc(m * c), *w = falloc(c), *b = falloc(c), *ref = falloc(m * c), *got = falloc(m * c);
    fill(x, m * c, -3.0f, 5.0f);
    fill(w, c, 0.5f, 1.5f);
    fill(b, c, -1.0f, 1.0f);
    const float eps = 1e-6f;
    for (size_t i = 0; i < m; i++) {
        const float *r = x + i * c;
        float mean = 0.0f, v = 0.0f;
        for (size_t j = 0; j < c; j++) mean += r[j];
        mean /= (float)c;
        for (size_t j = 0; j < c; j++) {
            float d = r[j] - mean;
            v += d * d;
        }
        v /= (float)c;
        float inv = 1.0f / sqrtf(v + eps);
        for (size_t j = 0; j < c; j++) ref[i * c + j] = (r[j] - mean) * inv * w[j] + b[j];
    }
    typedef void (*seq_fn)(const float *, size_t, size_t, const float *, const float *, float, float *);
    const char *names[3] = {"dispatched", "generic"};
    seq_fn fns[3] = {psam_layernorm_rows_seq, psam_layernorm_seq__generic};
    size_t nv = 2;
#if defined(__aarch64__)
    names[nv] = "neon"; fns[nv++] = psam_layernorm_seq__neon;
#endif
    for (size_t v = 0; v < nv; v++) {
        fns[v](x, m, c, w, b, eps, got);
        int ok = memcmp(ref, got, m * c * 4) == 0;
        memcpy(got, x, m * c * 4);
        fns[v](got, m, c, w, b, eps, got);
        ok &= memcmp(ref, got, m * c * 4) == 0;
        CHECK(ok, "layernorm_seq %s m=%zu c=%zu", names[v], m, c);
    }
    free(x); free(w); free(b); free(ref); free(got);
}

static void test_bias_gelu(size_t m, size_t n, int with_bias, int gelu) {
    size_t ld = n + next() % 4;
    float *x = falloc(m * ld), *bias = falloc(n), *ref = falloc(m * ld), *got = falloc(m * ld);
    fill(x, m * ld, -4.0f, 4.0f);
    fill(bias, n, -1.0f, 1.0f);
    memcpy(ref, x, m * ld * 4);
    for (size_t r = 0; r < m; r++) {
        for (size_t j = 0; j < n && with_bias; j++) ref[r * ld + j] += bias[j];
        if (gelu) psam_gelu__generic(ref + r * ld, n);
    }
    memcpy(got, x, m * ld * 4);
    psam_bias_gelu_rows(got, m, n, ld, with_bias ? bias : NULL, gelu);
    CHECK(memcmp(ref, got, m * ld * 4) == 0, "bias_gelu m=%zu n=%zu bias=%d gelu=%d", m, n, with_bias, gelu);
    free(x); free(bias); free(ref); free(got);
}

/* ---- layer norm ---- */
static void test_layernorm(size_t m, size_t c, int alias) {
    size_t ldx = c + next() % 5, ldo = alias ? ldx : c + next() % 5;
    float *x = falloc(m * ldx), *w = falloc(c), *b = falloc(c), *ref = falloc(m * ldo), *got = falloc(m * ldo);
    for (size_t i = 0; i < m; i++) {
        float mu = frand(-2.0f, 2.0f), sd = frand(0.05f, 4.0f);
        for (size_t j = 0; j < ldx; j++) x[i * ldx + j] = mu + sd * frand(-1.7f, 1.7f);
    }
    fill(w, c, -2.0f, 2.0f);
    fill(b, c, -1.0f, 1.0f);
    float eps = next() & 1 ? 1e-6f : 1e-5f;
    for (size_t i = 0; i < m * ldo; i++) ref[i] = alias ? x[i] : 777.0f;
    psam_layernorm__generic(alias ? ref : x, m, c, ldx, w, b, eps, ref, ldo);
    for (size_t v = 0; v < nvariants; v++) {
        if (!variants[v].layernorm) continue; /* this variant has no own body of it */
        for (size_t i = 0; i < m * ldo; i++) got[i] = alias ? x[i] : 777.0f;
        variants[v].layernorm(alias ? got : x, m, c, ldx, w, b, eps, got, ldo);
        double worst = 0.0;
        int pad_ok = 1;
        for (size_t i = 0; i < m; i++) {
            double d = reldiff(ref + i * ldo, got + i * ldo, c, maxabs(ref + i * ldo, c));
            worst = d > worst ? d : worst;
            for (size_t j = c; j < ldo; j++) pad_ok &= got[i * ldo + j] == ref[i * ldo + j];
        }
        if (worst > worst_layernorm) worst_layernorm = worst;
        CHECK(worst <= TOL && pad_ok, "layernorm %s m=%zu c=%zu alias=%d: rel diff %g pad %d", variants[v].name, m, c,
              alias, worst, pad_ok);
        /* A variant's rows are each row's alone, bit for bit (the AVX-512 body takes the rows' statistics up to 16
         * at a time). */
        float *one = falloc(m * ldo);
        for (size_t i = 0; i < m * ldo; i++) one[i] = alias ? x[i] : 777.0f;
        for (size_t i = 0; i < m; i++)
            variants[v].layernorm((alias ? one : x) + i * ldx, 1, c, ldx, w, b, eps, one + i * ldo, ldo);
        CHECK(memcmp(one, got, m * ldo * sizeof(float)) == 0, "layernorm %s m=%zu c=%zu alias=%d: rows differ from one at a time",
              variants[v].name, m, c, alias);
        free(one);
    }
    free(x); free(w); free(b); free(ref); free(got);
}

/* ---- softmax ---- */
static void test_softmax(size_t m, size_t n, float spread) {
    size_t ld = n + next() % 6;
    float *x = falloc(m * ld), *ref = falloc(m * ld), *got = falloc(m * ld);
    fill(x, m * ld, -spread, spread);
    memcpy(ref, x, m * ld * 4);
    psam_softmax__generic(ref, m, n, ld);
    for (size_t v = 0; v < nvariants; v++) {
        if (!variants[v].softmax) continue; /* this variant has no own body of it */
        memcpy(got, x, m * ld * 4);
        variants[v].softmax(got, m, n, ld);
        double worst = 0.0;
        int pad_ok = 1;
        for (size_t i = 0; i < m; i++) {
            double d = reldiff(ref + i * ld, got + i * ld, n, maxabs(ref + i * ld, n));
            worst = d > worst ? d : worst;
            for (size_t j = n; j < ld; j++) pad_ok &= got[i * ld + j] == x[i * ld + j];
        }
        if (worst > worst_softmax) worst_softmax = worst;
        CHECK(worst <= TOL && pad_ok, "softmax %s m=%zu n=%zu spread=%g: rel diff %g pad %d", variants[v].name, m, n,
              spread, worst, pad_ok);
    }
    free(x); free(ref); free(got);
}

/* The variants softmax_cols, _lanes and _online ran (they have their own lists), for the report. */
static const char *softmax_ran[3][4];
static void note_ran(int op, const char *name) {
    for (int i = 0; i < 4; i++) {
        if (!softmax_ran[op][i]) softmax_ran[op][i] = name;
        if (!strcmp(softmax_ran[op][i], name)) return;
    }
}

/* ---- softmax down columns of row groups ---- */
typedef void (*softmax_cols_fn)(float *, size_t, size_t, size_t, size_t, const float *);
static void test_softmax_cols(size_t groups, size_t n, size_t cols, int with_bias, float spread) {
    size_t ld = cols + next() % 5;
    float *x = falloc(groups * n * ld), *ref = falloc(groups * n * ld), *got = falloc(groups * n * ld);
    float *bias = falloc(groups * n);
    fill(x, groups * n * ld, -spread, spread);
    fill(bias, groups * n, -spread, spread);
    memcpy(ref, x, groups * n * ld * 4);
    psam_softmax_cols__generic(ref, groups, n, cols, ld, with_bias ? bias : NULL);
    const char *names[3] = {"dispatched"};
    softmax_cols_fn fns[3] = {psam_softmax_cols};
    size_t nv = 1;
#if defined(__x86_64__)
    if (has_avx2()) { names[nv] = "avx2"; fns[nv++] = psam_softmax_cols__avx2; }
    if (has_avx512()) { names[nv] = "avx512"; fns[nv++] = psam_softmax_cols__avx512; }
#endif
#if defined(__aarch64__)
    names[nv] = "neon"; fns[nv++] = psam_softmax_cols__neon;
#endif
    for (size_t v = 0; v < nv; v++) {
        memcpy(got, x, groups * n * ld * 4);
        fns[v](got, groups, n, cols, ld, with_bias ? bias : NULL);
        note_ran(0, names[v]);
        double worst = 0.0;
        int pad_ok = 1, sums_ok = 1;
        for (size_t g = 0; g < groups; g++)
            for (size_t c = 0; c < cols; c++) {
                /* Per column: the reference's largest probability is the magnitude; the column sums to 1. */
                double mag = 0.0, sum = 0.0;
                for (size_t i = 0; i < n; i++) {
                    double r = ref[(g * n + i) * ld + c];
                    mag = r > mag ? r : mag;
                    sum += got[(g * n + i) * ld + c];
                }
                for (size_t i = 0; i < n; i++) {
                    double d = fabs((double)ref[(g * n + i) * ld + c] - got[(g * n + i) * ld + c]) / mag;
                    if (!(d == d)) d = INFINITY;
                    worst = d > worst ? d : worst;
                }
                sums_ok &= fabs(sum - 1.0) <= 1e-5 * n;
            }
        for (size_t r = 0; r < groups * n; r++)
            for (size_t j = cols; j < ld; j++) pad_ok &= got[r * ld + j] == x[r * ld + j];
        if (worst > worst_softmax) worst_softmax = worst;
        CHECK(worst <= TOL && pad_ok && sums_ok, "softmax_cols %s groups=%zu n=%zu cols=%zu bias=%d spread=%g: rel diff %g pad %d sums %d",
              names[v], groups, n, cols, with_bias, spread, worst, pad_ok, sums_ok);
    }
    free(x); free(ref); free(got); free(bias);
}

/* Softmax per lane across groups (token-major attention to a few tokens): the same checks as the columns'. */
typedef void (*softmax_lanes_fn)(float *, size_t, size_t, size_t, size_t);
static void test_softmax_lanes(size_t m, size_t n, size_t g, float spread) {
    size_t ld = n * g + next() % 5;
    float *x = falloc(m * ld), *ref = falloc(m * ld), *got = falloc(m * ld);
    fill(x, m * ld, -spread, spread);
    memcpy(ref, x, m * ld * 4);
    psam_softmax_lanes__generic(ref, m, ld, n, g);
    const char *names[2] = {"dispatched"};
    softmax_lanes_fn fns[2] = {psam_softmax_lanes};
    size_t nv = 1;
#if defined(__x86_64__)
    if (g == 8 && has_avx2()) { names[nv] = "avx2"; fns[nv++] = psam_softmax_lanes8__avx2; }
#endif
#if defined(__aarch64__)
    if (g % 4 == 0) { names[nv] = "neon"; fns[nv++] = psam_softmax_lanes__neon; }
#endif
    for (size_t v = 0; v < nv; v++) {
        memcpy(got, x, m * ld * 4);
        fns[v](got, m, ld, n, g);
        note_ran(1, names[v]);
        double worst = 0.0;
        int pad_ok = 1, sums_ok = 1;
        for (size_t i = 0; i < m; i++) {
            for (size_t h = 0; h < g; h++) {
                double mag = 0.0, sum = 0.0;
                for (size_t t = 0; t < n; t++) {
                    double r = ref[i * ld + t * g + h];
                    mag = r > mag ? r : mag;
                    sum += got[i * ld + t * g + h];
                }
                for (size_t t = 0; t < n; t++) {
                    double d = fabs((double)ref[i * ld + t * g + h] - got[i * ld + t * g + h]) / mag;
                    if (!(d == d)) d = INFINITY;
                    worst = d > worst ? d : worst;
                }
                sums_ok &= fabs(sum - 1.0) <= 1e-5 * n;
            }
            for (size_t j = n * g; j < ld; j++) pad_ok &= got[i * ld + j] == x[i * ld + j];
        }
        if (worst > worst_softmax) worst_softmax = worst;
        CHECK(worst <= TOL && pad_ok && sums_ok, "softmax_lanes %s m=%zu n=%zu g=%zu spread=%g: rel diff %g pad %d sums %d",
              names[v], m, n, g, spread, worst, pad_ok, sums_ok);
    }
    free(x); free(ref); free(got);
}

/* Online softmax down columns, block by block, against the whole-column softmax in double: the weighted sums of
 * random values (acc accumulated as sᵀ·v per block, then divided by l) and the sums l must agree to rounding. */
typedef void (*softmax_online_fn)(float *, size_t, size_t, size_t, float *, float *, float *, size_t, size_t);
static void test_softmax_online(size_t n, size_t cols, size_t block, size_t accw, float spread) {
    float *x = falloc(n * cols), *v = falloc(n * accw);
    fill(x, n * cols, -spread, spread);
    fill(v, n * accw, -1.0f, 1.0f);
    const char *names[2] = {"dispatched"};
    softmax_online_fn fns[2] = {psam_softmax_online_cols};
    size_t nv = 1;
#if defined(__x86_64__)
    if (has_avx512()) { names[nv] = "avx512"; fns[nv++] = psam_softmax_online__avx512; }
#endif
#if defined(__aarch64__)
    names[nv] = "neon"; fns[nv++] = psam_softmax_online__neon;
#endif
    softmax_online_fn all[3] = {psam_softmax_online__generic, fns[0], nv > 1 ? fns[1] : NULL};
    const char *all_names[3] = {"generic", names[0], nv > 1 ? names[1] : NULL};
    for (size_t f = 0; f < 1 + nv; f++) {
        float *s = falloc(n * cols), *m = falloc(cols), *l = falloc(cols), *acc = falloc(cols * accw);
        note_ran(2, all_names[f]);
        memcpy(s, x, n * cols * 4);
        for (size_t c = 0; c < cols; c++) m[c] = -INFINITY;
        for (size_t i0 = 0; i0 < n; i0 += block) {
            const size_t rows = n - i0 < block ? n - i0 : block;
            all[f](s + i0 * cols, rows, cols, cols, m, l, acc, accw, accw);
            for (size_t c = 0; c < cols; c++)
                for (size_t j = 0; j < accw; j++)
                    for (size_t i = 0; i < rows; i++) acc[c * accw + j] += s[(i0 + i) * cols + c] * v[(i0 + i) * accw + j];
        }
        double worst = 0.0;
        for (size_t c = 0; c < cols; c++) {
            double mx = -INFINITY, sum = 0.0;
            for (size_t i = 0; i < n; i++) mx = x[i * cols + c] > mx ? x[i * cols + c] : mx;
            for (size_t i = 0; i < n; i++) sum += exp((double)x[i * cols + c] - mx);
            double d = fabs(l[c] * exp((double)m[c] - mx) - sum) / sum;
            worst = d > worst ? d : worst;
            for (size_t j = 0; j < accw; j++) {
                double ref = 0.0;
                for (size_t i = 0; i < n; i++) ref += exp((double)x[i * cols + c] - mx) / sum * v[i * accw + j];
                /* A weighted mean of values in [−1, 1]: the magnitude is 1. */
                double e = fabs(acc[c * accw + j] / l[c] - ref);
                if (!(e == e)) e = INFINITY;
                worst = e > worst ? e : worst;
            }
        }
        if (worst > worst_softmax) worst_softmax = worst;
        CHECK(worst <= TOL, "softmax_online %s n=%zu cols=%zu block=%zu spread=%g: diff %g", all_names[f], n, cols, block, spread, worst);
        free(s); free(m); free(l); free(acc);
    }
    free(x); free(v);
}

/* ---- window attention ---- */
static void test_attention(size_t wn, size_t heads, size_t kd, int with_bias) {
    size_t ldq = heads * 3 * kd + next() % 4, ldo = heads * kd + next() % 4;
    size_t ns = wn * wn + kd * wn;
    float *qkv = falloc(wn * ldq), *bias = falloc(heads * wn * wn), *ref = falloc(wn * ldo), *got = falloc(wn * ldo);
    float *scratch = falloc(ns + 16);
    fill(qkv, wn * ldq, -2.0f, 2.0f);
    fill(bias, heads * wn * wn, -3.0f, 3.0f);
    float scale = 1.0f / sqrtf((float)kd);
    /* The output, a weighted mean of v, may be small by cancellation: its magnitude is that of v. */
    double vmag = 0.0;
    for (size_t j = 0; j < wn; j++)
        for (size_t hd = 0; hd < heads; hd++) {
            double m = maxabs(qkv + j * ldq + hd * 3 * kd + 2 * kd, kd);
            vmag = m > vmag ? m : vmag;
        }
    for (size_t i = 0; i < wn * ldo; i++) ref[i] = 777.0f;
    psam_window_attention__generic(qkv, ldq, wn, heads, kd, scale, with_bias ? bias : NULL, ref, ldo, scratch);
    for (size_t v = 0; v < nvariants; v++) {
        if (!variants[v].attention) continue; /* this variant has no own body of it */
        for (size_t i = 0; i < wn * ldo; i++) got[i] = 777.0f;
        for (size_t i = 0; i < 16; i++) scratch[ns + i] = -555.0f;
        variants[v].attention(qkv, ldq, wn, heads, kd, scale, with_bias ? bias : NULL, got, ldo, scratch);
        double worst = 0.0;
        int pad_ok = 1;
        for (size_t i = 0; i < wn; i++) {
            double d = reldiff(ref + i * ldo, got + i * ldo, heads * kd, vmag);
            worst = d > worst ? d : worst;
            for (size_t j = heads * kd; j < ldo; j++) pad_ok &= got[i * ldo + j] == 777.0f;
        }
        for (size_t i = 0; i < 16; i++) pad_ok &= scratch[ns + i] == -555.0f;
        if (worst > worst_attention) worst_attention = worst;
        CHECK(worst <= TOL && pad_ok, "window attention %s wn=%zu heads=%zu kd=%zu bias=%d: rel diff %g pad %d",
              variants[v].name, wn, heads, kd, with_bias, worst, pad_ok);
    }
    free(qkv); free(bias); free(ref); free(got); free(scratch);
}

/* ---- window attention in fp16 and bf16 ----
 * Each variant (the dispatched function and, where the CPU has AVX-512 FP16 or BF16, the vector body) against
 * the generic body, which emulates the rounding in scalar code (_Float16 for fp16; bit arithmetic and vdpbf16ps's
 * order of additions for bf16). q·scale, k, v, the scores and the chains round the same in both; the
 * probabilities do not quite: the vector softmax's polynomial exp differs from expf by ~2e-7, which moves a
 * probability across a rounding boundary now and then (one step: at most 2^-10 of it in fp16, 2^-7 in bf16, whose
 * 8 significant bits leave a step of up to 2^-7 relative just above a power of two). So a row may differ by at
 * most step · max|v| (every probability of the row moved a step), and such rows must stay rare: at most 1 in 5
 * rows may differ by more than 1e-5 · max|v| (measured: 2 in 100 for fp16).
 * The result is also checked against the fp32 attention: fp16 keeps 11 significant bits, bf16 8; scores up to
 * 4·kd·scale (q, k in [−2, 2]) carry errors of a few ulp of the inputs times that, which the probabilities keep
 * relatively: within 5e-2 · max|v| (measured 3e-3 for fp16; 4.5e-3 for bf16, whose sums run in fp32). */
typedef void (*attention_fn)(const float *, size_t, size_t, size_t, size_t, float, const float *, float *, size_t, float *);
struct half_attention {
    const char *name;             /* "fp16", "bf16" */
    attention_fn reference, dispatched, vector; /* vector: NULL where the CPU lacks it */
    size_t (*scratch)(size_t, size_t);
    double step, far_bound;       /* largest move of a row (relative to max|v|); bound against fp32 */
    double worst, worst_fp32;
    size_t rows, rows_moved;
};
static struct half_attention att_fp16, att_bf16;

/* psam_window_attention_bf16_rows: the chosen query rows (the first nq, or a list) are the whole call's bit for bit
 * (each path: the dispatched one and the scalar reference), the other rows are not written. */
static int attention_rows_match(const float *qkv, size_t ldq, size_t wn, size_t nq, const uint16_t *rows, size_t heads, size_t kd,
                                const float *bias, const float *full, const float *gfull, float *got, size_t ldo, float *scratch) {
    const float scale = 1.0f / sqrtf((float)kd);
    char *chosen = calloc(wn, 1);
    for (size_t r = 0; r < nq; r++) chosen[rows ? rows[r] : r] = 1;
    int ok = 1;
    for (int path = 0; path < 2; path++) {
        const float *ref = path ? gfull : full;
        for (size_t i = 0; i < wn * ldo; i++) got[i] = 777.0f;
        if (path) psam_window_attention_bf16_rows__generic(qkv, ldq, wn, nq, rows, heads, kd, scale, bias, got, ldo, scratch);
        else psam_window_attention_bf16_rows(qkv, ldq, wn, nq, rows, heads, kd, scale, bias, got, ldo, scratch);
        for (size_t i = 0; i < wn; i++) {
            if (chosen[i]) ok &= memcmp(got + i * ldo, ref + i * ldo, ldo * 4) == 0;
            else for (size_t j = 0; j < ldo; j++) ok &= got[i * ldo + j] == 777.0f;
        }
    }
    free(chosen);
    return ok;
}

static void test_attention_bf16_rows(size_t wn, size_t heads, size_t kd) {
    size_t ldq = heads * 3 * kd, ldo = heads * kd, ns = psam_window_attention_bf16_scratch(wn, kd);
    float *qkv = falloc(wn * ldq), *bias = falloc(heads * wn * wn), *full = falloc(wn * ldo), *gfull = falloc(wn * ldo);
    float *got = falloc(wn * ldo), *scratch = falloc(ns + 16);
    fill(qkv, wn * ldq, -2.0f, 2.0f);
    fill(bias, heads * wn * wn, -3.0f, 3.0f);
    const float scale = 1.0f / sqrtf((float)kd);
    psam_window_attention_bf16(qkv, ldq, wn, heads, kd, scale, bias, full, ldo, scratch);
    psam_window_attention_bf16__generic(qkv, ldq, wn, heads, kd, scale, bias, gfull, ldo, scratch);
    const size_t nqs[] = {0, 1, 3, 7, 8, 9, 16, wn / 2, wn - 1, wn};
    for (size_t a = 0; a < sizeof nqs / sizeof nqs[0]; a++) {
        size_t nq = nqs[a] > wn ? wn : nqs[a];
        CHECK(attention_rows_match(qkv, ldq, wn, nq, NULL, heads, kd, bias, full, gfull, got, ldo, scratch),
              "bf16 attention first rows wn=%zu nq=%zu heads=%zu kd=%zu", wn, nq, heads, kd);
    }
    /* Lists: the rows of a square window's first nx columns (a window over the right border), and every third row
     * backwards. */
    uint16_t rows[256];
    size_t win = 1;
    while ((win + 1) * (win + 1) <= wn) win++;
    for (size_t nx = 1; nx <= win && win * win == wn; nx++) {
        size_t nq = 0;
        for (size_t y = 0; y < win; y++)
            for (size_t x = 0; x < nx; x++) rows[nq++] = (uint16_t)(y * win + x);
        CHECK(attention_rows_match(qkv, ldq, wn, nq, rows, heads, kd, bias, full, gfull, got, ldo, scratch),
              "bf16 attention column rows wn=%zu nx=%zu heads=%zu kd=%zu", wn, nx, heads, kd);
    }
    size_t nq = 0;
    for (size_t i = wn; i-- > 0;)
        if (i % 3 == 0) rows[nq++] = (uint16_t)i;
    CHECK(attention_rows_match(qkv, ldq, wn, nq, rows, heads, kd, bias, full, gfull, got, ldo, scratch),
          "bf16 attention row list wn=%zu heads=%zu kd=%zu", wn, heads, kd);
    free(qkv); free(bias); free(full); free(gfull); free(got); free(scratch);
}

static void test_attention_half(struct half_attention *h, size_t wn, size_t heads, size_t kd, int with_bias) {
    size_t ldq = heads * 3 * kd + next() % 4, ldo = heads * kd + next() % 4;
    size_t ns = h->scratch(wn, kd), nf = wn * wn + kd * wn;
    float *qkv = falloc(wn * ldq), *bias = falloc(heads * wn * wn), *ref = falloc(wn * ldo), *got = falloc(wn * ldo);
    float *f32 = falloc(wn * ldo), *scratch = falloc((ns > nf ? ns : nf) + 16);
    fill(qkv, wn * ldq, -2.0f, 2.0f);
    fill(bias, heads * wn * wn, -3.0f, 3.0f);
    float scale = 1.0f / sqrtf((float)kd);
    double vmag = 0.0;
    for (size_t j = 0; j < wn; j++)
        for (size_t hd = 0; hd < heads; hd++) {
            double m = maxabs(qkv + j * ldq + hd * 3 * kd + 2 * kd, kd);
            vmag = m > vmag ? m : vmag;
        }
    h->reference(qkv, ldq, wn, heads, kd, scale, with_bias ? bias : NULL, ref, ldo, scratch);
    psam_window_attention__generic(qkv, ldq, wn, heads, kd, scale, with_bias ? bias : NULL, f32, ldo, scratch);
    double far = 0.0;
    for (size_t i = 0; i < wn; i++) {
        double d = reldiff(ref + i * ldo, f32 + i * ldo, heads * kd, vmag);
        far = d > far ? d : far;
    }
    if (far > h->worst_fp32) h->worst_fp32 = far;
    CHECK(far <= h->far_bound, "%s attention reference vs fp32 wn=%zu heads=%zu kd=%zu: rel diff %g", h->name, wn, heads, kd, far);
    attention_fn fns[2] = {h->dispatched, kd % 32 == 0 ? h->vector : NULL};
    const char *names[2] = {"dispatched", "vector"};
    for (int v = 0; v < 2; v++) {
        if (!fns[v]) continue;
        for (size_t i = 0; i < wn * ldo; i++) got[i] = 777.0f;
        for (size_t i = 0; i < 16; i++) scratch[ns + i] = -555.0f;
        fns[v](qkv, ldq, wn, heads, kd, scale, with_bias ? bias : NULL, got, ldo, scratch);
        double worst = 0.0;
        size_t moved = 0;
        int pad_ok = 1;
        for (size_t i = 0; i < wn; i++) {
            double d = reldiff(ref + i * ldo, got + i * ldo, heads * kd, vmag);
            worst = d > worst ? d : worst;
            moved += d > TOL;
            for (size_t j = heads * kd; j < ldo; j++) pad_ok &= got[i * ldo + j] == 777.0f;
        }
        for (size_t i = 0; i < 16; i++) pad_ok &= scratch[ns + i] == -555.0f;
        if (worst > h->worst) h->worst = worst;
        h->rows += wn;
        h->rows_moved += moved;
        CHECK(worst <= h->step && moved * 5 <= wn && pad_ok,
              "%s window attention %s wn=%zu heads=%zu kd=%zu bias=%d: rel diff %g, %zu of %zu rows over %g, pad %d",
              h->name, names[v], wn, heads, kd, with_bias, worst, moved, wn, TOL, pad_ok);
    }
    free(qkv); free(bias); free(ref); free(got); free(f32); free(scratch);
}

/* ---- SAM ViT attention in bf16 (psam_vit_attention_bf16) ----
 * A head's queries q0 .. q0 + nq − 1 of a side × side grid with decomposed relative terms. The generic body against
 * an fp32 reference computed here in double (scores q·k·scale + th + tw, softmax, · v): within 5e-2 · max|v|, as the
 * window kernels (bf16 keeps 8 significant bits; the relative terms, up to ±kd·2, are added in fp32, not rounded).
 * The dispatched body against the generic one as test_attention_half allows (its exp is a polynomial: a probability
 * may move one bf16 step, 2^-7, in a few rows). A block of queries gives the whole call's rows bit for bit; nothing
 * past kd in a row of out, nor past the scratch's size, is written. */
/* psam_relpos_add: the dispatched function and the AVX-512 body against the generic one, bit for bit (the same two
 * adds per score), rows of a block whose stride exceeds the grid, nothing past a row's side² scores touched. */
static int relpos_ran_avx512;
static void test_relpos_add(size_t side, size_t q0, size_t rows) {
    const size_t n = side * side, r = 2 * side - 1, ld = n + 3;
    float *th = falloc(rows * r), *tw = falloc(rows * r), *ref = falloc(rows * ld), *got = falloc(rows * ld);
    fill(th, rows * r, -3.0f, 3.0f);
    fill(tw, rows * r, -3.0f, 3.0f);
    fill(ref, rows * ld, -5.0f, 5.0f);
    memcpy(got, ref, rows * ld * 4);
    psam_relpos_add__generic(ref, ld, rows, q0, side, th, tw, r);
    void (*fns[2])(float *, size_t, size_t, size_t, size_t, const float *, const float *, size_t) = {psam_relpos_add, NULL};
#if defined(__x86_64__)
    if (has_avx512()) fns[1] = psam_relpos_add__avx512;
#endif
    for (int v = 0; v < 2; v++) {
        if (!fns[v]) continue;
        float *x = falloc(rows * ld);
        memcpy(x, got, rows * ld * 4);
        fns[v](x, ld, rows, q0, side, th, tw, r);
        CHECK(memcmp(x, ref, rows * ld * 4) == 0, "relpos_add %s side=%zu q0=%zu rows=%zu", v ? "avx512" : "dispatched", side, q0, rows);
        relpos_ran_avx512 |= v;
        free(x);
    }
    free(th); free(tw); free(ref); free(got);
}

static double worst_vit_bf16, worst_vit_bf16_fp32;
static void test_vit_attention_bf16(size_t side, size_t kd, size_t q0, size_t nq) {
    const size_t nk = side * side, r = 2 * side - 1, ld = 3 * kd + 5, ldo = kd + 3;
    float *qkv = falloc(nk * ld), *rh = falloc(r * kd), *rw = falloc(r * kd), *th = falloc(nk * r), *tw = falloc(nk * r);
    fill(qkv, nk * ld, -2.0f, 2.0f);
    fill(rh, r * kd, -1.0f, 1.0f);
    fill(rw, r * kd, -1.0f, 1.0f);
    const float scale = 1.0f / sqrtf((float)kd);
    const float *q = qkv, *k = qkv + kd, *v = qkv + 2 * kd;
    for (size_t i = 0; i < nk; i++)
        for (size_t t = 0; t < r; t++) {
            float a = 0, b = 0;
            for (size_t d = 0; d < kd; d++) {
                a += q[i * ld + d] * rh[t * kd + d];
                b += q[i * ld + d] * rw[t * kd + d];
            }
            th[i * r + t] = a;
            tw[i * r + t] = b;
        }
    double vmag = 0.0;
    for (size_t j = 0; j < nk; j++) {
        double m = maxabs(v + j * ld, kd);
        vmag = m > vmag ? m : vmag;
    }
    float *ref = falloc(nq * ldo), *gen = falloc(nq * ldo), *got = falloc(nk * ldo), *part = falloc(nq * ldo);
    double *sc = calloc(nk, sizeof(double));
    for (size_t i = 0; i < nq; i++) {
        const size_t qi = q0 + i, qy = qi / side, qx = qi % side;
        double mx = -INFINITY, sum = 0.0;
        for (size_t j = 0; j < nk; j++) {
            double acc = 0.0;
            for (size_t d = 0; d < kd; d++) acc += (double)q[qi * ld + d] * k[j * ld + d];
            const size_t ky = j / side, kx = j % side;
            sc[j] = acc * scale + th[qi * r + qy + side - 1 - ky] + tw[qi * r + qx + side - 1 - kx];
            mx = sc[j] > mx ? sc[j] : mx;
        }
        for (size_t j = 0; j < nk; j++) sum += sc[j] = exp(sc[j] - mx);
        for (size_t d = 0; d < kd; d++) {
            double acc = 0.0;
            for (size_t j = 0; j < nk; j++) acc += sc[j] / sum * v[j * ld + d];
            ref[i * ldo + d] = (float)acc;
        }
    }
    const size_t np = psam_vit_attention_bf16_packed_floats(side, kd), ns = psam_vit_attention_bf16_scratch(nq + 16, side, kd);
    /* Each dispatched call's scratch is guarded right past its own size (its query count's). */
    const size_t w0 = q0 > 8 ? q0 - 8 : 0, w1 = q0 + nq + 8 < nk ? q0 + nq + 8 : nk;
    const size_t ns_whole = psam_vit_attention_bf16_scratch(w1 - w0, side, kd), ns_part = psam_vit_attention_bf16_scratch(nq, side, kd);
    int guards = 1;
    float *packed = falloc(np + 16), *scratch = falloc(ns + 16);
    psam_vit_attention_bf16_pack__generic(k, v, ld, nk, kd, packed);
    psam_vit_attention_bf16__generic(q + q0 * ld, ld, nq, q0, side, packed, kd, scale, th + q0 * r, tw + q0 * r, gen, ldo,
                                     scratch);
    double far = 0.0;
    for (size_t i = 0; i < nq; i++) {
        double d = reldiff(gen + i * ldo, ref + i * ldo, kd, vmag);
        far = d > far ? d : far;
    }
    worst_vit_bf16_fp32 = far > worst_vit_bf16_fp32 ? far : worst_vit_bf16_fp32;
    CHECK(far <= 5e-2, "vit bf16 attention generic vs fp32 side=%zu kd=%zu q0=%zu nq=%zu: rel diff %g", side, kd, q0, nq, far);
    /* Dispatched: queries w0 .. w1 − 1 (the block and up to 8 more each side) in one call, then the block alone. */
    for (size_t i = 0; i < 16; i++) packed[np + i] = scratch[ns_whole + i] = -555.0f;
    for (size_t i = 0; i < nk * ldo; i++) got[i] = 777.0f;
    for (size_t i = 0; i < nq * ldo; i++) part[i] = 777.0f;
    psam_vit_attention_bf16_pack(k, v, ld, side, kd, packed);
    psam_vit_attention_bf16(q + w0 * ld, ld, w1 - w0, w0, side, packed, kd, scale, th + w0 * r, tw + w0 * r, got, ldo, scratch);
    for (size_t i = 0; i < 16; i++) guards &= scratch[ns_whole + i] == -555.0f;
    for (size_t i = 0; i < 16; i++) scratch[ns_part + i] = -555.0f;
    psam_vit_attention_bf16(q + q0 * ld, ld, nq, q0, side, packed, kd, scale, th + q0 * r, tw + q0 * r, part, ldo, scratch);
    for (size_t i = 0; i < 16; i++) guards &= scratch[ns_part + i] == -555.0f;
    double worst = 0.0;
    size_t moved = 0;
    int ok = 1;
    for (size_t i = 0; i < nq; i++) {
        double d = reldiff(got + (q0 - w0 + i) * ldo, gen + i * ldo, kd, vmag);
        worst = d > worst ? d : worst;
        moved += d > TOL;
        ok &= memcmp(got + (q0 - w0 + i) * ldo, part + i * ldo, kd * 4) == 0;
    }
    for (size_t i = 0; i < nk; i++)
        for (size_t j = i < w1 - w0 ? kd : 0; j < ldo; j++) ok &= got[i * ldo + j] == 777.0f;
    for (size_t i = 0; i < 16; i++) ok &= packed[np + i] == -555.0f;
    ok &= guards;
    worst_vit_bf16 = worst > worst_vit_bf16 ? worst : worst_vit_bf16;
    CHECK(worst <= 1.0 / 128 && moved * 5 <= nq && ok,
          "vit bf16 attention dispatched side=%zu kd=%zu q0=%zu nq=%zu: rel diff %g, %zu of %zu rows over %g, block/guards %d",
          side, kd, q0, nq, worst, moved, nq, TOL, ok);
    free(qkv); free(rh); free(rw); free(th); free(tw); free(ref); free(gen); free(got); free(part); free(sc); free(packed);
    free(scratch);
}

/* ---- attention with few keys ---- */
static void test_fewkeys(size_t nq, size_t nk, size_t heads, size_t d) {
    size_t ldq = heads * d + next() % 3, ldk = heads * d + next() % 3, ldv = heads * d + next() % 3;
    size_t ldo = heads * d + next() % 3;
    size_t r0 = nq > 3 ? next() % 3 : 0, r1 = nq > 3 ? nq - next() % 3 : nq;
    float *q = falloc(nq * ldq), *k = falloc(nk * ldk), *vv = falloc(nk * ldv), *ref = falloc(nq * ldo),
          *got = falloc(nq * ldo);
    fill(q, nq * ldq, -2.0f, 2.0f);
    fill(k, nk * ldk, -2.0f, 2.0f);
    fill(vv, nk * ldv, -3.0f, 3.0f);
    float scale = 1.0f / sqrtf((float)d);
    double vmag = 0.0; /* as in test_attention */
    for (size_t j = 0; j < nk; j++) {
        double m = maxabs(vv + j * ldv, heads * d);
        vmag = m > vmag ? m : vmag;
    }
    for (size_t i = 0; i < nq * ldo; i++) ref[i] = 777.0f;
    psam_attention_few_keys__generic(q, ldq, k, ldk, vv, ldv, nk, heads, d, scale, ref, ldo, r0, r1);
    for (size_t v = 0; v <= nvariants; v++) {
        /* Each own version, and last the dispatched function. */
        fewkeys_fn fn = v < nvariants ? variants[v].fewkeys : psam_attention_few_keys;
        const char *name = v < nvariants ? variants[v].name : "dispatched";
        if (!fn) continue;
#if defined(__x86_64__)
        /* Called directly, the AVX2 body needs kᵀ of one head to fit its buffer (the dispatcher checks). */
        if (fn == psam_attention_few_keys__avx2 && d * psam_round_up(nk, 8) > PSAM_FEW_KEYS_KT) continue;
#endif
        for (size_t i = 0; i < nq * ldo; i++) got[i] = 777.0f;
        fn(q, ldq, k, ldk, vv, ldv, nk, heads, d, scale, got, ldo, r0, r1);
        double worst = 0.0;
        int pad_ok = 1;
        for (size_t i = 0; i < nq; i++) {
            if (i < r0 || i >= r1) {
                for (size_t j = 0; j < ldo; j++) pad_ok &= got[i * ldo + j] == 777.0f;
                continue;
            }
            double dd = reldiff(ref + i * ldo, got + i * ldo, heads * d, vmag);
            worst = dd > worst ? dd : worst;
            for (size_t j = heads * d; j < ldo; j++) pad_ok &= got[i * ldo + j] == 777.0f;
        }
        if (worst > worst_fewkeys) worst_fewkeys = worst;
        CHECK(worst <= TOL && pad_ok, "few-keys attention %s nq=%zu [%zu,%zu) nk=%zu heads=%zu d=%zu: rel diff %g pad %d",
              name, nq, r0, r1, nk, heads, d, worst, pad_ok);
    }
    free(q); free(k); free(vv); free(ref); free(got);
}

/* ---- depthwise convolution (float output, and quantized output) ---- */
static void test_depthwise(size_t h, size_t w, size_t c, size_t k, size_t stride, int with_bias, int gelu) {
    size_t pad = k / 2, ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
    size_t y0 = ho > 2 ? next() % 2 : 0, y1 = ho > 2 ? ho - next() % 2 : ho, np = ho * wo;
    float *x = falloc(h * w * c), *wt = falloc(k * k * c), *bias = falloc(c);
    float *ax = falloc(h * w * c), *awt = falloc(k * k * c), *abias = falloc(c);
    float *ref = falloc(np * c), *mag = falloc(np * c), *got = falloc(np * c + 8), *row = falloc(c);
    size_t ldq = c + next() % 5;
    uint8_t *qref = malloc(np * ldq + 1), *qgot = malloc(np * ldq + 1);
    float *sref = falloc(np), *sgot = falloc(np);
    int32_t *zref = calloc(np, 4), *zgot = calloc(np, 4);
    fill(x, h * w * c, -2.0f, 2.0f);
    fill(wt, k * k * c, -1.0f, 1.0f);
    fill(bias, c, -1.0f, 1.0f);
    for (size_t i = 0; i < h * w * c; i++) ax[i] = fabsf(x[i]);
    for (size_t i = 0; i < k * k * c; i++) awt[i] = fabsf(wt[i]);
    for (size_t i = 0; i < c; i++) abias[i] = fabsf(bias[i]);
    const float *b = with_bias ? bias : NULL;
    psam_depthwise__generic(x, h, w, c, wt, b, k, stride, pad, ref, wo, y0, y1, gelu, NULL, 0, NULL, NULL);
    /* Magnitude of each output: Σ |x·w| + |bias| (the same convolution on absolute values). */
    psam_depthwise__generic(ax, h, w, c, awt, with_bias ? abias : NULL, k, stride, pad, mag, wo, y0, y1, 0, NULL, 0, NULL, NULL);
    for (size_t v = 0; v < nvariants; v++) {
        if (!variants[v].depthwise) continue; /* this variant has no own body of it */
        for (size_t i = 0; i < np * c + 8; i++) got[i] = 777.0f;
        variants[v].depthwise(x, h, w, c, wt, b, k, stride, pad, got, wo, y0, y1, gelu, NULL, 0, NULL, NULL);
        double worst = 0.0;
        int pad_ok = 1;
        for (size_t p = 0; p < np; p++) {
            if (p < y0 * wo || p >= y1 * wo) {
                for (size_t j = 0; j < c; j++) pad_ok &= got[p * c + j] == 777.0f;
                continue;
            }
            double dd = reldiff(ref + p * c, got + p * c, c, maxabs(mag + p * c, c));
            worst = dd > worst ? dd : worst;
        }
        for (size_t i = np * c; i < np * c + 8; i++) pad_ok &= got[i] == 777.0f;
        if (worst > worst_depthwise) worst_depthwise = worst;
        CHECK(worst <= TOL && pad_ok, "depthwise %s %zux%zux%zu k=%zu s=%zu bias=%d gelu=%d: rel diff %g pad %d",
              variants[v].name, h, w, c, k, stride, with_bias, gelu, worst, pad_ok);
        /* Quantized output: exactly the generic quantization of this variant's own float output. */
        for (size_t p = y0 * wo; p < y1 * wo; p++)
            psam_quantize_u8__generic(got + p * c, 1, c, c, qref + p * ldq, ldq, sref + p, zref + p);
        memset(qgot, 0x5A, np * ldq + 1);
        variants[v].depthwise(x, h, w, c, wt, b, k, stride, pad, row, wo, y0, y1, gelu, qgot, ldq, sgot, zgot);
        int same = qgot[np * ldq] == 0x5A;
        for (size_t p = 0; p < np; p++) {
            if (p < y0 * wo || p >= y1 * wo) {
                for (size_t j = 0; j < ldq; j++) same &= qgot[p * ldq + j] == 0x5A;
                continue;
            }
            same &= memcmp(qref + p * ldq, qgot + p * ldq, ldq) == 0 && sref[p] == sgot[p] && zref[p] == zgot[p];
        }
        CHECK(same, "depthwise_u8 %s %zux%zux%zu k=%zu s=%zu bias=%d gelu=%d", variants[v].name, h, w, c, k, stride,
              with_bias, gelu);
    }
    free(x); free(wt); free(bias); free(ax); free(awt); free(abias); free(ref); free(mag); free(got); free(row);
    free(qref); free(qgot); free(sref); free(sgot); free(zref); free(zgot);
}

/* ---- resampling passes (psam_resample_rows_h / _v): integer, bit-exact ---- */
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif
/* n bytes that end where an inaccessible page begins (Linux; plain memory elsewhere): a read past them faults. */
typedef struct { unsigned char *base, *p; size_t body; } guarded;
static void *guarded_alloc(guarded *g, size_t n) {
#if defined(__linux__)
    const size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    g->body = (n + pg - 1) / pg * pg;
    g->base = aligned_alloc(pg, g->body + pg);
    if (!g->base || mprotect(g->base + g->body, pg, PROT_NONE) != 0) { fprintf(stderr, "guard page\n"); exit(2); }
#else
    g->body = n;
    g->base = malloc(n + 1);
#endif
    g->p = g->base + g->body - n;
    return g->p;
}
static void guarded_free(guarded *g) {
#if defined(__linux__)
    mprotect(g->base + g->body, (size_t)sysconf(_SC_PAGESIZE), PROT_READ | PROT_WRITE);
#endif
    free(g->base);
}

/* Preprocess.maxTaps and Preprocess.coefficients (PIL's antialiased bilinear weights, 22-bit fixed point). */
static size_t resample_max_taps(size_t in, size_t out) {
    double s = (double)in / (double)out;
    return (size_t)ceil((s > 1.0 ? s : 1.0) * 2.0) + 2;
}
static void resample_coefficients(size_t in, size_t out, size_t taps, int32_t *bounds, int32_t *weights) {
    const double scale = (double)in / (double)out, fs = scale > 1.0 ? scale : 1.0, support = fs, ss = 1.0 / fs;
    for (size_t xx = 0; xx < out; xx++) {
        const double center = ((double)xx + 0.5) * scale;
        long xmin = (long)(center - support + 0.5), xmax = (long)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > (long)in) xmax = (long)in;
        xmax -= xmin;
        if (xmax > (long)taps) xmax = (long)taps;
        double ww = 0.0;
        for (long x = 0; x < xmax; x++) {
            double t = fabs(((double)(x + xmin) - center + 0.5) * ss);
            ww += t < 1.0 ? 1.0 - t : 0.0;
        }
        for (long x = 0; x < xmax; x++) {
            double t = fabs(((double)(x + xmin) - center + 0.5) * ss);
            double f = (ww == 0.0 ? 0.0 : (t < 1.0 ? 1.0 - t : 0.0) / ww) * (double)(1 << 22);
            weights[xx * taps + (size_t)x] = (int32_t)(f < 0.0 ? f - 0.5 : f + 0.5);
        }
        bounds[2 * xx] = (int32_t)xmin;
        bounds[2 * xx + 1] = (int32_t)(xmax > 0 ? xmax : 0);
    }
}
/* Coefficients for `out` samples of `in`: kind 0 PIL's; 1 random spans (start, 1…taps taps) with nonnegative weights
 * summing to about 2^22 (up to 1.2·2^22: bytes clamped at 255); 2 signed weights (sums below 0 clamped at 0).
 * Unused weight slots hold junk. */
static void resample_table(size_t in, size_t out, size_t taps, int kind, int32_t *bounds, int32_t *weights) {
    for (size_t i = 0; i < out * taps; i++) weights[i] = (int32_t)(next() & 0x7FFFFF) - 0x400000;
    if (kind == 0) {
        resample_coefficients(in, out, taps, bounds, weights);
        return;
    }
    for (size_t xx = 0; xx < out; xx++) {
        const size_t cap = taps < in ? taps : in, n = 1 + next() % cap, start = next() % (in - n + 1);
        int32_t *k = weights + xx * taps;
        if (kind == 1) {
            double r[64], sum = 0.0, target = (double)(1 << 22) * (next() % 4 == 0 ? 1.2 : 1.0);
            for (size_t x = 0; x < n; x++) sum += r[x] = (double)(next() % 1000);
            for (size_t x = 0; x < n; x++) k[x] = sum > 0.0 ? (int32_t)(r[x] / sum * target + 0.5) : 0;
        } else {
            const int32_t lo = -(int32_t)((1 << 22) / taps), span = (int32_t)(5 * (1 << 22) / (2 * taps));
            for (size_t x = 0; x < n; x++) k[x] = lo + (int32_t)(next() % (uint32_t)span);
        }
        bounds[2 * xx] = (int32_t)start;
        bounds[2 * xx + 1] = (int32_t)n;
    }
}

typedef void (*resample_h_fn)(const uint8_t *, size_t, size_t, size_t, size_t, size_t, const int32_t *, const int32_t *,
                              size_t, uint8_t *);
typedef void (*resample_v_fn)(const uint8_t *, size_t, size_t, size_t, const int32_t *, const int32_t *, size_t, uint8_t *);
static size_t resample_cases;

/* The horizontal pass from w × h (channels 1 or 3, rows `stride` apart; the image's last byte and the weight
 * table's last entry just before an inaccessible page) to ow, rows [y0, y1), and the vertical pass from h rows of
 * ow3 bytes to oh, rows [y0, y1): every variant's bytes (and the rows it must leave alone) as the generic body's. */
static void test_resample(size_t w, size_t h, size_t channels, size_t pad, size_t ow, size_t oh, int kind) {
    const char *names[3] = {"dispatched"};
    resample_h_fn hf[3] = {psam_resample_rows_h};
    resample_v_fn vf[3] = {psam_resample_rows_v};
    size_t nv = 1;
#if defined(__aarch64__)
    names[nv] = "neon"; hf[nv] = psam_resample_h__neon; vf[nv++] = psam_resample_v__neon;
#endif
    const size_t stride = w * channels + pad, y0 = h > 2 ? next() % 2 : 0, y1 = h > 2 && next() % 2 ? h - 1 : h;
    guarded gs, gk, gt, gkv;
    uint8_t *src = guarded_alloc(&gs, (h - 1) * stride + w * channels);
    for (size_t i = 0; i < (h - 1) * stride + w * channels; i++) src[i] = (uint8_t)next();
    size_t taps = resample_max_taps(w, ow);
    if (kind && taps > 60) taps = 60;
    int32_t *bounds = malloc(2 * ow * sizeof(int32_t)), *weights = guarded_alloc(&gk, ow * taps * sizeof(int32_t));
    resample_table(w, ow, taps, kind, bounds, weights);
    uint8_t *ref = malloc(h * ow * 3), *got = malloc(h * ow * 3);
    memset(ref, 0xA5, h * ow * 3);
    psam_resample_h__generic(src, stride, channels, y0, y1, ow, bounds, weights, taps, ref);
    for (size_t v = 0; v < nv; v++) {
        memset(got, 0xA5, h * ow * 3);
        hf[v](src, stride, channels, y0, y1, ow, bounds, weights, taps, got);
        CHECK(memcmp(ref, got, h * ow * 3) == 0, "resample_h %s %zux%zu c=%zu pad=%zu -> %zu rows [%zu,%zu) kind=%d",
              names[v], w, h, channels, pad, ow, y0, y1, kind);
    }
    /* Vertical: h rows of ow·3 bytes (the horizontal output, other rows random) to oh rows. */
    const size_t ow3 = ow * 3, vy0 = oh > 2 ? next() % 2 : 0, vy1 = oh > 2 && next() % 2 ? oh - 1 : oh;
    uint8_t *tmp = guarded_alloc(&gt, h * ow3);
    for (size_t i = 0; i < h * ow3; i++) tmp[i] = ref[i] == 0xA5 ? (uint8_t)next() : ref[i];
    size_t vtaps = resample_max_taps(h, oh);
    if (kind && vtaps > 60) vtaps = 60;
    int32_t *vb = malloc(2 * oh * sizeof(int32_t)), *vw = guarded_alloc(&gkv, oh * vtaps * sizeof(int32_t));
    resample_table(h, oh, vtaps, kind, vb, vw);
    uint8_t *vref = malloc(oh * ow3), *vgot = malloc(oh * ow3);
    memset(vref, 0x5A, oh * ow3);
    psam_resample_v__generic(tmp, ow3, vy0, vy1, vb, vw, vtaps, vref);
    for (size_t v = 0; v < nv; v++) {
        memset(vgot, 0x5A, oh * ow3);
        vf[v](tmp, ow3, vy0, vy1, vb, vw, vtaps, vgot);
        CHECK(memcmp(vref, vgot, oh * ow3) == 0, "resample_v %s %zu rows of %zu -> %zu rows [%zu,%zu) kind=%d", names[v],
              h, ow3, oh, vy0, vy1, kind);
    }
    resample_cases++;
    guarded_free(&gs); guarded_free(&gk); guarded_free(&gt); guarded_free(&gkv);
    free(bounds); free(ref); free(got); free(vb); free(vref); free(vgot);
}

int main(void) {
    variants[nvariants++] = (variant){"dispatched", psam_quantize_rows_u8, psam_gelu_rows, psam_layernorm_rows,
                                      psam_softmax_rows, psam_window_attention, depthwise_public, NULL};
    printf("tested: generic dispatched");
#if defined(__x86_64__)
    if (has_avx2()) {
        variants[nvariants++] = (variant){"avx2", psam_quantize_u8__avx2, psam_gelu__avx2, psam_layernorm__avx2, psam_softmax__avx2, psam_window_attention__avx2,
                                          psam_depthwise__avx2, psam_attention_few_keys__avx2};
        printf(" avx2");
    }
    if (has_avx512()) {
        variants[nvariants++] = (variant){"avx512", psam_quantize_u8__avx512, psam_gelu__avx512, psam_layernorm__avx512, psam_softmax__avx512,
                                          psam_window_attention__avx512, psam_depthwise__avx512, NULL};
        printf(" avx512");
    }
#endif
#if defined(__aarch64__)
    /* NEON (every aarch64 core has it): one member per operation's own body. */
    {
        variant neon = {"neon", NULL, NULL, NULL, NULL, NULL, NULL, NULL};
        neon.depthwise = psam_depthwise__neon;
        neon.quantize = psam_quantize_u8__neon;
        neon.gelu = psam_gelu__neon;
        neon.layernorm = psam_layernorm__neon;
        neon.softmax = psam_softmax__neon;
        neon.attention = psam_window_attention__neon;
        neon.fewkeys = psam_attention_few_keys__neon;
        variants[nvariants++] = neon;
        printf(" neon");
    }
#endif
    printf("\n");

    size_t sizes[] = {1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 23, 24, 31, 32, 33, 40, 47, 48, 49, 63, 64, 65, 96, 100, 127,
                      128, 129, 160, 191, 192, 196, 255, 256, 257, 300};
    size_t nsizes = sizeof sizes / sizeof sizes[0];

#if defined(__x86_64__)
    if (has_avx512()) { s16_names[s16_nv] = "avx512"; s16_fns[s16_nv++] = psam_quantize_s16__avx512; }
#endif
#if defined(__aarch64__)
    s16_names[s16_nv] = "neon"; s16_fns[s16_nv++] = psam_quantize_s16__neon;
#endif
    for (size_t s = 0; s < nsizes; s++)
        for (int kind = 0; kind < 8; kind++) {
            test_quantize(1, sizes[s], kind);
            test_quantize(1 + next() % 6, sizes[s], kind);
            test_quantize(17 + next() % 24, sizes[s], kind); /* more than the 16 rows AVX-512 scales at a time */
            test_quantize_s16(1, sizes[s], kind);
            test_quantize_s16(1 + next() % 6, sizes[s], kind);
            test_quantize_s16(17 + next() % 24, sizes[s], kind);
        }
    test_quantize(3, 0, 0);
    test_quantize_s16(3, 0, 0);
    for (size_t n = 0; n <= 300; n++) test_gelu(n);
    test_gelu(100003);
    /* The upscaling's GELU (FMA, refined reciprocal) against the generic GELU: within 1e-6 of max(1, |x|). */
    {
        size_t n = 100003;
        float *x = falloc(n), *ref = falloc(n), *got = falloc(n);
        fill(x, n, -8.0f, 8.0f);
        x[0] = 0.0f, x[1] = -0.0f, x[2] = 1e-30f, x[3] = -40.0f, x[4] = 40.0f;
        memcpy(ref, x, n * 4);
        memcpy(got, x, n * 4);
        psam_gelu__generic(ref, n);
        psam_gelu_fast_rows(got, n);
        double worst = 0.0;
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)ref[i] - got[i]) / fmax(1.0, fabs(x[i]));
            if (!(d == d)) d = INFINITY;
            worst = d > worst ? d : worst;
        }
        CHECK(worst <= 1e-6, "gelu_fast: worst %g", worst);
        for (size_t tail = 0; tail < 17; tail++) {
            memcpy(got, x, 40 * 4);
            psam_gelu_fast_rows(got, tail);
            int ok = 1;
            for (size_t i = tail; i < 40; i++) ok &= got[i] == x[i];
            CHECK(ok, "gelu_fast writes past n=%zu", tail);
        }
        free(x); free(ref); free(got);
    }
    /* The int8 path's piecewise-cubic GELU: every width gives the generic loop's bits (special values included),
     * nothing written past n, and within 1.7e-6·max(1, |x|) of the exact GELU (psam_gelu__generic, itself ~1e-7 from
     * x·Φ(x); Tests/Reference/gelu_lut_table.py measures 1.63e-6 against x·Φ(x) in float64). */
    {
        size_t n = 100003;
        float *x = falloc(n + 16), *ref = falloc(n + 16), *got = falloc(n + 16);
        fill(x, n, -9.0f, 9.0f);
        const float special[] = {0.0f, -0.0f, 1e-30f, -5.0f, 5.0f, -5.0001f, 4.9999f, -4.9999f, 5.0001f, -40.0f, 40.0f,
                                 1e30f, -1e30f, INFINITY, -INFINITY, NAN, 3.2f, -1.875f, 0.3125f};
        memcpy(x, special, sizeof special);
        memcpy(ref, x, n * 4);
        psam_gelu_lut__generic(ref, n);
        for (size_t w = 0; w <= 300; w++) {
            memcpy(got, x, (w + 16) * 4);
            psam_gelu_lut_rows(got, w);
            int ok = memcmp(got, ref, w * 4) == 0;
            for (size_t i = w; i < w + 16; i++) ok &= memcmp(&got[i], &x[i], 4) == 0;
            CHECK(ok, "gelu_lut dispatched vs generic (or past n) at n=%zu", w);
        }
        memcpy(got, x, n * 4);
        psam_gelu_lut_rows(got, n);
        CHECK(memcmp(got, ref, n * 4) == 0, "gelu_lut dispatched vs generic n=%zu", n);
#if defined(__aarch64__)
        for (size_t w = 0; w <= 300; w++) {
            memcpy(got, x, (w + 16) * 4);
            psam_gelu_lut__neon(got, w);
            int ok = memcmp(got, ref, w * 4) == 0;
            for (size_t i = w; i < w + 16; i++) ok &= memcmp(&got[i], &x[i], 4) == 0;
            CHECK(ok, "gelu_lut neon vs generic (or past n) at n=%zu", w);
        }
        memcpy(got, x, n * 4);
        psam_gelu_lut__neon(got, n);
        CHECK(memcmp(got, ref, n * 4) == 0, "gelu_lut neon vs generic n=%zu", n);
        int table_ok = 1; /* the NEON body's transposed table holds psam_gelu_lut_c's values */
        for (int i = 0; i < 32; i++)
            for (int j = 0; j < 4; j++) table_ok &= memcmp(&psam_gelu_lut_t[i][j], &psam_gelu_lut_c[j][i], 4) == 0;
        CHECK(table_ok, "gelu_lut neon table");
#endif
        CHECK(isnan(ref[15]) && ref[13] == INFINITY && ref[14] == 0.0f && ref[12] == 0.0f && fabsf(ref[11] - 1e30f) <= 1e24f,
              "gelu_lut special values: nan %g inf %g -inf %g -1e30 %g 1e30 %g", ref[15], ref[13], ref[14], ref[12], ref[11]);
        float *exact = falloc(n);
        memcpy(exact, x, n * 4);
        psam_gelu__generic(exact, n);
        double worst = 0.0;
        for (size_t i = 0; i < n; i++) {
            if (isnan(x[i]) || isinf(x[i])) continue;
            double d = fabs((double)exact[i] - ref[i]) / fmax(1.0, fabs(x[i]));
            if (!(d == d)) d = INFINITY;
            worst = d > worst ? d : worst;
        }
        CHECK(worst <= 1.7e-6, "gelu_lut vs exact GELU: worst %g", worst);
        free(x); free(ref); free(got); free(exact);
    }
    for (size_t s = 0; s < nsizes; s++)
        for (int g = 0; g < 4; g++) test_bias_gelu(1 + next() % 4, sizes[s], g & 1, g >> 1);
    test_add();
    for (size_t m = 1; m <= 19; m++) test_layernorm_seq(m, (size_t[]){1, 7, 32, 256, 320}[m % 5]);
    for (size_t m = 1; m <= 13; m++) /* every row group (8, 4, 1 … 3) with every column tail */
        for (size_t c = 2; c <= 9; c++) test_layernorm_seq(m, c);
    for (size_t c = 1; c <= 300; c++) {
        test_layernorm(1, c, 0);
        test_layernorm(2 + next() % 4, c, (int)(c & 1));
        test_layernorm(17 + next() % 24, c, (int)((c >> 1) & 1));
    }
    for (size_t n = 1; n <= 300; n += (n < 70 ? 1 : 7)) {
        test_softmax(1, n, 4.0f);
        test_softmax(1 + next() % 5, n, n % 3 == 0 ? 60.0f : 8.0f);
    }
    /* Softmax down columns: SAM's image→token attention (8 heads × 7 tokens over 4096 image tokens) and odd
     * shapes around it (cols not a multiple of 8 or 16, one row, one column). */
    /* Token-major: SAM's 7 tokens × 8 heads over blocks of image tokens, other token and head counts. */
    test_softmax_lanes(64, 7, 8, 8.0f);
    test_softmax_lanes(37, 7, 8, 60.0f);
    for (size_t n = 1; n <= 12; n++)
        for (size_t g = 1; g <= 9; g++) test_softmax_lanes(1 + next() % 9, n, g, n % 3 == 0 ? 60.0f : 8.0f);
    /* Online softmax: SAM's 56 score columns over 4096 image tokens in blocks of 64, odd sizes, large spreads
     * (the running maximum grows in later blocks). */
    test_softmax_online(4096, 56, 64, 5, 8.0f);
    test_softmax_online(300, 17, 7, 3, 60.0f);
    for (size_t cols = 1; cols <= 40; cols += 3) test_softmax_online(50 + next() % 50, cols, 1 + next() % 20, 1 + next() % 4, 30.0f);
    test_softmax_cols(8, 7, 4096, 1, 8.0f);
    test_softmax_cols(8, 7, 4096, 0, 60.0f);
    for (size_t cols = 1; cols <= 70; cols += (cols < 34 ? 1 : 5))
        for (size_t n = 1; n <= 17; n += 4) {
            size_t groups = 1 + next() % 3;
            test_softmax_cols(groups, n, cols, (int)(cols & 1), cols % 3 == 0 ? 60.0f : 8.0f);
        }
    /* Window attention: SAM-ViT's 14×14 windows and TinyViT's 7×7, with odd sizes around them. */
    size_t wns[] = {1, 3, 7, 8, 9, 16, 17, 25, 49, 64, 196};
    size_t kds[] = {16, 32, 8, 12, 20, 1, 3};
    for (size_t a = 0; a < sizeof wns / sizeof wns[0]; a++)
        for (size_t b = 0; b < sizeof kds / sizeof kds[0]; b++) {
            if (wns[a] == 196 && b >= 2) continue;
            for (int bias = 0; bias < 2; bias++) test_attention(wns[a], 1 + next() % 4, kds[b], bias);
        }
    /* fp16 and bf16 window attention: TinyViT's windows (kd 32 everywhere), odd sizes, and kd the vector bodies do
     * not take (odd kd: the bf16 pairs' last one is half empty). */
    att_fp16 = (struct half_attention){"fp16", psam_window_attention_fp16__generic, psam_window_attention_fp16, NULL,
                                       psam_window_attention_fp16_scratch, 1.0 / 1024, 5e-2, 0, 0, 0, 0};
    att_bf16 = (struct half_attention){"bf16", psam_window_attention_bf16__generic, psam_window_attention_bf16, NULL,
                                       psam_window_attention_bf16_scratch, 1.0 / 128, 5e-2, 0, 0, 0, 0};
#if defined(__x86_64__)
    if (has_avx512fp16()) att_fp16.vector = psam_window_attention_fp16__avx512fp16;
    if (has_avx512bf16()) att_bf16.vector = psam_window_attention_bf16__avx512bf16;
#endif
#if defined(__aarch64__)
    if (psam_cpu_neon_fp16()) att_fp16.vector = psam_window_attention_fp16__neonfp16;
#endif
    struct half_attention *halves[2] = {&att_fp16, &att_bf16};
    size_t bwns[] = {1, 2, 7, 15, 16, 17, 31, 33, 49, 64, 196};
    for (int f = 0; f < 2; f++) {
        for (size_t a = 0; a < sizeof bwns / sizeof bwns[0]; a++)
            for (int bias = 0; bias < 2; bias++) {
                size_t heads = 1 + next() % 4;
                test_attention_half(halves[f], bwns[a], heads, 32, bias);
            }
        test_attention_half(halves[f], 49, 2, 64, 1);
        if (f == 1) {
            test_attention_bf16_rows(49, 4, 32);
            test_attention_bf16_rows(196, 2, 32);
            test_attention_bf16_rows(17, 1, 32);
            test_attention_bf16_rows(9, 2, 6);
        }
        test_attention_half(halves[f], 17, 2, 16, 1);
        test_attention_half(halves[f], 23, 3, 24, 1); /* NEON FP16: a tile of 8 columns after one of 16 */
        test_attention_half(halves[f], 9, 1, 6, 0);
        test_attention_half(halves[f], 5, 1, 7, 1);
    }
    /* SAM ViT attention in bf16: a window of 14 (ViT's), odd grids (tails of 16 and of fewer keys), a global grid of
     * 64 (a block of 64 queries inside it), kd 32 and 64, and kd the vector body does not take (generic). */
    const size_t relpos_sides[] = {1, 3, 7, 14, 15, 16, 17, 31, 33, 64};
    for (size_t a = 0; a < sizeof relpos_sides / sizeof relpos_sides[0]; a++) {
        const size_t side = relpos_sides[a], n = side * side, q0 = n > 1 ? next() % (n - 1) : 0;
        test_relpos_add(side, q0, n - q0 < 9 ? n - q0 : 9);
    }
    test_vit_attention_bf16(14, 64, 0, 196);
    test_vit_attention_bf16(14, 64, 37, 50);
    test_vit_attention_bf16(7, 32, 3, 9);
    test_vit_attention_bf16(5, 64, 0, 25);
    test_vit_attention_bf16(3, 32, 1, 7);
    test_vit_attention_bf16(1, 32, 0, 1);
    test_vit_attention_bf16(9, 6, 4, 20);
    test_vit_attention_bf16(64, 64, 64 * 17, 64);
    /* Few keys: every nk 1…64 with d 16 and 8 heads (SAM's image→token attention), and odd d and head counts. */
    /* (Random arguments are drawn into variables first: the order in which a call's arguments are
     * evaluated is unspecified, and the shapes should not depend on the compiler.) */
    for (size_t nk = 1; nk <= 64; nk++) {
        test_fewkeys(8 + next() % 40, nk, 8, 16);
        size_t nq = 1 + next() % 20, heads = 1 + next() % 3, d = (size_t[]){1, 3, 8, 12, 17, 32, 64, 80}[next() % 8];
        test_fewkeys(nq, nk, heads, d);
    }
    test_fewkeys(300, 7, 8, 16);
    test_fewkeys(64, 64, 2, 128); /* kᵀ too large for the stack buffer: generic body */
    for (size_t s = 0; s < nsizes; s += 2) {
        size_t c = sizes[s];
        test_depthwise(5, 4, c, 3, 1, 1, (int)(s & 1));
        test_depthwise(6, 7, c, 3, 2, (int)(s & 2), 1);
    }
    for (size_t c = 1; c <= 40; c++) {
        size_t h = 3 + next() % 5, w = 3 + next() % 5, k = (size_t[]){1, 3, 5, 7}[next() % 4], stride = 1 + next() % 2;
        int bias = (int)(next() & 1), gelu = (int)(next() & 1);
        test_depthwise(h, w, c, k, stride, bias, gelu);
    }
    test_depthwise(8, 8, 256, 7, 1, 1, 0);
    /* The int8 path's GELU mode (PSAM_GELU_LUT) through every variant, fp32 and quantized output. */
    for (size_t c = 1; c <= 70; c += 3) {
        test_depthwise(6, 9, c, 3, 1, 1, PSAM_GELU_LUT);
        test_depthwise(7, 6, c, 3, 2, 0, PSAM_GELU_LUT);
    }
    test_depthwise(12, 40, 256, 3, 1, 1, PSAM_GELU_LUT);
    /* Wide enough for the AVX-512 body's groups of 4 interior pixels (and their borders), MBConv's 256 channels,
     * stride 2, and more channels than its stack rows hold for the quantized output (one pixel at a time). */
    test_depthwise(12, 17, 64, 3, 1, 1, 1);
    test_depthwise(16, 16, 256, 3, 1, 1, 1);
    test_depthwise(16, 19, 256, 3, 2, 1, 1);
    test_depthwise(9, 21, 33, 3, 1, 0, 0);
    test_depthwise(7, 14, 40, 5, 1, 1, 1);
    test_depthwise(6, 9, 1030, 3, 1, 1, 1);
    test_depthwise(6, 14, 1030, 3, 1, 1, 1); /* groups of interior pixels too (fp32 output) */
    /* Groups of interior pixels with channel counts not a multiple of 4, through every kernel shape's path. */
    for (size_t c = 4; c <= 19; c += 3) {
        test_depthwise(5, 13, c, 3, 1, 1, (int)(c & 1));
        test_depthwise(7, 21, c, 3, 2, 0, PSAM_GELU_LUT);
        test_depthwise(9, 23, c, 5, 2, 1, 1);
        test_depthwise(10, 21, c, 7, 1, 0, 0);
        test_depthwise(11, 30, c, 3, 3, 1, 1);
    }
    /* Resampling: gray and RGB, shrink and enlarge, padded rows, images too narrow for a 16-byte load, PIL's and
     * random coefficient tables. */
    {
        static const size_t rs[][4] = {{4, 3, 2, 5},     {5, 4, 9, 3},     {6, 6, 17, 2},   {1, 5, 3, 2},
                                       {16, 9, 5, 21},   {37, 20, 16, 7},  {100, 31, 37, 80}, {7, 9, 23, 4},
                                       {640, 7, 1024, 3}, {1000, 6, 256, 3}, {333, 40, 64, 128}, {48, 1, 11, 1}};
        for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++)
            for (size_t ch = 1; ch <= 3; ch += 2)
                for (int kind = 0; kind < 3; kind++) test_resample(rs[i][0], rs[i][1], ch, next() % 8, rs[i][2], rs[i][3], kind);
#if defined(__aarch64__)
        printf("resample h, v: dispatched neon byte for byte as generic (%zu images)\n", resample_cases);
#else
        printf("resample h, v: dispatched byte for byte as generic (%zu images)\n", resample_cases);
#endif
    }
    /* Shapes the loops above miss (here, so as not to move their random shapes): the NEON softmax_lanes' 16- and
     * 4-lane chunks (g 12…28), the online softmax's 16-wide rescaling of wide accumulator rows, window attention
     * with kd not a multiple of 4 (the value columns' last vector overlapping), with 4 tokens, and with SAM-ViT's kd 64. */
    for (size_t g = 12; g <= 28; g += 4) test_softmax_lanes(3, 5, g, 8.0f);
    test_softmax_online(500, 23, 50, 37, 30.0f);
    test_attention(49, 2, 6, 1);
    test_attention(25, 3, 13, 0);
    test_attention(4, 2, 4, 1);
    test_attention(6, 1, 5, 1);
    test_attention(196, 2, 64, 1);

    printf("largest relative difference: layernorm %.2g, softmax %.2g, window attention %.2g, few-keys attention %.2g, "
           "depthwise %.2g (tolerance %.0g)\n", worst_layernorm, worst_softmax, worst_attention, worst_fewkeys,
           worst_depthwise, TOL);
#if defined(__aarch64__)
    const char *fp16_isa = " (neonfp16)";
#else
    const char *fp16_isa = " (avx512fp16)";
#endif
    for (int f = 0; f < 2; f++)
        printf("%s window attention%s: largest relative difference %.2g from the %s reference (tolerance %.2g), "
               "%zu of %zu rows over %.0g; %s against fp32 %.2g\n", halves[f]->name,
               !halves[f]->vector ? "" : f == 0 ? fp16_isa : " (avx512bf16)", halves[f]->worst, halves[f]->name,
               halves[f]->step, halves[f]->rows_moved, halves[f]->rows, TOL, halves[f]->name, halves[f]->worst_fp32);
    printf("relpos_add: dispatched%s bit for bit against the generic body\n", relpos_ran_avx512 ? " avx512" : "");
    printf("vit bf16 attention%s: largest relative difference %.2g from the bf16 reference (tolerance %.2g); against fp32 %.2g\n",
           psam_vit_attention_bf16_fast(32) ? " (avx512bf16)" : " (generic)", worst_vit_bf16, 1.0 / 128, worst_vit_bf16_fp32);
    for (int op = 0; op < 3; op++) {
        printf("%s", (const char *[]){"softmax_cols:", "; softmax_lanes:", "; softmax_online:"}[op]);
        for (int i = 0; i < 4 && softmax_ran[op][i]; i++) printf(" %s", softmax_ran[op][i]);
    }
    printf("\n");
    printf("bit for bit against the generic body: quantize_s16");
    for (size_t v = 0; v < s16_nv; v++) printf(" %s", s16_names[v]);
#if defined(__aarch64__)
    printf("; add, gelu_lut dispatched neon; layernorm_seq dispatched generic neon\n");
#else
    printf("; add, gelu_lut dispatched; layernorm_seq dispatched generic\n");
#endif
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
