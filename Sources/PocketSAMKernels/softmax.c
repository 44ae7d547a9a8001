#include "rowops_internal.h"

/* Softmax of each row of x[m][ld] (n values), in place: exp(x − max) / Σ. Every body uses a degree-6 polynomial
 * exp after range reduction by ln 2 (relative error about 2e-7), not libm's expf: the vector ones with fused
 * multiply-adds, the generic one without (exp_generic, rowops_internal.h), so that its bits are the same on every CPU. */
void psam_softmax__generic(float *x, size_t m, size_t n, size_t ld) {
    for (size_t i = 0; i < m; i++) {
        float *r = x + i * ld;
        float mx = -INFINITY;
        for (size_t j = 0; j < n; j++) mx = r[j] > mx ? r[j] : mx;
        float s = 0.0f;
        for (size_t j = 0; j < n; j++) { float e = exp_generic(r[j] - mx); r[j] = e; s += e; }
        float inv = 1.0f / s;
        for (size_t j = 0; j < n; j++) r[j] *= inv;
    }
}

#if defined(__x86_64__)

PSAM_AVX512FMA void psam_softmax__avx512(float *x, size_t m, size_t n, size_t ld) {
    for (size_t i = 0; i < m; i++) {
        float *r = x + i * ld;
        __m512 vm = _mm512_set1_ps(-INFINITY);
        for (size_t j = 0; j < n; j += 16) {
            __mmask16 mk = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1u);
            vm = _mm512_mask_max_ps(vm, mk, vm, _mm512_maskz_loadu_ps(mk, r + j));
        }
        const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vm));
        __m512 vs = _mm512_setzero_ps();
        for (size_t j = 0; j < n; j += 16) {
            __mmask16 mk = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1u);
            __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, r + j), mx));
            vs = _mm512_mask_add_ps(vs, mk, vs, e);
            _mm512_mask_storeu_ps(r + j, mk, e);
        }
        const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vs));
        for (size_t j = 0; j < n; j += 16) {
            __mmask16 mk = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1u);
            _mm512_mask_storeu_ps(r + j, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, r + j), inv));
        }
    }
}

PSAM_AVX2FMA void psam_softmax__avx2(float *x, size_t m, size_t n, size_t ld) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    const size_t nf = n & ~(size_t)7;
    const __m256i mk = tail_mask8(n > nf ? n - nf : 8);
    for (size_t i = 0; i < m; i++) {
        float *r = x + i * ld;
        __m256 vm = ninf;
        for (size_t j = 0; j < nf; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(r + j));
        if (nf < n) vm = _mm256_max_ps(vm, _mm256_blendv_ps(ninf, _mm256_maskload_ps(r + nf, mk), _mm256_castsi256_ps(mk)));
        const __m256 mx = _mm256_set1_ps(hmax8(vm));
        __m256 vs = _mm256_setzero_ps();
        for (size_t j = 0; j < nf; j += 8) {
            __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(r + j), mx));
            vs = _mm256_add_ps(vs, e);
            _mm256_storeu_ps(r + j, e);
        }
        if (nf < n) {
            __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(_mm256_maskload_ps(r + nf, mk), mx)), _mm256_castsi256_ps(mk));
            vs = _mm256_add_ps(vs, e);
            store_tail8(r + nf, e, n - nf);
        }
        const __m256 inv = _mm256_set1_ps(1.0f / hsum8(vs));
        for (size_t j = 0; j < nf; j += 8) _mm256_storeu_ps(r + j, _mm256_mul_ps(_mm256_loadu_ps(r + j), inv));
        if (nf < n) store_tail8(r + nf, _mm256_mul_ps(_mm256_maskload_ps(r + nf, mk), inv), n - nf);
    }
}
#endif

#if defined(__aarch64__)
/* GCC at -O2 does not unroll the tiles' small loops by itself, and their arrays then live on the stack. */
#define PSAM_UNROLL _Pragma("GCC unroll 8")
/* Lane masks: the r (0 ≤ r ≤ 4) lowest lanes set (lanes_low4), the r highest (lanes_top4). */
static inline uint32x4_t lanes_low4(size_t r) {
    static const uint32_t bits[8] = {~0u, ~0u, ~0u, ~0u, 0, 0, 0, 0};
    return vld1q_u32(bits + 4 - r);
}
static inline uint32x4_t lanes_top4(size_t r) {
    static const uint32_t bits[8] = {0, 0, 0, 0, ~0u, ~0u, ~0u, ~0u};
    return vld1q_u32(bits + r);
}

/* One row of n ≥ 4 values. The last n mod 4 go through one vector ending at n, overlapping values of the last
 * full one: it is loaded before the full ones are rewritten and stored after them (where they overlap, both hold
 * the same values), and only its top lanes are summed. 4 vectors a step: 4 independent exp chains (one sum of
 * them: 4 sums and the exp constants would not fit the registers). */
static inline void softmax_row_neon(float *r, size_t n) {
    const size_t n4 = n & ~(size_t)3, rem = n - n4;
    const float32x4_t ninf = vdupq_n_f32(-INFINITY);
    float32x4_t m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
    size_t j = 0;
    for (; j + 16 <= n; j += 16) {
        m0 = vmaxq_f32(m0, vld1q_f32(r + j));
        m1 = vmaxq_f32(m1, vld1q_f32(r + j + 4));
        m2 = vmaxq_f32(m2, vld1q_f32(r + j + 8));
        m3 = vmaxq_f32(m3, vld1q_f32(r + j + 12));
    }
    for (; j < n4; j += 4) m0 = vmaxq_f32(m0, vld1q_f32(r + j));
    float32x4_t last = vld1q_f32(r + n - 4);
    m1 = vmaxq_f32(m1, last);
    const float32x4_t mx = vdupq_n_f32(vmaxvq_f32(vmaxq_f32(vmaxq_f32(m0, m1), vmaxq_f32(m2, m3))));
    float32x4_t s0, s1 = vdupq_n_f32(0.0f);
    last = psam_exp_neon(vsubq_f32(last, mx));
    s0 = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(last), lanes_top4(rem)));
    for (j = 0; j + 16 <= n; j += 16) {
        const float32x4_t e0 = psam_exp_neon(vsubq_f32(vld1q_f32(r + j), mx));
        const float32x4_t e1 = psam_exp_neon(vsubq_f32(vld1q_f32(r + j + 4), mx));
        const float32x4_t e2 = psam_exp_neon(vsubq_f32(vld1q_f32(r + j + 8), mx));
        const float32x4_t e3 = psam_exp_neon(vsubq_f32(vld1q_f32(r + j + 12), mx));
        s0 = vaddq_f32(s0, vaddq_f32(vaddq_f32(e0, e1), vaddq_f32(e2, e3)));
        vst1q_f32(r + j, e0), vst1q_f32(r + j + 4, e1), vst1q_f32(r + j + 8, e2), vst1q_f32(r + j + 12, e3);
    }
    for (; j < n4; j += 4) {
        const float32x4_t e = psam_exp_neon(vsubq_f32(vld1q_f32(r + j), mx));
        s1 = vaddq_f32(s1, e);
        vst1q_f32(r + j, e);
    }
    vst1q_f32(r + n - 4, last);
    const float32x4_t inv = vdupq_n_f32(1.0f / vaddvq_f32(vaddq_f32(s0, s1)));
    last = vmulq_f32(last, inv);
    for (j = 0; j + 16 <= n; j += 16) {
        vst1q_f32(r + j, vmulq_f32(vld1q_f32(r + j), inv));
        vst1q_f32(r + j + 4, vmulq_f32(vld1q_f32(r + j + 4), inv));
        vst1q_f32(r + j + 8, vmulq_f32(vld1q_f32(r + j + 8), inv));
        vst1q_f32(r + j + 12, vmulq_f32(vld1q_f32(r + j + 12), inv));
    }
    for (; j < n4; j += 4) vst1q_f32(r + j, vmulq_f32(vld1q_f32(r + j), inv));
    vst1q_f32(r + n - 4, last);
}

void psam_softmax__neon(float *x, size_t m, size_t n, size_t ld) {
    if (n == 0) return;
    if (n >= 4) {
        for (size_t i = 0; i < m; i++) softmax_row_neon(x + i * ld, n);
        return;
    }
    /* Rows of 1 to 3 values: one vector through the stack, −∞ past n for the maximum. */
    const uint32x4_t mk = lanes_low4(n);
    for (size_t i = 0; i < m; i++) {
        float *r = x + i * ld;
        const float32x4_t v = vbslq_f32(mk, psam_load_tail4(r, n), vdupq_n_f32(-INFINITY));
        const float32x4_t e = psam_exp_neon(vsubq_f32(v, vdupq_n_f32(vmaxvq_f32(v))));
        const float32x4_t em = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(e), mk));
        psam_store_tail4(r, vmulq_f32(em, vdupq_n_f32(1.0f / vaddvq_f32(em))), n);
    }
}
#endif

void psam_softmax_rows(float *x, size_t m, size_t n, size_t ld) {
#if defined(__x86_64__)
    if (has_avx512()) {
        psam_softmax__avx512(x, m, n, ld);
        return;
    }
    if (has_avx2()) {
        psam_softmax__avx2(x, m, n, ld);
        return;
    }
#endif
#if defined(__aarch64__)
    if (!psam_portable_kernels()) {
        psam_softmax__neon(x, m, n, ld);
        return;
    }
#endif
    psam_softmax__generic(x, m, n, ld);
}

/* Softmax down the columns of row groups: x holds `groups` blocks of n rows (row r at x + r·ld, `cols`
 * values each); for each block and column, softmax over its n rows of x (+ bias[r] when bias is not NULL),
 * in place. The transposed layout of attention to a few keys (SAM's image→token attention: n = tokens,
 * cols = image tokens) vectorises along the columns with no horizontal reductions. */
void psam_softmax_cols__generic(float *x, size_t groups, size_t n, size_t cols, size_t ld, const float *bias) {
    for (size_t g = 0; g < groups; g++) {
        float *blk = x + g * n * ld;
        const float *bb = bias ? bias + g * n : NULL;
        for (size_t c = 0; c < cols; c++) {
            float mx = -INFINITY;
            for (size_t i = 0; i < n; i++) {
                float v = blk[i * ld + c] + (bb ? bb[i] : 0.0f);
                mx = v > mx ? v : mx;
            }
            float s = 0.0f;
            for (size_t i = 0; i < n; i++) {
                float e = exp_generic(blk[i * ld + c] + (bb ? bb[i] : 0.0f) - mx);
                blk[i * ld + c] = e;
                s += e;
            }
            float inv = 1.0f / s;
            for (size_t i = 0; i < n; i++) blk[i * ld + c] *= inv;
        }
    }
}

#if defined(__x86_64__)
PSAM_AVX512FMA void psam_softmax_cols__avx512(float *x, size_t groups, size_t n, size_t cols, size_t ld, const float *bias) {
    for (size_t g = 0; g < groups; g++) {
        float *blk = x + g * n * ld;
        const float *bb = bias ? bias + g * n : NULL;
        for (size_t c = 0; c < cols; c += 16) {
            const __mmask16 mk = cols - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (cols - c)) - 1u);
            __m512 mx = _mm512_set1_ps(-INFINITY);
            for (size_t i = 0; i < n; i++) {
                __m512 v = _mm512_maskz_loadu_ps(mk, blk + i * ld + c);
                if (bb) v = _mm512_add_ps(v, _mm512_set1_ps(bb[i]));
                mx = _mm512_max_ps(mx, v);
            }
            __m512 s = _mm512_setzero_ps();
            for (size_t i = 0; i < n; i++) {
                __m512 v = _mm512_maskz_loadu_ps(mk, blk + i * ld + c);
                if (bb) v = _mm512_add_ps(v, _mm512_set1_ps(bb[i]));
                __m512 e = exp512(_mm512_sub_ps(v, mx));
                s = _mm512_add_ps(s, e);
                _mm512_mask_storeu_ps(blk + i * ld + c, mk, e);
            }
            const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), s);
            for (size_t i = 0; i < n; i++)
                _mm512_mask_storeu_ps(blk + i * ld + c, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, blk + i * ld + c), inv));
        }
    }
}

/* 8 columns at a time; the last cols mod 8 through the lane-masked loads and store_tail8. */
PSAM_AVX2FMA void psam_softmax_cols__avx2(float *x, size_t groups, size_t n, size_t cols, size_t ld, const float *bias) {
    for (size_t g = 0; g < groups; g++) {
        float *blk = x + g * n * ld;
        const float *bb = bias ? bias + g * n : NULL;
        for (size_t c = 0; c < cols; c += 8) {
            const size_t r = cols - c >= 8 ? 8 : cols - c;
            const __m256i mk = tail_mask8(r);
            __m256 mx = _mm256_set1_ps(-INFINITY);
            for (size_t i = 0; i < n; i++) {
                __m256 v = _mm256_maskload_ps(blk + i * ld + c, mk);
                if (bb) v = _mm256_add_ps(v, _mm256_set1_ps(bb[i]));
                mx = _mm256_max_ps(mx, v);
            }
            __m256 s = _mm256_setzero_ps();
            for (size_t i = 0; i < n; i++) {
                __m256 v = _mm256_maskload_ps(blk + i * ld + c, mk);
                if (bb) v = _mm256_add_ps(v, _mm256_set1_ps(bb[i]));
                __m256 e = exp256(_mm256_sub_ps(v, mx));
                s = _mm256_add_ps(s, e);
                if (r == 8) _mm256_storeu_ps(blk + i * ld + c, e);
                else store_tail8(blk + i * ld + c, e, r);
            }
            const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), s);
            for (size_t i = 0; i < n; i++) {
                __m256 e = _mm256_mul_ps(_mm256_maskload_ps(blk + i * ld + c, mk), inv);
                if (r == 8) _mm256_storeu_ps(blk + i * ld + c, e);
                else store_tail8(blk + i * ld + c, e, r);
            }
        }
    }
}
#endif

#if defined(__aarch64__)
/* Columns [c, c + 4V) of one block (V = 4 or 1; with V = 1, the first r ≤ 4 of them through the stack helpers):
 * one vector of maxima and of sums per 4 columns, V independent exp chains. */
static inline __attribute__((always_inline)) void
cols_tile_neon(float *blk, size_t n, size_t ld, const float *bb, const int V, size_t r) {
    float32x4_t mx[4], s[4];
    const int part = V == 1 && r < 4;
    PSAM_UNROLL for (int v = 0; v < V; v++) mx[v] = vdupq_n_f32(-INFINITY), s[v] = vdupq_n_f32(0.0f);
    for (size_t i = 0; i < n; i++) {
        const float *p = blk + i * ld;
        const float32x4_t b = vdupq_n_f32(bb ? bb[i] : 0.0f);
        PSAM_UNROLL for (int v = 0; v < V; v++) mx[v] = vmaxq_f32(mx[v], vaddq_f32(part ? psam_load_tail4(p, r) : vld1q_f32(p + 4 * v), b));
    }
    for (size_t i = 0; i < n; i++) {
        float *p = blk + i * ld;
        const float32x4_t b = vdupq_n_f32(bb ? bb[i] : 0.0f);
        PSAM_UNROLL for (int v = 0; v < V; v++) {
            const float32x4_t e = psam_exp_neon(vsubq_f32(vaddq_f32(part ? psam_load_tail4(p, r) : vld1q_f32(p + 4 * v), b), mx[v]));
            s[v] = vaddq_f32(s[v], e);
            if (part) psam_store_tail4(p, e, r);
            else vst1q_f32(p + 4 * v, e);
        }
    }
    PSAM_UNROLL for (int v = 0; v < V; v++) s[v] = vdivq_f32(vdupq_n_f32(1.0f), s[v]);
    for (size_t i = 0; i < n; i++) {
        float *p = blk + i * ld;
        PSAM_UNROLL for (int v = 0; v < V; v++) {
            if (part) psam_store_tail4(p, vmulq_f32(psam_load_tail4(p, r), s[v]), r);
            else vst1q_f32(p + 4 * v, vmulq_f32(vld1q_f32(p + 4 * v), s[v]));
        }
    }
}

/* 16 columns at a time, then 4, then the last cols mod 4 through the stack (once per block, not per row). */
void psam_softmax_cols__neon(float *x, size_t groups, size_t n, size_t cols, size_t ld, const float *bias) {
    for (size_t g = 0; g < groups; g++) {
        float *blk = x + g * n * ld;
        const float *bb = bias ? bias + g * n : NULL;
        size_t c = 0;
        for (; c + 16 <= cols; c += 16) cols_tile_neon(blk + c, n, ld, bb, 4, 4);
        for (; c + 4 <= cols; c += 4) cols_tile_neon(blk + c, n, ld, bb, 1, 4);
        if (c < cols) cols_tile_neon(blk + c, n, ld, bb, 1, cols - c);
    }
}
#endif

void psam_softmax_cols(float *x, size_t groups, size_t n, size_t cols, size_t ld, const float *bias) {
#if defined(__x86_64__)
    if (has_avx512()) {
        psam_softmax_cols__avx512(x, groups, n, cols, ld, bias);
        return;
    }
    if (has_avx2()) {
        psam_softmax_cols__avx2(x, groups, n, cols, ld, bias);
        return;
    }
#endif
#if defined(__aarch64__)
    if (!psam_portable_kernels()) {
        psam_softmax_cols__neon(x, groups, n, cols, ld, bias);
        return;
    }
#endif
    psam_softmax_cols__generic(x, groups, n, cols, ld, bias);
}

/* Online softmax down columns (psam_softmax_online_cols): one block of rows of an attention whose keys run down
 * the rows, the running column maxima m and sums l kept across blocks, as flash attention does. For each column
 * c: m' = max(m, the block's max), the accumulator row acc[c] and l[c] scaled by exp(m − m'), the block's values
 * replaced by exp(s − m'), their sum added to l[c]. */
void psam_softmax_online__generic(float *s, size_t rows, size_t cols, size_t ld, float *m, float *l, float *acc, size_t ldacc,
                                   size_t accw) {
    for (size_t c = 0; c < cols; c++) {
        float mx = m[c];
        for (size_t i = 0; i < rows; i++) mx = s[i * ld + c] > mx ? s[i * ld + c] : mx;
        if (mx > m[c]) {
            const float f = exp_generic(m[c] - mx);
            l[c] *= f;
            for (size_t j = 0; j < accw; j++) acc[c * ldacc + j] *= f;
            m[c] = mx;
        }
        float sum = 0.0f;
        for (size_t i = 0; i < rows; i++) {
            const float e = exp_generic(s[i * ld + c] - mx);
            s[i * ld + c] = e;
            sum += e;
        }
        l[c] += sum;
    }
}

#if defined(__x86_64__)
PSAM_AVX512FMA void psam_softmax_online__avx512(float *s, size_t rows, size_t cols, size_t ld, float *m, float *l, float *acc,
                                                 size_t ldacc, size_t accw) {
    for (size_t c0 = 0; c0 < cols; c0 += 16) {
        const __mmask16 mk = cols - c0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (cols - c0)) - 1u);
        const __m512 mold = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), mk, m + c0);
        __m512 mx = mold;
        for (size_t i = 0; i < rows; i++) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mold, mk, s + i * ld + c0));
        const __mmask16 grew = _mm512_mask_cmp_ps_mask(mk, mx, mold, _CMP_GT_OQ);
        if (grew) {
            float f[16];
            _mm512_storeu_ps(f, exp512(_mm512_sub_ps(mold, mx)));
            for (size_t c = 0; c < 16; c++) {
                if (!(grew >> c & 1)) continue;
                float *a = acc + (c0 + c) * ldacc;
                for (size_t j = 0; j < accw; j++) a[j] *= f[c];
                l[c0 + c] *= f[c];
            }
            _mm512_mask_storeu_ps(m + c0, mk, mx);
        }
        __m512 sum = _mm512_setzero_ps();
        for (size_t i = 0; i < rows; i++) {
            const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, s + i * ld + c0), mx));
            sum = _mm512_add_ps(sum, e);
            _mm512_mask_storeu_ps(s + i * ld + c0, mk, e);
        }
        _mm512_mask_storeu_ps(l + c0, mk, _mm512_add_ps(_mm512_maskz_loadu_ps(mk, l + c0), sum));
    }
}
#endif

#if defined(__aarch64__)
/* a[0..w) *= f. */
static inline void scale_row_neon(float *a, size_t w, float f) {
    const float32x4_t fv = vdupq_n_f32(f);
    size_t j = 0;
    for (; j + 16 <= w; j += 16) {
        vst1q_f32(a + j, vmulq_f32(vld1q_f32(a + j), fv));
        vst1q_f32(a + j + 4, vmulq_f32(vld1q_f32(a + j + 4), fv));
        vst1q_f32(a + j + 8, vmulq_f32(vld1q_f32(a + j + 8), fv));
        vst1q_f32(a + j + 12, vmulq_f32(vld1q_f32(a + j + 12), fv));
    }
    for (; j + 4 <= w; j += 4) vst1q_f32(a + j, vmulq_f32(vld1q_f32(a + j), fv));
    for (; j < w; j++) a[j] *= f;
}

/* Columns [c0, c0 + 4V) (V = 4 or 1; with V = 1, the first r ≤ 4 through the stack helpers, the lanes past r
 * kept from growing). */
static inline __attribute__((always_inline)) void
online_tile_neon(float *s, size_t rows, size_t ld, float *m, float *l, float *acc, size_t ldacc, size_t accw, const int V,
                 size_t r) {
    const int part = V == 1 && r < 4;
    const uint32x4_t live = lanes_low4(part ? r : 4);
    float32x4_t mold[4], mx[4], sum[4], f[4];
    uint32x4_t grew[4], any = vdupq_n_u32(0);
    PSAM_UNROLL for (int v = 0; v < V; v++) {
        mold[v] = vbslq_f32(live, part ? psam_load_tail4(m, r) : vld1q_f32(m + 4 * v), vdupq_n_f32(-INFINITY));
        mx[v] = mold[v], f[v] = vdupq_n_f32(1.0f);
    }
    for (size_t i = 0; i < rows; i++)
        PSAM_UNROLL for (int v = 0; v < V; v++) mx[v] = vmaxq_f32(mx[v], part ? psam_load_tail4(s + i * ld, r) : vld1q_f32(s + i * ld + 4 * v));
    PSAM_UNROLL for (int v = 0; v < V; v++) {
        grew[v] = vandq_u32(vcgtq_f32(mx[v], mold[v]), live);
        any = vorrq_u32(any, grew[v]);
    }
    if (vmaxvq_u32(any)) {
        float fa[16];
        uint32_t ga[16];
        PSAM_UNROLL for (int v = 0; v < V; v++) {
            f[v] = psam_exp_neon(vsubq_f32(mold[v], mx[v]));
            vst1q_f32(fa + 4 * v, f[v]);
            vst1q_u32(ga + 4 * v, grew[v]);
            if (part) psam_store_tail4(m, mx[v], r);
            else vst1q_f32(m + 4 * v, mx[v]);
        }
        for (int c = 0; c < 4 * V; c++)
            if (ga[c]) scale_row_neon(acc + (size_t)c * ldacc, accw, fa[c]);
    }
    PSAM_UNROLL for (int v = 0; v < V; v++) sum[v] = vdupq_n_f32(0.0f);
    for (size_t i = 0; i < rows; i++)
        PSAM_UNROLL for (int v = 0; v < V; v++) {
            float *p = s + i * ld + 4 * v;
            const float32x4_t e = psam_exp_neon(vsubq_f32(part ? psam_load_tail4(p, r) : vld1q_f32(p), mx[v]));
            sum[v] = vaddq_f32(sum[v], e);
            if (part) psam_store_tail4(p, e, r);
            else vst1q_f32(p, e);
        }
    PSAM_UNROLL for (int v = 0; v < V; v++) {
        float32x4_t lv = part ? psam_load_tail4(l, r) : vld1q_f32(l + 4 * v);
        if (vmaxvq_u32(any)) lv = vbslq_f32(grew[v], vmulq_f32(lv, f[v]), lv);
        lv = vaddq_f32(lv, sum[v]);
        if (part) psam_store_tail4(l, lv, r);
        else vst1q_f32(l + 4 * v, lv);
    }
}

/* As psam_softmax_online__avx512: 16 columns at a time, then 4, then the last cols mod 4 through the stack. */
void psam_softmax_online__neon(float *s, size_t rows, size_t cols, size_t ld, float *m, float *l, float *acc, size_t ldacc,
                               size_t accw) {
    size_t c = 0;
    for (; c + 16 <= cols; c += 16) online_tile_neon(s + c, rows, ld, m + c, l + c, acc + c * ldacc, ldacc, accw, 4, 4);
    for (; c + 4 <= cols; c += 4) online_tile_neon(s + c, rows, ld, m + c, l + c, acc + c * ldacc, ldacc, accw, 1, 4);
    if (c < cols) online_tile_neon(s + c, rows, ld, m + c, l + c, acc + c * ldacc, ldacc, accw, 1, cols - c);
}
#endif

void psam_softmax_online_cols(float *s, size_t rows, size_t cols, size_t ld, float *m, float *l, float *acc, size_t ldacc,
                              size_t accw) {
#if defined(__x86_64__)
    if (has_avx512()) {
        psam_softmax_online__avx512(s, rows, cols, ld, m, l, acc, ldacc, accw);
        return;
    }
#endif
#if defined(__aarch64__)
    if (!psam_portable_kernels()) {
        psam_softmax_online__neon(s, rows, cols, ld, m, l, acc, ldacc, accw);
        return;
    }
#endif
    psam_softmax_online__generic(s, rows, cols, ld, m, l, acc, ldacc, accw);
}

/* Softmax across groups per lane (psam_softmax_lanes): row i of x holds n groups of g values, and lane h's
 * softmax runs over x[t·g + h], t < n. Image→token attention stored token-major (g = heads) vectorises along the
 * heads this way, with no horizontal reductions. */
void psam_softmax_lanes__generic(float *x, size_t m, size_t ld, size_t n, size_t g) {
    for (size_t i = 0; i < m; i++) {
        float *r = x + i * ld;
        for (size_t h = 0; h < g; h++) {
            float mx = -INFINITY;
            for (size_t t = 0; t < n; t++) mx = r[t * g + h] > mx ? r[t * g + h] : mx;
            float s = 0.0f;
            for (size_t t = 0; t < n; t++) {
                const float e = exp_generic(r[t * g + h] - mx);
                r[t * g + h] = e;
                s += e;
            }
            const float inv = 1.0f / s;
            for (size_t t = 0; t < n; t++) r[t * g + h] *= inv;
        }
    }
}

#if defined(__x86_64__)
/* g = 8 (SAM's heads): one 8-lane vector per group. */
PSAM_AVX2FMA void psam_softmax_lanes8__avx2(float *x, size_t m, size_t ld, size_t n, size_t g) {
    (void)g;
    for (size_t i = 0; i < m; i++) {
        float *r = x + i * ld;
        __m256 mx = _mm256_set1_ps(-INFINITY);
        for (size_t t = 0; t < n; t++) mx = _mm256_max_ps(mx, _mm256_loadu_ps(r + 8 * t));
        __m256 s = _mm256_setzero_ps();
        for (size_t t = 0; t < n; t++) {
            const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(r + 8 * t), mx));
            s = _mm256_add_ps(s, e);
            _mm256_storeu_ps(r + 8 * t, e);
        }
        const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), s);
        for (size_t t = 0; t < n; t++) _mm256_storeu_ps(r + 8 * t, _mm256_mul_ps(_mm256_loadu_ps(r + 8 * t), inv));
    }
}
#endif

#if defined(__aarch64__)
/* R rows (r0, r1) × lanes [0, 4V) of each group, R·V ≤ 4 independent exp chains. */
static inline __attribute__((always_inline)) void
lanes_tile_neon(float *r0, float *r1, size_t n, size_t g, const int R, const int V) {
    float *const rp[2] = {r0, r1};
    float32x4_t mx[4], s[4];
    PSAM_UNROLL for (int a = 0; a < R * V; a++) mx[a] = vdupq_n_f32(-INFINITY), s[a] = vdupq_n_f32(0.0f);
    for (size_t t = 0; t < n; t++)
        PSAM_UNROLL for (int a = 0; a < R; a++)
            PSAM_UNROLL for (int v = 0; v < V; v++) mx[a * V + v] = vmaxq_f32(mx[a * V + v], vld1q_f32(rp[a] + t * g + 4 * v));
    for (size_t t = 0; t < n; t++)
        PSAM_UNROLL for (int a = 0; a < R; a++)
            PSAM_UNROLL for (int v = 0; v < V; v++) {
                float *p = rp[a] + t * g + 4 * v;
                const float32x4_t e = psam_exp_neon(vsubq_f32(vld1q_f32(p), mx[a * V + v]));
                s[a * V + v] = vaddq_f32(s[a * V + v], e);
                vst1q_f32(p, e);
            }
    PSAM_UNROLL for (int a = 0; a < R * V; a++) s[a] = vdivq_f32(vdupq_n_f32(1.0f), s[a]);
    for (size_t t = 0; t < n; t++)
        PSAM_UNROLL for (int a = 0; a < R; a++)
            PSAM_UNROLL for (int v = 0; v < V; v++) {
                float *p = rp[a] + t * g + 4 * v;
                vst1q_f32(p, vmulq_f32(vld1q_f32(p), s[a * V + v]));
            }
}

/* g a multiple of 4 (the dispatcher checks; others go to the generic body): g = 8 (SAM's heads) two rows at a time,
 * other g 16, 8 or 4 lanes at a time. */
void psam_softmax_lanes__neon(float *x, size_t m, size_t ld, size_t n, size_t g) {
    if (g % 4) {
        psam_softmax_lanes__generic(x, m, ld, n, g);
        return;
    }
    size_t i = 0;
    if (g == 8) {
        for (; i + 2 <= m; i += 2) lanes_tile_neon(x + i * ld, x + (i + 1) * ld, n, 8, 2, 2);
        if (i < m) lanes_tile_neon(x + i * ld, NULL, n, 8, 1, 2);
        return;
    }
    for (; i < m; i++) {
        float *r = x + i * ld;
        size_t h = 0;
        for (; h + 16 <= g; h += 16) lanes_tile_neon(r + h, NULL, n, g, 1, 4);
        for (; h + 8 <= g; h += 8) lanes_tile_neon(r + h, NULL, n, g, 1, 2);
        if (h < g) lanes_tile_neon(r + h, NULL, n, g, 1, 1);
    }
}
#undef PSAM_UNROLL
#endif

void psam_softmax_lanes(float *x, size_t m, size_t ld, size_t n, size_t g) {
#if defined(__x86_64__)
    if (g == 8 && has_avx2()) {
        psam_softmax_lanes8__avx2(x, m, ld, n, g);
        return;
    }
#endif
#if defined(__aarch64__)
    if (g % 4 == 0 && !psam_portable_kernels()) {
        psam_softmax_lanes__neon(x, m, ld, n, g);
        return;
    }
#endif
    psam_softmax_lanes__generic(x, m, ld, n, g);
}
