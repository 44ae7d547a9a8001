/* Segments an image with a box through the C ABI and writes the mask as a binary PGM.
 * usage: c-host MODEL.psam IMAGE x0 y0 x1 y1 OUT.pgm */
#include <pocketsam.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s MODEL.psam IMAGE x0 y0 x1 y1 OUT.pgm\n", argv[0]);
        return 64;
    }
    if (psam_abi_version() != PSAM_ABI_VERSION) {
        fprintf(stderr, "library ABI %d, header ABI %d\n", psam_abi_version(), PSAM_ABI_VERSION);
        return 1;
    }
    char err[512];
    psam_model *model = NULL;
    psam_status st = psam_model_load(argv[1], &model, err, sizeof err);
    if (st != PSAM_OK) {
        fprintf(stderr, "load: %s: %s\n", psam_status_string(st), err);
        return 1;
    }
    psam_session_params params = psam_session_default_params();
    params.threads = 2;
    psam_session *session = NULL;
    st = psam_session_create(model, &params, &session, err, sizeof err);
    if (st != PSAM_OK) {
        fprintf(stderr, "session: %s: %s\n", psam_status_string(st), err);
        psam_model_free(model);
        return 1;
    }
    int rc = 1;
    uint8_t *mask = NULL;
    void *embedding = NULL;
    psam_session *second = NULL;
    psam_result *results[3] = {NULL, NULL, NULL};
    if ((st = psam_set_image_file(session, argv[2])) != PSAM_OK) {
        fprintf(stderr, "image: %s: %s\n", psam_status_string(st), psam_last_error(session));
        goto done;
    }
    int32_t w = 0, h = 0;
    psam_get_image_size(session, &w, &h);
    psam_box box = {strtof(argv[3], NULL), strtof(argv[4], NULL), strtof(argv[5], NULL), strtof(argv[6], NULL)};
    psam_prompt prompt = psam_prompt_default();
    prompt.box = &box;
    mask = malloc((size_t)w * (size_t)h);
    float iou = 0, stability = 0;
    int32_t n = 0;
    st = psam_predict(session, &prompt, mask, (size_t)w * (size_t)h, &iou, &stability, 1, NULL, 0, &n);
    if (st != PSAM_OK) {
        fprintf(stderr, "predict: %s: %s\n", psam_status_string(st), psam_last_error(session));
        goto done;
    }
    FILE *f = fopen(argv[7], "wb");
    if (!f) {
        perror(argv[7]);
        goto done;
    }
    fprintf(f, "P5\n%d %d\n255\n", w, h);
    size_t area = 0;
    for (size_t i = 0; i < (size_t)w * (size_t)h; i++) {
        area += mask[i];
        mask[i] = mask[i] ? 255 : 0;
    }
    fwrite(mask, 1, (size_t)w * (size_t)h, f);
    fclose(f);
    printf("mask: %zu pixels, predicted IoU %.4f, stability %.4f\n", area, iou, stability);

    /* The image's embedding into a second session (as a cache or another machine would), then the box and two
     * variants in one call: the first answer must be the mask above. */
    size_t esize = 0;
    if ((st = psam_get_embedding(session, NULL, 0, &esize)) != PSAM_OK || !(embedding = malloc(esize)) ||
        (st = psam_get_embedding(session, embedding, esize, &esize)) != PSAM_OK) {
        fprintf(stderr, "get_embedding: %s: %s\n", psam_status_string(st), psam_last_error(session));
        goto done;
    }
    if ((st = psam_session_create(model, &params, &second, err, sizeof err)) != PSAM_OK ||
        (st = psam_set_embedding(second, embedding, esize)) != PSAM_OK) {
        fprintf(stderr, "set_embedding: %s: %s\n", psam_status_string(st), second ? psam_last_error(second) : err);
        goto done;
    }
    psam_box boxes[3] = {box, {box.x0, box.y0, box.x1 + 10, box.y1}, {box.x0 + 5, box.y0 + 5, box.x1, box.y1}};
    psam_prompt prompts[3];
    for (int i = 0; i < 3; i++) {
        prompts[i] = psam_prompt_default();
        prompts[i].box = &boxes[i];
    }
    if ((st = psam_predict_batch(second, prompts, 3, results)) != PSAM_OK) {
        fprintf(stderr, "predict_batch: %s: %s\n", psam_status_string(st), psam_last_error(second));
        goto done;
    }
    for (size_t i = 0; i < (size_t)w * (size_t)h; i++) {
        if ((results[0]->masks[i] ? 255 : 0) != mask[i]) {
            fprintf(stderr, "the embedding's session answered differently at pixel %zu\n", i);
            goto done;
        }
    }
    printf("embedding: %zu bytes; 3 boxes in one call, the first equal to the mask above\n", esize);
    rc = 0;
done:
    for (int i = 0; i < 3; i++) psam_result_free(results[i]);
    psam_session_free(second);
    free(embedding);
    free(mask);
    psam_session_free(session);
    psam_model_free(model);
    return rc;
}
