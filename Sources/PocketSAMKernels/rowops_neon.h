/* aarch64 helpers shared by the row operations' NEON bodies. Advanced SIMD is part of every ARMv8-A core that runs
 * Linux, so these bodies need no run-time check and no target attribute; the optional extensions (FP16 arithmetic,
 * dot product, I8MM) do (cpu.c). Internal (not installed). */
#ifndef POCKETSAM_ROWOPS_NEON_H
#define POCKETSAM_ROWOPS_NEON_H
#if defined(__aarch64__)
#include <arm_neon.h>

/* exp(x) on 4 lanes, the algorithm of rowops_x86.h's exp256 (the same clamp, range reduction by ln 2 in two parts,
 * degree-6 polynomial with fused multiply-adds, and 2^n built as 2^⌊n/2⌋ · 2^(n − ⌊n/2⌋) so that the result goes
 * smoothly into the subnormals): relative error about 2e-7 against expf. */
static inline float32x4_t psam_exp_neon(float32x4_t x) {
    x = vmaxq_f32(vminq_f32(x, vdupq_n_f32(88.3762626647949f)), vdupq_n_f32(-103.0f));
    const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.0f / 720.0f);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 120.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 24.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 6.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    const int32x4_t ni = vcvtq_s32_f32(n), n1 = vshrq_n_s32(ni, 1), n2 = vsubq_s32(ni, n1);
    const int32x4_t bias = vdupq_n_s32(127);
    const float32x4_t f1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, bias), 23));
    const float32x4_t f2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, bias), 23));
    return vmulq_f32(vmulq_f32(p, f1), f2);
}

/* The first r (0 ≤ r ≤ 4) floats of p as a vector, zeros past them (no read past p + r). */
static inline float32x4_t psam_load_tail4(const float *p, size_t r) {
    float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (size_t i = 0; i < r; i++) t[i] = p[i];
    return vld1q_f32(t);
}

/* Stores the first r (0 ≤ r ≤ 4) lanes of v. */
static inline void psam_store_tail4(float *p, float32x4_t v, size_t r) {
    float t[4];
    vst1q_f32(t, v);
    for (size_t i = 0; i < r; i++) p[i] = t[i];
}

/* In-place transpose of 4 vectors of 4 (row i lane j ↔ row j lane i). */
static inline void psam_transpose4_neon(float32x4_t r[4]) {
    const float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(r[0], r[1])), t1 = vreinterpretq_f64_f32(vtrn2q_f32(r[0], r[1]));
    const float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(r[2], r[3])), t3 = vreinterpretq_f64_f32(vtrn2q_f32(r[2], r[3]));
    r[0] = vreinterpretq_f32_f64(vtrn1q_f64(t0, t2));
    r[1] = vreinterpretq_f32_f64(vtrn1q_f64(t1, t3));
    r[2] = vreinterpretq_f32_f64(vtrn2q_f64(t0, t2));
    r[3] = vreinterpretq_f32_f64(vtrn2q_f64(t1, t3));
}
#endif /* __aarch64__ */
#endif
