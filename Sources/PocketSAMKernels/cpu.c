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
