/* PocketSAM compute kernels: int8 GEMM on packed weights for AVX-512 VNNI, AVX2, ARM NEON (ARMv8.0, the
 * dot product, I8MM) and a portable scalar reference, with per-row activation quantization and fp32 row operations.
 * Pure functions: no allocation, no state beyond the dispatch table chosen once at first use. */
#ifndef POCKETSAM_KERNELS_H
#define POCKETSAM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Packed weight layout ("panels16x4", docs/FORMAT.md layout 1): a weight W[N][K] (int8) is stored
 * as ceil(N/16) panels of 16 output channels; a panel holds Kp/4 blocks (Kp = K rounded up to 4) of
 * 64 bytes, block q holding W[n][4q..4q+3] for the panel's 16 channels n in order. Padding is zero.
 * Element (n, k) is at byte ((n/16)·(Kp/4) + k/4)·64 + (n%16)·4 + k%4. */
static inline size_t psam_panel_offset(size_t n, size_t k, size_t kp) {
    return ((n / 16) * (kp / 4) + k / 4) * 64 + (n % 16) * 4 + k % 4;
}
static inline size_t psam_round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }

/* One int8 GEMM: c[m][n] = a_scale[m] · Σ_g w_scale[g][n] · (Σ_{k∈g} a[m][k]·W[n][k] − a_zero[m]·w_sum[g][n])
 * + bias[n], then GELU if `gelu`. a is u8 (a real value is a_scale·(a − a_zero)), W int8 packed.
 * Accumulation is int32 and exact; the fp32 epilogue is the same sequence of fused multiply-adds in
 * every variant, so all variants give bit-identical results. */
typedef struct psam_qgemm_args {
    const uint8_t *a;      /* [m][lda] quantized activations; bytes k ≥ K of a row are zero */
    size_t lda;            /* bytes per row, ≥ kp */
    const float *a_scale;  /* [m] */
    const int32_t *a_zero; /* [m] */
    const int8_t *w;       /* packed panels; W in −127…127, never −128; the loader enforces it (the ARMv8.0 NEON kernel
                            * sums two products (a − 128)·w in one int16 lane: 2·128·127 = 32512 ≤ 32767) */
    const float *w_scale;  /* [groups][np]: np = n rounded up to 16, zero past n */
    const int32_t *w_sum;  /* [groups][np]: sum of W[n][k] over the group's k */
    const float *bias;     /* [n] or NULL */
    float *c;              /* [m][ldc] output */
    size_t ldc;
    size_t m, n, kp;       /* kp: K rounded up to a multiple of 4 */
    size_t group;          /* K elements per scale group: kp for one scale per channel, else a multiple of 4 dividing kp */
    int gelu;              /* GELU on the output: 0 none, PSAM_GELU_EXACT or PSAM_GELU_LUT (psam_gelu_mode_rows) */
} psam_qgemm_args;

/* Computes output columns [n0, n1) of every row; n0 a multiple of 16 (a panel start). */
typedef void (*psam_qgemm_fn)(const psam_qgemm_args *args, size_t n0, size_t n1);

typedef enum psam_isa {
    PSAM_ISA_SCALAR = 0,
    PSAM_ISA_AVX2 = 1,
    PSAM_ISA_AVX512VNNI = 2,
    PSAM_ISA_NEONDOT = 3,
    PSAM_ISA_NEON = 4, /* ARMv8.0 Advanced SIMD, no dot product (Cortex-A53, A72) */
    PSAM_ISA_I8MM = 5, /* ARMv8.6 I8MM (usmmla) */
    PSAM_ISA_COUNT = 6
} psam_isa;

void psam_qgemm__scalar(const psam_qgemm_args *args, size_t n0, size_t n1);
void psam_qgemm__avx2(const psam_qgemm_args *args, size_t n0, size_t n1);
void psam_qgemm__avx512vnni(const psam_qgemm_args *args, size_t n0, size_t n1);
void psam_qgemm__neondot(const psam_qgemm_args *args, size_t n0, size_t n1);
void psam_qgemm__neon(const psam_qgemm_args *args, size_t n0, size_t n1);
void psam_qgemm__i8mm(const psam_qgemm_args *args, size_t n0, size_t n1);

/* The variant for `isa`, or NULL when this build or this CPU does not have it. */
psam_qgemm_fn psam_qgemm_kernel(psam_isa isa);
/* The best variant this CPU runs, chosen once (thread-safe), in the order avx512vnni, i8mm, neondot, avx2, neon,
 * scalar. The environment variable PSAM_KERNELS (one of those names) caps the choice at that place in the order,
 * e.g. for valgrind, which lacks AVX-512, or to run the ARMv8.0 kernel on a CPU with the dot product. */
psam_isa psam_best_isa(void);
const char *psam_isa_name(psam_isa isa);
/* Peak probe for benchmarks: `iters` rounds of 16 independent dot-product instructions on registers (for neon: 8
 * independent smull, smlal, sadalp sequences, the ARMv8.0 kernel's mix); returns the multiply-accumulates done (0 when
 * the probe or the ISA is unavailable; AVX-512 VNNI, AVX2 (16 vpmaddwd), neon, neondot, i8mm). */
uint64_t psam_isa_peak_probe(psam_isa isa, uint64_t iters);
/* Runs the variant psam_best_isa() names. */
void psam_qgemm(const psam_qgemm_args *args, size_t n0, size_t n1);

/* int16 GEMM, for the layers an int8 model keeps in fp16 (the most sensitive ones): on AVX-512 VNNI,
 * vpdpwssd multiplies int16 pairs at twice the rate of fp32 fused multiply-adds. Weights ("panels16x2"):
 * W[N][K] int16 as ceil(N/16) panels of 16 output channels, a panel holding Kp/2 blocks (Kp = K rounded up
 * to 2) of 64 bytes, block q holding W[n][2q], W[n][2q+1] for the panel's 16 channels in order; padding
 * zero. Activations: symmetric per row, |a| <= PSAM_S16_AMAX (psam_quantize_rows_s16). With every
 * |W| <= psam_s16_weight_limit(kp), no partial sum leaves int32, so the sums are exact whatever the order:
 * c[m][n] = fmaf(fmaf((float)Σ_k a[m][k]·W[n][k], w_scale[n], 0), a_scale[m], bias[n]), then GELU if
 * GELU by `gelu`'s mode (psam_gelu_mode_rows), in every variant bit for bit. */
#define PSAM_S16_AMAX 2047
static inline size_t psam_panel16_offset(size_t n, size_t k, size_t kp) {
    return ((n / 16) * (kp / 2) + k / 2) * 32 + (n % 16) * 2 + k % 2;
}
/* The largest |W| for which kp products of PSAM_S16_AMAX · |W| sum within int32 (at most 32767). */
static inline int32_t psam_s16_weight_limit(size_t kp) {
    size_t l = (size_t)2147483647 / ((kp ? kp : 1) * (size_t)PSAM_S16_AMAX);
    return (int32_t)(l > 32767 ? 32767 : l);
}
typedef struct psam_s16gemm_args {
    const int16_t *a;      /* [m][lda]; elements k >= K of a row are zero */
    size_t lda;            /* elements per row, >= kp */
    const float *a_scale;  /* [m] */
    const int16_t *w;      /* packed panels16x2 */
    const float *w_scale;  /* [np]: np = n rounded up to 16, zero past n */
    const float *bias;     /* [n] or NULL */
    float *c;              /* [m][ldc] */
    size_t ldc;
    size_t m, n, kp;       /* kp: K rounded up to 2 */
    int gelu;              /* as psam_qgemm_args.gelu */
} psam_s16gemm_args;
void psam_s16gemm__scalar(const psam_s16gemm_args *args, size_t n0, size_t n1);
void psam_s16gemm__avx512vnni(const psam_s16gemm_args *args, size_t n0, size_t n1);
/* aarch64 only (smlal/smlal2 into int32 lanes, always available there). */
void psam_s16gemm__neon(const psam_s16gemm_args *args, size_t n0, size_t n1);
/* Whether psam_s16gemm runs a kernel faster than fp32 (AVX-512 VNNI, when psam_best_isa() is it): elsewhere the
 * runtime keeps those layers in fp32. 0 on aarch64: NEON int16 multiply-accumulates run at half the fp32 FMA rate. */
int psam_s16gemm_fast(void);
/* Columns [n0, n1) (n0 a multiple of 16) of every row, on the AVX-512 VNNI kernel where psam_s16gemm_fast(), the NEON
 * kernel on aarch64 (unless PSAM_KERNELS=scalar), else the scalar one; the same bits in every case. */
void psam_s16gemm(const psam_s16gemm_args *args, size_t n0, size_t n1);
/* Symmetric per-row int16 quantization: scale = max|x| / PSAM_S16_AMAX, q = trunc(clamp(x·(1/scale) +
 * (AMAX + 0.5), 0, 2·AMAX + 0.5)) − AMAX (round half up, in [−AMAX, AMAX]); an all-zero row gets scale 1 and
 * zeros. Elements [k, ldq) of each q row are set to zero. */
void psam_quantize_rows_s16(const float *x, size_t m, size_t k, size_t ldx, int16_t *q, size_t ldq, float *scale);

/* Dynamic asymmetric per-row quantization: for each row of x[m][ldx] (k values), lo = min(0, min x),
 * hi = max(0, max x), scale = (hi − lo)/255, zero = round(−lo/scale), q = clamp(round(x/scale) + zero, 0, 255).
 * An all-zero row gets scale 1, zero 0. Bytes [k, ldq) of each q row are set to zero. */
void psam_quantize_rows_u8(const float *x, size_t m, size_t k, size_t ldx, uint8_t *q, size_t ldq,
                           float *scale, int32_t *zero);

/* GELU x·Φ(x) in place on n floats (erf by the rational fit of Ops.erfApprox, about 2 ulp). */
void psam_gelu_rows(float *x, size_t n);
/* `gelu` modes of the int8 and int16 GEMMs and the depthwise convolution: 0 none, PSAM_GELU_EXACT psam_gelu_rows,
 * PSAM_GELU_LUT psam_gelu_lut_rows. */
#define PSAM_GELU_EXACT 1
#define PSAM_GELU_LUT 2
/* The int8 path's GELU in place on n floats: a piecewise cubic Φ, within 1.7e-6·max(1, |x|) of x·Φ(x) (gelu_lut.h);
 * the same bits on every CPU, faster than psam_gelu_rows where psam_gelu_lut_fast() (AVX-512: about twice; aarch64
 * NEON: half the vector instructions and no division, gelu.c). */
void psam_gelu_lut_rows(float *x, size_t n);
int psam_gelu_lut_fast(void);
/* psam_gelu_rows or psam_gelu_lut_rows by mode (0: nothing). */
void psam_gelu_mode_rows(float *x, size_t n, int mode);
/* GELU for the mask decoder's upscaling: psam_gelu_rows's erf with fused multiply-adds and a refined
 * reciprocal where AVX-512 is available (within a few 1e-7 of it; psam_gelu_rows elsewhere). */
void psam_gelu_fast_rows(float *x, size_t n);

/* Depthwise k×k convolution, channels-last: x[h][w][c], weight laid out [k·k][c] (tap-major), bias[c]
 * or NULL, zero padding `pad`, stride `stride`; writes rows [y0, y1) of out[ho][wo][c]; GELU by mode `gelu`
 * (psam_gelu_mode_rows). */
void psam_depthwise_rows(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias,
                         size_t k, size_t stride, size_t pad, float *out, size_t wo, size_t y0, size_t y1, int gelu);

/* Depthwise convolution as psam_depthwise_rows (then GELU if `gelu`), each output pixel quantized at
 * once into row p = oy·wo + ox of q[·][ldq] (with scale[p], zero[p]) as psam_quantize_rows_u8 does, instead
 * of being stored as floats: the GEMM that follows reads it directly. `row`: scratch of c floats. */
void psam_depthwise_rows_u8(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t k,
                            size_t stride, size_t pad, size_t wo, size_t y0, size_t y1, int gelu, float *row,
                            uint8_t *q, size_t ldq, float *scale, int32_t *zero);

/* Layer norm of each row of x[m][ldx] (c values) into out[m][ldo] (may alias x). */
void psam_layernorm_rows(const float *x, size_t m, size_t c, size_t ldx, const float *w, const float *b, float eps,
                         float *out, size_t ldo);
/* Layer norm whose sums are left-to-right chains along each row (Ops.layerNorm's order: the necks, the ViT blocks,
 * the decoder), rows of c floats, out may be x; several rows' chains interleaved, each row's values as alone. */
void psam_layernorm_rows_seq(const float *x, size_t m, size_t c, const float *w, const float *b, float eps, float *out);

/* out[i] = a[i] + b[i] for n floats (out may be a or b); AVX-512 where the CPU has it, the same bits. */
void psam_add_rows(float *out, const float *a, const float *b, size_t n);

/* x[r][0..n) += bias (if not NULL), then GELU if `gelu`, for m rows of stride ld. */
void psam_bias_gelu_rows(float *x, size_t m, size_t n, size_t ld, const float *bias, int gelu);

/* Softmax of each row of x[m][ld] (n values), in place. */
void psam_softmax_rows(float *x, size_t m, size_t n, size_t ld);

/* SAM's decomposed relative position terms added to a block of attention scores `scores[rows][ld]` (queries
 * q0 .. q0 + rows − 1 of a side × side grid, keys the whole grid): th, tw `[rows][2·side − 1]` are the queries'
 * products with rel_pos_h and rel_pos_w; score (q, ky·side + kx) gains th[q][qy − ky + side − 1] +
 * tw[q][qx − kx + side − 1]. */
void psam_relpos_add(float *scores, size_t ld, size_t rows, size_t q0, size_t side, const float *th, const float *tw,
                     size_t r);
/* Softmax down the columns of each of `groups` blocks of n rows (row r at x + r·ld, cols values), of
 * x + bias[r] (bias: groups·n values, or NULL), in place. */
void psam_softmax_cols(float *x, size_t groups, size_t n, size_t cols, size_t ld, const float *bias);

/* Attention of one window of wn tokens, all heads: qkv[wn][ldq] holds per head h [q | k | v] at columns
 * h·3·kd; softmax(q·kᵀ·scale + bias[h]) · v into out[wn][ldo] at columns h·kd. bias [heads][wn][wn] or
 * NULL; scratch: wn·wn + kd·wn floats. */
void psam_window_attention(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
                           const float *bias, float *out, size_t ldo, float *scratch);
/* psam_window_attention with q·scale, k, v and the probabilities rounded to fp16, each score an fp16 chain of
 * multiply-adds over kd, each output fp32 sums of fp16 chains over 16 keys (for int8 models): AVX-512 FP16 (kd a
 * multiple of 32) or aarch64 FP16 arithmetic (kd a multiple of 8) where psam_window_attention_fp16_fast(kd), else
 * a slow scalar emulation of the same rounding (the reference). Scratch: psam_window_attention_fp16_scratch(wn, kd) floats. */
int psam_window_attention_fp16_fast(size_t kd);
size_t psam_window_attention_fp16_scratch(size_t wn, size_t kd);
void psam_window_attention_fp16(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
                                const float *bias, float *out, size_t ldo, float *scratch);
/* The same with bf16 in place of fp16 (for int8 models where the CPU has AVX-512 BF16 but not FP16): q·scale, k,
 * v and the probabilities rounded to bf16, scores and outputs fp32 sums of bf16 pair products as vdpbf16ps
 * computes them: AVX-512 BF16 where psam_window_attention_bf16_fast(kd) (kd a multiple of 32), else a slow
 * scalar emulation (the reference). Scratch: psam_window_attention_bf16_scratch(wn, kd) floats. */
int psam_window_attention_bf16_fast(size_t kd);
size_t psam_window_attention_bf16_scratch(size_t wn, size_t kd);
void psam_window_attention_bf16(const float *qkv, size_t ldq, size_t wn, size_t heads, size_t kd, float scale,
                                const float *bias, float *out, size_t ldo, float *scratch);
/* psam_window_attention_bf16 for nq of the wn queries only (the keys and values are all wn): the window rows rows[0 .. nq)
 * (distinct, each < wn), or [0, nq) when rows is NULL. Those rows of out are the ones the whole call gives, bit for bit;
 * the others are not written. For windows over the image's border, whose padding queries' outputs are dropped. */
void psam_window_attention_bf16_rows(const float *qkv, size_t ldq, size_t wn, size_t nq, const uint16_t *rows, size_t heads,
                                     size_t kd, float scale, const float *bias, float *out, size_t ldo, float *scratch);
/* SAM ViT's attention for one head in bf16 (int8 models where psam_vit_attention_bf16_fast(kd): AVX-512 BF16, kd a
 * multiple of 32; elsewhere a slow scalar emulation of the same rounding, the tests' reference): queries q0 .. q0 + nq − 1
 * (rows of q[·][ldq], unscaled) of a side × side grid against all side² keys, softmax(q·scale·kᵀ + relative terms) · v
 * into out[nq][ldo], rounded as psam_window_attention_bf16. The keys and values (rows of k and v, stride ld) are
 * packed first, once per head, into psam_vit_attention_bf16_packed_floats(side, kd) floats; th, tw [nq][2·side − 1]
 * are the queries' products with rel_pos_h and rel_pos_w (fp32, added as psam_relpos_add does). Scratch:
 * psam_vit_attention_bf16_scratch(nq, side, kd) floats. */
int psam_vit_attention_bf16_fast(size_t kd);
size_t psam_vit_attention_bf16_packed_floats(size_t side, size_t kd);
size_t psam_vit_attention_bf16_scratch(size_t nq, size_t side, size_t kd);
void psam_vit_attention_bf16_pack(const float *k, const float *v, size_t ld, size_t side, size_t kd, float *packed);
void psam_vit_attention_bf16(const float *q, size_t ldq, size_t nq, size_t q0, size_t side, const float *packed, size_t kd,
                             float scale, const float *th, const float *tw, float *out, size_t ldo, float *scratch);

/* Attention with few keys (nk <= 64), rows [r0, r1) of q: per head h (columns h*d of q, k, v, out)
 * softmax(q.k^T * scale) . v into out[row][ldo]. For SAM's image-to-token attention. */
void psam_attention_few_keys(const float *q, size_t ldq, const float *k, size_t ldk, const float *v, size_t ldv,
                             size_t nk, size_t heads, size_t d, float scale, float *out, size_t ldo,
                             size_t r0, size_t r1);

/* Automatic mask generation: one mask from low-res logits to the output size. The output is a
 * separable 4-tap resampling of the low-res logits, given transposed (lowT[col][row], as the batched
 * decoder writes them; the composition of SAM's two bilinear resizes): output row y reads low-res rows row_start[y] + 0..3 with weights row_w[4y..4y+3], output
 * column x reads columns col_start[x] + 0..3 with col_w[4x..4x+3] (start + 3 < low). */
typedef struct psam_mask_upscale_args {
    size_t low, out_h, out_w;
    const int32_t *row_start, *col_start;
    const float *row_w, *col_w;
    float threshold, offset; /* mask: logit > threshold; stability counts at threshold ± offset */
    float core_offset;       /* bit 1 of a mask byte: logit > threshold + core_offset */
    /* When counts is not NULL: also the COCO runs of the mask placed at (frame_x0, frame_y0) in a
     * frame_h × frame_w frame (psam_mask_rle), into counts (counts_capacity entries), their number in
     * psam_mask_stats.runs (SIZE_MAX when they did not fit). */
    uint32_t *counts;
    size_t counts_capacity;
    size_t frame_x0, frame_y0, frame_h, frame_w;
} psam_mask_upscale_args;

typedef struct psam_mask_stats {
    int64_t intersection; /* pixels with logit > threshold + offset */
    int64_t union_;       /* pixels with logit > threshold − offset */
    int64_t area;         /* pixels with logit > threshold (the mask) */
    int32_t box[4];       /* x0, y0, x1, y1 of the mask, inclusive; zeros when empty */
    size_t runs;          /* entries written to args->counts */
} psam_mask_stats;

/* Writes the mask column-major (mask[x*out_h + y]; bit 0 inside, bit 1 logit > threshold + core_offset) and
 * its stats; hbuf holds low*low + low*out_h floats. */
void psam_mask_upscale(const psam_mask_upscale_args *a, const float *low, float *hbuf, uint8_t *mask,
                       psam_mask_stats *st);

/* Uncompressed COCO RLE (column-major runs, starting with zeros) of a column-major h × w mask
 * (mask[x*h + y], non-zero inside) placed at (x0, y0) in a full_h × full_w frame of zeros, into counts
 * (capacity entries; h*w + 3 always suffice). Returns how many were written, or SIZE_MAX (writing at most
 * capacity) when more were needed. */
size_t psam_mask_rle(const uint8_t *mask, size_t h, size_t w, size_t x0, size_t y0, size_t full_h, size_t full_w,
                     uint32_t *counts, size_t capacity);

/* SAM's mask-decoder output upscaling, per input row y after the caller's GEMM of that row into
 * t[x][(dy*2 + dx)*cout + o] (w pixels, cout outputs × 4 sub-pixels, sub-pixel major). First stage: + bias, layer norm (ln_w, ln_b,
 * eps) over each output pixel's cout channels, GELU, into out[(2y+dy)*2w + 2x+dx][cout]. */
void psam_upscale_ln_gelu_row(const float *t, size_t w, size_t cout, size_t y, const float *bias, const float *ln_w,
                              const float *ln_b, float eps, float *out);
/* Second stage, on the transposed GEMM output t[4·cout][ld] (row s·cout + o, s = dy*2 + dx; column r·w + x for
 * the pixels of rows y0 … y0 + rows − 1 of the once-upscaled grid, w wide): + bias, GELU (in place), and the
 * masks, transposed: masks[m][(2x+dx)*2w + 2y+dy] = hyper[m] . value for m < count (the layout
 * psam_mask_upscale reads); scratch holds count·rows·w floats. */
void psam_upscale_masks_t(float *t, size_t ld, size_t rows, size_t w, size_t cout, size_t y0, const float *bias,
                          const float *hyper, size_t count, float *masks, float *scratch);

/* t[j][k] = rstd[j]*(t[j][k] - mean[j]*u[k]) + v[k] for m rows of n values (a layer norm pushed through a
 * linear map: u = 1^T diag(gamma) W, v = beta^T W). */
/* Rows x[m][c] (+= add when not NULL), their mean and 1/sqrt(var + eps) into mean, rstd, then layer-normed in
 * place (w, b); xpe = x + pe when xpe is not NULL. */
void psam_keys_norm(float *x, const float *add, size_t m, size_t c, const float *w, const float *b, float eps,
                    float *mean, float *rstd, const float *pe, float *xpe);
/* out[i][j] = scale · Σ_{t<d} q[i·ldq + t] · kt[t·ldk + j] for i < nq, j < nk (kt: a shared matrix, transposed). */
void psam_scores_shared(const float *q, size_t ldq, const float *kt, size_t ldk, size_t nq, size_t nk, size_t d, float scale,
                        float *out, size_t ldo);
/* out[i·ldo + t] = Σ_{j<nk} p[i·ldp + j] · v[j·ldv + t] for i < nq, t < d. */
void psam_weighted_rows(const float *p, size_t ldp, const float *v, size_t ldv, size_t nq, size_t nk, size_t d, float *out,
                        size_t ldo);
/* Whether this CPU has AVX2 + FMA, and AVX-512 F/BW/VL/DQ (0 off x86-64); checked once. */
int psam_cpu_avx2_fma(void);
int psam_cpu_avx512(void);
/* The bodies the fp32 row operations (layer norm, softmax, GELU, quantization, attention, depthwise, …) run on this CPU:
 * "avx512", "avx2", "neon" or "generic". */
const char *psam_rowops_isa_name(void);
/* ARM Advanced SIMD extensions (0 off aarch64 and where they cannot be read: Linux's HWCAP/HWCAP2 only); checked once.
 * fp16: ASIMDHP, ARMv8.2 half-precision arithmetic; dot: ASIMDDP (sdot/udot); i8mm: ARMv8.6 I8MM (usmmla);
 * bf16: ARMv8.6 BF16 (bfdot, bfmmla). */
int psam_cpu_neon_fp16(void);
int psam_cpu_neon_dot(void);
int psam_cpu_neon_i8mm(void);
int psam_cpu_neon_bf16(void);
/* c[r·ldc + j] = alpha · Σ_{t<k} A(r, t) · b[t·ldb + j] + bias[j] (bias may be NULL), + the old c when
 * accumulate, for r < m, j < n; A(r, t) = a[r·ars + t·aks] (row-major A: ars = lda, aks = 1; transposed: ars = 1,
 * aks = lda). A is read in place (never copied): meant for a large A and a small, cache-resident B. */
void psam_sgemm_inplace(const float *a, size_t ars, size_t aks, const float *b, size_t ldb, float *c, size_t ldc, size_t m,
                        size_t n, size_t k, float alpha, const float *bias, int accumulate);
/* Portable kernels (portable.c): while on, the fp32 row operations run their generic bodies and psam_sgemm_inplace runs
 * psam_sgemm_portable, so an fp32 forward pass has the same bits on every CPU. Process-wide; int8 dispatch unaffected. */
void psam_set_portable_kernels(int on);
int psam_portable_kernels(void);
/* c[r·ldc + j] = alpha · s + bias[j] (+ the old c when accumulate) with s = Σ_{t<k} A(r, t) · B(t, j) summed in order,
 * each product and sum rounded separately (no fused multiply-add): the same bits on every CPU (sgemm_portable.c).
 * A(r, t) = a[r·ars + t·aks], B(t, j) = b[t·bks + j·bjs]. `_with` picks the body: -1 the best this CPU has, 0 generic,
 * 1 AVX2, 2 AVX-512 (x86-64; the caller checks the CPU), for tests. */
void psam_sgemm_portable(const float *a, size_t ars, size_t aks, const float *b, size_t bks, size_t bjs, float *c, size_t ldc,
                         size_t m, size_t n, size_t k, float alpha, const float *bias, int accumulate);
void psam_sgemm_portable_with(int body, const float *a, size_t ars, size_t aks, const float *b, size_t bks, size_t bjs,
                              float *c, size_t ldc, size_t m, size_t n, size_t k, float alpha, const float *bias,
                              int accumulate);
/* h[i·k + j] += Σ_{r<rows} x[r·ldx + i] · x[r·ldx + j] for i ≤ j < k (the upper triangle of a row-major k × k; a few
 * elements with j < i near the diagonal get their (equal) sums too), in double,
 * rows in order: the same bits on every CPU (moments.c). Only rows i of h in this caller's share (blocks of 8 rows,
 * block b to part b mod parts), so `parts` threads can each take one part. `_with`: the body as for
 * psam_sgemm_portable_with. */
void psam_moments_f64(const float *x, size_t ldx, size_t rows, size_t k, double *h, size_t part, size_t parts);
void psam_moments_f64_with(int body, const float *x, size_t ldx, size_t rows, size_t k, double *h, size_t part,
                           size_t parts);
/* im2col rows of a k × k convolution (channels-last x[h][w][cin], zero padding) for output pixels p0 … p1 − 1 (wo
 * per output row): col[(p − p0)·ldc + (c·k + ky)·k + kx] = x[iy][ix][c] (PyTorch's weight order), 0 outside. */
void psam_im2col(const float *x, size_t h, size_t w, size_t cin, size_t k, size_t stride, size_t pad, size_t wo, size_t p0,
                 size_t p1, float *col, size_t ldc);
/* dst[j·ldd + i] = src[i·lds + j] for i < rows, j < cols (cache-blocked). */
void psam_transpose(const float *src, size_t rows, size_t cols, size_t lds, float *dst, size_t ldd);
/* Online softmax down the columns of a block s[rows][ld] (cols columns; flash attention's running form): with the
 * running maxima m[cols] (start at −∞) and sums l[cols] (start at 0), m ← max(m, block max), acc row c (accw
 * values, ldacc apart) and l[c] scaled by exp(m_old − m_new), s ← exp(s − m_new), l += the column sums. After the
 * last block, acc row c / l[c] is the softmax-weighted sum when acc accumulated sᵀ·values per block. */
void psam_softmax_online_cols(float *s, size_t rows, size_t cols, size_t ld, float *m, float *l, float *acc, size_t ldacc,
                              size_t accw);
/* Softmax across groups, per lane: each of the m rows of x (ld apart) holds n groups of g values; for each lane
 * h < g, softmax over x[t·g + h], t < n, in place (attention to n tokens with g heads, stored token-major). */
void psam_softmax_lanes(float *x, size_t m, size_t ld, size_t n, size_t g);
/* PIL's antialiased bilinear resampling passes on 8-bit RGB (Preprocess.coefficients makes the taps: for output
 * sample o, taps bounds[2o + 1] from input bounds[2o], 22-bit fixed-point weights weights[o·taps …], each ≥ 0 and
 * summing to about 2^22, so 2^21 + Σ 255·weight stays far inside int32). Each output byte is
 * clamp((2^21 + Σ in·weight) >> 22, 0, 255), as PIL computes it.
 * Horizontal: rows [y0, y1) of src (channels 1 or 3 bytes a pixel, rows `stride` bytes apart; gray is replicated to
 * three equal channels) into rows of tmp[ow·3]. Vertical: output rows [y0, y1) from tmp's rows (ow3 bytes each) into out. */
void psam_resample_rows_h(const uint8_t *src, size_t stride, size_t channels, size_t y0, size_t y1, size_t ow,
                          const int32_t *bounds, const int32_t *weights, size_t taps, uint8_t *tmp);
void psam_resample_rows_v(const uint8_t *tmp, size_t ow3, size_t y0, size_t y1, const int32_t *bounds, const int32_t *weights,
                          size_t taps, uint8_t *out);
void psam_rows_affine(float *t, size_t m, size_t n, const float *mean, const float *rstd, const float *u, const float *v);

#ifdef __cplusplus
}
#endif
#endif
