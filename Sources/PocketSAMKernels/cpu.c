/* CPU features for the fp32 kernels' run-time dispatch (sgemm.c, maskpost.c), each checked once. */
#include "pocketsam_kernels.h"

int psam_cpu_avx2_fma(void) {
#if defined(__x86_64__)
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached;
#else
    return 0;
#endif
}

int psam_cpu_avx512(void) {
#if defined(__x86_64__)
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    }
    return cached;
#else
    return 0;
#endif
}

/* ARM: Linux's auxiliary vector (HWCAP, HWCAP2); the bits are defined here where an older libc lacks them. */
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef AT_HWCAP2
#define AT_HWCAP2 26
#endif
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1UL << 1)
#endif
#ifndef HWCAP_ASIMDHP
#define HWCAP_ASIMDHP (1UL << 10)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1UL << 13)
#endif
#ifndef HWCAP2_BF16
#define HWCAP2_BF16 (1UL << 14)
#endif
static int arm_has(unsigned long type, unsigned long bit) {
    return (getauxval(AT_HWCAP) & HWCAP_ASIMD) && (getauxval(type) & bit);
}
#define PSAM_ARM_FEATURE(type, bit)                       \
    static int cached = -1;                               \
    if (cached < 0) cached = arm_has((type), (bit)) != 0; \
    return cached;
#else
#define PSAM_ARM_FEATURE(type, bit) return 0;
#endif

int psam_cpu_neon_fp16(void) { PSAM_ARM_FEATURE(AT_HWCAP, HWCAP_ASIMDHP) }
int psam_cpu_neon_dot(void) { PSAM_ARM_FEATURE(AT_HWCAP, HWCAP_ASIMDDP) }
int psam_cpu_neon_i8mm(void) { PSAM_ARM_FEATURE(AT_HWCAP2, HWCAP2_I8MM) }
int psam_cpu_neon_bf16(void) { PSAM_ARM_FEATURE(AT_HWCAP2, HWCAP2_BF16) }
