#include "rowops_internal.h"

/* out[i] = a[i] + b[i] (one fp32 add each: every width gives the same bits; out may be a or b). */
void psam_add__generic(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

#if defined(__x86_64__)
PSAM_AVX512F void psam_add__avx512(float *out, const float *a, const float *b, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
    if (i < n) {
        const __mmask16 mk = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(out + i, mk, _mm512_add_ps(_mm512_maskz_loadu_ps(mk, a + i), _mm512_maskz_loadu_ps(mk, b + i)));
    }
}
#endif

void psam_add_rows(float *out, const float *a, const float *b, size_t n) {
#if defined(__x86_64__)
    if (has_avx512()) {
        psam_add__avx512(out, a, b, n);
        return;
    }
#endif
    psam_add__generic(out, a, b, n);
}
