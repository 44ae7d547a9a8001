/* The upscaling's GELU on one AVX-512 vector (psam_gelu_fast_rows, and fused into psam_upscale_masks_t): PyTorch's
 * exact GELU x·Φ(x) with the rational erf of psam_gelu_rows, fused multiply-adds, and the division as a
 * reciprocal estimate refined by one Newton step; within 1e-6·max(1, |x|) of psam_gelu_rows (rowops_test.c).
 * Include only from x86-64 code compiled with AVX-512F and FMA. */
#ifndef POCKETSAM_GELU_FAST512_H
#define POCKETSAM_GELU_FAST512_H
#include <immintrin.h>

static inline __attribute__((target("avx512f,fma"), always_inline)) __m512 psam_gelu_fast512(__m512 v) {
    const __m512 lim = _mm512_set1_ps(4.0f);
    const __m512 z = _mm512_max_ps(_mm512_min_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f)), lim),
                                   _mm512_sub_ps(_mm512_setzero_ps(), lim));
    const __m512 z2 = _mm512_mul_ps(z, z);
    __m512 p = _mm512_set1_ps(-2.72614225801306e-10f);
    p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(2.77068142495902e-08f));
    p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(-2.10102402082508e-06f));
    p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(-5.69250639462346e-05f));
    p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(-7.34990630326855e-04f));
    p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(-2.95459980854025e-03f));
    p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(-1.60960333262415e-02f));
    __m512 q = _mm512_set1_ps(-1.45660718464996e-05f);
    q = _mm512_fmadd_ps(q, z2, _mm512_set1_ps(-2.13374055278905e-04f));
    q = _mm512_fmadd_ps(q, z2, _mm512_set1_ps(-1.68282697438203e-03f));
    q = _mm512_fmadd_ps(q, z2, _mm512_set1_ps(-7.37332916720468e-03f));
    q = _mm512_fmadd_ps(q, z2, _mm512_set1_ps(-1.42647390514189e-02f));
    __m512 r = _mm512_rcp14_ps(q);
    r = _mm512_mul_ps(r, _mm512_fnmadd_ps(q, r, _mm512_set1_ps(2.0f)));
    const __m512 e = _mm512_mul_ps(_mm512_mul_ps(z, p), r);
    const __m512 hv = _mm512_mul_ps(_mm512_set1_ps(0.5f), v);
    return _mm512_fmadd_ps(hv, e, hv);
}
#endif
