/* Drives the C ABI with bad arguments and checks every documented status (embeddings, many prompts per call and
 * a cancelled generation included); then two threads, each
 * with its own session over one shared model, must give the same masks as one thread; then a session
 * over a caller-provided arena, and library-owned results.
 * usage: abi-checks MODEL.psam IMAGE
 * Prints one line per failed check and a final "N passed, N failed". */
#include <pocketsam.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

static int passed, failed;
#define CHECK(cond, what)                                                   \
    do {                                                                    \
        if (cond) passed++;                                                 \
        else { failed++; fprintf(stderr, "FAILED: %s (line %d)\n", what, __LINE__); } \
    } while (0)
#define EXPECT(call, status) CHECK((call) == (status), #call " == " #status)

static const char *model_path, *image_path;
static psam_model *model;
static const psam_box kBox = {355, 300, 500, 448};

typedef struct { uint8_t *mask; size_t size; int32_t w, h; psam_status st; } job;

/* A progress callback that asks to stop at its second call. */
static int32_t stop_after_two(void *user, int32_t crop, int32_t crops, int32_t done, int32_t total) {
    (void)crop, (void)crops, (void)done, (void)total;
    return ++*(int *)user >= 2;
}

static void *segment(void *arg) {
    job *j = arg;
    psam_session_params p = psam_session_default_params();
    p.threads = 1;
    psam_session *s = NULL;
    j->st = psam_session_create(model, &p, &s, NULL, 0);
    if (j->st != PSAM_OK) return NULL;
    if ((j->st = psam_set_image_file(s, image_path)) == PSAM_OK) {
        psam_get_image_size(s, &j->w, &j->h);
        j->size = (size_t)j->w * (size_t)j->h;
        j->mask = malloc(j->size);
        psam_prompt pr = psam_prompt_default();
        pr.box = &kBox;
        int32_t n = 0;
        j->st = psam_predict(s, &pr, j->mask, j->size, NULL, NULL, 0, NULL, 0, &n);
    }
    psam_session_free(s);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.psam IMAGE\n", argv[0]);
        return 64;
    }
    model_path = argv[1];
    image_path = argv[2];
    char err[256];

    /* Versions and strings. */
    CHECK(psam_abi_version() == PSAM_ABI_VERSION, "abi version");
    CHECK(strcmp(psam_status_string(PSAM_ERR_PROMPT), "invalid prompt") == 0, "status string");
    CHECK(psam_status_string((psam_status)99) != NULL, "unknown status string");

    /* Model loading. */
    psam_model *m = (psam_model *)1;
    EXPECT(psam_model_load(NULL, &m, err, sizeof err), PSAM_ERR_INVALID_ARGUMENT);
    CHECK(m == NULL, "out_model cleared on failure");
    EXPECT(psam_model_load(model_path, NULL, err, sizeof err), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_model_load("/nonexistent.psam", &m, err, sizeof err), PSAM_ERR_IO);
    CHECK(strstr(err, "nonexistent") != NULL, "error buffer names the file");
    EXPECT(psam_model_load(image_path, &m, err, sizeof err), PSAM_ERR_MODEL);
    CHECK(strstr(err, "not a .psam") != NULL, "error buffer says why");
    EXPECT(psam_model_load(image_path, &m, NULL, 0), PSAM_ERR_MODEL);
    EXPECT(psam_model_load_from_memory(NULL, 10, &m, NULL, 0), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_model_load_from_memory("PSAM", 0, &m, NULL, 0), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_model_load_from_memory("garbage bytes", 13, &m, err, sizeof err), PSAM_ERR_MODEL);
    EXPECT(psam_model_load(model_path, &model, err, sizeof err), PSAM_OK);
    psam_model_info info;
    EXPECT(psam_model_get_info(NULL, &info), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_model_get_info(model, NULL), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_model_get_info(model, &info), PSAM_OK);
    CHECK(info.input_size == 256 && info.low_res_size == 256 && strcmp(info.variant, "litemedsam") == 0 && info.hq == 0,
          "model info");
    psam_model_free(NULL);

    /* The same model from memory (read into a 64-byte aligned buffer: used in place). */
    FILE *f = fopen(model_path, "rb");
    fseek(f, 0, SEEK_END);
    size_t fsize = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *bytes = aligned_alloc(64, (fsize + 63) / 64 * 64);
    CHECK(fread(bytes, 1, fsize, f) == fsize, "read model");
    fclose(f);
    psam_model *mem = NULL;
    EXPECT(psam_model_load_from_memory(bytes, fsize, &mem, err, sizeof err), PSAM_OK);
    EXPECT(psam_model_load_from_memory(bytes, fsize - 100, &m, err, sizeof err), PSAM_ERR_MODEL);

    /* Sessions. */
    psam_session *s = (psam_session *)1;
    psam_session_params p = psam_session_default_params();
    CHECK(p.threads == 1 && p.arena == NULL && p.arena_size == 0, "default params");
    EXPECT(psam_session_create(NULL, &p, &s, err, sizeof err), PSAM_ERR_INVALID_ARGUMENT);
    CHECK(s == NULL, "out_session cleared on failure");
    EXPECT(psam_session_create(model, &p, NULL, err, sizeof err), PSAM_ERR_INVALID_ARGUMENT);
    p.threads = 0;
    EXPECT(psam_session_create(model, &p, &s, err, sizeof err), PSAM_ERR_INVALID_ARGUMENT);
    p = psam_session_default_params();
    p.arena_size = 100;
    EXPECT(psam_session_create(model, &p, &s, err, sizeof err), PSAM_ERR_INVALID_ARGUMENT);
    size_t need = 0;
    EXPECT(psam_session_arena_size(NULL, &need), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_session_arena_size(model, NULL), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_session_arena_size(model, &need), PSAM_OK);
    CHECK(need > 0, "arena size");
    void *arena = aligned_alloc(64, (need + 63) / 64 * 64);
    p.arena = arena;
    p.arena_size = need - 1;
    EXPECT(psam_session_create(model, &p, &s, err, sizeof err), PSAM_ERR_BUFFER_TOO_SMALL);
    p.arena = (char *)arena + 8;
    p.arena_size = need - 64;
    EXPECT(psam_session_create(model, &p, &s, err, sizeof err), PSAM_ERR_BUFFER_TOO_SMALL);
    p.arena = arena;
    p.arena_size = need;
    p.threads = 2;
    EXPECT(psam_session_create(mem, &p, &s, err, sizeof err), PSAM_OK);
    CHECK(strcmp(psam_last_error(s), "") == 0, "no error yet");
    CHECK(strlen(psam_last_error(NULL)) > 0, "last_error of NULL");

    /* Images. */
    uint8_t px[12 * 10 * 3] = {0};
    int32_t w, h;
    EXPECT(psam_get_image_size(s, &w, &h), PSAM_ERR_NO_IMAGE);
    EXPECT(psam_set_image(NULL, px, 12, 10, 0, PSAM_PIXEL_RGB8), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_set_image(s, NULL, 12, 10, 0, PSAM_PIXEL_RGB8), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_set_image(s, px, 0, 10, 0, PSAM_PIXEL_RGB8), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_set_image(s, px, 12, -1, 0, PSAM_PIXEL_RGB8), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_set_image(s, px, 12, 10, 5, PSAM_PIXEL_RGB8), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_set_image(s, px, 12, 10, 0, (psam_pixel_format)7), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_set_image(s, px, 1, 1, 0, PSAM_PIXEL_RGB8), PSAM_ERR_IMAGE);
    EXPECT(psam_set_image(s, px, 20000, 1, 0, PSAM_PIXEL_GRAY8), PSAM_ERR_IMAGE);
    EXPECT(psam_set_image_file(s, NULL), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_set_image_file(s, "/nonexistent.png"), PSAM_ERR_IO);
    EXPECT(psam_set_image_file(s, model_path), PSAM_ERR_IMAGE);
    CHECK(strlen(psam_last_error(s)) > 0, "last_error after a failure");

    /* Prediction. */
    psam_prompt pr = psam_prompt_default();
    uint8_t small[4];
    int32_t n = 0;
    pr.box = &kBox;
    EXPECT(psam_predict(s, &pr, small, sizeof small, NULL, NULL, 0, NULL, 0, &n), PSAM_ERR_NO_IMAGE);
    EXPECT(psam_set_image_file(s, image_path), PSAM_OK);
    EXPECT(psam_get_image_size(s, &w, &h), PSAM_OK);
    size_t hw = (size_t)w * (size_t)h;
    uint8_t *mask = malloc(3 * hw);
    float iou[3], stab[3];
    float *low = malloc(3 * 256 * 256 * sizeof(float));
    EXPECT(psam_predict(NULL, &pr, mask, hw, NULL, NULL, 0, NULL, 0, &n), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_predict(s, NULL, mask, hw, NULL, NULL, 0, NULL, 0, &n), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_predict(s, &pr, NULL, hw, NULL, NULL, 0, NULL, 0, &n), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_predict(s, &pr, mask, hw, NULL, NULL, 0, NULL, 0, NULL), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_predict(s, &pr, mask, hw - 1, NULL, NULL, 0, NULL, 0, &n), PSAM_ERR_BUFFER_TOO_SMALL);
    EXPECT(psam_predict(s, &pr, mask, hw, iou, NULL, 0, NULL, 0, &n), PSAM_ERR_BUFFER_TOO_SMALL);
    EXPECT(psam_predict(s, &pr, mask, hw, NULL, NULL, 0, low, 10, &n), PSAM_ERR_BUFFER_TOO_SMALL);
    pr.multimask = 1;
    EXPECT(psam_predict(s, &pr, mask, hw, NULL, NULL, 0, NULL, 0, &n), PSAM_ERR_BUFFER_TOO_SMALL);
    pr.multimask = 2;
    EXPECT(psam_predict(s, &pr, mask, 3 * hw, NULL, NULL, 0, NULL, 0, &n), PSAM_ERR_INVALID_ARGUMENT);
    pr.multimask = 0;
    pr.hq_token_only = 2;
    EXPECT(psam_predict(s, &pr, mask, 3 * hw, NULL, NULL, 0, NULL, 0, &n), PSAM_ERR_INVALID_ARGUMENT);
    pr.hq_token_only = 0;
    psam_box bad = {500, 300, 355, 448};
    pr.box = &bad;
    EXPECT(psam_predict(s, &pr, mask, hw, NULL, NULL, 0, NULL, 0, &n), PSAM_ERR_PROMPT);
    psam_box nanbox = {NAN, 300, 355, 448};
    pr.box = &nanbox;
    EXPECT(psam_predict(s, &pr, mask, hw, NULL, NULL, 0, NULL, 0, &n), PSAM_ERR_PROMPT);
    pr.box = NULL;
    EXPECT(psam_predict(s, &pr, mask, hw, NULL, NULL, 0, NULL, 0, &n), PSAM_ERR_PROMPT);
    psam_point pt = {428, 372, 2};
    pr.points = &pt;
    pr.num_points = 1;
    EXPECT(psam_predict(s, &pr, mask, hw, NULL, NULL, 0, NULL, 0, &n), PSAM_ERR_PROMPT);
    pr.points = NULL;
    EXPECT(psam_predict(s, &pr, mask, hw, NULL, NULL, 0, NULL, 0, &n), PSAM_ERR_INVALID_ARGUMENT);
    pr.num_points = 0;
    pr.box = &kBox;
    float mi[10] = {0};
    pr.mask_input = mi;
    pr.mask_input_size = 10;
    EXPECT(psam_predict(s, &pr, mask, hw, NULL, NULL, 0, NULL, 0, &n), PSAM_ERR_PROMPT);
    pr.mask_input = NULL;
    EXPECT(psam_predict(s, &pr, mask, hw, NULL, NULL, 0, NULL, 0, &n), PSAM_ERR_INVALID_ARGUMENT);
    pr.mask_input_size = 0;
    EXPECT(psam_predict(s, &pr, mask, hw, iou, stab, 3, low, 3 * 256 * 256, &n), PSAM_OK);
    CHECK(n == 1 && iou[0] > 0.5f, "one mask with a good predicted IoU");
    size_t area = 0;
    for (size_t i = 0; i < hw; i++) area += mask[i];
    CHECK(area > 5000 && area < 20000, "mask area of the cell");
    /* Refinement with the low-res logits, and three masks. */
    pr.mask_input = low;
    pr.mask_input_size = 256 * 256;
    EXPECT(psam_predict(s, &pr, mask, hw, iou, stab, 1, NULL, 0, &n), PSAM_OK);
    pr.mask_input = NULL;
    pr.mask_input_size = 0;
    pr.multimask = 1;
    EXPECT(psam_predict(s, &pr, mask, 3 * hw, iou, stab, 3, NULL, 0, &n), PSAM_OK);
    CHECK(n == 3, "three masks");
    pr.multimask = 0;

    /* Library-owned results. */
    psam_result *r = (psam_result *)1;
    EXPECT(psam_predict_alloc(s, NULL, &r), PSAM_ERR_INVALID_ARGUMENT);
    CHECK(r == NULL, "out_result cleared on failure");
    EXPECT(psam_predict_alloc(s, &pr, NULL), PSAM_ERR_INVALID_ARGUMENT);
    EXPECT(psam_predict_alloc(s, &pr, &r), PSAM_OK);
    CHECK(r && r->num_masks == 1 && r->width == w && r->height == h && r->low_res_size == 256, "result shape");
    size_t a2 = 0;
    for (size_t i = 0; r && i < hw; i++) a2 += r->masks[i];
    psam_result_free(r);
    psam_result_free(NULL);

    /* Embeddings out and in: the same answer from a second session without encoding; foreign bytes refused. */
    {
        size_t esize = 0;
        EXPECT(psam_get_embedding(NULL, NULL, 0, &esize), PSAM_ERR_INVALID_ARGUMENT);
        EXPECT(psam_get_embedding(s, NULL, 0, NULL), PSAM_ERR_INVALID_ARGUMENT);
        EXPECT(psam_get_embedding(s, NULL, 10, &esize), PSAM_ERR_INVALID_ARGUMENT);
        EXPECT(psam_get_embedding(s, NULL, 0, &esize), PSAM_OK);
        CHECK(esize > 256 * 16 * 16 * 4, "embedding size (LiteMedSAM: 16x16x256 floats and a header)");
        uint8_t *emb = malloc(esize), tiny[16];
        EXPECT(psam_get_embedding(s, tiny, sizeof tiny, &esize), PSAM_ERR_BUFFER_TOO_SMALL);
        EXPECT(psam_get_embedding(s, emb, esize, &esize), PSAM_OK);
        psam_session *s2 = NULL;
        EXPECT(psam_session_create(model, NULL, &s2, err, sizeof err), PSAM_OK);
        EXPECT(psam_get_embedding(s2, emb, esize, &esize), PSAM_ERR_NO_IMAGE);
        EXPECT(psam_set_embedding(s2, NULL, esize), PSAM_ERR_INVALID_ARGUMENT);
        EXPECT(psam_set_embedding(s2, "garbage", 7), PSAM_ERR_EMBEDDING);
        CHECK(strstr(psam_last_error(s2), "embedding") != NULL, "set_embedding: the message says what");
        EXPECT(psam_set_embedding(s2, emb, esize - 1), PSAM_ERR_EMBEDDING);
        emb[esize / 2] ^= 1;
        EXPECT(psam_set_embedding(s2, emb, esize), PSAM_ERR_EMBEDDING);
        emb[esize / 2] ^= 1;
        EXPECT(psam_set_embedding(s2, emb, esize), PSAM_OK);
        psam_result *r1 = NULL, *r2 = NULL;
        EXPECT(psam_predict_alloc(s, &pr, &r1), PSAM_OK);
        EXPECT(psam_predict_alloc(s2, &pr, &r2), PSAM_OK);
        CHECK(r1 && r2 && memcmp(r1->masks, r2->masks, hw) == 0 && r1->iou[0] == r2->iou[0] &&
              memcmp(r1->low_res_logits, r2->low_res_logits, 256 * 256 * sizeof(float)) == 0,
              "set_embedding: the same answer as the session that encoded");

        /* Many prompts per call: each answer equals its own psam_predict_alloc bit for bit. */
        enum { NB = 6 };
        psam_box boxes[NB];
        psam_prompt prompts[NB];
        for (int i = 0; i < NB; i++) {
            boxes[i] = (psam_box){kBox.x0 - 10 * i, kBox.y0 - 5 * i, kBox.x1 + 3 * i, kBox.y1 + 4 * i};
            prompts[i] = psam_prompt_default();
            prompts[i].box = &boxes[i];
            prompts[i].multimask = i % 2;
        }
        psam_result *rs[NB];
        EXPECT(psam_predict_batch(s2, prompts, 0, rs), PSAM_ERR_INVALID_ARGUMENT);
        EXPECT(psam_predict_batch(s2, NULL, NB, rs), PSAM_ERR_INVALID_ARGUMENT);
        EXPECT(psam_predict_batch(s2, prompts, NB, NULL), PSAM_ERR_INVALID_ARGUMENT);
        psam_box inverted = {10, 10, 5, 5};
        prompts[3].box = &inverted;
        EXPECT(psam_predict_batch(s2, prompts, NB, rs), PSAM_ERR_PROMPT);
        CHECK(rs[0] == NULL && rs[5] == NULL && strstr(psam_last_error(s2), "prompt 3") != NULL,
              "predict_batch: nothing returned, the message names the prompt");
        prompts[3].box = &boxes[3];
        EXPECT(psam_predict_batch(s2, prompts, NB, rs), PSAM_OK);
        int same = 1;
        for (int i = 0; i < NB; i++) {
            psam_result *one = NULL;
            if (psam_predict_alloc(s, &prompts[i], &one) != PSAM_OK || !rs[i]) { same = 0; continue; }
            size_t nm = (size_t)one->num_masks;
            if (rs[i]->num_masks != one->num_masks || memcmp(rs[i]->masks, one->masks, nm * hw) != 0 ||
                memcmp(rs[i]->iou, one->iou, nm * sizeof(float)) != 0 ||
                memcmp(rs[i]->stability, one->stability, nm * sizeof(float)) != 0 ||
                memcmp(rs[i]->low_res_logits, one->low_res_logits, nm * 256 * 256 * sizeof(float)) != 0)
                same = 0;
            psam_result_free(one);
            psam_result_free(rs[i]);
        }
        CHECK(same, "predict_batch: every answer equals psam_predict_alloc's bit for bit");
        psam_result_free(r1);
        psam_result_free(r2);
        psam_session_free(s2);
        free(emb);
    }

    /* Segment everything on a small synthetic image (a bright disc on a gradient), every mask kept. */
    {
        enum { GW = 96, GH = 64 };
        static uint8_t px[GW * GH * 3];
        for (int y = 0; y < GH; y++)
            for (int x = 0; x < GW; x++) {
                int in = (x - 40) * (x - 40) + (y - 30) * (y - 30) < 300;
                for (int c = 0; c < 3; c++) px[(y * GW + x) * 3 + c] = (uint8_t)(in ? 230 : x + y + 20 * c);
            }
        psam_generate_params gp = psam_generate_default_params();
        CHECK(gp.points_per_side == 32 && gp.points_per_batch == 64 && fabsf(gp.pred_iou_thresh - 0.88f) < 1e-6f &&
              fabsf(gp.stability_score_thresh - 0.95f) < 1e-6f && gp.crop_n_layers == 0 && gp.min_mask_region_area == 0,
              "generator defaults are SamAutomaticMaskGenerator's");
        psam_generate_result *gr = (psam_generate_result *)1;
        EXPECT(psam_generate(s, NULL, GW, GH, 0, PSAM_PIXEL_RGB8, &gp, &gr), PSAM_ERR_INVALID_ARGUMENT);
        CHECK(gr == NULL, "generate: out_result cleared on failure");
        EXPECT(psam_generate(s, px, GW, GH, 0, PSAM_PIXEL_RGB8, &gp, NULL), PSAM_ERR_INVALID_ARGUMENT);
        EXPECT(psam_generate(s, px, GW, GH, 2, PSAM_PIXEL_RGB8, &gp, &gr), PSAM_ERR_INVALID_ARGUMENT);
        EXPECT(psam_generate(s, px, GW, GH, 0, (psam_pixel_format)7, &gp, &gr), PSAM_ERR_INVALID_ARGUMENT);
        gp.points_per_side = 0;
        EXPECT(psam_generate(s, px, GW, GH, 0, PSAM_PIXEL_RGB8, &gp, &gr), PSAM_ERR_INVALID_ARGUMENT);
        CHECK(strstr(psam_last_error(s), "points per side") != NULL, "generate: the message names the bad option");
        gp.points_per_side = 4;
        gp.box_nms_thresh = NAN;
        EXPECT(psam_generate(s, px, GW, GH, 0, PSAM_PIXEL_RGB8, &gp, &gr), PSAM_ERR_INVALID_ARGUMENT);
        gp.box_nms_thresh = 1.0f;
        gp.pred_iou_thresh = 0;
        gp.stability_score_thresh = 0;
        EXPECT(psam_generate(s, px, GW, GH, 0, PSAM_PIXEL_RGB8, &gp, &gr), PSAM_OK);
        CHECK(gr && gr->width == GW && gr->height == GH && gr->decoder_calls == 16 && gr->num_masks == 48,
              "generate: 16 prompts, 3 masks each (no filter, no suppression)");
        static uint8_t m[GW * GH];
        int rle_ok = 1;
        for (size_t i = 0; gr && i < gr->num_masks; i++) {
            const psam_generated_mask *g = &gr->masks[i];
            if (psam_rle_decode(g->rle_counts, g->rle_length, GW, GH, m, sizeof m) != PSAM_OK) { rle_ok = 0; break; }
            int64_t a = 0;
            for (int j = 0; j < GW * GH; j++) a += m[j];
            if (a != g->area || g->crop_box[2] != GW || g->crop_box[3] != GH) rle_ok = 0;
            if (g->point[0] < 0 || g->point[0] > GW || g->point[1] < 0 || g->point[1] > GH) rle_ok = 0;
        }
        CHECK(rle_ok, "generate: every mask's RLE decodes to its area, crop box and point in the image");
        EXPECT(psam_rle_decode(gr->masks[0].rle_counts, gr->masks[0].rle_length, GW, GH, m, 10), PSAM_ERR_INVALID_ARGUMENT);
        uint32_t bad[2] = {5, 7};
        EXPECT(psam_rle_decode(bad, 2, GW, GH, m, sizeof m), PSAM_ERR_INVALID_ARGUMENT);
        psam_generate_result_free(gr);
        psam_generate_result_free(NULL);
        /* Cancelled by the progress callback after its second call. */
        int calls = 0;
        gp.points_per_batch = 4;
        gp.progress = stop_after_two;
        gp.progress_user = &calls;
        gr = (psam_generate_result *)1;
        EXPECT(psam_generate(s, px, GW, GH, 0, PSAM_PIXEL_RGB8, &gp, &gr), PSAM_ERR_CANCELLED);
        CHECK(gr == NULL && calls == 2 && strcmp(psam_status_string(PSAM_ERR_CANCELLED), "cancelled") == 0,
              "generate: cancelled at the callback's request, no result");
    }

    /* One thread, then two threads with their own sessions over the shared model. */
    job one = {0}, two[2] = {{0}, {0}};
    segment(&one);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, segment, &two[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    CHECK(one.st == PSAM_OK && two[0].st == PSAM_OK && two[1].st == PSAM_OK, "threads ran");
    CHECK(one.size == hw && two[0].size == hw && two[1].size == hw, "thread mask sizes");
    CHECK(one.mask && two[0].mask && two[1].mask && memcmp(one.mask, two[0].mask, hw) == 0 &&
          memcmp(one.mask, two[1].mask, hw) == 0, "two threads give the same masks as one");
    size_t a1 = 0;
    for (size_t i = 0; one.mask && i < hw; i++) a1 += one.mask[i];
    CHECK(a1 == a2 && a1 == area, "sessions agree (caller arena, own arena, library-owned results)");
    free(one.mask);
    free(two[0].mask);
    free(two[1].mask);

    free(mask);
    free(low);
    psam_session_free(s);
    psam_session_free(NULL);
    free(arena);
    psam_model_free(mem);
    free(bytes);
    psam_model_free(model);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
