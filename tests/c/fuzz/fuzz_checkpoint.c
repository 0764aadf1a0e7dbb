/* libFuzzer target: any bytes as a checkpoint file (llama2.c v0/v1/v2 or packed L2RV).
 *
 * The input is written to an in-memory file (memfd, opened by path through /proc/self/fd so
 * the library maps it exactly as it maps a file on disk) and opened with l2_model_open. A
 * model that opens gets a 4-position session with an f16 KV cache and evaluates tokens 1 and
 * vocab_size-1 (then one more position), and is converted with l2_convert to a packed file
 * of a type picked from the input size; the converted file must open again and, for an f32
 * source converted to f32, must give bit-identical logits.
 *
 * Inputs above 64 KB are rejected so every model stays tiny and exec/s high.
 * Build: make fuzz; run: build/fuzz/fuzz_checkpoint CORPUS_DIR (see scripts/fuzz). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "llama2_rvv.h"
#include "memfile.h"

#define MAX_INPUT (64 * 1024)
#define MAX_CONVERT (1024 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_packed.c includes this file with L2FUZZ_NO_ENTRY defined and calls fuzz_model. */
static char out_path[256];

static void setup(void) {
    if (out_path[0]) return;
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(out_path, sizeof out_path, "%s/l2fuzz_checkpoint-%ld.bin", dir, (long)getpid());
}

/* Reads every logit so ASan sees the whole buffer; returns a checksum. */
static float touch_logits(const float *logits, int32_t n) {
    volatile float sum = 0.0f;
    for (int32_t i = 0; i < n; i++) sum += logits[i];
    return sum;
}

/* Evaluates tokens 1 and vocab-1 (and 2 at the next position); copies the logits of the
 * first evaluation into `logits` (vocab entries) when given. Returns the first status. */
static l2_status run_session(const l2_model *model, int32_t kv_type, float *logits) {
    l2_model_info info;
    l2_model_info_get(model, &info);
    int32_t ctx = info.seq_len < 4 ? info.seq_len : 4;
    l2_session_params params = {ctx, kv_type, NULL};
    l2_session *s = NULL;
    l2_error err;
    l2_status st = l2_session_new(model, &params, &s, &err);
    if (st != L2_OK) {
        if (s) __builtin_trap();  /* a failed constructor must not hand out an object */
        return st;
    }
    int32_t toks[2] = {1, info.vocab_size - 1};
    int32_t n = ctx < 2 ? ctx : 2;
    st = l2_session_eval(s, toks, n, &err);
    if (st == L2_OK) {
        if (l2_session_pos(s) != n) __builtin_trap();
        touch_logits(l2_session_logits(s), info.vocab_size);
        if (logits) memcpy(logits, l2_session_logits(s), (size_t)info.vocab_size * sizeof *logits);
        /* fill the context; one more position must be refused, not written */
        int32_t more = 2;
        for (int i = 0; i < 4 && l2_session_pos(s) < ctx; i++)
            (void)l2_session_eval(s, &more, 1, &err);
        if (l2_session_pos(s) == ctx && l2_session_eval(s, &more, 1, &err) != L2_ERR_RANGE)
            __builtin_trap();
    }
    l2_session_free(s);
    return st;
}

/* Opens data[0..size) as a model file and exercises it; -1 rejects the input. */
static int fuzz_model(const uint8_t *data, size_t size, int32_t kv_type) {
    if (size > MAX_INPUT) return -1;  /* keep models tiny: not added to the corpus */
    setup();
    write_memfile(data, size);

    l2_model *model = NULL;
    l2_error err;
    if (l2_model_open(mem_path, &model, &err) != L2_OK) {
        if (model) __builtin_trap();
        if (!memchr(err.message, '\0', sizeof err.message) || err.message[0] == '\0')
            __builtin_trap();  /* every failure explains itself */
        return 0;
    }
    l2_model_info info;
    l2_model_info_get(model, &info);
    if (info.vocab_size < 3 || info.dim <= 0 || info.file_bytes != size) __builtin_trap();

    float *ref = malloc((size_t)info.vocab_size * sizeof *ref);
    if (!ref) die("malloc");
    l2_status src_st = run_session(model, kv_type, ref);

    if (size < MAX_CONVERT) {
        static const int32_t types[3] = {L2_TYPE_F32, L2_TYPE_F16, L2_TYPE_Q8};
        static const int32_t groups[5] = {0, 1, 5, 8, 33};
        int32_t type = types[size % 3], group = type == L2_TYPE_Q8 ? groups[(size / 3) % 5] : 0;
        l2_tensor_report reports[8];
        int32_t n_reports = -1;
        l2_status st = l2_convert(model, out_path, type, group, reports, 8, &n_reports, &err);
        char tmp[sizeof out_path + 8];
        snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
        if (access(tmp, F_OK) == 0) __builtin_trap();  /* no temporary left behind */
        if (st == L2_OK) {
            if (n_reports != 2 + 9 * info.n_layers + !info.shared_classifier) __builtin_trap();
            l2_model *conv = NULL;
            if (l2_model_open(out_path, &conv, &err) != L2_OK) {
                fprintf(stderr, "converted file does not load back: %s\n", err.message);
                __builtin_trap();
            }
            l2_model_info ci;
            l2_model_info_get(conv, &ci);
            if (ci.dim != info.dim || ci.hidden_dim != info.hidden_dim ||
                ci.n_layers != info.n_layers || ci.n_heads != info.n_heads ||
                ci.n_kv_heads != info.n_kv_heads || ci.vocab_size != info.vocab_size ||
                ci.seq_len != info.seq_len || ci.shared_classifier != info.shared_classifier ||
                ci.file_kind != L2_FILE_PACKED || ci.weight_type != type)
                __builtin_trap();
            float *got = malloc((size_t)info.vocab_size * sizeof *got);
            if (!got) die("malloc");
            l2_status conv_st = run_session(conv, kv_type, got);
            /* f32 -> f32 is a copy: the forward pass must not change by a single bit */
            if (info.weight_type == L2_TYPE_F32 && type == L2_TYPE_F32 && src_st == L2_OK &&
                (conv_st != L2_OK ||
                 memcmp(ref, got, (size_t)info.vocab_size * sizeof *got) != 0)) {
                fprintf(stderr, "f32 conversion changed the logits\n");
                __builtin_trap();
            }
            free(got);
            l2_model_free(conv);
            unlink(out_path);
        } else if (st != L2_ERR_NUMERIC && st != L2_ERR_NOMEM &&
                   !(st == L2_ERR_RANGE && type == L2_TYPE_F16)) {  /* |w| > 65504 */
            fprintf(stderr, "l2_convert failed unexpectedly (%d): %s\n", (int)st, err.message);
            __builtin_trap();
        }
    }
    free(ref);
    l2_model_free(model);
    return 0;
}

#ifndef L2FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzz_model(data, size, L2_TYPE_F16);
}
#endif
