/* l2convert: any checkpoint libllama2_rvv opens -> the packed format (FORMAT.md).
 *   l2convert IN OUT --type f32|f16|q8 [--group N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "asan_options.h"
#include "llama2_rvv.h"

static void usage(void) {
    fprintf(stderr, "Usage: l2convert IN OUT --type f32|f16|q8 [--group N]\n"
                    "  IN: a llama2.c v0/v1/v2 checkpoint or a packed file; OUT: the packed file\n"
                    "  --group N: q8 group size (default 32; any size, rows need not divide)\n");
    exit(EXIT_FAILURE);
}

int main(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *type_name = NULL;
    int group = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--type") && i + 1 < argc) type_name = argv[++i];
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
    if (!in || !out || !type_name) usage();
    int type = !strcmp(type_name, "f32") ? L2_TYPE_F32 : !strcmp(type_name, "f16") ? L2_TYPE_F16
             : !strcmp(type_name, "q8") ? L2_TYPE_Q8 : -1;
    if (type < 0) usage();
    if (group && type != L2_TYPE_Q8) {
        fprintf(stderr, "l2convert: --group applies to q8 only\n");
        return EXIT_FAILURE;
    }

    l2_error err = {{0}};
    l2_model *model;
    if (l2_model_open(in, &model, &err) != L2_OK) {
        fprintf(stderr, "l2convert: cannot load %s\n", err.message);
        return EXIT_FAILURE;
    }
    l2_model_info info;
    l2_model_info_get(model, &info);
    int32_t max = info.n_tensors, n = 0;
    l2_tensor_report *reports = calloc((size_t)max, sizeof *reports);
    if (!reports || l2_convert(model, out, type, group, reports, max, &n, &err) != L2_OK) {
        fprintf(stderr, "l2convert: %s\n", reports ? err.message : "out of memory");
        free(reports);
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
        l2_model_free(model);
        return EXIT_FAILURE;
    }
    l2_model_info_get(written, &info);
    if (info.group_size) printf("wrote %s: q8, group size %d", out, info.group_size);
    else printf("wrote %s: %s", out, type_name);
    printf(", %llu bytes of tensors, %llu bytes in all, %llu bytes read per token\n", total,
           (unsigned long long)info.file_bytes, (unsigned long long)info.weight_bytes_per_token);
    l2_model_free(written);
    l2_model_free(model);
    free(reports);
    return 0;
}
