/* The int8 path's GELU: x·Φ(x) with Φ a cubic on each of 32 intervals of [-5, 5] (coefficients by
 * Tests/Reference/gelu_lut_table.py), 0 below -5 (where |GELU| < 1.5e-6), NaN kept. Within 1.7e-6·max(1, |x|) of
 * psam_gelu_rows (rowops_test.c; the table script measures 1.63e-6 against x·Φ(x) in float64), at about half its
 * cost on AVX-512 (0.26 vs 0.47 ns a value on one Zen 4 core: four table permutes and three fused multiply-adds
 * instead of two polynomials and a division). Used where the output is
 * quantized next or feeds an int8 GEMM (gelu mode PSAM_GELU_LUT); the scalar, AVX-512 and NEON forms give the same
 * bits. */
#ifndef POCKETSAM_GELU_LUT_H
#define POCKETSAM_GELU_LUT_H
#include <math.h>

static const float psam_gelu_lut_c[4][32] = {
    {2.857069319e-07f, 1.379531227e-06f, 6.061478871e-06f, 2.424719969e-05f, 8.835034532e-05f, 2.934146323e-04f, 8.887709118e-04f, 2.457516035e-03f, 6.209203973e-03f, 1.435265411e-02f, 3.039636090e-02f, 5.908574909e-02f, 1.056510806e-01f, 1.742524058e-01f, 2.659870088e-01f, 3.773308992e-01f, 4.999994934e-01f, 6.226683259e-01f, 7.340127826e-01f, 8.257479072e-01f, 8.943495154e-01f, 9.409148097e-01f, 9.696039557e-01f, 9.856474400e-01f, 9.937907457e-01f, 9.975423813e-01f, 9.991111159e-01f, 9.997065067e-01f, 9.999116063e-01f, 9.999757409e-01f, 9.999939203e-01f, 9.999986291e-01f},
    {4.937793392e-07f, 2.212546178e-06f, 9.013429008e-06f, 3.337340240e-05f, 1.122805552e-04f, 3.431553778e-04f, 9.524810594e-04f, 2.400529338e-03f, 5.492342636e-03f, 1.140595507e-02f, 2.149616741e-02f, 3.676085919e-02f, 5.703647807e-02f, 8.028162271e-02f, 1.025028899e-01f, 1.187075526e-01f, 1.246848032e-01f, 1.187727377e-01f, 1.026046798e-01f, 8.037985116e-02f, 5.710083991e-02f, 3.678250313e-02f, 2.148493566e-02f, 1.137924381e-02f, 5.464791786e-03f, 2.379636047e-03f, 9.395527304e-04f, 3.363595170e-04f, 1.091835875e-04f, 3.213527089e-05f, 8.575868378e-06f, 2.075137900e-06f},
    {2.253976845e-07f, 1.064237495e-06f, 4.444513706e-06f, 1.648835314e-05f, 5.447672811e-05f, 1.605173456e-04f, 4.219903203e-04f, 9.894064860e-04f, 2.066138899e-03f, 3.833246185e-03f, 6.291604601e-03f, 9.071605280e-03f, 1.135018002e-02f, 1.203655638e-02f, 1.025555562e-02f, 5.908922292e-03f, -6.832909276e-05f, -6.014292594e-03f, -1.028650068e-02f, -1.199319679e-02f, -1.126837637e-02f, -8.994729258e-03f, -6.245734636e-03f, -3.820762271e-03f, -2.074856078e-03f, -1.005164580e-03f, -4.358800070e-04f, -1.696022518e-04f, -5.932183194e-05f, -1.867732681e-05f, -5.299084933e-06f, -1.355960990e-06f},
    {3.768544445e-07f, 1.411615813e-06f, 4.744271337e-06f, 1.427782718e-05f, 3.837517215e-05f, 9.178755136e-05f, 1.943914249e-04f, 3.618164919e-04f, 5.848744768e-04f, 8.041627589e-04f, 9.010416688e-04f, 7.322572055e-04f, 2.143389138e-04f, -5.833517644e-04f, -1.413754537e-03f, -1.946864417e-03f, -1.946864417e-03f, -1.413754537e-03f, -5.833517644e-04f, 2.143389138e-04f, 7.322572055e-04f, 9.010416688e-04f, 8.041627589e-04f, 5.848744768e-04f, 3.618164919e-04f, 1.943914249e-04f, 9.178755136e-05f, 3.837517215e-05f, 1.427782718e-05f, 4.744271337e-06f, 1.411615813e-06f, 3.768544445e-07f}};

static inline float psam_gelu_lut1(float x) {
    const float t = fminf(fmaxf(x, -5.0f), 5.0f);
    const float s = fmaf(t, 3.2f, 16.0f);
    int i = (int)s;
    if (i > 31) i = 31;
    const float u = s - (float)i;
    const float p = fmaf(fmaf(fmaf(psam_gelu_lut_c[3][i], u, psam_gelu_lut_c[2][i]), u, psam_gelu_lut_c[1][i]), u,
                         psam_gelu_lut_c[0][i]);
    return x < -5.0f ? 0.0f : x * p;
}

#if defined(__x86_64__)
#include <immintrin.h>
/* The table in 8 registers (two per coefficient) for psam_gelu_lut512. */
static inline __attribute__((target("avx512f"), always_inline)) void psam_gelu_lut512_table(__m512 tb[8]) {
    for (int j = 0; j < 4; j++) {
        tb[2 * j] = _mm512_loadu_ps(psam_gelu_lut_c[j]);
        tb[2 * j + 1] = _mm512_loadu_ps(psam_gelu_lut_c[j] + 16);
    }
}

/* psam_gelu_lut1 on 16 lanes, the same operations in the same order. */
static inline __attribute__((target("avx512f,fma"), always_inline)) __m512 psam_gelu_lut512(__m512 x, const __m512 tb[8]) {
    const __m512 t = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-5.0f)), _mm512_set1_ps(5.0f));
    const __m512 s = _mm512_fmadd_ps(t, _mm512_set1_ps(3.2f), _mm512_set1_ps(16.0f));
    const __m512i i = _mm512_min_epi32(_mm512_cvttps_epi32(s), _mm512_set1_epi32(31));
    const __m512 u = _mm512_sub_ps(s, _mm512_cvtepi32_ps(i));
    __m512 p = _mm512_permutex2var_ps(tb[6], i, tb[7]);
    p = _mm512_fmadd_ps(p, u, _mm512_permutex2var_ps(tb[4], i, tb[5]));
    p = _mm512_fmadd_ps(p, u, _mm512_permutex2var_ps(tb[2], i, tb[3]));
    p = _mm512_fmadd_ps(p, u, _mm512_permutex2var_ps(tb[0], i, tb[1]));
    const __m512 r = _mm512_mul_ps(x, p);
    return _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(x, _mm512_set1_ps(-5.0f), _CMP_LT_OQ), _mm512_setzero_ps());
}
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
/* psam_gelu_lut_c transposed (the same literals; rowops_test.c checks every entry against it): interval i's c0 … c3
 * in one 16-byte row, so that a value's coefficients are one load (four rows, then a 4×4 transpose: llvm-mca puts
 * this ahead of LD4 lane loads on its Cortex-A53 and A57 models, and GCC 12 passes LD4 tuples through the stack). */
static const float psam_gelu_lut_t[32][4] = {
    {2.857069319e-07f, 4.937793392e-07f, 2.253976845e-07f, 3.768544445e-07f}, {1.379531227e-06f, 2.212546178e-06f, 1.064237495e-06f, 1.411615813e-06f},
    {6.061478871e-06f, 9.013429008e-06f, 4.444513706e-06f, 4.744271337e-06f}, {2.424719969e-05f, 3.337340240e-05f, 1.648835314e-05f, 1.427782718e-05f},
    {8.835034532e-05f, 1.122805552e-04f, 5.447672811e-05f, 3.837517215e-05f}, {2.934146323e-04f, 3.431553778e-04f, 1.605173456e-04f, 9.178755136e-05f},
    {8.887709118e-04f, 9.524810594e-04f, 4.219903203e-04f, 1.943914249e-04f}, {2.457516035e-03f, 2.400529338e-03f, 9.894064860e-04f, 3.618164919e-04f},
    {6.209203973e-03f, 5.492342636e-03f, 2.066138899e-03f, 5.848744768e-04f}, {1.435265411e-02f, 1.140595507e-02f, 3.833246185e-03f, 8.041627589e-04f},
    {3.039636090e-02f, 2.149616741e-02f, 6.291604601e-03f, 9.010416688e-04f}, {5.908574909e-02f, 3.676085919e-02f, 9.071605280e-03f, 7.322572055e-04f},
    {1.056510806e-01f, 5.703647807e-02f, 1.135018002e-02f, 2.143389138e-04f}, {1.742524058e-01f, 8.028162271e-02f, 1.203655638e-02f, -5.833517644e-04f},
    {2.659870088e-01f, 1.025028899e-01f, 1.025555562e-02f, -1.413754537e-03f}, {3.773308992e-01f, 1.187075526e-01f, 5.908922292e-03f, -1.946864417e-03f},
    {4.999994934e-01f, 1.246848032e-01f, -6.832909276e-05f, -1.946864417e-03f}, {6.226683259e-01f, 1.187727377e-01f, -6.014292594e-03f, -1.413754537e-03f},
    {7.340127826e-01f, 1.026046798e-01f, -1.028650068e-02f, -5.833517644e-04f}, {8.257479072e-01f, 8.037985116e-02f, -1.199319679e-02f, 2.143389138e-04f},
    {8.943495154e-01f, 5.710083991e-02f, -1.126837637e-02f, 7.322572055e-04f}, {9.409148097e-01f, 3.678250313e-02f, -8.994729258e-03f, 9.010416688e-04f},
    {9.696039557e-01f, 2.148493566e-02f, -6.245734636e-03f, 8.041627589e-04f}, {9.856474400e-01f, 1.137924381e-02f, -3.820762271e-03f, 5.848744768e-04f},
    {9.937907457e-01f, 5.464791786e-03f, -2.074856078e-03f, 3.618164919e-04f}, {9.975423813e-01f, 2.379636047e-03f, -1.005164580e-03f, 1.943914249e-04f},
    {9.991111159e-01f, 9.395527304e-04f, -4.358800070e-04f, 9.178755136e-05f}, {9.997065067e-01f, 3.363595170e-04f, -1.696022518e-04f, 3.837517215e-05f},
    {9.999116063e-01f, 1.091835875e-04f, -5.932183194e-05f, 1.427782718e-05f}, {9.999757409e-01f, 3.213527089e-05f, -1.867732681e-05f, 4.744271337e-06f},
    {9.999939203e-01f, 8.575868378e-06f, -5.299084933e-06f, 1.411615813e-06f}, {9.999986291e-01f, 2.075137900e-06f, -1.355960990e-06f, 3.768544445e-07f}};

/* psam_gelu_lut1 on 4 lanes, the same operations in the same order (vmaxnmq/vminnmq are fmaxf/fminf: a NaN clamps to
 * -5 there and stays NaN in x·p, as in the scalar form). */
static inline float32x4_t psam_gelu_lut_neon(float32x4_t x) {
    const float32x4_t t = vminnmq_f32(vmaxnmq_f32(x, vdupq_n_f32(-5.0f)), vdupq_n_f32(5.0f));
    const float32x4_t s = vfmaq_f32(vdupq_n_f32(16.0f), t, vdupq_n_f32(3.2f));
    const int32x4_t i = vminq_s32(vcvtq_s32_f32(s), vdupq_n_s32(31));
    const float32x4_t u = vsubq_f32(s, vcvtq_f32_s32(i));
    const uint64_t i01 = vgetq_lane_u64(vreinterpretq_u64_s32(i), 0), i23 = vgetq_lane_u64(vreinterpretq_u64_s32(i), 1);
    const float32x4_t r0 = vld1q_f32(psam_gelu_lut_t[(uint32_t)i01]), r1 = vld1q_f32(psam_gelu_lut_t[i01 >> 32]);
    const float32x4_t r2 = vld1q_f32(psam_gelu_lut_t[(uint32_t)i23]), r3 = vld1q_f32(psam_gelu_lut_t[i23 >> 32]);
    const float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(r0, r1)), t1 = vreinterpretq_f64_f32(vtrn2q_f32(r0, r1));
    const float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(r2, r3)), t3 = vreinterpretq_f64_f32(vtrn2q_f32(r2, r3));
    const float32x4_t c0 = vreinterpretq_f32_f64(vtrn1q_f64(t0, t2)), c1 = vreinterpretq_f32_f64(vtrn1q_f64(t1, t3));
    const float32x4_t c2 = vreinterpretq_f32_f64(vtrn2q_f64(t0, t2)), c3 = vreinterpretq_f32_f64(vtrn2q_f64(t1, t3));
    float32x4_t p = vfmaq_f32(c2, c3, u);
    p = vfmaq_f32(c1, p, u);
    p = vfmaq_f32(c0, p, u);
    const uint32x4_t below = vcltq_f32(x, vdupq_n_f32(-5.0f));
    return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(vmulq_f32(x, p)), below));
}
#endif
#endif
