/* Tests of psam_sgemm_inplace (Sources/PocketSAMKernels/sgemm.c), built with the system C compiler. sgemm.c
 * is compiled into this program (#include below) so that each of its bodies can be run: the plain reference
 * loop, the row-accumulating body (the portable one), the AVX2 and AVX-512 register tiles when this CPU has them,
 * the NEON tiles on aarch64, and the dispatched function. Each is compared with a double-precision triple loop
 * on many shapes: rows that fill no tile (1 … 13, 37, 100), columns that fill no vector (1 … 65, 100, 256, 257),
 * k below, at and above the 256-deep k blocks, A row-major and transposed, with and without bias and
 * accumulation, alpha ≠ 1.
 *
 * Tolerance: the bodies add the k products in float in different orders (blocks, fused multiply-adds), so
 * each element may differ from the exact sum by the float summation bound, k · 2⁻²⁴ · Σ|products| (plus the
 * epilogue's roundings of |bias| and |old C|); the test allows 2 · k · 2⁻²⁴ of that magnitude. An indexing
 * mistake gives errors of the order of the magnitude itself. C's padding (ldc > n) and the rows after m must
 * be left untouched. psam_transpose and psam_im2col (the same file) are checked for exact copies on odd sizes.
 *
 * Prints "tested: <variant>...", the largest error relative to its bound, and "N passed, M failed"; exit
 * status 1 on any failure. */
#include "../../Sources/PocketSAMKernels/sgemm.c"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int passed, failed;
#define CHECK(cond, ...)                 \
    do {                                 \
        if (cond) passed++;              \
        else {                           \
            failed++;                    \
            if (failed <= 20) {          \
                printf("FAIL: ");        \
                printf(__VA_ARGS__);     \
                printf("\n");            \
            }                            \
        }                                \
    } while (0)

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t next(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float frand(void) { return -1.0f + 2.0f * (float)(next() & 0xFFFFFF) / 16777215.0f; }

typedef void (*sgemm_fn)(SGEMM_PARAMS);
static const char *names[5];
static sgemm_fn fns[5];
static size_t nfns;
static double worst;

static void test(size_t m, size_t n, size_t k, int transposed, int with_bias, int accumulate, float alpha) {
    /* k = 0 is the dispatcher's (it hands it to the reference loop). */
    const size_t nv = k ? nfns : 1;
    const size_t lda = (transposed ? m : k) + next() % 3, ldb = n + next() % 3, ldc = n + 1 + next() % 3;
    const size_t rows_a = transposed ? k : m;
    float *a = malloc((rows_a * lda + 1) * 4), *b = malloc((k * ldb + 1) * 4), *bias = malloc((n + 1) * 4);
    float *c0 = malloc(((m + 1) * ldc) * 4), *c = malloc(((m + 1) * ldc) * 4);
    for (size_t i = 0; i < rows_a * lda; i++) a[i] = frand();
    for (size_t i = 0; i < k * ldb; i++) b[i] = frand();
    for (size_t i = 0; i < n; i++) bias[i] = frand();
    for (size_t i = 0; i < (m + 1) * ldc; i++) c0[i] = frand();
    const size_t ars = transposed ? 1 : lda, aks = transposed ? lda : 1;
    for (size_t v = 0; v < nv; v++) {
        memcpy(c, c0, (m + 1) * ldc * 4);
        fns[v](a, ars, aks, b, ldb, c, ldc, m, n, k, alpha, with_bias ? bias : NULL, accumulate);
        double w = 0.0;
        int untouched = 1;
        for (size_t r = 0; r < m; r++) {
            for (size_t j = 0; j < n; j++) {
                double s = 0.0, mag = 0.0;
                for (size_t t = 0; t < k; t++) {
                    const double p = (double)a[r * ars + t * aks] * b[t * ldb + j];
                    s += p;
                    mag += fabs(p);
                }
                s *= alpha;
                mag *= fabs(alpha);
                if (with_bias) s += bias[j], mag += fabs(bias[j]);
                if (accumulate) s += c0[r * ldc + j], mag += fabs(c0[r * ldc + j]);
                const double bound = 2.0 * (double)(k + 2) * ldexp(1.0, -24) * (mag > 1e-30 ? mag : 1e-30);
                double e = fabs(c[r * ldc + j] - s) / bound;
                if (!(e == e)) e = INFINITY;
                w = e > w ? e : w;
            }
            for (size_t j = n; j < ldc; j++) untouched &= c[r * ldc + j] == c0[r * ldc + j];
        }
        for (size_t j = 0; j < ldc; j++) untouched &= c[m * ldc + j] == c0[m * ldc + j];
        worst = w > worst ? w : worst;
        CHECK(w <= 1.0 && untouched, "%s m=%zu n=%zu k=%zu trans=%d bias=%d acc=%d alpha=%g: error/bound %g, untouched %d",
              names[v], m, n, k, transposed, with_bias, accumulate, alpha, w, untouched);
    }
    free(a); free(b); free(bias); free(c0); free(c);
}

int main(void) {
    names[nfns] = "dispatched", fns[nfns++] = psam_sgemm_inplace;
    names[nfns] = "generic", fns[nfns++] = sgemm_generic;
    names[nfns] = "rows", fns[nfns++] = sgemm_rows;
#if defined(__x86_64__)
    if (psam_cpu_avx2_fma()) names[nfns] = "avx2", fns[nfns++] = sgemm_avx2;
    if (psam_cpu_avx512()) names[nfns] = "avx512", fns[nfns++] = sgemm_avx512;
#endif
#if defined(__aarch64__)
    names[nfns] = "neon", fns[nfns++] = psam_sgemm_inplace__neon;
#endif
    printf("tested:");
    for (size_t v = 0; v < nfns; v++) printf(" %s", names[v]);
    printf("\n");
    const size_t ms[] = {1, 2, 5, 6, 7, 11, 12, 13, 37, 100};
    const size_t ns[] = {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 56, 63, 64, 65, 100, 256, 257};
    const size_t ks[] = {1, 3, 16, 56, 255, 256, 257, 600};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++)
            for (size_t l = 0; l < sizeof ks / sizeof ks[0]; l++) {
                const uint32_t f = next();
                test(ms[i], ns[j], ks[l], f & 1, (f >> 1) & 1, (f >> 2) & 1, (f >> 3) & 1 ? 0.25f : 1.0f);
            }
    /* The generator's shapes: image tokens × token vectors, the transposed sum over 4096 image tokens, the update. */
    test(4096, 56, 256, 0, 1, 0, 0.25f);
    test(56, 256, 4096, 1, 0, 0, 1.0f);
    test(64, 256, 56, 0, 0, 1, 1.0f);
    /* k = 0: C = bias (+ C). */
    test(3, 20, 0, 0, 1, 1, 1.0f);
    /* psam_transpose: exact copies, odd sizes around its 16 × 16 blocks, padding of dst untouched. */
    const size_t dims[] = {1, 3, 15, 16, 17, 33, 64, 100};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        for (size_t j = 0; j < sizeof dims / sizeof dims[0]; j++) {
            const size_t rows = dims[i], cols = dims[j], lds = cols + 2, ldd = rows + 3;
            float *src = malloc(rows * lds * 4), *dst = malloc(cols * ldd * 4);
            for (size_t t = 0; t < rows * lds; t++) src[t] = frand();
            for (size_t t = 0; t < cols * ldd; t++) dst[t] = -7.0f;
            psam_transpose(src, rows, cols, lds, dst, ldd);
            int ok = 1;
            for (size_t c = 0; c < cols; c++)
                for (size_t r = 0; r < ldd; r++) ok &= r < rows ? dst[c * ldd + r] == src[r * lds + c] : dst[c * ldd + r] == -7.0f;
            CHECK(ok, "transpose rows=%zu cols=%zu", rows, cols);
            free(src); free(dst);
        }
    /* psam_im2col against the definition, with padding, strides 1 and 2, kernels 1 and 3. */
    for (size_t t = 0; t < 24; t++) {
        const size_t h = 1 + next() % 9, w = 1 + next() % 9, cin = 1 + next() % 7, k = (t & 1) ? 3 : 1, stride = 1 + (t >> 1 & 1);
        const size_t pad = k / 2, ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1, kk = cin * k * k;
        const size_t p0 = next() % (ho * wo), p1 = p0 + 1 + next() % (ho * wo - p0), ldc = kk + 2;
        float *x = malloc(h * w * cin * 4), *col = malloc((p1 - p0) * ldc * 4);
        for (size_t i = 0; i < h * w * cin; i++) x[i] = frand();
        for (size_t i = 0; i < (p1 - p0) * ldc; i++) col[i] = -7.0f;
        psam_im2col(x, h, w, cin, k, stride, pad, wo, p0, p1, col, ldc);
        int ok = 1;
        for (size_t p = p0; p < p1; p++)
            for (size_t c = 0; c < cin; c++)
                for (size_t ky = 0; ky < k; ky++)
                    for (size_t kx = 0; kx < k; kx++) {
                        const long iy = (long)((p / wo) * stride + ky) - (long)pad, ix = (long)((p % wo) * stride + kx) - (long)pad;
                        const float ref = iy < 0 || iy >= (long)h || ix < 0 || ix >= (long)w ? 0.0f : x[((size_t)iy * w + (size_t)ix) * cin + c];
                        ok &= col[(p - p0) * ldc + (c * k + ky) * k + kx] == ref;
                    }
        for (size_t p = p0; p < p1; p++) ok &= col[(p - p0) * ldc + kk] == -7.0f && col[(p - p0) * ldc + kk + 1] == -7.0f;
        CHECK(ok, "im2col h=%zu w=%zu cin=%zu k=%zu stride=%zu rows %zu..%zu", h, w, cin, k, stride, p0, p1);
        free(x); free(col);
    }
    printf("worst error / bound: %g\n", worst);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
