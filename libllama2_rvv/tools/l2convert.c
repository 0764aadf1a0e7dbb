/* l2convert: any checkpoint libllama2_rvv opens -> the packed format (FORMAT.md).
 *   l2convert IN OUT --type f32|f16|q8 [--group N] [--method absmax|gptq] [--calib FILE]
 *   l2convert IN OUT --mode f32|f16|q8|fast|balanced|faithful [--calib FILE] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "asan_options.h"
#include "llama2_rvv.h"

static void usage(void) {
    fprintf(stderr, "Usage: l2convert IN OUT --type f32|f16|q8 [--group N] [--method absmax|gptq]\n"
                    "       l2convert IN OUT --mode f32|f16|q8|fast|balanced|faithful\n"
                    "  IN: a llama2.c v0/v1/v2 checkpoint or a packed file; OUT: the packed file\n"
                    "  --group N: q8 group size (default 32; any size, rows need not divide)\n"
                    "  --method: q8 rounding, absmax (default) or gptq (calibrated, slower)\n"
                    "  --mode: a named mode (FORMAT.md, \"Modes\"); fast, balanced and faithful use gptq\n"
                    "  --calib FILE: gptq's calibration tokens, int32 little-endian ids (default:\n"
                    "                8192 tokens the model samples itself)\n");
    exit(EXIT_FAILURE);
}

/* The int32 token ids of a --calib file into *ids (malloc'd), or exits with a message. */
static int32_t read_calib(const char *path, int32_t **ids) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "l2convert: cannot open %s\n", path);
        exit(EXIT_FAILURE);
    }
    size_t cap = 4096, n = 0;
    int32_t *buf = malloc(cap * sizeof *buf);
    while (buf) {
        if (n == cap) {
            int32_t *more = cap < (1u << 24) ? realloc(buf, 2 * cap * sizeof *buf) : NULL;
            if (!more) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = more;
            cap *= 2;
        }
        size_t got = fread(buf + n, sizeof *buf, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f) || (buf && n == 0);
    long tail = ftell(f);
    fclose(f);
    if (!buf || bad || tail < 0 || (size_t)tail != n * sizeof(int32_t)) {
        fprintf(stderr, "l2convert: %s is not a file of int32 token ids (up to 2^24 of them)\n", path);
        free(buf);
        exit(EXIT_FAILURE);
    }
    *ids = buf;
    return (int32_t)n;
}

int main(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *type_name = NULL, *mode = NULL, *method = NULL;
    const char *calib = NULL;
    int group = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--type") && i + 1 < argc) type_name = argv[++i];
        else if (!strcmp(argv[i], "--mode") && i + 1 < argc) mode = argv[++i];
        else if (!strcmp(argv[i], "--method") && i + 1 < argc) method = argv[++i];
        else if (!strcmp(argv[i], "--calib") && i + 1 < argc) calib = argv[++i];
        else if (!strcmp(argv[i], "--group") && i + 1 < argc) {
            char *end;
            long g = strtol(argv[++i], &end, 10);
            if (*end || g < 1 || g > 65536) {
                fprintf(stderr, "l2convert: --group needs a whole number from 1 to 65536\n");
                return EXIT_FAILURE;
            }
            group = (int)g;
        } else if (argv[i][0] == '-') usage();
        else if (!in) in = argv[i];
        else if (!out) out = argv[i];
        else usage();
    }
    if (!in || !out || !type_name == !mode || (mode && (group || method))) usage();
    l2_error err = {{0}};
    l2_convert_params params = {0};
    if (mode && l2_convert_mode(mode, &params, &err) != L2_OK) {
        fprintf(stderr, "l2convert: %s\n", err.message);
        return EXIT_FAILURE;
    }
    if (type_name) {
        params.type = !strcmp(type_name, "f32") ? L2_TYPE_F32 : !strcmp(type_name, "f16") ? L2_TYPE_F16
                    : !strcmp(type_name, "q8") ? L2_TYPE_Q8 : -1;
        if (params.type < 0) usage();
        params.group_size = group;
        if (method && strcmp(method, "absmax") && strcmp(method, "gptq")) usage();
        params.method = method && !strcmp(method, "gptq") ? L2_METHOD_GPTQ : L2_METHOD_ABSMAX;
    }
    if (group && params.type != L2_TYPE_Q8) {
        fprintf(stderr, "l2convert: --group applies to q8 only\n");
        return EXIT_FAILURE;
    }
    if (calib && params.method != L2_METHOD_GPTQ) {
        fprintf(stderr, "l2convert: --calib applies to the gptq method only\n");
        return EXIT_FAILURE;
    }
    int32_t *calib_ids = NULL;
    if (calib) params.n_calib = read_calib(calib, &calib_ids);
    params.calib = calib_ids;

    l2_model *model;
    if (l2_model_open(in, &model, &err) != L2_OK) {
        fprintf(stderr, "l2convert: cannot load %s\n", err.message);
        return EXIT_FAILURE;
    }
    l2_model_info info;
    l2_model_info_get(model, &info);
    int32_t max = info.n_tensors + 1, n = 0;  /* an f16 lookup table beside the classifier: one more */
    l2_tensor_report *reports = calloc((size_t)max, sizeof *reports);
    if (!reports || l2_convert_with(model, out, &params, reports, max, &n, &err) != L2_OK) {
        fprintf(stderr, "l2convert: %s\n", reports ? err.message : "out of memory");
        free(reports);
        free(calib_ids);
        l2_model_free(model);
        return EXIT_FAILURE;
    }
    printf("%-16s %5s %12s %10s %12s %12s\n", "tensor", "layer", "shape", "bytes", "max|w|",
           "max error");
    unsigned long long total = 0;
    for (int32_t i = 0; i < n; i++) {
        const l2_tensor_report *r = &reports[i];
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%d", r->rows, r->cols);
        printf("%-16s %5d %12s %10llu %12.6g %12.6g\n", r->name, r->layer, shape,
               (unsigned long long)r->bytes, r->max_abs_value, r->max_abs_error);
        total += r->bytes;
    }
    l2_model *written;
    if (l2_model_open(out, &written, &err) != L2_OK) {
        fprintf(stderr, "l2convert: the written file does not load back: %s\n", err.message);
        free(reports);
        free(calib_ids);
        l2_model_free(model);
        return EXIT_FAILURE;
    }
    l2_model_info_get(written, &info);
    l2_storage_info si;
    l2_model_storage_get(written, &si);
    if (info.group_size) printf("wrote %s: q8, group size %d", out, info.group_size);
    else printf("wrote %s: %s", out, info.weight_type == L2_TYPE_F16 ? "f16" : "f32");
    printf(", %llu bytes of tensors, %llu bytes in all, %llu bytes read per token", total,
           (unsigned long long)info.file_bytes, (unsigned long long)info.weight_bytes_per_token);
    if (info.group_size)
        printf("; %s%s, q8 weight error %.3g (sum |w-q|^2 / sum |w|^2)", si.method ? "gptq" : "absmax",
               si.embedding_type == L2_TYPE_F16 ? ", f16 lookup table" : "", si.weight_error);
    if (si.method == L2_METHOD_GPTQ)
        printf(", output error %.3g on %d calibration tokens", si.output_error, si.calib_tokens);
    printf("\n");
    free(calib_ids);
    l2_model_free(written);
    l2_model_free(model);
    free(reports);
    return 0;
}
