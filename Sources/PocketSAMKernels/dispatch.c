/* CPU feature detection and the kernel table, decided once. */
#include "pocketsam_kernels.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1UL << 1)
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
#if defined(__aarch64__)
#if defined(__linux__)
    case PSAM_ISA_NEON: return (getauxval(AT_HWCAP) & HWCAP_ASIMD) != 0;
#else
    case PSAM_ISA_NEON: return 1; /* Advanced SIMD is part of the aarch64 base ABI */
#endif
    case PSAM_ISA_NEONDOT: return psam_cpu_neon_dot();
    case PSAM_ISA_I8MM: return psam_cpu_neon_i8mm();
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
    case PSAM_ISA_NEON: return psam_qgemm__neon;
    case PSAM_ISA_NEONDOT: return psam_qgemm__neondot;
    case PSAM_ISA_I8MM: return psam_qgemm__i8mm;
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
    case PSAM_ISA_NEON: return "neon";
    case PSAM_ISA_I8MM: return "i8mm";
    default: return "unknown";
    }
}

static psam_isa best = PSAM_ISA_SCALAR;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void choose(void) {
    /* Preference order: fastest first. PSAM_KERNELS caps the choice at a named variant: the first one this CPU has
     * from that place in the order on. */
    static const psam_isa order[] = {PSAM_ISA_AVX512VNNI, PSAM_ISA_I8MM,  PSAM_ISA_NEONDOT,
                                     PSAM_ISA_AVX2,       PSAM_ISA_NEON, PSAM_ISA_SCALAR};
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
#elif defined(__aarch64__)
    /* Not faster than fp32 (psam_s16gemm_fast() is 0), but faster than the scalar body when it is called. */
    if (psam_best_isa() != PSAM_ISA_SCALAR) {
        psam_s16gemm__neon(args, n0, n1);
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

/* AVX2: the int8 kernel's arithmetic (qgemm_avx2.c): vpmaddwd on int16-widened operands (16 multiply-accumulates
 * each) and vpaddd into 8 accumulators. */
__attribute__((target("avx2"))) static uint64_t peak_avx2(uint64_t iters) {
    __m256i acc[8];
    __m256i a = _mm256_set1_epi32(0x00010001), b = _mm256_set1_epi32(0x0002FFFF);
    for (int i = 0; i < 8; i++) acc[i] = _mm256_set1_epi32(i);
    for (uint64_t it = 0; it < iters; it++) {
        for (int i = 0; i < 8; i++) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(a, b));
        for (int i = 0; i < 8; i++) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(b, a));
        __asm__ volatile("" : "+x"(acc[0]), "+x"(acc[1]), "+x"(acc[2]), "+x"(acc[3]), "+x"(acc[4]), "+x"(acc[5]), "+x"(acc[6]),
                         "+x"(acc[7]), "+x"(a), "+x"(b));
    }
    __m256i s = acc[0];
    for (int i = 1; i < 8; i++) s = _mm256_add_epi32(s, acc[i]);
    volatile int sink = _mm256_extract_epi32(s, 0);
    (void)sink;
    return iters * 16 * 16;
}
#endif

#if defined(__aarch64__)
#include <arm_neon.h>
/* ARMv8.0: the int8 kernel's mix (qgemm_neon.c) for 2 rows × 16 columns × 8 k: 16 smull/smull2, 16 smlal/smlal2 and
 * 16 sadalp into 16 accumulators; the operands pass through an empty asm each round so nothing is hoisted. */
static uint64_t peak_neon(uint64_t iters) {
    int32x4_t acc[16];
    int8x16_t w[4], a0[2], a1[2];
    for (int i = 0; i < 16; i++) acc[i] = vdupq_n_s32(i);
    for (int j = 0; j < 4; j++) w[j] = vdupq_n_s8((int8_t)(j + 1));
    for (int r = 0; r < 2; r++) a0[r] = vdupq_n_s8((int8_t)(r + 5)), a1[r] = vdupq_n_s8((int8_t)(r - 7));
    for (uint64_t it = 0; it < iters; it++) {
        __asm__ volatile("" : "+w"(w[0]), "+w"(w[1]), "+w"(w[2]), "+w"(w[3]), "+w"(a0[0]), "+w"(a0[1]), "+w"(a1[0]),
                         "+w"(a1[1]));
        _Pragma("GCC unroll 4")
        for (int j = 0; j < 4; j++)
            _Pragma("GCC unroll 2")
            for (int r = 0; r < 2; r++) {
                int16x8_t lo = vmlal_s8(vmull_s8(vget_low_s8(w[j]), vget_low_s8(a0[r])), vget_low_s8(w[j]), vget_low_s8(a1[r]));
                int16x8_t hi = vmlal_high_s8(vmull_high_s8(w[j], a0[r]), w[j], a1[r]);
                acc[4 * j + 2 * r] = vpadalq_s16(acc[4 * j + 2 * r], lo);
                acc[4 * j + 2 * r + 1] = vpadalq_s16(acc[4 * j + 2 * r + 1], hi);
            }
    }
    int32x4_t s = acc[0];
    for (int i = 1; i < 16; i++) s = vaddq_s32(s, acc[i]);
    volatile int sink = vaddvq_s32(s);
    (void)sink;
    return iters * 256;
}

__attribute__((target("arch=armv8.2-a+dotprod"))) static uint64_t peak_neondot(uint64_t iters) {
    int32x4_t acc[16];
    const int8x16_t a = vdupq_n_s8(1), b = vdupq_n_s8(-1);
    for (int i = 0; i < 16; i++) acc[i] = vdupq_n_s32(i);
    for (uint64_t it = 0; it < iters; it++) {
        _Pragma("GCC unroll 16")
        for (int i = 0; i < 16; i++) acc[i] = vdotq_s32(acc[i], a, b);
    }
    int32x4_t s = acc[0];
    for (int i = 1; i < 16; i++) s = vaddq_s32(s, acc[i]);
    volatile int sink = vaddvq_s32(s);
    (void)sink;
    return iters * 16 * 16;
}

__attribute__((target("arch=armv8.2-a+i8mm"))) static uint64_t peak_i8mm(uint64_t iters) {
    int32x4_t acc[16];
    const uint8x16_t a = vdupq_n_u8(1);
    const int8x16_t b = vdupq_n_s8(-1);
    for (int i = 0; i < 16; i++) acc[i] = vdupq_n_s32(i);
    for (uint64_t it = 0; it < iters; it++) {
        _Pragma("GCC unroll 16")
        for (int i = 0; i < 16; i++) acc[i] = vusmmlaq_s32(acc[i], a, b);
    }
    int32x4_t s = acc[0];
    for (int i = 1; i < 16; i++) s = vaddq_s32(s, acc[i]);
    volatile int sink = vaddvq_s32(s);
    (void)sink;
    return iters * 16 * 32;
}
#endif

uint64_t psam_isa_peak_probe(psam_isa isa, uint64_t iters) {
    if (!psam_qgemm_kernel(isa)) return 0;
#if defined(__x86_64__)
    if (isa == PSAM_ISA_AVX512VNNI) return peak_vnni(iters);
    if (isa == PSAM_ISA_AVX2) return peak_avx2(iters);
#endif
#if defined(__aarch64__)
    if (isa == PSAM_ISA_NEON) return peak_neon(iters);
    if (isa == PSAM_ISA_NEONDOT) return peak_neondot(iters);
    if (isa == PSAM_ISA_I8MM) return peak_i8mm(iters);
#endif
    (void)iters;
    return 0;
}
