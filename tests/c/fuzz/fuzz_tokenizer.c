/* libFuzzer target: the tokenizer.bin reader, BPE encode and decode on fuzzed vocabularies.
 *
 *     input[0]      vocab_size - 3 (so vocab_size is 3..258)
 *     input[1..]    the tokenizer file
 *
 * The file is written to an in-memory file (memfd, opened through /proc/self/fd) and opened
 * with that vocab_size. If it opens: a few fixed strings (ASCII, multi-byte UTF-8, invalid
 * UTF-8, and one made of the vocabulary's own pieces) are encoded with and without BOS/EOS,
 * every id must be in range and the count within strlen + 3; then every id is decoded after
 * BOS and after its predecessor, and out-of-range ids must be refused. */
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static void check_encode(const l2_tokenizer *tok, const char *text, int32_t bos, int32_t eos) {
    size_t len = strlen(text);
    int32_t cap = (int32_t)len + 3;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    if (!ids) die("malloc");
    int32_t n = -1, vocab = l2_tokenizer_vocab_size(tok);
    l2_error err;
    l2_status st = l2_tokenizer_encode(tok, text, bos, eos, ids, cap, &n, &err);
    if (st != L2_OK) {
        fprintf(stderr, "encode failed: %s\n", err.message);
        __builtin_trap();
    }
    /* (BOS itself may merge with what follows when the vocabulary has such a piece, as in
     * llama2.c; EOS is appended after the merges) */
    if (n < 0 || n > cap || (bos && n < 1) || (eos && (n < 1 || ids[n - 1] != 2)))
        __builtin_trap();
    if (len > 0 && n < 1 + eos) __builtin_trap();  /* the dummy prefix at least */
    volatile size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= vocab) __builtin_trap();
        const char *piece;
        size_t plen;
        if (l2_tokenizer_decode(tok, i ? ids[i - 1] : 1, ids[i], &piece, &plen, NULL) != L2_OK)
            __builtin_trap();
        for (size_t j = 0; j < plen; j++) total += (unsigned char)piece[j];
    }
    /* a buffer one id too small must be refused */
    if (l2_tokenizer_encode(tok, text, bos, eos, ids, cap - 1, &n, &err) != L2_ERR_RANGE)
        __builtin_trap();
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > MAX_INPUT) return -1;
    int32_t vocab = 3 + data[0];
    write_memfile(data + 1, size - 1);
    if (size == 1) return 0;  /* an empty file: l2_map_file refuses it, nothing to learn */

    l2_tokenizer *tok = NULL;
    l2_error err;
    if (l2_tokenizer_open(mem_path, vocab, &tok, &err) != L2_OK) {
        if (tok || err.message[0] == '\0') __builtin_trap();
        return 0;
    }
    if (l2_tokenizer_vocab_size(tok) != vocab || l2_tokenizer_pieces_in_file(tok) < vocab)
        __builtin_trap();

    static const char *const texts[] = {
        "", "a", " ", "  ", "Once upon a time, there was a little girl named Lily.",
        "h\xc3\xa9llo w\xc3\xb6rld \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x99\x82",
        "\xff\xfe\x80 bad \xc3 utf8 \xf0\x9f\x99 \xe2\x82", "<s></s><unk><0x41>",
        "\x01\x02\t\n\r\x7f",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        check_encode(tok, texts[i], 1, 0);
        check_encode(tok, texts[i], (int32_t)(i & 1), 1);
    }
    /* a text made of the vocabulary's pieces, so merges happen whatever the pieces are */
    char text[512];
    size_t tlen = 0;
    for (int32_t id = 0; id < vocab && tlen < sizeof text - 1; id++) {
        const char *piece;
        size_t plen;
        if (l2_tokenizer_decode(tok, 0, id, &piece, &plen, NULL) != L2_OK) __builtin_trap();
        for (size_t j = 0; j < plen && tlen < sizeof text - 1; j++)
            if (piece[j] != '\0') text[tlen++] = piece[j];
    }
    text[tlen] = '\0';
    check_encode(tok, text, 1, 1);

    /* decode every id after BOS and after its predecessor; refuse ids out of range */
    volatile size_t total = 0;
    for (int32_t id = 0; id < vocab; id++) {
        for (int k = 0; k < 2; k++) {
            const char *piece = NULL;
            size_t plen = 0;
            int32_t prev = k ? (id ? id - 1 : 0) : 1;
            if (l2_tokenizer_decode(tok, prev, id, &piece, &plen, NULL) != L2_OK || (plen && !piece))
                __builtin_trap();
            for (size_t j = 0; j < plen; j++) total += (unsigned char)piece[j];
        }
    }
    const char *piece;
    size_t plen;
    if (l2_tokenizer_decode(tok, 1, vocab, &piece, &plen, NULL) == L2_OK ||
        l2_tokenizer_decode(tok, 1, -1, &piece, &plen, NULL) == L2_OK ||
        l2_tokenizer_decode(tok, vocab, 3, &piece, &plen, NULL) == L2_OK ||
        l2_tokenizer_decode(tok, -1, 3, &piece, &plen, NULL) == L2_OK)
        __builtin_trap();
    l2_tokenizer_free(tok);
    return 0;
}
