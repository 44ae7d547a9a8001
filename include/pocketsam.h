/*
 * pocketsam.h — the C interface of PocketSAM, Segment Anything on the CPU.
 *
 * Read top to bottom, this is the manual. One model (a .psam file made by pocketsam-quantize) is
 * loaded once and shared; each thread makes its own session, sets an image (the expensive step: one
 * image-encoder pass), then asks any number of prompts (points, a box, a mask input) for masks.
 *
 * Conventions
 *  - Every fallible call returns a psam_status; PSAM_OK is 0. On failure nothing is written to the
 *    outputs, and psam_last_error(session) describes what went wrong (calls without a session take
 *    an optional error buffer instead). Nothing in the library prints, exits or aborts.
 *  - Coordinates are pixels of the original image: x to the right, y down.
 *  - Ownership: objects made by psam_*_create/load/alloc are freed by the matching psam_*_free.
 *    Buffers passed in stay the caller's. No global state.
 *  - Threads: a psam_model is immutable and may be shared by any number of threads and sessions.
 *    A psam_session must be used by one thread at a time. Using a freed object is undefined.
 *
 * Link (static, no Swift toolchain needed on the target), after `make install`:
 *   cc app.c $(pkg-config --cflags --libs --static pocketsam)
 * or with CMake: find_package(PocketSAM) and target_link_libraries(app PocketSAM::pocketsam).
 */
#ifndef POCKETSAM_H
#define POCKETSAM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI this header describes. psam_abi_version() returns the library's; they must be equal.
 * 2: psam_prompt.hq_token_only, psam_generate_params.hq_token_only and psam_model_info.hq (HQ-SAM).
 * 3: psam_get_embedding / psam_set_embedding, psam_predict_batch, a progress callback that returns int32_t
 *    (non-zero cancels psam_generate: PSAM_ERR_CANCELLED; a callback written for ABI 2 must now return 0),
 *    PSAM_ERR_EMBEDDING. */
#define PSAM_ABI_VERSION 3

typedef enum psam_status {
    PSAM_OK = 0,
    PSAM_ERR_INVALID_ARGUMENT = 1, /* a NULL pointer, a zero or negative size, an unknown enum value */
    PSAM_ERR_IO = 2,               /* a file could not be opened or read */
    PSAM_ERR_MODEL = 3,            /* not a valid .psam file (corrupt, truncated, unsupported) */
    PSAM_ERR_IMAGE = 4,            /* an image that is empty, too small, too large or not decodable */
    PSAM_ERR_PROMPT = 5,           /* a prompt that is empty, not finite, outside the image, inverted */
    PSAM_ERR_NO_IMAGE = 6,         /* psam_predict before a successful psam_set_image */
    PSAM_ERR_BUFFER_TOO_SMALL = 7, /* a caller buffer smaller than the call needs */
    PSAM_ERR_INTERNAL = 8,         /* a bug: please report it with psam_last_error's text */
    PSAM_ERR_CANCELLED = 9,        /* the progress callback asked to stop */
    PSAM_ERR_EMBEDDING = 10        /* an image embedding that is corrupt, truncated or from another model file */
} psam_status;

/* A short English name of a status ("ok", "invalid argument", ...). Never NULL. */
const char *psam_status_string(psam_status status);

/* The library's version ("0.1.0") and ABI version (PSAM_ABI_VERSION of the header it was built with). */
const char *psam_version(void);
int psam_abi_version(void);

/* ------------------------------------------------------------------------------------------------ */
/* Models                                                                                            */

typedef struct psam_model psam_model;

/* Loads and validates a .psam file (memory-mapped; every offset, checksum and tensor shape checked).
 * On failure *out_model is set to NULL and, if error is not NULL, up to error_size bytes of message
 * (NUL-terminated) are written there. Thread-safe. */
psam_status psam_model_load(const char *path, psam_model **out_model, char *error, size_t error_size);

/* As psam_model_load, from a .psam image in memory. The bytes are used in place (not copied) when
 * `data` is 64-byte aligned, else copied once; in-place bytes must stay valid and unchanged until
 * psam_model_free. */
psam_status psam_model_load_from_memory(const void *data, size_t size, psam_model **out_model, char *error,
                                        size_t error_size);

/* Frees a model. Every session made from it must be freed first. NULL is ignored. */
void psam_model_free(psam_model *model);

typedef struct psam_model_info {
    int32_t input_size;        /* side of the square encoder input, pixels (1024 or 256) */
    int32_t low_res_size;      /* side of the low-resolution logits (256) */
    int32_t num_multimask;     /* masks returned with multimask (3) */
    char variant[16];          /* "sam", "mobilesam" or "litemedsam", NUL-terminated */
    int32_t hq;                /* 1 for an HQ-SAM model (HQ output token and feature fusion), else 0 */
} psam_model_info;

psam_status psam_model_get_info(const psam_model *model, psam_model_info *out_info);

/* ------------------------------------------------------------------------------------------------ */
/* Sessions                                                                                          */

typedef struct psam_session psam_session;

typedef struct psam_session_params {
    int32_t threads;    /* worker threads including the caller's, >= 1 (default 1); results do not
                           depend on it */
    void *arena;        /* optional caller buffer for all activations, 64-byte aligned, at least
                           psam_session_arena_size() bytes, kept alive until psam_session_free;
                           NULL (default): the session allocates it */
    size_t arena_size;  /* size of `arena` in bytes */
} psam_session_params;

psam_session_params psam_session_default_params(void);

/* The bytes of activation memory a session of this model needs, for any image and prompt. Measured
 * once per model by a planning pass (one encoder run on a blank image) and cached. Thread-safe. */
psam_status psam_session_arena_size(const psam_model *model, size_t *out_bytes);

/* Makes a session. With params->arena it works entirely inside that buffer (PSAM_ERR_BUFFER_TOO_SMALL
 * if it is smaller than psam_session_arena_size, PSAM_ERR_INVALID_ARGUMENT if misaligned). params may
 * be NULL for the defaults. On failure *out_session is NULL; pass `error` for a message. */
psam_status psam_session_create(const psam_model *model, const psam_session_params *params,
                                psam_session **out_session, char *error, size_t error_size);

/* Frees a session (not the model, not a caller arena). NULL is ignored. */
void psam_session_free(psam_session *session);

/* The message of the last failed call on this session, "" if none. Valid until the next call on the
 * session. Never NULL (for a NULL session: a fixed message). */
const char *psam_last_error(const psam_session *session);

/* ------------------------------------------------------------------------------------------------ */
/* Images                                                                                            */

typedef enum psam_pixel_format {
    PSAM_PIXEL_RGB8 = 0,  /* 3 bytes per pixel, R G B */
    PSAM_PIXEL_GRAY8 = 1  /* 1 byte per pixel, replicated to RGB */
} psam_pixel_format;

/* Encodes an image (runs the image encoder: the expensive step; prompts are then cheap). `stride` is
 * the distance between rows in bytes (0: packed). Images from 2x2 to 16384x16384 pixels. No heap
 * allocation once the session has seen an image of this size. */
psam_status psam_set_image(psam_session *session, const uint8_t *pixels, int32_t width, int32_t height,
                           size_t stride, psam_pixel_format format);

/* As psam_set_image, decoding a JPEG or PNG file first (gray stays gray, alpha is dropped). */
psam_status psam_set_image_file(psam_session *session, const char *path);

/* Size of the current image, for sizing mask buffers. PSAM_ERR_NO_IMAGE before psam_set_image. */
psam_status psam_get_image_size(const psam_session *session, int32_t *out_width, int32_t *out_height);

/* The current image's embedding as a .psemb file (docs/FORMAT.md): what prompts need of the image (the embedding,
 * the image's original and resized size, an HQ-SAM model's HQ features) and the model file's fingerprint, so that a
 * session of the same .psam file, on this machine or another, answers prompts without encoding the image again
 * (encode once on a large machine, prompt on a small one; or cache embeddings). *out_size receives the file's size
 * (a few MB: 4 MB for SAM's 64x64x256 embedding); with buffer NULL and capacity 0 only the size is returned.
 * PSAM_ERR_BUFFER_TOO_SMALL if capacity < *out_size, PSAM_ERR_NO_IMAGE before an image. */
psam_status psam_get_embedding(psam_session *session, void *buffer, size_t capacity, size_t *out_size);

/* Sets the current image from a .psemb file made by psam_get_embedding (or `pocketsam encode`) with the same
 * .psam file: prompts then answer bit for bit as after psam_set_image on that image. Everything is validated
 * (magic, version, the model's fingerprint, sizes, checksum, finite values): PSAM_ERR_EMBEDDING otherwise, and
 * the session then has no image. The bytes are copied; no encoder pass. */
psam_status psam_set_embedding(psam_session *session, const void *data, size_t size);

/* ------------------------------------------------------------------------------------------------ */
/* Prompts and masks                                                                                 */

typedef struct psam_point {
    float x, y;     /* original-image pixels */
    int32_t label;  /* 1 foreground, 0 background */
} psam_point;

typedef struct psam_box {
    float x0, y0, x1, y1;  /* top-left and bottom-right corners, original-image pixels */
} psam_box;

typedef struct psam_prompt {
    const psam_point *points;  /* num_points points, or NULL */
    size_t num_points;         /* at most 256 */
    const psam_box *box;       /* one box, or NULL */
    const float *mask_input;   /* low-res logits of an earlier prediction (low_res_size^2), or NULL */
    size_t mask_input_size;    /* number of floats in mask_input */
    int32_t multimask;         /* 0: one mask; 1: three (for an ambiguous prompt), as SAM. HQ-SAM models
                                  always return one mask: the HQ mask plus SAM's mask 0, or with multimask
                                  plus the best-scored of SAM's three (whose IoU is returned), as HQ-SAM's
                                  predictor does */
    int32_t hq_token_only;     /* HQ-SAM models: 1 returns the HQ mask alone; 0 (default) HQ + SAM mask.
                                  Other models: must be 0 or 1, ignored */
} psam_prompt;

psam_prompt psam_prompt_default(void);

/* Answers a prompt into caller buffers:
 *   masks            num_masks * width * height bytes, mask-major, 1 inside, 0 outside
 *   iou, stability   num_masks floats each: predicted IoU and stability score (may be NULL)
 *   low_res_logits   num_masks * low_res_size^2 floats, for a later mask_input (may be NULL)
 * where num_masks is 1, or 3 with multimask (HQ-SAM models: always 1); the capacities are in elements and must be large enough
 * (PSAM_ERR_BUFFER_TOO_SMALL otherwise). *out_num_masks receives num_masks. After the first call,
 * no heap allocation. */
psam_status psam_predict(psam_session *session, const psam_prompt *prompt, uint8_t *masks, size_t masks_capacity,
                         float *iou, float *stability, size_t scores_capacity, float *low_res_logits,
                         size_t low_res_capacity, int32_t *out_num_masks);

/* The same answer in library-owned memory, freed with psam_result_free. */
typedef struct psam_result {
    int32_t num_masks, width, height, low_res_size;
    uint8_t *masks;         /* num_masks * width * height */
    float *iou;             /* num_masks */
    float *stability;       /* num_masks */
    float *low_res_logits;  /* num_masks * low_res_size * low_res_size */
} psam_result;

psam_status psam_predict_alloc(psam_session *session, const psam_prompt *prompt, psam_result **out_result);
void psam_result_free(psam_result *result);

/* Answers `count` prompts (1 to 2^20) against the current image in one call (e.g. a detector's boxes):
 * out_results (an array of count pointers) receives prompt i's answer at [i], as psam_predict_alloc's (free each
 * with psam_result_free). Every prompt is checked before any is decoded; once session, out_results and count are
 * valid, a failure leaves every out_results[i] NULL and the message names the prompt. The answers equal `count`
 * psam_predict calls bit for bit. Consecutive prompts without a mask input that have the same number of points,
 * box or not, and multimask, are decoded together a few at a time through the batched decoder (not for HQ-SAM
 * models, whose prompts are decoded one by one). Every answer is held until the call returns. */
psam_status psam_predict_batch(psam_session *session, const psam_prompt *prompts, size_t count,
                               psam_result **out_results);

/* ------------------------------------------------------------------------------------------------ */
/* Segment everything                                                                                */

/* The parameters of SAM's automatic mask generator (SamAutomaticMaskGenerator), with its defaults from
 * psam_generate_default_params. */
typedef struct psam_generate_params {
    int32_t points_per_side;                 /* grid points per side in the first crop layer (32), 1..1024 */
    int32_t points_per_batch;                /* prompts decoded together (64); memory only */
    float pred_iou_thresh;                   /* drop masks whose predicted IoU is not above this (0.88); 0: keep */
    float stability_score_thresh;            /* drop masks whose stability is below this (0.95); 0: keep */
    float stability_score_offset;            /* logit offset of the stability score (1.0) */
    float box_nms_thresh;                    /* box IoU of the suppression within a crop (0.7) */
    int32_t crop_n_layers;                   /* extra crop layers, 0..4 (0) */
    float crop_nms_thresh;                   /* box IoU of the suppression between crops (0.7) */
    float crop_overlap_ratio;                /* overlap of neighbouring crops (512/1500) */
    int32_t crop_n_points_downscale_factor;  /* points per side divided by this per crop layer (1) */
    int32_t min_mask_region_area;            /* remove holes and islands smaller than this (0: off) */
    int32_t hierarchical;                    /* 1: TinySAM's sparse-then-dense sampling (0) */
    float hierarchical_cover_offset;         /* hierarchical: skip dense points where a kept mask's logit
                                                exceeds the threshold by this (0: anywhere in the mask) */
    /* Called after each batch of prompts (may be NULL): crop index, crop count, points decoded in the crop
     * so far, points in the crop. Runs on the calling thread. Return 0 to go on; non-zero stops the
     * generation (checked after each batch, not during a crop's encoder pass): psam_generate returns
     * PSAM_ERR_CANCELLED and no result, and the session is left holding the last crop's image (prompts and
     * psam_get_image_size then refer to that crop: set an image again). */
    int32_t (*progress)(void *user, int32_t crop, int32_t crops, int32_t done, int32_t total);
    void *progress_user;
    int32_t hq_token_only;                   /* HQ-SAM models: 1 each point's mask is the HQ mask alone; 0 (default)
                                                HQ mask + SAM's best of three, as the official generator. HQ-SAM
                                                models decode one mask per point, with the plain decoder */
} psam_generate_params;

psam_generate_params psam_generate_default_params(void);

typedef struct psam_generated_mask {
    uint32_t *rle_counts;    /* the mask as uncompressed COCO RLE of the width x height image: column-major
                                runs, alternately 0s and 1s, starting with 0s; psam_rle_decode expands it */
    size_t rle_length;
    int64_t area;            /* pixels inside */
    int32_t bbox[4];         /* x, y, w, h, SAM's convention (w = last column - first column) */
    float predicted_iou;
    float stability_score;
    double point[2];         /* the point prompt (x, y) in image pixels */
    int32_t crop_box[4];     /* x, y, w, h of the crop it came from */
} psam_generated_mask;

typedef struct psam_generate_result {
    int32_t width, height;
    size_t num_masks;
    psam_generated_mask *masks;
    int64_t decoder_calls;   /* prompts decoded */
    double seconds;          /* wall time of the whole generation */
} psam_generate_result;

/* Automatic mask generation on an image (as psam_set_image takes it): each crop is encoded, a grid of
 * point prompts decoded, masks filtered, suppressed and cleaned up as SAM's generator does. Replaces the
 * session's current image. Allocates its result (free with psam_generate_result_free) and working memory
 * (not the session's arena). params may be NULL for the defaults; out-of-range parameters give
 * PSAM_ERR_INVALID_ARGUMENT. Cost: one encoder pass per crop and one decoder pass per point. */
psam_status psam_generate(psam_session *session, const uint8_t *pixels, int32_t width, int32_t height, size_t stride,
                          psam_pixel_format format, const psam_generate_params *params,
                          psam_generate_result **out_result);
void psam_generate_result_free(psam_generate_result *result);

/* Expands RLE counts into a row-major width x height mask of 0/1 bytes (capacity >= width * height).
 * PSAM_ERR_INVALID_ARGUMENT if the runs do not cover exactly width * height pixels. Thread-safe. */
psam_status psam_rle_decode(const uint32_t *counts, size_t length, int32_t width, int32_t height, uint8_t *out_mask,
                            size_t capacity);

#ifdef __cplusplus
}
#endif
#endif /* POCKETSAM_H */
