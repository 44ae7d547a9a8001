/* Kernel tests, built with the system C compiler (natively, and cross-compiled for aarch64 to run under
 * qemu-aarch64): the scalar int8 GEMM against a plain triple loop on unpacked weights, and every SIMD
 * variant this CPU has against the scalar kernel, bit for bit, on many shapes (tails that fill no tile,
 * K not a multiple of 4, M = 1, grouped scales with an odd or even number of k-quads, column sub-ranges), plus
 * activation quantization, and the int16 GEMM's vector bodies against its scalar one.
 * Prints "tested: <isa>...", "best: <isa>", the variants exercised, and a final "N passed, M failed"; exit status 1 on
 * any failure. */
#include "pocketsam_kernels.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The references below are written as separate roundings (x·inv, then + c), as the kernels compute them; clang
 * would fuse them into one fma where the target has it (aarch64), so contraction is off here. (GCC with -std=c11
 * does not contract.) */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

static int passed, failed;
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t next(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

typedef struct {
    size_t m, n, k, kp, np, group, groups, lda;
    int8_t *w;       /* unpacked [n][k] */
    int8_t *packed;
    uint8_t *a;
    float *a_scale, *w_scale, *bias;
    int32_t *a_zero, *w_sum;
} problem;

static problem make(size_t m, size_t n, size_t k, size_t group, int extreme) {
    problem p;
    p.m = m; p.n = n; p.k = k; p.kp = psam_round_up(k, 4); p.np = psam_round_up(n, 16);
    p.group = group ? group : p.kp; p.groups = p.kp / p.group;
    p.lda = p.kp + 4 * (next() % 3);
    p.w = calloc(n * k + 1, 1);
    p.packed = calloc(p.np * p.kp + 1, 1);
    p.a = calloc(m * p.lda + 1, 1);
    p.a_scale = calloc(m, 4); p.a_zero = calloc(m, 4);
    p.w_scale = calloc(p.groups * p.np, 4); p.w_sum = calloc(p.groups * p.np, 4);
    p.bias = calloc(n, 4);
    /* Weights in −127…127, never −128: the format's range (the loader rejects −128; the ARMv8.0 NEON kernel sums two
     * products (a − 128)·w in an int16 lane, exact only within it). Extreme: ±127 and activations 255 or 0 (a − 128 =
     * 127 or −128), the largest products, and pairs of them of one sign. */
    for (size_t i = 0; i < n * k; i++) p.w[i] = extreme ? (next() & 1 ? 127 : -127) : (int8_t)((int)(next() % 255) - 127);
    for (size_t r = 0; r < m; r++) {
        for (size_t j = 0; j < k; j++) p.a[r * p.lda + j] = extreme ? (r % 2 ? 0 : 255) : (uint8_t)(next() % 256);
        p.a_scale[r] = (float)(next() % 1000 + 1) / 997.0f;
        p.a_zero[r] = (int32_t)(next() % 256);
    }
    for (size_t c = 0; c < n; c++) {
        p.bias[c] = ((float)(next() % 2001) - 1000.0f) / 313.0f;
        for (size_t j = 0; j < k; j++) p.packed[psam_panel_offset(c, j, p.kp)] = p.w[c * k + j];
        for (size_t g = 0; g < p.groups; g++) {
            int32_t s = 0;
            for (size_t j = g * p.group; j < (g + 1) * p.group && j < k; j++) s += p.w[c * k + j];
            p.w_sum[g * p.np + c] = s;
            p.w_scale[g * p.np + c] = (float)(next() % 1000 + 1) / 1e5f;
        }
    }
    return p;
}

static void release(problem *p) {
    free(p->w); free(p->packed); free(p->a); free(p->a_scale); free(p->a_zero);
    free(p->w_scale); free(p->w_sum); free(p->bias);
}

static psam_qgemm_args args(const problem *p, float *c, int with_bias, int gelu) {
    psam_qgemm_args a = {p->a, p->lda, p->a_scale, p->a_zero, (const int8_t *)p->packed, p->w_scale, p->w_sum,
                         with_bias ? p->bias : NULL, c, p->n + 3, p->m, p->n, p->kp, p->group, gelu};
    return a;
}

/* The definition, on the unpacked weights: exact int32 per group, then the documented fmaf chain. */
static void triple_loop(const problem *p, float *c, int with_bias) {
    for (size_t r = 0; r < p->m; r++)
        for (size_t n = 0; n < p->n; n++) {
            float f = 0.0f;
            for (size_t g = 0; g < p->groups; g++) {
                int64_t acc = 0;
                for (size_t j = g * p->group; j < (g + 1) * p->group && j < p->k; j++)
                    acc += (int64_t)p->a[r * p->lda + j] * p->w[n * p->k + j];
                acc -= (int64_t)p->a_zero[r] * p->w_sum[g * p->np + n];
                f = fmaf((float)(int32_t)acc, p->w_scale[g * p->np + n], f);
            }
            c[r * (p->n + 3) + n] = fmaf(f, p->a_scale[r], with_bias ? p->bias[n] : 0.0f);
        }
}

static int same(const float *x, const float *y, size_t m, size_t n, size_t ld) {
    for (size_t r = 0; r < m; r++)
        for (size_t j = 0; j < n; j++)
            if (memcmp(&x[r * ld + j], &y[r * ld + j], 4) != 0 && x[r * ld + j] != y[r * ld + j]) return 0;
    return 1;
}

#define CHECK(cond, ...) do { if (cond) passed++; else { failed++; fprintf(stderr, "FAILED: " __VA_ARGS__); fputc('\n', stderr); } } while (0)

/* The int16 GEMM (panels16x2, symmetric rows): weights within psam_s16_weight_limit(kp), activations within
 * PSAM_S16_AMAX; `extreme` puts every product at the bound with one sign, the largest sum the contract allows. */
typedef struct {
    size_t m, n, k, kp, np, lda;
    int16_t *w, *packed, *a;
    float *a_scale, *w_scale, *bias;
} problem16;

static problem16 make16(size_t m, size_t n, size_t k, int extreme) {
    problem16 p;
    p.m = m; p.n = n; p.k = k; p.kp = psam_round_up(k, 2); p.np = psam_round_up(n, 16);
    p.lda = p.kp + 2 * (next() % 3);
    p.w = calloc(n * k + 1, 2); p.packed = calloc(p.np * p.kp + 1, 2); p.a = calloc(m * p.lda + 1, 2);
    p.a_scale = calloc(m, 4); p.w_scale = calloc(p.np, 4); p.bias = calloc(n, 4);
    int32_t lim = psam_s16_weight_limit(p.kp);
    int sign = next() & 1 ? 1 : -1;
    for (size_t i = 0; i < n * k; i++)
        p.w[i] = (int16_t)(extreme ? sign * lim : (int32_t)(next() % (uint32_t)(2 * lim + 1)) - lim);
    for (size_t r = 0; r < m; r++) {
        for (size_t j = 0; j < k; j++)
            p.a[r * p.lda + j] = (int16_t)(extreme ? PSAM_S16_AMAX : (int32_t)(next() % (2 * PSAM_S16_AMAX + 1)) - PSAM_S16_AMAX);
        p.a_scale[r] = (float)(next() % 1000 + 1) / 997.0f;
    }
    for (size_t c = 0; c < n; c++) {
        p.bias[c] = ((float)(next() % 2001) - 1000.0f) / 313.0f;
        p.w_scale[c] = (float)(next() % 1000 + 1) / 1e8f;
        for (size_t j = 0; j < k; j++) p.packed[psam_panel16_offset(c, j, p.kp)] = p.w[c * k + j];
    }
    return p;
}

static psam_s16gemm_args args16(const problem16 *p, float *c, int with_bias, int gelu) {
    psam_s16gemm_args a = {p->a, p->lda, p->a_scale, p->packed, p->w_scale, with_bias ? p->bias : NULL, c, p->n + 3,
                           p->m, p->n, p->kp, gelu};
    return a;
}

/* The int16 GEMM bodies compared with the scalar one: scalar, avx512vnni, neon. */
static int s16_exercised[3];
static const char *const s16_names[3] = {"scalar", "avx512vnni", "neon"};

static void check_s16(void) {
    static const size_t ms[] = {1, 2, 5, 7, 8, 9, 17, 64, 65, 130};
    static const size_t ns[] = {1, 15, 16, 17, 32, 33, 47, 64, 100};
    static const size_t ks[] = {1, 2, 3, 5, 27, 32, 63, 64, 160, 321, 640};
#if defined(__x86_64__)
    int vnni = psam_qgemm_kernel(PSAM_ISA_AVX512VNNI) != NULL;
#endif
    size_t shapes = 0;
    for (size_t mi = 0; mi < sizeof ms / sizeof *ms; mi++)
        for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++)
            for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
                size_t m = ms[mi], n = ns[ni], k = ks[ki];
                int extreme = (mi + ni + ki) % 5 == 0, with_bias = (ni + ki) % 2 == 0;
                problem16 p = make16(m, n, k, extreme);
                size_t ld = n + 3, sz = m * ld;
                float *ref = calloc(sz, 4), *sc = calloc(sz, 4), *out = calloc(sz, 4);
                /* The definition on unpacked weights: the sum in int64 (it must fit int32), then the fmaf chain. */
                int fits = 1;
                for (size_t r = 0; r < m; r++)
                    for (size_t c = 0; c < n; c++) {
                        int64_t acc = 0;
                        for (size_t j = 0; j < k; j++) acc += (int64_t)p.a[r * p.lda + j] * p.w[c * k + j];
                        fits &= acc >= INT32_MIN && acc <= INT32_MAX;
                        ref[r * ld + c] = fmaf(fmaf((float)acc, p.w_scale[c], 0.0f), p.a_scale[r], with_bias ? p.bias[c] : 0.0f);
                    }
                CHECK(fits, "s16 sums past int32 within the documented bounds (k=%zu)", k);
                psam_s16gemm_args a = args16(&p, sc, with_bias, 0);
                psam_s16gemm__scalar(&a, 0, n);
                s16_exercised[0] = 1;
                CHECK(same(ref, sc, m, n, ld), "s16 scalar vs triple loop m=%zu n=%zu k=%zu extreme=%d", m, n, k, extreme);
#if defined(__x86_64__)
                if (vnni) {
                    s16_exercised[1] = 1;
                    a = args16(&p, out, with_bias, 0);
                    if (n > 16 && (m + n) % 2) {
                        psam_s16gemm__avx512vnni(&a, 0, 16);
                        psam_s16gemm__avx512vnni(&a, 16, n);
                    } else {
                        psam_s16gemm__avx512vnni(&a, 0, n);
                    }
                    CHECK(same(sc, out, m, n, ld), "s16 avx512vnni vs scalar m=%zu n=%zu k=%zu extreme=%d", m, n, k, extreme);
                    int clean = 1;
                    for (size_t r = 0; r < m; r++)
                        for (size_t j = n; j < ld; j++) clean &= out[r * ld + j] == 0.0f;
                    CHECK(clean, "s16 avx512vnni wrote past column n (m=%zu n=%zu k=%zu)", m, n, k);
                }
#elif defined(__aarch64__)
                { /* NEON: always present on aarch64 */
                    s16_exercised[2] = 1;
                    memset(out, 0, sz * 4);
                    a = args16(&p, out, with_bias, 0);
                    if (n > 16 && (m + n) % 2) {
                        psam_s16gemm__neon(&a, 0, 16);
                        psam_s16gemm__neon(&a, 16, n);
                    } else {
                        psam_s16gemm__neon(&a, 0, n);
                    }
                    CHECK(same(sc, out, m, n, ld), "s16 neon vs scalar m=%zu n=%zu k=%zu extreme=%d", m, n, k, extreme);
                    int clean = 1;
                    for (size_t r = 0; r < m; r++)
                        for (size_t j = n; j < ld; j++) clean &= out[r * ld + j] == 0.0f;
                    CHECK(clean, "s16 neon wrote past column n (m=%zu n=%zu k=%zu)", m, n, k);
                }
#endif
                if (m <= 9) {
                    for (int mode = PSAM_GELU_EXACT; mode <= PSAM_GELU_LUT; mode++) {
                        memcpy(ref, sc, sz * 4);
                        for (size_t r = 0; r < m; r++) psam_gelu_mode_rows(ref + r * ld, n, mode);
                        memset(out, 0, sz * 4);
                        a = args16(&p, out, with_bias, mode);
                        psam_s16gemm(&a, 0, n);
                        CHECK(same(ref, out, m, n, ld), "s16 dispatched fused GELU mode %d m=%zu n=%zu k=%zu", mode, m, n, k);
                    }
                }
                free(ref); free(sc); free(out);
                free(p.w); free(p.packed); free(p.a); free(p.a_scale); free(p.w_scale); free(p.bias);
                shapes++;
            }
    /* Quantization to int16 against its definition, computed here; round trip within half a step. */
    for (int t = 0; t < 300; t++) {
        /* Some m past 16: the AVX-512 body takes up to 16 rows' scales at a time. */
        size_t m = t % 10 == 0 ? 17 + next() % 24 : 1 + next() % 5, k = 1 + next() % 300, ldq = psam_round_up(k, 2) + 2;
        float *x = malloc(m * k * 4), sc[40];
        int16_t *q = malloc(m * ldq * 2);
        memset(q, 0xAB, m * ldq * 2);
        float mag = (float)(next() % 100 + 1) / (t % 3 ? 10.0f : 0.01f);
        for (size_t i = 0; i < m * k; i++) x[i] = t % 17 == 0 ? 0.0f : ((float)(next() % 20001) / 10000.0f - (t % 2 ? 1.0f : 0.2f)) * mag;
        psam_quantize_rows_s16(x, m, k, k, q, ldq, sc);
        int ok = 1;
        for (size_t r = 0; r < m; r++) {
            float amax = 0.0f;
            for (size_t j = 0; j < k; j++) amax = fabsf(x[r * k + j]) > amax ? fabsf(x[r * k + j]) : amax;
            float s = amax > 0.0f ? amax / (float)PSAM_S16_AMAX : 1.0f, inv = 1.0f / s;
            ok &= sc[r] == s;
            for (size_t j = 0; j < k; j++) {
                float v = x[r * k + j], u = amax > 0.0f ? v * inv + ((float)PSAM_S16_AMAX + 0.5f) : (float)PSAM_S16_AMAX;
                u = u < 0.0f ? 0.0f : (u > 2.0f * PSAM_S16_AMAX + 0.5f ? 2.0f * PSAM_S16_AMAX + 0.5f : u);
                int32_t e = (int32_t)u - PSAM_S16_AMAX;
                ok &= q[r * ldq + j] == e && e >= -PSAM_S16_AMAX && e <= PSAM_S16_AMAX;
                ok &= fabsf(sc[r] * (float)q[r * ldq + j] - v) <= sc[r] * 0.5001f + 1e-6f * fabsf(v);
            }
            for (size_t j = k; j < ldq; j++) ok &= q[r * ldq + j] == 0;
        }
        CHECK(ok, "quantize_rows_s16 case %d (m=%zu k=%zu)", t, m, k);
        free(x); free(q);
    }
    printf("%zu s16 shapes\n", shapes);
}

int main(void) {
    static const size_t ms[] = {1, 2, 3, 5, 7, 8, 9, 13, 17, 64, 65, 130};
    static const size_t ns[] = {1, 3, 15, 16, 17, 31, 32, 33, 47, 64, 100};
    /* 2000 and 5200 only with few rows and 64 or more columns (below): enough weight bytes that the AVX2 kernel's
     * column chunks split the columns, and a k past its widened rows' limit (5120). */
    static const size_t ks[] = {1, 2, 3, 4, 5, 7, 8, 12, 63, 64, 65, 256, 300, 2000, 5200};
    psam_qgemm_fn fns[PSAM_ISA_COUNT];
    int exercised[PSAM_ISA_COUNT] = {0};
    printf("tested:");
    for (int i = 0; i < PSAM_ISA_COUNT; i++) {
        fns[i] = psam_qgemm_kernel((psam_isa)i);
        if (fns[i]) printf(" %s", psam_isa_name((psam_isa)i));
    }
    printf("\nbest: %s\n", psam_isa_name(psam_best_isa()));
    CHECK(fns[PSAM_ISA_SCALAR] != NULL, "scalar kernel missing");
    size_t shapes = 0;
    for (size_t mi = 0; mi < sizeof ms / sizeof *ms; mi++)
        for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++)
            for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
                size_t m = ms[mi], n = ns[ni], k = ks[ki], kp = psam_round_up(k, 4);
                if (k >= 2000 && (m > 17 || n < 64)) continue;
                /* Per channel, and grouped scales where a multiple of 4 divides kp: groups of an even number of k-quads
                 * (8, 64) and of an odd one (4: one quad; 12: three), as the ARM kernels pair k-quads. */
                size_t groups[5] = {0, 0, 0, 0, 0};
                int ng = 1;
                if (kp % 8 == 0 && kp > 8) groups[ng++] = 8;
                if (kp == 256) groups[ng++] = 64;
                if (kp % 12 == 0 && kp > 12) groups[ng++] = 12;
                if (kp == 8 || kp == 64) groups[ng++] = 4;
                for (int gi = 0; gi < ng; gi++) {
                    int extreme = (mi + ni + ki) % 7 == 0;
                    problem p = make(m, n, k, groups[gi], extreme);
                    int with_bias = (ni + ki) % 2 == 0;
                    size_t ld = n + 3, sz = m * ld;
                    float *ref = calloc(sz, 4), *sc = calloc(sz, 4), *out = calloc(sz, 4);
                    triple_loop(&p, ref, with_bias);
                    psam_qgemm_args a = args(&p, sc, with_bias, 0);
                    fns[PSAM_ISA_SCALAR](&a, 0, n);
                    exercised[PSAM_ISA_SCALAR] = 1;
                    CHECK(same(ref, sc, m, n, ld), "scalar vs triple loop m=%zu n=%zu k=%zu group=%zu", m, n, k, groups[gi]);
                    for (int i = 1; i < PSAM_ISA_COUNT; i++) {
                        if (!fns[i]) continue;
                        exercised[i] = 1;
                        memset(out, 0, sz * 4);
                        a = args(&p, out, with_bias, 0);
                        if (n > 16 && (m + n) % 2) {  /* in column sub-ranges, as threads call it */
                            fns[i](&a, 0, 16);
                            fns[i](&a, 16, n);
                        } else {
                            fns[i](&a, 0, n);
                        }
                        CHECK(same(sc, out, m, n, ld), "%s vs scalar m=%zu n=%zu k=%zu group=%zu",
                              psam_isa_name((psam_isa)i), m, n, k, groups[gi]);
                        /* Nothing written outside the n columns of each row. */
                        int clean = 1;
                        for (size_t r = 0; r < m; r++)
                            for (size_t j = n; j < ld; j++) clean &= out[r * ld + j] == 0.0f;
                        CHECK(clean, "%s wrote past column n (m=%zu n=%zu k=%zu)", psam_isa_name((psam_isa)i), m, n, k);
                    }
                    /* Fused GELU (either mode) equals that GELU applied afterwards. */
                    if (m <= 9) {
                        for (int i = 0; i < PSAM_ISA_COUNT; i++) {
                            if (!fns[i]) continue;
                            for (int mode = PSAM_GELU_EXACT; mode <= PSAM_GELU_LUT; mode++) {
                                a = args(&p, out, with_bias, mode);
                                fns[i](&a, 0, n);
                                memcpy(ref, sc, sz * 4);
                                for (size_t r = 0; r < m; r++) psam_gelu_mode_rows(ref + r * ld, n, mode);
                                CHECK(same(ref, out, m, n, ld), "%s fused GELU mode %d m=%zu n=%zu k=%zu",
                                      psam_isa_name((psam_isa)i), mode, m, n, k);
                            }
                        }
                    }
                    free(ref); free(sc); free(out);
                    release(&p);
                    shapes++;
                }
            }
    /* Activation quantization: round trip within half a step, zero exact, padding zeroed. */
    for (int t = 0; t < 200; t++) {
        size_t m = 1 + next() % 5, k = 1 + next() % 300, ldq = psam_round_up(k, 4) + 4;
        float *x = malloc(m * k * 4), sc[5];
        int32_t zp[5];
        uint8_t *q = malloc(m * ldq);
        memset(q, 0xAB, m * ldq);
        float mag = (float)(next() % 100 + 1) / (t % 3 ? 10.0f : 0.01f);
        for (size_t i = 0; i < m * k; i++) x[i] = t % 17 == 0 ? 0.0f : ((float)(next() % 20001) / 10000.0f - (t % 2 ? 1.0f : 0.2f)) * mag;
        psam_quantize_rows_u8(x, m, k, k, q, ldq, sc, zp);
        int ok = 1;
        for (size_t r = 0; r < m; r++) {
            ok &= zp[r] >= 0 && zp[r] <= 255 && sc[r] > 0;
            for (size_t j = 0; j < k; j++) ok &= fabsf(sc[r] * ((float)q[r * ldq + j] - (float)zp[r]) - x[r * k + j]) <= sc[r] * 0.5001f + 1e-6f * fabsf(x[r * k + j]);
            for (size_t j = k; j < ldq; j++) ok &= q[r * ldq + j] == 0;
        }
        CHECK(ok, "quantize_rows case %d (m=%zu k=%zu)", t, m, k);
        free(x); free(q);
    }
    /* The peak probes of the variants that have one run and count their multiply-accumulates. */
    static const psam_isa probed[] = {PSAM_ISA_AVX512VNNI, PSAM_ISA_AVX2, PSAM_ISA_NEON, PSAM_ISA_NEONDOT, PSAM_ISA_I8MM};
    for (size_t i = 0; i < sizeof probed / sizeof *probed; i++)
        if (fns[probed[i]]) CHECK(psam_isa_peak_probe(probed[i], 3) % 3 == 0 && psam_isa_peak_probe(probed[i], 3) > 0,
                                  "%s peak probe", psam_isa_name(probed[i]));
    check_s16();
    printf("qgemm variants exercised:");
    for (int i = 0; i < PSAM_ISA_COUNT; i++)
        if (exercised[i]) printf(" %s", psam_isa_name((psam_isa)i));
    printf("\ns16gemm variants exercised:");
    for (int i = 0; i < 3; i++)
        if (s16_exercised[i]) printf(" %s", s16_names[i]);
    printf("\n%zu shapes\n%d passed, %d failed\n", shapes, passed, failed);
    return failed ? 1 : 0;
}
