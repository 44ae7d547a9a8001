/* int8 GEMM for AVX2: tiles of up to 2 rows × 16 columns. vpmaddubsw would saturate its int16 pair
 * sums (255·127·2 > 32767) and break exactness, so operands are widened to int16 and multiplied with
 * vpmaddwd (exact int32 pair sums); pairs are folded with vphaddd at the end of each scale group. */
#include "pocketsam_kernels.h"
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#define PSAM_AVX2 __attribute__((target("avx2,fma")))

static inline PSAM_AVX2 __attribute__((always_inline)) void
tile(const psam_qgemm_args *p, size_t m0, size_t n, const int MR) {
    const size_t kq = p->kp / 4, gq = p->group / 4, groups = p->kp / p->group, np = psam_round_up(p->n, 16);
    const int8_t *panel = p->w + (n / 16) * kq * 64;
    __m256 f[2][2];
    for (int r = 0; r < MR; r++) f[r][0] = f[r][1] = _mm256_setzero_ps();
    for (size_t g = 0; g < groups; g++) {
        /* acc[r][j]: columns 4j..4j+3 of the panel as int32 pairs [c0 c0 c1 c1 | c2 c2 c3 c3]. */
        __m256i acc[2][4];
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < 4; j++) acc[r][j] = _mm256_setzero_si256();
        const int8_t *b = panel + g * gq * 64;
        const uint8_t *a = p->a + m0 * p->lda + g * gq * 4;
        for (size_t q = 0; q < gq; q++) {
            __m256i w[4];
            for (int j = 0; j < 4; j++) w[j] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + q * 64 + 16 * j)));
            for (int r = 0; r < MR; r++) {
                int32_t quad;
                memcpy(&quad, a + r * p->lda + q * 4, 4);
                __m128i a16 = _mm_cvtepu8_epi16(_mm_cvtsi32_si128(quad));
                __m256i av = _mm256_broadcastq_epi64(a16);
                for (int j = 0; j < 4; j++) acc[r][j] = _mm256_add_epi32(acc[r][j], _mm256_madd_epi16(w[j], av));
            }
        }
        for (int h = 0; h < 2; h++) {
            __m256i cs = _mm256_loadu_si256((const __m256i *)(p->w_sum + g * np + n + 8 * h));
            __m256 ws = _mm256_loadu_ps(p->w_scale + g * np + n + 8 * h);
            for (int r = 0; r < MR; r++) {
                __m256i s = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][2 * h], acc[r][2 * h + 1]), 0xD8);
                __m256i t = _mm256_sub_epi32(s, _mm256_mullo_epi32(_mm256_set1_epi32(p->a_zero[m0 + r]), cs));
                f[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), ws, f[r][h]);
            }
        }
    }
    for (int h = 0; h < 2; h++) {
        size_t c0 = n + 8 * (size_t)h;
        if (c0 >= p->n) break;
        size_t cols = p->n - c0 < 8 ? p->n - c0 : 8;
        float bias[8] = {0};
        if (p->bias) memcpy(bias, p->bias + c0, cols * sizeof(float));
        __m256 bv = _mm256_loadu_ps(bias);
        for (int r = 0; r < MR; r++) {
            __m256 v = _mm256_fmadd_ps(f[r][h], _mm256_set1_ps(p->a_scale[m0 + r]), bv);
            float *dst = p->c + (m0 + r) * p->ldc + c0;
            if (cols == 8) {
                _mm256_storeu_ps(dst, v);
            } else {
                float tmp[8];
                _mm256_storeu_ps(tmp, v);
                memcpy(dst, tmp, cols * sizeof(float));
            }
        }
    }
}

PSAM_AVX2 void psam_qgemm__avx2(const psam_qgemm_args *p, size_t n0, size_t n1) {
    if (n1 > p->n) n1 = p->n;
    if (n0 >= n1) return;
    const size_t mb = 64;
    for (size_t mb0 = 0; mb0 < p->m; mb0 += mb) {
        size_t mb1 = mb0 + mb < p->m ? mb0 + mb : p->m;
        for (size_t n = n0; n < n1; n += 16) {
            size_t m = mb0;
            for (; m + 2 <= mb1; m += 2) tile(p, m, n, 2);
            if (m < mb1) tile(p, m, n, 1);
            if (p->gelu) {
                size_t c1 = n + 16 < n1 ? n + 16 : n1;
                for (size_t r = mb0; r < mb1; r++) psam_gelu_mode_rows(p->c + r * p->ldc + n, c1 - n, p->gelu);
            }
        }
    }
}
#endif
