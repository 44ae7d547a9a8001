/* int8 GEMM for AVX2: tiles of up to 2 rows × 16 columns. vpmaddubsw would saturate its int16 pair
 * sums (255·127·2 > 32767) and break exactness, so operands are widened to int16 and multiplied with
 * vpmaddwd (exact int32 pair sums); pairs are folded with vphaddd at the end of each scale group. */
#include "pocketsam_kernels.h"
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#define PSAM_AVX2 __attribute__((target("avx2,fma")))

/* Output columns c0 .. c0 + 7 (fewer at the matrix's edge) of rows m0 .. m0 + MR − 1: per row
 * f[r·stride] · a_scale + bias. */
static inline PSAM_AVX2 __attribute__((always_inline)) void
store8(const psam_qgemm_args *p, const __m256 *f, int stride, int MR, size_t m0, size_t c0) {
    const size_t cols = p->n - c0 < 8 ? p->n - c0 : 8;
    float bias[8] = {0};
    if (p->bias) memcpy(bias, p->bias + c0, cols * sizeof(float));
    const __m256 bv = _mm256_loadu_ps(bias);
    for (int r = 0; r < MR; r++) {
        __m256 v = _mm256_fmadd_ps(f[r * stride], _mm256_set1_ps(p->a_scale[m0 + r]), bv);
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
        store8(p, &f[0][h], 2, MR, m0, c0);
    }
}

/* Up to 6 rows × 8 columns (half a 16-column panel) on activations already widened to int16 (`a16`: row r at
 * a16 + r·kp): each row's k-quad is a 64-bit broadcast from memory (no shuffle), so per k-quad the two weight
 * conversions are the only shuffles for 12 vpmaddwd (the 2 × 16 tile above spends 8 shuffles on 8). The same integer
 * sums and the same fp32 epilogue per scale group as `tile`, so the same bits. */
static inline PSAM_AVX2 __attribute__((always_inline)) void
tile_wide(const psam_qgemm_args *p, const int16_t *a16, size_t m0, size_t n, const int MR) {
    const size_t kp = p->kp, kq = kp / 4, gq = p->group / 4, groups = kp / p->group, np = psam_round_up(p->n, 16);
    const int8_t *panel = p->w + (n / 16) * kq * 64 + 32 * ((n / 8) & 1);
    __m256 f[6];
    for (int r = 0; r < MR; r++) f[r] = _mm256_setzero_ps();
    for (size_t g = 0; g < groups; g++) {
        __m256i acc[6][2];
        for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
        const int8_t *b = panel + g * gq * 64;
        const int16_t *a = a16 + g * gq * 4;
        for (size_t q = 0; q < gq; q++) {
            const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + q * 64)));
            const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + q * 64 + 16)));
            for (int r = 0; r < MR; r++) {
                int64_t quad;
                memcpy(&quad, a + r * kp + q * 4, 8);
                const __m256i av = _mm256_set1_epi64x(quad);
                acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(w0, av));
                acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(w1, av));
            }
        }
        const __m256i cs = _mm256_loadu_si256((const __m256i *)(p->w_sum + g * np + n));
        const __m256 ws = _mm256_loadu_ps(p->w_scale + g * np + n);
        for (int r = 0; r < MR; r++) {
            __m256i s = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][0], acc[r][1]), 0xD8);
            __m256i t = _mm256_sub_epi32(s, _mm256_mullo_epi32(_mm256_set1_epi32(p->a_zero[m0 + r]), cs));
            f[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), ws, f[r]);
        }
    }
    store8(p, f, 1, MR, m0, n);
}

/* Longest k the widened rows take (6 rows × 5120 int16 = 60 KB of stack: ViT-H's widest layer); longer runs `tile`. */
#define WIDE_MAX_KP 5120

PSAM_AVX2 void psam_qgemm__avx2(const psam_qgemm_args *p, size_t n0, size_t n1) {
    if (n1 > p->n) n1 = p->n;
    if (n0 >= n1) return;
    if (p->kp <= WIDE_MAX_KP && n0 % 16 == 0) {
        /* Six rows at a time, widened once per column chunk, against every 8-column tile of the chunk. */
        _Alignas(32) int16_t a16[6 * WIDE_MAX_KP];
        const size_t kp = p->kp;
        /* Columns in chunks whose weights (kp × chunk bytes, about 192 KB) stay in L2 while every row group passes. */
        const size_t chunk = kp * 16 >= (192u << 10) ? 16 : (192u << 10) / kp / 16 * 16;
        for (size_t c0 = n0; c0 < n1; c0 += chunk) {
            const size_t c1 = c0 + chunk < n1 ? c0 + chunk : n1;
            for (size_t m0 = 0; m0 < p->m; m0 += 6) {
                const int MR = p->m - m0 < 6 ? (int)(p->m - m0) : 6;
                for (int r = 0; r < MR; r++) {
                    const uint8_t *src = p->a + (m0 + r) * p->lda;
                    int16_t *dst = a16 + r * kp;
                    size_t k = 0;
                    for (; k + 16 <= kp; k += 16)
                        _mm256_storeu_si256((__m256i *)(dst + k), _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(src + k))));
                    for (; k < kp; k++) dst[k] = src[k];
                }
                for (size_t n = c0; n < c1; n += 8) {
                    switch (MR) {
                    case 6: tile_wide(p, a16, m0, n, 6); break;
                    case 5: tile_wide(p, a16, m0, n, 5); break;
                    case 4: tile_wide(p, a16, m0, n, 4); break;
                    case 3: tile_wide(p, a16, m0, n, 3); break;
                    case 2: tile_wide(p, a16, m0, n, 2); break;
                    default: tile_wide(p, a16, m0, n, 1); break;
                    }
                }
                if (p->gelu)
                    for (int r = 0; r < MR; r++) psam_gelu_mode_rows(p->c + (m0 + r) * p->ldc + c0, c1 - c0, p->gelu);
            }
        }
        return;
    }
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
