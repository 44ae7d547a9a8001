/* Tests of the mask decoder's post-processing (Sources/PocketSAMKernels/maskpost.c), built with the system C compiler
 * and linked with every kernel source; maskpost_internal.h declares each operation's bodies, so that the generic ones
 * are the reference. Every variant this CPU has (x86-64: AVX2 + FMA, AVX-512; aarch64: NEON) and the public,
 * dispatched functions are run on the same random inputs, on SAM's shapes (256 × 256 low-res logits to a
 * 1024-wide mask, 4096 image tokens × 16-wide heads, 32 channels × 4 masks) and odd sizes around the vector widths.
 *
 * The upscale (mask bytes, stability counts, box) must match bit for bit: every body does the generic's products
 * and sums in the same order without fused multiply-adds. Inputs on a grid of quarters make many values fall
 * exactly on the thresholds (a comparison of the wrong sense shows); logits equal to the thresholds with weights
 * summing to 1 up to rounding leave each comparison to the rounding of the interpolation (another order of the
 * sums or a fused multiply-add shows); the horizontal pass's rows (hbuf) are compared too. The
 * others may differ by rounding, as the Swift MaskGeneratorTests allow: the products (scores, weighted rows, the
 * masks' hypernetwork sums) within 1e-5 of the sum of the terms' magnitudes, the norms (layer norm, keys norm,
 * rows affine) within 1e-5 of the magnitude of the row, and the upscaling's GELU (fused into the AVX-512 and NEON
 * masks) within 1e-6·max(1, |x|) of psam_gelu_rows. Values outside the written area must be left untouched.
 * psam_mask_rle (one body) is checked against a plain run-length loop, alone and through psam_mask_upscale.
 *
 * Prints "tested: <variant>...", the largest relative difference of each rounding operation, and a final
 * "N passed, M failed"; exit status 1 on any failure. */
#include "../../Sources/PocketSAMKernels/maskpost_internal.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;
#define CHECK(cond, ...)                                                                                       \
    do {                                                                                                       \
        if (cond) passed++;                                                                                    \
        else {                                                                                                 \
            failed++;                                                                                          \
            if (failed <= 30) {                                                                                \
                printf("FAIL: " __VA_ARGS__);                                                                  \
                printf("\n");                                                                                  \
            }                                                                                                  \
        }                                                                                                      \
    } while (0)

static uint64_t rng = 0x6A09E667F3BCC909ull;
static uint32_t next(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float frand(float lo, float hi) { return lo + (hi - lo) * (float)(next() & 0xFFFFFF) / 16777215.0f; }
static float *falloc(size_t n) { return calloc(n ? n : 1, sizeof(float)); }
static void fill(float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = frand(lo, hi);
}
static float fmaxabs(const float *x, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}
#define TOL 1e-5

/* The variants of each operation (NULL: none of its own; the dispatched function is checked separately). */
typedef void (*upscale_fn)(PSAM_UPSCALE_PARAMS);
typedef void (*scores_fn)(PSAM_SCORES_PARAMS);
typedef void (*weighted_fn)(PSAM_WEIGHTED_PARAMS);
typedef void (*ln_row_fn)(PSAM_LN_ROW_PARAMS);
typedef void (*masks_t_fn)(PSAM_MASKS_T_PARAMS);
typedef void (*keys_norm_fn)(PSAM_KEYS_NORM_PARAMS);
typedef void (*rows_affine_fn)(PSAM_ROWS_AFFINE_PARAMS);
typedef struct {
    const char *name;
    upscale_fn upscale;
    scores_fn scores;
    weighted_fn weighted;
    size_t weighted_d; /* the d it takes: 0 any, else d ≤ this, or exactly this when weighted_exact_d */
    int weighted_exact_d;
    ln_row_fn ln_row;
    masks_t_fn masks_t;
    size_t masks_t_count; /* largest count it takes (0: any) */
    keys_norm_fn keys_norm;
    rows_affine_fn rows_affine;
} variant;
static variant variants[4];
static size_t nvariants;
static double worst_scores, worst_weighted, worst_ln, worst_masks, worst_gelu, worst_keys, worst_affine;

/* ---- RLE: the plain loop over the framed, column-major mask ---- */
static size_t rle_ref(const uint8_t *mask, size_t h, size_t w, size_t x0, size_t y0, size_t fh, size_t fw, uint32_t *out) {
    size_t n = 0;
    uint32_t run = 0;
    uint8_t cur = 0;
    for (size_t x = 0; x < fw; x++)
        for (size_t y = 0; y < fh; y++) {
            const uint8_t v = x >= x0 && x < x0 + w && y >= y0 && y < y0 + h ? mask[(x - x0) * h + y - y0] != 0 : 0;
            if (v == cur) run++;
            else out[n++] = run, cur = v, run = 1;
        }
    out[n++] = run;
    return n;
}

static void test_rle(size_t h, size_t w, double density) {
    const size_t x0 = next() % 3, y0 = next() % 4, fh = h + y0 + next() % 3, fw = w + x0 + next() % 4;
    uint8_t *m = malloc(h * w + 1);
    for (size_t i = 0; i < h * w; i++) m[i] = (next() & 0xFFFF) < density * 65536.0 ? (uint8_t)(1 + next() % 3) : 0;
    uint32_t *ref = malloc((fh * fw + 3) * 4), *got = malloc((fh * fw + 4) * 4);
    const size_t nr = rle_ref(m, h, w, x0, y0, fh, fw, ref);
    for (size_t i = 0; i < fh * fw + 4; i++) got[i] = 0xDEADBEEF;
    const size_t n = psam_mask_rle(m, h, w, x0, y0, fh, fw, got, fh * fw + 3);
    int ok = n == nr && !memcmp(got, ref, nr * 4) && got[fh * fw + 3] == 0xDEADBEEF;
    if (nr > 1) {
        for (size_t i = 0; i < fh * fw + 4; i++) got[i] = 0xDEADBEEF;
        ok &= psam_mask_rle(m, h, w, x0, y0, fh, fw, got, nr - 1) == SIZE_MAX && got[nr - 1] == 0xDEADBEEF;
    }
    CHECK(ok, "rle %zux%zu density %g: %zu runs, expected %zu", h, w, density, n, nr);
    free(m); free(ref); free(got);
}

/* ---- upscale ---- */
/* The inputs: random; on the quarter grid (every sum exact, many values exactly on the thresholds); ties (logits
 * equal to the thresholds, weights summing to 1 up to rounding, so that each comparison is decided by the rounding
 * of the interpolation: another order of the sums or a fused multiply-add flips some). */
enum { RANDOM, GRID, TIES };
/* Non-decreasing starts (start + 3 < n) and 4 weights per output. */
static void taps(size_t n, size_t out, int32_t *start, float *wt, int mode) {
    size_t s = 0;
    for (size_t o = 0; o < out; o++) {
        if (next() % 4 == 0 && s + 4 < n) s += 1 + next() % (n - 4 - s < 3 ? n - 4 - s : 3);
        start[o] = (int32_t)s;
        float *w = wt + 4 * o;
        for (int i = 0; i < 4; i++) w[i] = mode == GRID ? (float)((int)(next() % 7) - 1) * 0.25f : frand(-0.2f, 1.0f);
        if (mode == TIES) w[0] = frand(0.0f, 0.5f), w[1] = frand(0.0f, 0.5f), w[2] = frand(-0.1f, 0.3f), w[3] = 1.0f - w[0] - w[1] - w[2];
    }
}

static void test_upscale(size_t n, size_t out_h, size_t out_w, int mode, float core_offset, float bias_logit, int with_nan) {
    const float thr = mode == GRID ? 0.0f : frand(-0.5f, 0.5f), off = mode == GRID ? 1.0f : frand(0.0f, 1.5f);
    const float hi = thr + off, lo = thr - off, core = thr + core_offset;
    const float tie[4] = {thr, hi, lo, core};
    float *low = falloc(n * n);
    for (size_t i = 0; i < n * n; i++)
        low[i] = mode == GRID   ? (float)((int)(next() % 25) - 12) * 0.25f
                 : mode == TIES ? tie[(i / n / 4 + i % n / 4) % 4] /* 4 × 4 blocks at one threshold each */
                                : frand(-6.0f, 6.0f) + bias_logit;
    if (with_nan) low[next() % (n * n)] = NAN, low[next() % (n * n)] = INFINITY;
    int32_t *rs = malloc(out_h * 4), *cs = malloc(out_w * 4);
    float *rw = falloc(4 * out_h), *cw = falloc(4 * out_w);
    taps(n, out_h, rs, rw, mode);
    taps(n, out_w, cs, cw, mode);
    /* The transposed frame, as psam_mask_upscale calls the bodies: rows = image columns. */
    const size_t rows = out_w, cols = out_h, npx = rows * cols;
    float *hbuf = falloc(n * n + n * cols), *href = falloc(n * cols);
    uint8_t *mref = malloc(npx + 16), *mgot = malloc(npx + 16);
    memset(mref, 0xEE, npx + 16);
    psam_mask_stats sref, sgot;
    int32_t bref[4], bgot[4];
    memset(&sref, 0, sizeof sref);
    for (size_t i = 0; i < n * cols; i++) href[i] = NAN;
    psam_mask_upscale__generic(low, n, rows, cols, cs, cw, rs, rw, hi, lo, thr, core, href, mref, &sref, bref);
    for (size_t v = 0; v < nvariants; v++) {
        if (!variants[v].upscale) continue;
        memset(mgot, 0xEE, npx + 16);
        memset(&sgot, 0x55, sizeof sgot);
        for (size_t i = 0; i < n * n + n * cols; i++) hbuf[i] = NAN;
        variants[v].upscale(low, n, rows, cols, cs, cw, rs, rw, hi, lo, thr, core, hbuf, mgot, &sgot, bgot);
        /* And the horizontal pass's rows, bit for bit (NaN where not written). */
        const int ok = !memcmp(href, hbuf, n * cols * sizeof(float)) && !memcmp(mref, mgot, npx + 16) &&
                       sgot.intersection == sref.intersection &&
                       sgot.union_ == sref.union_ && sgot.area == sref.area && !memcmp(bref, bgot, sizeof bref);
        CHECK(ok, "upscale %s n=%zu %zux%zu mode=%d core %g: area %lld/%lld inter %lld/%lld union %lld/%lld box %d,%d,%d,%d / "
                  "%d,%d,%d,%d bytes %s, rows %s", variants[v].name, n, out_h, out_w, mode, core_offset, (long long)sgot.area,
              (long long)sref.area, (long long)sgot.intersection, (long long)sref.intersection, (long long)sgot.union_,
              (long long)sref.union_, bgot[0], bgot[1], bgot[2], bgot[3], bref[0], bref[1], bref[2], bref[3],
              memcmp(mref, mgot, npx + 16) ? "differ" : "same", memcmp(href, hbuf, n * cols * sizeof(float)) ? "differ" : "same");
    }
    /* The public function: the same bytes and stats (box in image terms), and the framed runs. */
    const size_t fx = next() % 5, fy = next() % 5, fh = out_h + fy + next() % 4, fw = out_w + fx + next() % 4;
    const size_t cap = fh * fw + 3;
    uint32_t *counts = malloc(cap * 4), *cref = malloc(cap * 4);
    psam_mask_upscale_args a = {n, out_h, out_w, rs, cs, rw, cw, thr, off, core_offset, counts, cap, fx, fy, fh, fw};
    memset(mgot, 0xEE, npx + 16);
    psam_mask_upscale(&a, low, hbuf, mgot, &sgot);
    const size_t nr = rle_ref(mref, out_h, out_w, fx, fy, fh, fw, cref);
    const int ok = !memcmp(mref, mgot, npx + 16) && sgot.intersection == sref.intersection && sgot.union_ == sref.union_ &&
                   sgot.area == sref.area && sgot.box[0] == bref[1] && sgot.box[1] == bref[0] && sgot.box[2] == bref[3] &&
                   sgot.box[3] == bref[2] && sgot.runs == nr && !memcmp(counts, cref, nr * 4);
    CHECK(ok, "upscale dispatched n=%zu %zux%zu mode=%d: runs %zu/%zu", n, out_h, out_w, mode, sgot.runs, nr);
    free(low); free(rs); free(cs); free(rw); free(cw); free(hbuf); free(href); free(mref); free(mgot); free(counts); free(cref);
}

/* ---- scores and weighted rows: |got − ref| ≤ 1e-5 · Σ|terms| ---- */
static void test_scores(size_t nq, size_t nk, size_t d) {
    const size_t ldq = d + 3, ldk = nk + 5, ldo = nk + 2;
    const float scale = 0.25f;
    float *q = falloc(nq * ldq), *kt = falloc(d * ldk), *ref = falloc(nq * ldo), *got = falloc(nq * ldo), *mag = falloc(nq * nk);
    fill(q, nq * ldq, -2.0f, 2.0f);
    fill(kt, d * ldk, -2.0f, 2.0f);
    for (size_t i = 0; i < nq; i++)
        for (size_t j = 0; j < nk; j++) {
            double s = 0.0;
            for (size_t t = 0; t < d; t++) s += fabs((double)q[i * ldq + t] * kt[t * ldk + j]);
            mag[i * nk + j] = (float)(s * scale);
        }
    psam_scores_shared__generic(q, ldq, kt, ldk, nq, nk, d, scale, ref, ldo);
    for (size_t v = 0; v <= nvariants; v++) {
        scores_fn fn = v < nvariants ? variants[v].scores : psam_scores_shared;
        const char *name = v < nvariants ? variants[v].name : "dispatched";
        if (!fn) continue;
        for (size_t i = 0; i < nq * ldo; i++) got[i] = 777.0f;
        fn(q, ldq, kt, ldk, nq, nk, d, scale, got, ldo);
        double worst = 0.0;
        int pad = 1;
        for (size_t i = 0; i < nq; i++) {
            for (size_t j = 0; j < nk; j++) {
                double e = fabs((double)got[i * ldo + j] - ref[i * ldo + j]) / (mag[i * nk + j] > 1e-30 ? mag[i * nk + j] : 1e-30);
                if (!(e == e)) e = INFINITY;
                worst = e > worst ? e : worst;
            }
            for (size_t j = nk; j < ldo; j++) pad &= got[i * ldo + j] == 777.0f;
        }
        worst_scores = worst > worst_scores ? worst : worst_scores;
        CHECK(worst <= TOL && pad, "scores %s %zux%zux%zu: rel diff %g pad %d", name, nq, nk, d, worst, pad);
    }
    free(q); free(kt); free(ref); free(got); free(mag);
}

static void test_weighted(size_t nq, size_t nk, size_t d) {
    const size_t ldp = nk + 1, ldv = d + 2, ldo = d + 4;
    float *p = falloc(nq * ldp), *vv = falloc(nk * ldv), *ref = falloc(nq * ldo), *got = falloc(nq * ldo), *mag = falloc(nq * d);
    fill(p, nq * ldp, -1.0f, 1.0f);
    fill(vv, nk * ldv, -2.0f, 2.0f);
    for (size_t i = 0; i < nq; i++)
        for (size_t t = 0; t < d; t++) {
            double s = 0.0;
            for (size_t j = 0; j < nk; j++) s += fabs((double)p[i * ldp + j] * vv[j * ldv + t]);
            mag[i * d + t] = (float)s;
        }
    if (d <= 64) psam_weighted_rows__generic(p, ldp, vv, ldv, nq, nk, d, ref, ldo);
    else /* the public function's loop for wide rows */
        for (size_t i = 0; i < nq; i++)
            for (size_t t = 0; t < d; t++) {
                float s = 0.0f;
                for (size_t j = 0; j < nk; j++) s += p[i * ldp + j] * vv[j * ldv + t];
                ref[i * ldo + t] = s;
            }
    for (size_t v = 0; v <= nvariants; v++) {
        weighted_fn fn = v < nvariants ? variants[v].weighted : psam_weighted_rows;
        const char *name = v < nvariants ? variants[v].name : "dispatched";
        if (!fn) continue;
        if (v < nvariants && variants[v].weighted_d &&
            (variants[v].weighted_exact_d ? d != variants[v].weighted_d : d > variants[v].weighted_d))
            continue;
        for (size_t i = 0; i < nq * ldo; i++) got[i] = 777.0f;
        fn(p, ldp, vv, ldv, nq, nk, d, got, ldo);
        double worst = 0.0;
        int pad = 1;
        for (size_t i = 0; i < nq; i++) {
            for (size_t t = 0; t < d; t++) {
                double e = fabs((double)got[i * ldo + t] - ref[i * ldo + t]) / (mag[i * d + t] > 1e-30 ? mag[i * d + t] : 1e-30);
                if (!(e == e)) e = INFINITY;
                worst = e > worst ? e : worst;
            }
            for (size_t t = d; t < ldo; t++) pad &= got[i * ldo + t] == 777.0f;
        }
        worst_weighted = worst > worst_weighted ? worst : worst_weighted;
        CHECK(worst <= TOL && pad, "weighted %s %zux%zux%zu: rel diff %g pad %d", name, nq, nk, d, worst, pad);
    }
    free(p); free(vv); free(ref); free(got); free(mag);
}

/* ---- first upscaling stage: bias + layer norm per output pixel (+ GELU in the public function) ---- */
static void test_ln_row(size_t w, size_t cout, size_t y) {
    const size_t total = (2 * y + 2) * 2 * w * cout, first = 2 * y * 2 * w * cout;
    float *t = falloc(w * cout * 4), *bias = falloc(cout), *lw = falloc(cout), *lb = falloc(cout);
    float *ref = falloc(total), *got = falloc(total);
    fill(t, w * cout * 4, -3.0f, 3.0f);
    fill(bias, cout, -1.0f, 1.0f);
    fill(lw, cout, -2.0f, 2.0f);
    fill(lb, cout, -1.0f, 1.0f);
    for (size_t v = 0; v <= nvariants; v++) {
        ln_row_fn fn = v < nvariants ? variants[v].ln_row : NULL;
        if (v < nvariants && !fn) continue;
        for (size_t i = 0; i < total; i++) ref[i] = got[i] = 777.0f;
        psam_upscale_ln_row__generic(t, w, cout, y, bias, lw, lb, 1e-6f, ref);
        if (fn) fn(t, w, cout, y, bias, lw, lb, 1e-6f, got);
        else {
            /* The public function: the body and GELU, against the generic body and psam_gelu_rows. */
            psam_gelu_rows(ref + first, total - first);
            psam_upscale_ln_gelu_row(t, w, cout, y, bias, lw, lb, 1e-6f, got);
        }
        double worst = 0.0;
        int pad = 1;
        for (size_t i = 0; i < first; i++) pad &= got[i] == 777.0f;
        for (size_t px = first / cout; px < total / cout; px++) {
            const double mag = fmaxabs(ref + px * cout, cout);
            for (size_t c = 0; c < cout; c++) {
                double e = fabs((double)got[px * cout + c] - ref[px * cout + c]) / (mag > 1.0 ? mag : 1.0);
                if (!(e == e)) e = INFINITY;
                worst = e > worst ? e : worst;
            }
        }
        worst_ln = worst > worst_ln ? worst : worst_ln;
        CHECK(worst <= TOL && pad, "ln_row %s w=%zu cout=%zu y=%zu: rel diff %g pad %d", fn ? variants[v].name : "dispatched", w,
              cout, y, worst, pad);
    }
    free(t); free(bias); free(lw); free(lb); free(ref); free(got);
}

/* ---- second upscaling stage: + bias, GELU in place, the masks' sums, written transposed ---- */
static void test_masks_t(size_t rows, size_t w, size_t cout, size_t count, size_t y0, float range) {
    const size_t np = rows * w, ld = np + 3, ow = 2 * w, nm = count * ow * ow;
    float *t0 = falloc(4 * cout * ld), *bias = falloc(cout), *hyper = falloc(count * cout);
    float *tref = falloc(4 * cout * ld), *tgot = falloc(4 * cout * ld), *mref = falloc(nm), *mgot = falloc(nm);
    float *sc = falloc(count * np), *u = falloc(4 * cout * ld);
    fill(t0, 4 * cout * ld, -range, range);
    fill(bias, cout, -1.0f, 1.0f);
    fill(hyper, count * cout, -1.0f, 1.0f);
    for (size_t s = 0; s < 4; s++)
        for (size_t c = 0; c < cout; c++)
            for (size_t p = 0; p < ld; p++) u[(s * cout + c) * ld + p] = t0[(s * cout + c) * ld + p] + (p < np ? bias[c] : 0.0f);
    memcpy(tref, t0, 4 * cout * ld * sizeof(float));
    for (size_t i = 0; i < nm; i++) mref[i] = NAN;
    psam_upscale_masks_t__generic(tref, ld, rows, w, cout, y0, bias, hyper, count, mref, sc);
    for (size_t v = 0; v <= nvariants; v++) {
        masks_t_fn fn = v < nvariants ? variants[v].masks_t : psam_upscale_masks_t;
        const char *name = v < nvariants ? variants[v].name : "dispatched";
        if (!fn || (v < nvariants && variants[v].masks_t_count && count > variants[v].masks_t_count)) continue;
        memcpy(tgot, t0, 4 * cout * ld * sizeof(float));
        for (size_t i = 0; i < nm; i++) mgot[i] = NAN;
        fn(tgot, ld, rows, w, cout, y0, bias, hyper, count, mgot, sc);
        /* GELU values in place (the padding columns past np untouched). */
        double wg = 0.0;
        int pad = 1;
        for (size_t r = 0; r < 4 * cout; r++)
            for (size_t p = 0; p < ld; p++) {
                const size_t i = r * ld + p;
                if (p >= np) {
                    pad &= tgot[i] == t0[i];
                    continue;
                }
                double e = fabs((double)tgot[i] - tref[i]) / (1e-6 * (fabsf(u[i]) > 1.0f ? fabsf(u[i]) : 1.0f));
                if (!(e == e)) e = INFINITY;
                wg = e > wg ? e : wg;
            }
        /* The masks: 1e-5 of Σ|h·g| plus each term's GELU bound scaled by |h|. */
        double wm = 0.0;
        for (size_t m = 0; m < count; m++)
            for (size_t yy = 0; yy < ow; yy++)
                for (size_t xx = 0; xx < ow; xx++) {
                    const size_t i = m * ow * ow + xx * ow + yy;
                    if (yy / 2 < y0 || yy / 2 >= y0 + rows) {
                        pad &= isnan(mgot[i]);
                        continue;
                    }
                    const size_t s = (yy & 1) * 2 + (xx & 1), p = (yy / 2 - y0) * w + xx / 2;
                    double mag = 0.0, gerr = 0.0;
                    for (size_t c = 0; c < cout; c++) {
                        const double h = fabs(hyper[m * cout + c]), uc = fabs(u[(s * cout + c) * ld + p]);
                        mag += h * fabs(tref[(s * cout + c) * ld + p]);
                        gerr += h * 1e-6 * (uc > 1.0 ? uc : 1.0);
                    }
                    double e = fabs((double)mgot[i] - mref[i]) / (TOL * mag + gerr + 1e-30);
                    if (!(e == e)) e = INFINITY;
                    wm = e > wm ? e : wm;
                }
        worst_gelu = wg * 1e-6 > worst_gelu ? wg * 1e-6 : worst_gelu;
        worst_masks = wm * TOL > worst_masks ? wm * TOL : worst_masks;
        CHECK(wg <= 1.0 && wm <= 1.0 && pad, "masks_t %s rows=%zu w=%zu cout=%zu count=%zu y0=%zu: gelu %g, masks %g (of bound), pad %d",
              name, rows, w, cout, count, y0, wg, wm, pad);
    }
    free(t0); free(bias); free(hyper); free(tref); free(tgot); free(mref); free(mgot); free(sc); free(u);
}

/* ---- the image-token norm and the rows affine ---- */
static void test_keys_norm(size_t m, size_t c, int with_add, int with_pe) {
    float *x = falloc(m * c), *add = falloc(m * c), *pe = falloc(m * c), *w = falloc(c), *b = falloc(c);
    float *xr = falloc(m * c), *xg = falloc(m * c), *mr = falloc(m), *mg = falloc(m), *rr = falloc(m), *rg = falloc(m);
    float *pr = falloc(m * c), *pg = falloc(m * c);
    fill(x, m * c, -2.0f, 4.0f);
    fill(add, m * c, -2.0f, 2.0f);
    fill(pe, m * c, -2.0f, 2.0f);
    fill(w, c, -2.0f, 2.0f);
    fill(b, c, -1.0f, 1.0f);
    memcpy(xr, x, m * c * 4);
    psam_keys_norm__generic(xr, with_add ? add : NULL, m, c, w, b, 1e-5f, mr, rr, with_pe ? pe : NULL, with_pe ? pr : NULL);
    for (size_t v = 0; v <= nvariants; v++) {
        keys_norm_fn fn = v < nvariants ? variants[v].keys_norm : psam_keys_norm;
        const char *name = v < nvariants ? variants[v].name : "dispatched";
        if (!fn) continue;
        memcpy(xg, x, m * c * 4);
        for (size_t i = 0; i < m * c; i++) pg[i] = 777.0f;
        fn(xg, with_add ? add : NULL, m, c, w, b, 1e-5f, mg, rg, with_pe ? pe : NULL, with_pe ? pg : NULL);
        double worst = 0.0;
        int same_pe = 1;
        for (size_t i = 0; i < m; i++) {
            double e = fabs((double)mg[i] - mr[i]) / (fabsf(mr[i]) > 1.0f ? fabsf(mr[i]) : 1.0f);
            e = fmax(e, fabs((double)rg[i] - rr[i]) / rr[i]);
            const double mag = fmaxabs(xr + i * c, c);
            for (size_t j = 0; j < c; j++) {
                e = fmax(e, fabs((double)xg[i * c + j] - xr[i * c + j]) / (mag > 1.0 ? mag : 1.0));
                same_pe &= with_pe ? pg[i * c + j] == xg[i * c + j] + pe[i * c + j] : pg[i * c + j] == 777.0f;
            }
            if (!(e == e)) e = INFINITY;
            worst = e > worst ? e : worst;
        }
        worst_keys = worst > worst_keys ? worst : worst_keys;
        CHECK(worst <= TOL && same_pe, "keys_norm %s m=%zu c=%zu add=%d pe=%d: rel diff %g, x + pe %d", name, m, c, with_add,
              with_pe, worst, same_pe);
    }
    free(x); free(add); free(pe); free(w); free(b); free(xr); free(xg); free(mr); free(mg); free(rr); free(rg); free(pr); free(pg);
}

static void test_rows_affine(size_t m, size_t n) {
    float *t = falloc(m * n), *mean = falloc(m), *rstd = falloc(m), *u = falloc(n), *vv = falloc(n), *ref = falloc(m * n + 4),
          *got = falloc(m * n + 4);
    fill(t, m * n, -3.0f, 3.0f);
    fill(mean, m, -1.0f, 1.0f);
    fill(rstd, m, 0.1f, 3.0f);
    fill(u, n, -2.0f, 2.0f);
    fill(vv, n, -2.0f, 2.0f);
    memcpy(ref, t, m * n * 4);
    psam_rows_affine__generic(ref, m, n, mean, rstd, u, vv);
    for (size_t v = 0; v <= nvariants; v++) {
        rows_affine_fn fn = v < nvariants ? variants[v].rows_affine : psam_rows_affine;
        const char *name = v < nvariants ? variants[v].name : "dispatched";
        if (!fn) continue;
        memcpy(got, t, m * n * 4);
        for (size_t i = m * n; i < m * n + 4; i++) got[i] = 777.0f;
        fn(got, m, n, mean, rstd, u, vv);
        double worst = 0.0;
        int pad = 1;
        for (size_t j = 0; j < m; j++)
            for (size_t k = 0; k < n; k++) {
                const double mag = rstd[j] * (fabs(t[j * n + k]) + fabs(mean[j] * u[k])) + fabs(vv[k]);
                double e = fabs((double)got[j * n + k] - ref[j * n + k]) / mag;
                if (!(e == e)) e = INFINITY;
                worst = e > worst ? e : worst;
            }
        for (size_t i = m * n; i < m * n + 4; i++) pad &= got[i] == 777.0f;
        worst_affine = worst > worst_affine ? worst : worst_affine;
        CHECK(worst <= TOL && pad, "rows_affine %s m=%zu n=%zu: rel diff %g pad %d", name, m, n, worst, pad);
    }
    free(t); free(mean); free(rstd); free(u); free(vv); free(ref); free(got);
}

int main(void) {
#if defined(__x86_64__)
    if (psam_cpu_avx2_fma())
        variants[nvariants++] = (variant){"avx2", psam_mask_upscale__avx2, psam_scores_shared__avx2, psam_weighted_rows__avx2, 64, 0,
                                          psam_upscale_ln_row__avx2, psam_upscale_masks_t__avx2, 0, psam_keys_norm__avx2,
                                          psam_rows_affine__avx2};
    if (psam_cpu_avx512())
        variants[nvariants++] = (variant){"avx512", NULL, psam_scores_shared__avx512, psam_weighted_rows16__avx512, 16, 1, NULL,
                                          psam_upscale_masks_t__avx512, 4, NULL, NULL};
#endif
#if defined(__aarch64__)
    variants[nvariants++] = (variant){"neon", psam_mask_upscale__neon, psam_scores_shared__neon, psam_weighted_rows__neon, 0, 0,
                                      NULL, psam_upscale_masks_t__neon, 0, NULL, NULL};
#endif
    printf("tested: generic dispatched");
    for (size_t v = 0; v < nvariants; v++) printf(" %s", variants[v].name);
    printf("\n");

    /* RLE: empty, full, speckled; one pixel; framed. */
    const size_t rd[][2] = {{1, 1}, {5, 3}, {40, 31}, {17, 64}};
    const double dens[] = {0.0, 0.05, 0.5, 1.0};
    for (size_t i = 0; i < 4; i++)
        for (size_t j = 0; j < 4; j++) test_rle(rd[i][0], rd[i][1], dens[j]);

    /* Upscale: SAM's 256 → 1024 × 683 (and a crop's 768 × 1024), then odd sizes around 4 and 16 lanes; random,
     * quarter-grid and tie inputs; the core bit above and below the mask's threshold; empty and full masks; NaN and
     * ∞ logits. */
    test_upscale(256, 1024, 683, RANDOM, 1.0f, 0.0f, 0);
    test_upscale(256, 768, 1024, GRID, -0.5f, 0.0f, 0);
    test_upscale(256, 1024, 683, TIES, 0.5f, 0.0f, 0);
    test_upscale(64, 257, 255, TIES, -0.25f, 0.0f, 0);
    const size_t ns[] = {4, 7, 16, 33};
    const size_t sz[] = {1, 2, 3, 4, 5, 15, 16, 17, 31, 33, 47, 64, 100};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
        for (size_t j = 0; j < sizeof sz / sizeof sz[0]; j++)
            for (size_t k = 0; k < sizeof sz / sizeof sz[0]; k += 2) {
                const uint32_t f = next();
                test_upscale(ns[i], sz[j], sz[(k + j) % (sizeof sz / sizeof sz[0])], (int)(f % 3), (f >> 2) & 1 ? 0.75f : -0.25f,
                             0.0f, 0);
            }
    test_upscale(16, 37, 29, RANDOM, 1.0f, -100.0f, 0); /* empty */
    test_upscale(16, 37, 29, RANDOM, 1.0f, 100.0f, 0);  /* full */
    test_upscale(16, 41, 23, RANDOM, 0.5f, 0.0f, 1);    /* NaN, ∞ */
    test_upscale(33, 19, 70, GRID, 0.0f, 0.0f, 1);

    /* Scores and weighted rows: SAM's 4096 image tokens × 16-wide heads for a few prompt tokens, and odd sizes. */
    const size_t sh[][3] = {{1, 1, 1}, {7, 4096, 16}, {9, 37, 5}, {3, 100, 64}, {2, 17, 70}, {8, 8, 8}, {5, 513, 16},
                            {13, 1000, 32}, {16, 64, 16}, {4, 3, 3}, {6, 260, 257}, {11, 4096, 16}, {1, 600, 17}};
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
        test_scores(sh[i][0], sh[i][1], sh[i][2]);
        test_weighted(sh[i][0], sh[i][1], sh[i][2]);
        test_weighted(sh[i][0], sh[i][2], sh[i][1] < 80 ? sh[i][1] : 16);
    }

    /* First upscaling stage (SAM: 64 channels), odd widths and channels. */
    const size_t ln[][3] = {{1, 1, 0}, {5, 7, 2}, {3, 16, 1}, {64, 64, 5}, {9, 33, 0}, {4, 256, 3}, {2, 65, 1}};
    for (size_t i = 0; i < sizeof ln / sizeof ln[0]; i++) test_ln_row(ln[i][0], ln[i][1], ln[i][2]);

    /* Second stage (SAM: 32 channels, 4 masks, 128-wide rows), odd sizes, more masks than 4, none; wide inputs for
     * the GELU's clamp. */
    const size_t mt[][5] = {{1, 1, 1, 1, 0}, {3, 5, 7, 2, 1}, {4, 128, 32, 3, 8}, {2, 17, 33, 4, 3}, {2, 128, 32, 4, 0},
                            {3, 9, 8, 5, 2}, {1, 13, 4, 9, 0}, {2, 3, 4, 0, 1}, {1, 7, 16, 1, 4}, {5, 11, 6, 4, 0}};
    for (size_t i = 0; i < sizeof mt / sizeof mt[0]; i++)
        test_masks_t(mt[i][0], mt[i][1], mt[i][2], mt[i][3], mt[i][4], i & 1 ? 3.0f : 2.0f);
    test_masks_t(2, 37, 16, 2, 1, 14.0f);
    test_masks_t(1, 45, 3, 0, 0, 14.0f);

    /* Keys norm (SAM: 256 channels) and rows affine. */
    const size_t kn[][4] = {{1, 1, 0, 0}, {5, 7, 1, 1}, {9, 256, 1, 0}, {3, 33, 0, 1}, {7, 256, 0, 1},
                            {4, 48, 1, 1}, {2, 512, 1, 1}, {2, 528, 1, 1}};
    for (size_t i = 0; i < sizeof kn / sizeof kn[0]; i++) test_keys_norm(kn[i][0], kn[i][1], (int)kn[i][2], (int)kn[i][3]);
    const size_t ra[][2] = {{1, 1}, {3, 7}, {16, 256}, {5, 33}, {2, 1024}};
    for (size_t i = 0; i < sizeof ra / sizeof ra[0]; i++) test_rows_affine(ra[i][0], ra[i][1]);

    printf("scores: worst %.3g of the terms' magnitude\n", worst_scores);
    printf("weighted rows: worst %.3g of the terms' magnitude\n", worst_weighted);
    printf("ln row: worst %.3g of the row's magnitude\n", worst_ln);
    printf("masks_t: worst %.3g (masks, of the terms' magnitude), GELU worst %.3g·max(1, |x|)\n", worst_masks, worst_gelu);
    printf("keys norm: worst %.3g; rows affine: worst %.3g\n", worst_keys, worst_affine);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
