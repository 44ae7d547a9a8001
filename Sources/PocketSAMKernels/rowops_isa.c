/* Which bodies the row operations dispatch to on this CPU, for benchmarks and reports (the same checks as the
 * operations' own dispatchers: rowops_x86.h's has_avx512 and has_avx2 on x86-64, NEON on every aarch64 core). */
#include "rowops_internal.h"

const char *psam_rowops_isa_name(void) {
#if defined(__x86_64__)
    if (has_avx512()) return "avx512";
    if (has_avx2()) return "avx2";
#elif defined(__aarch64__)
    return "neon";
#endif
    return "generic";
}
