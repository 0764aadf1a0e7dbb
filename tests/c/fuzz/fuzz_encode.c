/* libFuzzer target: BPE encode and decode with the real Llama 2 vocabulary.
 *
 * LLVMFuzzerInitialize opens tokenizer.bin (32000 pieces) once: from $L2_TOKENIZER, else
 * ../shared/models/tokenizer.bin relative to the working directory (the repository root),
 * else the same path relative to the executable (build/fuzz/ -> ../../../shared/models).
 * Each input is taken as a NUL-terminated string (bytes after a NUL are ignored), encoded
 * with the BOS/EOS flags picked by the input length's low bits, and decoded.
 *
 * Oracles: every id in range, count within strlen + 3, EOS last when asked, and - with BOS,
 * for text without '<' (whose pieces "<s>", "<0x41>" ... could be re-formed by merges and
 * decode differently) - decoding the ids after BOS gives back exactly the input bytes:
 * every code point is a piece or falls back to byte tokens, and merges only concatenate. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llama2_rvv.h"

#define MAX_TEXT (8 * 1024)  /* encode is O(n^2) in tokens, as in llama2.c */
#define VOCAB 32000

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static l2_tokenizer *tok;

static int try_open(const char *path) {
    l2_error err;
    if (l2_tokenizer_open(path, VOCAB, &tok, &err) == L2_OK) return 1;
    fprintf(stderr, "fuzz_encode: %s\n", err.message);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *env = getenv("L2_TOKENIZER");
    if (env && *env) {
        if (try_open(env)) return 0;
        exit(1);
    }
    if (try_open("../shared/models/tokenizer.bin")) return 0;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 64);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            strcpy(slash, "/../../../shared/models/tokenizer.bin");
            if (try_open(exe)) return 0;
        }
    }
    fprintf(stderr, "fuzz_encode: no tokenizer.bin: set L2_TOKENIZER\n");
    exit(1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > MAX_TEXT) return -1;
    char *text = malloc(size + 1);
    if (!text) abort();
    memcpy(text, data, size);
    text[size] = '\0';
    size_t len = strlen(text);
    int32_t bos = (int32_t)(size & 1) ^ 1, eos = (int32_t)(size >> 1) & 1;

    int32_t cap = (int32_t)len + 3, n = -1;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    char *back = malloc(len + 1);
    if (!ids || !back) abort();
    l2_error err;
    if (l2_tokenizer_encode(tok, text, bos, eos, ids, cap, &n, &err) != L2_OK) {
        fprintf(stderr, "encode failed: %s\n", err.message);
        __builtin_trap();
    }
    if (n < bos + eos || n > cap || (eos && ids[n - 1] != 2) || (bos && ids[0] != 1))
        __builtin_trap();

    size_t blen = 0;
    int fits = 1;
    for (int32_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= VOCAB) __builtin_trap();
        if ((bos && i == 0) || (eos && i == n - 1)) continue;
        const char *piece;
        size_t plen;
        if (l2_tokenizer_decode(tok, i ? ids[i - 1] : 1, ids[i], &piece, &plen, NULL) != L2_OK)
            __builtin_trap();
        if (blen + plen > len) fits = 0;
        else memcpy(back + blen, piece, plen);
        blen += plen;
    }
    if (bos && !memchr(text, '<', len) && (!fits || blen != len || memcmp(back, text, len) != 0)) {
        fprintf(stderr, "decode(encode(text)) != text (%zu vs %zu bytes)\n", blen, len);
        __builtin_trap();
    }
    free(back);
    free(ids);
    free(text);
    return 0;
}
