#include "rowops_internal.h"

/* Softmax of each row of x[m][ld] (n values), in place: exp(x − max) / Σ. The AVX-512 version uses a
 * degree-6 polynomial exp after range reduction by ln 2 (relative error about 2e-7), not libm's expf. */
void psam_softmax__generic(float *x, size_t m, size_t n, size_t ld) {
    for (size_t i = 0; i < m; i++) {
        float *r = x + i * ld;
        float mx = -INFINITY;
        for (size_t j = 0; j < n; j++) mx = r[j] > mx ? r[j] : mx;
        float s = 0.0f;
        for (size_t j = 0; j < n; j++) { float e = expf(r[j] - mx); r[j] = e; s += e; }
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
                float e = expf(blk[i * ld + c] + (bb ? bb[i] : 0.0f) - mx);
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
            const float f = expf(m[c] - mx);
            l[c] *= f;
            for (size_t j = 0; j < accw; j++) acc[c * ldacc + j] *= f;
            m[c] = mx;
        }
        float sum = 0.0f;
        for (size_t i = 0; i < rows; i++) {
            const float e = expf(s[i * ld + c] - mx);
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

void psam_softmax_online_cols(float *s, size_t rows, size_t cols, size_t ld, float *m, float *l, float *acc, size_t ldacc,
                              size_t accw) {
#if defined(__x86_64__)
    if (has_avx512()) {
        psam_softmax_online__avx512(s, rows, cols, ld, m, l, acc, ldacc, accw);
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
                const float e = expf(r[t * g + h] - mx);
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

void psam_softmax_lanes(float *x, size_t m, size_t ld, size_t n, size_t g) {
#if defined(__x86_64__)
    if (g == 8 && has_avx2()) {
        psam_softmax_lanes8__avx2(x, m, ld, n, g);
        return;
    }
#endif
    psam_softmax_lanes__generic(x, m, ld, n, g);
}
