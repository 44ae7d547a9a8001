/* CPU feature detection and the kernel table, decided once. */
#include "pocketsam_kernels.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

static int cpu_has(psam_isa isa) {
    switch (isa) {
    case PSAM_ISA_SCALAR: return 1;
#if defined(__x86_64__)
    case PSAM_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case PSAM_ISA_AVX512VNNI:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#endif
#if defined(__aarch64__) && defined(__linux__)
    case PSAM_ISA_NEONDOT: return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#endif
    default: return 0;
    }
}

psam_qgemm_fn psam_qgemm_kernel(psam_isa isa) {
    if (!cpu_has(isa)) return NULL;
    switch (isa) {
    case PSAM_ISA_SCALAR: return psam_qgemm__scalar;
#if defined(__x86_64__)
    case PSAM_ISA_AVX2: return psam_qgemm__avx2;
    case PSAM_ISA_AVX512VNNI: return psam_qgemm__avx512vnni;
#endif
#if defined(__aarch64__)
    case PSAM_ISA_NEONDOT: return psam_qgemm__neondot;
#endif
    default: return NULL;
    }
}

const char *psam_isa_name(psam_isa isa) {
    switch (isa) {
    case PSAM_ISA_SCALAR: return "scalar";
    case PSAM_ISA_AVX2: return "avx2";
    case PSAM_ISA_AVX512VNNI: return "avx512vnni";
    case PSAM_ISA_NEONDOT: return "neondot";
    default: return "unknown";
    }
}

static psam_isa best = PSAM_ISA_SCALAR;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void choose(void) {
    /* Preference order: widest first. PSAM_KERNELS caps the choice at a named variant. */
    static const psam_isa order[] = {PSAM_ISA_AVX512VNNI, PSAM_ISA_NEONDOT, PSAM_ISA_AVX2, PSAM_ISA_SCALAR};
    const char *cap = getenv("PSAM_KERNELS");
    int known = 0;
    for (size_t i = 0; cap && i < sizeof order / sizeof order[0]; i++) known |= strcmp(cap, psam_isa_name(order[i])) == 0;
    if (!known) cap = NULL; /* an unknown name is ignored */
    int capped = 0;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        if (cap && !capped) {
            if (strcmp(cap, psam_isa_name(order[i])) != 0) continue;
            capped = 1;
        }
        if (psam_qgemm_kernel(order[i])) {
            best = order[i];
            return;
        }
    }
    best = PSAM_ISA_SCALAR;
}

psam_isa psam_best_isa(void) {
    pthread_once(&once, choose);
    return best;
}

static psam_qgemm_fn best_fn;
static pthread_once_t fn_once = PTHREAD_ONCE_INIT;
static void choose_fn(void) { best_fn = psam_qgemm_kernel(psam_best_isa()); }

void psam_qgemm(const psam_qgemm_args *args, size_t n0, size_t n1) {
    pthread_once(&fn_once, choose_fn);
    best_fn(args, n0, n1);
}

int psam_s16gemm_fast(void) {
#if defined(__x86_64__)
    return psam_best_isa() == PSAM_ISA_AVX512VNNI;
#else
    return 0;
#endif
}

void psam_s16gemm(const psam_s16gemm_args *args, size_t n0, size_t n1) {
#if defined(__x86_64__)
    if (psam_s16gemm_fast()) {
        psam_s16gemm__avx512vnni(args, n0, n1);
        return;
    }
#endif
    psam_s16gemm__scalar(args, n0, n1);
}

/* Peak throughput probes: `iters` rounds of 16 independent dot-product instructions on registers
 * (no memory traffic), the upper bound an int8 GEMM on this core can reach. Returns the
 * multiply-accumulates done (0 when the variant is unavailable). */
#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static uint64_t peak_vnni(uint64_t iters) {
    __m512i acc[16];
    const __m512i a = _mm512_set1_epi32(0x01010101), b = _mm512_set1_epi32(0x01FF01FF);
    for (int i = 0; i < 16; i++) acc[i] = _mm512_set1_epi32(i);
    for (uint64_t it = 0; it < iters; it++) {
        for (int i = 0; i < 16; i++) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
        __asm__ volatile("" : "+v"(acc[0]), "+v"(acc[1]), "+v"(acc[2]), "+v"(acc[3]), "+v"(acc[4]), "+v"(acc[5]),
                         "+v"(acc[6]), "+v"(acc[7]));
    }
    __m512i s = acc[0];
    for (int i = 1; i < 16; i++) s = _mm512_add_epi32(s, acc[i]);
    volatile int sink = _mm512_reduce_add_epi32(s);
    (void)sink;
    return iters * 16 * 64;
}
#endif

uint64_t psam_isa_peak_probe(psam_isa isa, uint64_t iters) {
    if (!psam_qgemm_kernel(isa)) return 0;
#if defined(__x86_64__)
    if (isa == PSAM_ISA_AVX512VNNI) return peak_vnni(iters);
#endif
    (void)iters;
    return 0;
}
