/* Tests of the portable kernels (Sources/PocketSAMKernels/portable.c, sgemm_portable.c, moments.c), built with every
 * kernel source. The quantizer's calibration relies on them giving the same bits on every CPU, so the checks are
 * bit for bit:
 *  - psam_sgemm_portable: every body this CPU has (generic, AVX2, AVX-512) equal to a plain loop that sums the
 *    products in order with separate roundings (the definition), on many shapes and strides (A and B each row-major
 *    or transposed), with bias, accumulation and alpha ≠ 1; and within the float summation bound of a double
 *    reference (an indexing mistake would be caught even if every body made it).
 *  - psam_moments_f64: every body, split into 1, 2 or 3 parts, equal to the plain double loop over the rows in order
 *    (exact products, so fused and separate multiply-adds agree), on the upper triangle; the lower triangle outside
 *    the diagonal tiles left untouched.
 *  - The switch: with it on, psam_sgemm_inplace gives psam_sgemm_portable's bits, and the dispatched layer norm,
 *    softmax and fp32 window attention give their generic bodies' bits; off, the dispatched functions are the
 *    fastest bodies again (on x86 with AVX2 the layer norm then differs from the generic body in some bits: the
 *    switch really changes what runs).
 *
 * Prints "tested: <variant>...", and "N passed, M failed"; exit status 1 on any failure. */
#include "../../Sources/PocketSAMKernels/rowops_internal.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;
#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        if (cond) passed++;                                                           \
        else {                                                                        \
            failed++;                                                                 \
            if (failed <= 20) { printf("FAIL: "); printf(__VA_ARGS__); printf("\n"); } \
        }                                                                             \
    } while (0)

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t next(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float frand(void) { return (float)(next() & 0xFFFFFF) / 8388608.0f - 1.0f; }

static int bodies[3], nbodies;
static const char *body_names[3];

/* The definition, element by element (contraction off in this file: rowops_internal.h). */
static void sgemm_definition(const float *a, size_t ars, size_t aks, const float *b, size_t bks, size_t bjs, float *c,
                             size_t ldc, size_t m, size_t n, size_t k, float alpha, const float *bias, int accumulate) {
    for (size_t r = 0; r < m; r++)
        for (size_t j = 0; j < n; j++) {
            float s = 0.0f;
            for (size_t t = 0; t < k; t++) {
                const float p = a[r * ars + t * aks] * b[t * bks + j * bjs];
                s = s + p;
            }
            float v = alpha * s;
            if (bias) v = v + bias[j];
            c[r * ldc + j] = accumulate ? c[r * ldc + j] + v : v;
        }
}

static void test_sgemm(size_t m, size_t n, size_t k, int ta, int tb, int with_bias, int accumulate, float alpha) {
    const size_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 2, ldc = n + 5;
    const size_t ars = ta ? 1 : lda, aks = ta ? lda : 1, bks = tb ? 1 : ldb, bjs = tb ? ldb : 1;
    float *a = malloc(((ta ? k : m) * lda + 1) * 4), *b = malloc(((tb ? n : k) * ldb + 1) * 4), *bias = malloc((n + 1) * 4);
    float *c0 = malloc((m + 1) * ldc * 4), *want = malloc((m + 1) * ldc * 4), *got = malloc((m + 1) * ldc * 4);
    for (size_t i = 0; i < (ta ? k : m) * lda + 1; i++) a[i] = frand();
    for (size_t i = 0; i < (tb ? n : k) * ldb + 1; i++) b[i] = frand();
    for (size_t i = 0; i < n + 1; i++) bias[i] = frand();
    for (size_t i = 0; i < (m + 1) * ldc; i++) c0[i] = frand();
    memcpy(want, c0, (m + 1) * ldc * 4);
    sgemm_definition(a, ars, aks, b, bks, bjs, want, ldc, m, n, k, alpha, with_bias ? bias : NULL, accumulate);
    /* The definition against double precision: within the float summation bound. */
    double worst = 0.0;
    for (size_t r = 0; r < m; r++)
        for (size_t j = 0; j < n; j++) {
            double s = 0.0, mag = 0.0;
            for (size_t t = 0; t < k; t++) {
                const double p = (double)a[r * ars + t * aks] * b[t * bks + j * bjs];
                s += p, mag += fabs(p);
            }
            s *= alpha, mag *= fabs(alpha);
            if (with_bias) s += bias[j], mag += fabs(bias[j]);
            if (accumulate) s += c0[r * ldc + j], mag += fabs(c0[r * ldc + j]);
            const double e = fabs(want[r * ldc + j] - s) / (2.0 * (double)(k + 2) * ldexp(1.0, -24) * (mag > 1e-30 ? mag : 1e-30));
            worst = e > worst ? e : worst;
        }
    CHECK(worst <= 1.0, "definition m=%zu n=%zu k=%zu: error/bound %g", m, n, k, worst);
    for (int v = 0; v < nbodies; v++) {
        memcpy(got, c0, (m + 1) * ldc * 4);
        psam_sgemm_portable_with(bodies[v], a, ars, aks, b, bks, bjs, got, ldc, m, n, k, alpha, with_bias ? bias : NULL,
                                 accumulate);
        CHECK(memcmp(got, want, (m + 1) * ldc * 4) == 0, "%s m=%zu n=%zu k=%zu ta=%d tb=%d bias=%d acc=%d alpha=%g: bits differ",
              body_names[v], m, n, k, ta, tb, with_bias, accumulate, alpha);
    }
    /* The switch: psam_sgemm_inplace (B row-major) is the portable product while it is on. */
    if (!tb) {
        psam_set_portable_kernels(1);
        memcpy(got, c0, (m + 1) * ldc * 4);
        psam_sgemm_inplace(a, ars, aks, b, ldb, got, ldc, m, n, k, alpha, with_bias ? bias : NULL, accumulate);
        psam_set_portable_kernels(0);
        CHECK(memcmp(got, want, (m + 1) * ldc * 4) == 0, "psam_sgemm_inplace under the switch m=%zu n=%zu k=%zu: bits differ", m,
              n, k);
    }
    free(a); free(b); free(bias); free(c0); free(want); free(got);
}

static void test_moments(size_t rows, size_t k, size_t ldx) {
    float *x = malloc((rows * ldx + 1) * 4);
    for (size_t i = 0; i < rows * ldx + 1; i++) x[i] = frand() * (i % 7 == 0 ? 50.0f : 1.0f);
    double *h0 = malloc(k * k * 8), *want = malloc(k * k * 8), *got = malloc(k * k * 8);
    for (size_t i = 0; i < k * k; i++) h0[i] = (double)frand();
    memcpy(want, h0, k * k * 8);
    for (size_t i = 0; i < k; i++)
        for (size_t j = i; j < k; j++) {
            double s = want[i * k + j];
            for (size_t r = 0; r < rows; r++) s = s + (double)x[r * ldx + i] * (double)x[r * ldx + j];
            want[i * k + j] = s;
        }
    for (int v = 0; v < nbodies; v++)
        for (size_t parts = 1; parts <= 3; parts++) {
            memcpy(got, h0, k * k * 8);
            for (size_t p = parts; p-- > 0;) psam_moments_f64_with(bodies[v], x, ldx, rows, k, got, p, parts);
            int upper = 1, lower = 1;
            for (size_t i = 0; i < k; i++)
                for (size_t j = 0; j < k; j++) {
                    if (j >= i) upper &= memcmp(&got[i * k + j], &want[i * k + j], 8) == 0;
                    else if (j / 16 < i / 16) lower &= memcmp(&got[i * k + j], &h0[i * k + j], 8) == 0;
                }
            CHECK(upper && lower, "moments %s rows=%zu k=%zu parts=%zu: upper equal %d, lower untouched %d", body_names[v], rows, k,
                  parts, upper, lower);
        }
    free(x); free(h0); free(want); free(got);
}

/* The switch on the row operations: dispatched == generic, bit for bit. */
static void test_switch(void) {
    const size_t m = 37, c = 200;
    float *x = malloc(m * c * 4), *w = malloc(c * 4), *b = malloc(c * 4), *o1 = malloc(m * c * 4), *o2 = malloc(m * c * 4);
    for (size_t i = 0; i < m * c; i++) x[i] = frand() * 3.0f + 0.5f;
    for (size_t i = 0; i < c; i++) w[i] = frand(), b[i] = frand();
    psam_set_portable_kernels(1);
    psam_layernorm_rows(x, m, c, c, w, b, 1e-6f, o1, c);
    psam_set_portable_kernels(0);
    psam_layernorm__generic(x, m, c, c, w, b, 1e-6f, o2, c);
    CHECK(memcmp(o1, o2, m * c * 4) == 0, "layer norm under the switch: not the generic body's bits");
#if defined(__x86_64__)
    if (has_avx2()) {
        psam_layernorm_rows(x, m, c, c, w, b, 1e-6f, o1, c);
        CHECK(memcmp(o1, o2, m * c * 4) != 0, "layer norm with the switch off: still the generic body (the switch changes nothing?)");
    }
#endif
    memcpy(o1, x, m * c * 4);
    memcpy(o2, x, m * c * 4);
    psam_set_portable_kernels(1);
    psam_softmax_rows(o1, m, c, c);
    psam_set_portable_kernels(0);
    psam_softmax__generic(o2, m, c, c);
    CHECK(memcmp(o1, o2, m * c * 4) == 0, "softmax under the switch: not the generic body's bits");
    /* fp32 window attention: 49 tokens, 2 heads of 16. */
    const size_t wn = 49, heads = 2, kd = 16, ldq = 3 * heads * kd, ldo = heads * kd;
    float *qkv = malloc(wn * ldq * 4), *bias = malloc(heads * wn * wn * 4), *a1 = malloc(wn * ldo * 4), *a2 = malloc(wn * ldo * 4);
    float *scratch = malloc(64 * wn * 4 * 8);
    for (size_t i = 0; i < wn * ldq; i++) qkv[i] = frand();
    for (size_t i = 0; i < heads * wn * wn; i++) bias[i] = frand();
    psam_set_portable_kernels(1);
    psam_window_attention(qkv, ldq, wn, heads, kd, 0.25f, bias, a1, ldo, scratch);
    psam_set_portable_kernels(0);
    psam_window_attention__generic(qkv, ldq, wn, heads, kd, 0.25f, bias, a2, ldo, scratch);
    CHECK(memcmp(a1, a2, wn * ldo * 4) == 0, "window attention under the switch: not the generic body's bits");
    free(x); free(w); free(b); free(o1); free(o2); free(qkv); free(bias); free(a1); free(a2); free(scratch);
}

int main(void) {
    body_names[nbodies] = "generic", bodies[nbodies++] = 0;
#if defined(__x86_64__)
    if (psam_cpu_avx2_fma()) body_names[nbodies] = "avx2", bodies[nbodies++] = 1;
    if (psam_cpu_avx512()) body_names[nbodies] = "avx512", bodies[nbodies++] = 2;
#endif
    printf("tested:");
    for (int v = 0; v < nbodies; v++) printf(" %s", body_names[v]);
    printf("\n");
    const size_t ms[] = {1, 3, 4, 7, 8, 9, 17, 40};
    const size_t ns[] = {1, 5, 15, 16, 17, 33, 64};
    const size_t ks[] = {0, 1, 7, 64, 300};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++)
            for (size_t l = 0; l < sizeof ks / sizeof ks[0]; l++) {
                const uint32_t f = next();
                test_sgemm(ms[i], ns[j], ks[l], f & 1, (f >> 1) & 1, (f >> 2) & 1, (f >> 3) & 1, (f >> 4) & 1 ? 0.125f : 1.0f);
            }
    const size_t rs[] = {1, 5, 64, 65, 200};
    const size_t kk[] = {1, 7, 8, 16, 17, 40, 100};
    for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++)
        for (size_t j = 0; j < sizeof kk / sizeof kk[0]; j++) test_moments(rs[i], kk[j], kk[j] + (i & 1) * 3);
    test_switch();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
