/* The llama2.c tokenizer: tokenizer.bin reader, BPE encode, decode.
 *
 * The file stays mapped and the pieces are read in place (zero copy): per tokenizer we keep
 * two uint32 arrays of vocab_size entries (piece offsets and ids sorted by piece bytes) and a
 * 256-byte table for the raw-byte pieces, about 256 KB for the Llama 2 vocabulary.
 * Nothing changes after l2_tokenizer_open, so encode and decode may run on any threads.
 *
 * tokenizer.bin (little-endian): int32 max_token_length, then per piece: float32 score,
 * int32 length, `length` bytes (no NUL). The piece count is not stored: the model gives it.
 */
#include "common.h"

#include <stdlib.h>
#include <string.h>

/* Limits beyond which the input is treated as nonsense rather than a tokenizer. */
#define L2_TOK_MAX_VOCAB (1 << 24)   /* vocab_size accepted by l2_tokenizer_open */
#define L2_TOK_MAX_PIECE (1 << 16)   /* bytes in one piece */

#define L2_TOK_BOS 1
#define L2_TOK_EOS 2

struct l2_tokenizer {
    l2_mapping map;             /* the whole tokenizer.bin, read-only */
    int32_t vocab_size;         /* pieces in use (the model's vocab_size) */
    int32_t pieces_in_file;     /* complete pieces the file holds, >= vocab_size */
    uint32_t max_piece_len;     /* longest piece among the first vocab_size, measured */
    uint32_t *offsets;          /* (vocab_size) file offset of each piece's score field */
    uint32_t *sorted;           /* (vocab_size) ids ordered by (piece bytes, id) */
    unsigned char bytes[256];   /* bytes[b] == b: what a "<0xHH>" piece decodes to */
};

/* ----------------------------------------------------------------------------
 * Piece access: score, length and bytes live in the mapping at offsets[id] */

static float piece_score(const l2_tokenizer *t, int32_t id) {
    return l2_read_f32(t->map.data + t->offsets[id]);
}

static uint32_t piece_len(const l2_tokenizer *t, int32_t id) {
    return (uint32_t)l2_read_i32(t->map.data + t->offsets[id] + 4);  /* validated >= 0 */
}

static const unsigned char *piece_bytes(const l2_tokenizer *t, int32_t id) {
    return t->map.data + t->offsets[id] + 8;
}

/* Orders byte strings like strcmp does for NUL-free strings: bytewise unsigned, and a
 * proper prefix first. Compares p against the concatenation a || b, so merge candidates
 * are looked up without building them in a buffer. */
static int compare_split(const unsigned char *p, uint32_t plen, const unsigned char *a,
                         uint32_t alen, const unsigned char *b, uint32_t blen) {
    uint32_t n = plen < alen ? plen : alen;
    int c = n ? memcmp(p, a, n) : 0;
    if (c != 0) return c;
    if (plen <= alen) return plen < alen + blen ? -1 : 0;
    p += alen;
    plen -= alen;
    n = plen < blen ? plen : blen;
    c = n ? memcmp(p, b, n) : 0;
    if (c != 0) return c;
    return plen < blen ? -1 : plen > blen ? 1 : 0;
}

/* The lowest id whose piece is exactly a || b, or -1: binary search over `sorted`, which
 * orders equal pieces by id so the lower bound is the lowest duplicate. */
static int32_t lookup(const l2_tokenizer *t, const unsigned char *a, uint32_t alen,
                      const unsigned char *b, uint32_t blen) {
    if (alen + blen > t->max_piece_len) return -1;  /* cannot match: skip the search */
    uint32_t lo = 0, hi = (uint32_t)t->vocab_size;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int32_t id = (int32_t)t->sorted[mid];
        if (compare_split(piece_bytes(t, id), piece_len(t, id), a, alen, b, blen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == (uint32_t)t->vocab_size) return -1;
    int32_t id = (int32_t)t->sorted[lo];
    return compare_split(piece_bytes(t, id), piece_len(t, id), a, alen, b, blen) == 0 ? id : -1;
}

/* ----------------------------------------------------------------------------
 * Building the tokenizer */

typedef struct {
    const unsigned char *bytes;
    uint32_t len;
    uint32_t id;
} sort_entry;

/* Total order (bytes, length, id): the result does not depend on qsort's stability. */
static int compare_entries(const void *pa, const void *pb) {
    const sort_entry *a = pa, *b = pb;
    int c = compare_split(a->bytes, a->len, b->bytes, b->len, NULL, 0);
    if (c != 0) return c;
    return a->id < b->id ? -1 : a->id > b->id ? 1 : 0;
}

typedef enum { PIECE_OK, PIECE_END, PIECE_TRUNCATED, PIECE_NEGATIVE, PIECE_ABSURD } piece_check;

/* Checks the piece at *pos (score, length, bytes all inside the file, sane length) and on
 * success advances *pos past it. *len_out gets the stored length when there is one. */
static piece_check next_piece(const l2_mapping *map, uint64_t *pos, int32_t *len_out) {
    if (*pos == map->size) return PIECE_END;
    if (map->size - *pos < 8) return PIECE_TRUNCATED;
    int32_t len = l2_read_i32(map->data + *pos + 4);
    *len_out = len;
    if (len < 0) return PIECE_NEGATIVE;
    if (len > L2_TOK_MAX_PIECE) return PIECE_ABSURD;
    if (map->size - *pos - 8 < (uint64_t)len) return PIECE_TRUNCATED;
    *pos += 8 + (uint64_t)len;
    return PIECE_OK;
}

l2_status l2_tokenizer_open(const char *path, int32_t vocab_size, l2_tokenizer **out,
                            l2_error *err) {
    l2_clear_error(err);
    if (out) *out = NULL;
    if (!path || !out) return l2_fail(err, L2_ERR_ARG, "l2_tokenizer_open: NULL argument");
    if (vocab_size < 3 || vocab_size > L2_TOK_MAX_VOCAB)
        return l2_fail(err, L2_ERR_ARG, "vocab_size %d is out of range (3..%d)", vocab_size,
                       L2_TOK_MAX_VOCAB);

    l2_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return l2_fail(err, L2_ERR_NOMEM, "out of memory opening %s", path);
    l2_status st = l2_map_file(path, &t->map, err);
    if (st != L2_OK) { free(t); return st; }
    const l2_mapping *map = &t->map;
    sort_entry *entries = NULL;

    if (map->size < 4) {
        st = l2_fail(err, L2_ERR_FORMAT, "%s is too short for a tokenizer (%llu bytes)", path,
                     (unsigned long long)map->size);
        goto fail;
    }
    /* Pass 1: validate the pieces the model needs and measure the longest (the header's
     * max_token_length is not trusted), allocating nothing yet: a bad file costs no memory. */
    uint64_t pos = 4;
    for (int32_t i = 0; i < vocab_size; i++) {
        int32_t len = 0;
        if (pos > UINT32_MAX) {  /* offsets are stored as uint32 */
            st = l2_fail(err, L2_ERR_FORMAT, "%s is too large: piece %d starts beyond 4 GiB",
                         path, i);
            goto fail;
        }
        switch (next_piece(map, &pos, &len)) {
        case PIECE_OK:
            break;
        case PIECE_END:
            st = l2_fail(err, L2_ERR_FORMAT, "%s holds %d pieces but the model needs %d", path,
                         i, vocab_size);
            goto fail;
        case PIECE_NEGATIVE:
            st = l2_fail(err, L2_ERR_FORMAT, "%s: piece %d has a negative length (%d)", path, i,
                         len);
            goto fail;
        case PIECE_ABSURD:
            st = l2_fail(err, L2_ERR_FORMAT,
                         "%s: piece %d has an absurd length (%d bytes, limit %d)", path, i, len,
                         L2_TOK_MAX_PIECE);
            goto fail;
        case PIECE_TRUNCATED:
            st = l2_fail(err, L2_ERR_FORMAT,
                         "%s is truncated: piece %d of the %d the model needs runs past the end "
                         "of the file (%llu bytes)", path, i, vocab_size,
                         (unsigned long long)map->size);
            goto fail;
        }
        if ((uint32_t)len > t->max_piece_len) t->max_piece_len = (uint32_t)len;
    }
    /* Further complete pieces (a vocabulary larger than the model's) are counted, not used. */
    int64_t count = vocab_size;
    for (;;) {
        int32_t len;
        if (count >= INT32_MAX || next_piece(map, &pos, &len) != PIECE_OK) break;
        count++;
    }
    t->pieces_in_file = (int32_t)count;
    t->vocab_size = vocab_size;

    /* Pass 2: record where each piece is and sort the ids by piece bytes. */
    t->offsets = malloc((size_t)vocab_size * sizeof *t->offsets);
    t->sorted = malloc((size_t)vocab_size * sizeof *t->sorted);
    entries = malloc((size_t)vocab_size * sizeof *entries);  /* temporary, for sorting */
    if (!t->offsets || !t->sorted || !entries) {
        st = l2_fail(err, L2_ERR_NOMEM, "out of memory reading %s (%d pieces)", path, vocab_size);
        goto fail;
    }
    pos = 4;
    for (int32_t i = 0; i < vocab_size; i++) {
        uint32_t len = (uint32_t)l2_read_i32(map->data + pos + 4);  /* checked in pass 1 */
        t->offsets[i] = (uint32_t)pos;
        entries[i].bytes = map->data + pos + 8;
        entries[i].len = len;
        entries[i].id = (uint32_t)i;
        pos += 8 + (uint64_t)len;
    }
    qsort(entries, (size_t)vocab_size, sizeof *entries, compare_entries);
    for (int32_t i = 0; i < vocab_size; i++) t->sorted[i] = entries[i].id;
    free(entries);
    for (int b = 0; b < 256; b++) t->bytes[b] = (unsigned char)b;
    *out = t;
    return L2_OK;

fail:
    free(entries);
    l2_tokenizer_free(t);
    return st;
}

int32_t l2_tokenizer_pieces_in_file(const l2_tokenizer *tok) {
    return tok ? tok->pieces_in_file : 0;
}

int32_t l2_tokenizer_vocab_size(const l2_tokenizer *tok) {
    return tok ? tok->vocab_size : 0;
}

void l2_tokenizer_free(l2_tokenizer *tok) {
    if (!tok) return;
    l2_unmap_file(&tok->map);
    free(tok->offsets);
    free(tok->sorted);
    free(tok);
}

/* ----------------------------------------------------------------------------
 * Encode (llama2.c's algorithm, step for step) */

/* Appends the token(s) for one code point (1..4 bytes): the piece if there is one, else one
 * byte-fallback token per byte. llama2.c emits byte + 3 unconditionally; for a vocabulary
 * too small to have byte pieces (< 259) we emit <unk> (0) instead of an out-of-range id. */
static void emit_code_point(const l2_tokenizer *t, const unsigned char *cp, uint32_t len,
                            int32_t *tokens, int32_t *n) {
    int32_t id = lookup(t, cp, len, NULL, 0);
    if (id >= 0) {
        tokens[(*n)++] = id;
        return;
    }
    for (uint32_t i = 0; i < len; i++) {
        int32_t b = (int32_t)cp[i] + 3;
        tokens[(*n)++] = b < t->vocab_size ? b : 0;
    }
}

/* The merge candidate for the pair (left, right): the merged id or -1. */
static int32_t pair_merge(const l2_tokenizer *t, int32_t left, int32_t right) {
    return lookup(t, piece_bytes(t, left), piece_len(t, left), piece_bytes(t, right),
                  piece_len(t, right));
}

l2_status l2_tokenizer_encode(const l2_tokenizer *tok, const char *text, int32_t bos, int32_t eos,
                              int32_t *tokens, int32_t max_tokens, int32_t *n_tokens,
                              l2_error *err) {
    l2_clear_error(err);
    if (n_tokens) *n_tokens = 0;
    if (!tok || !text || !tokens || !n_tokens)
        return l2_fail(err, L2_ERR_ARG, "l2_tokenizer_encode: NULL argument");
    size_t text_len = strlen(text);
    /* Worst case: BOS + dummy prefix + one token per byte + EOS = strlen + 3. */
    if (max_tokens < 0 || (size_t)max_tokens < 3 || (size_t)max_tokens - 3 < text_len)
        return l2_fail(err, L2_ERR_RANGE,
                       "token buffer too small: %d ids for a text of %zu bytes (need %zu)",
                       max_tokens, text_len, text_len + 3);

    const unsigned char *s = (const unsigned char *)text;
    int32_t n = 0;
    if (bos) tokens[n++] = L2_TOK_BOS;
    /* sentencepiece's dummy prefix: a space before non-empty text. */
    if (text_len > 0) emit_code_point(tok, (const unsigned char *)" ", 1, tokens, &n);

    /* Group the bytes into UTF-8 code points the way llama2.c does: a byte that is not a
     * continuation byte (10xxxxxx) starts a new group; a group grows while the next byte is
     * a continuation byte and it holds fewer than 4 bytes. Invalid UTF-8 falls out as bytes. */
    unsigned char cp[4];
    uint32_t cp_len = 0;
    for (size_t i = 0; i < text_len; i++) {
        if ((s[i] & 0xC0) != 0x80) cp_len = 0;
        cp[cp_len++] = s[i];
        if ((s[i + 1] & 0xC0) == 0x80 && cp_len < 4) continue;  /* s[text_len] is the NUL */
        emit_code_point(tok, cp, cp_len, tokens, &n);
        cp_len = 0;
    }

    /* Greedy BPE: merge the adjacent pair whose concatenation is the piece with the highest
     * score (the first such pair on ties) until nothing merges. Like upstream this is O(n^2)
     * in tokens, but each pair's candidate is cached and only the pairs next to a merge are
     * looked up again, so a pass is a scan of floats rather than n binary searches. */
    if (n >= 2) {
        int32_t pairs = n - 1;
        int32_t *merge_id = malloc((size_t)pairs * sizeof *merge_id);     /* (pairs) */
        float *merge_score = malloc((size_t)pairs * sizeof *merge_score); /* (pairs) */
        if (!merge_id || !merge_score) {
            free(merge_id);
            free(merge_score);
            return l2_fail(err, L2_ERR_NOMEM, "out of memory encoding %zu bytes", text_len);
        }
        for (int32_t i = 0; i < pairs; i++) {
            merge_id[i] = pair_merge(tok, tokens[i], tokens[i + 1]);
            merge_score[i] = merge_id[i] >= 0 ? piece_score(tok, merge_id[i]) : 0.0f;
        }
        for (;;) {
            float best_score = -1e10f;  /* upstream's floor: lower scores never merge */
            int32_t best = -1;
            for (int32_t i = 0; i < n - 1; i++) {
                if (merge_id[i] >= 0 && merge_score[i] > best_score) {
                    best_score = merge_score[i];
                    best = i;
                }
            }
            if (best < 0) break;
            /* tokens[best], tokens[best + 1] -> merged token at best; pair best disappears. */
            tokens[best] = merge_id[best];
            memmove(tokens + best + 1, tokens + best + 2, (size_t)(n - best - 2) * sizeof *tokens);
            memmove(merge_id + best, merge_id + best + 1,
                    (size_t)(n - best - 2) * sizeof *merge_id);
            memmove(merge_score + best, merge_score + best + 1,
                    (size_t)(n - best - 2) * sizeof *merge_score);
            n--;
            /* Only the pairs on either side of the merged token changed. */
            for (int32_t i = best - 1; i <= best; i++) {
                if (i < 0 || i >= n - 1) continue;
                merge_id[i] = pair_merge(tok, tokens[i], tokens[i + 1]);
                merge_score[i] = merge_id[i] >= 0 ? piece_score(tok, merge_id[i]) : 0.0f;
            }
        }
        free(merge_id);
        free(merge_score);
    }

    if (eos) tokens[n++] = L2_TOK_EOS;
    *n_tokens = n;
    return L2_OK;
}

/* ----------------------------------------------------------------------------
 * Decode */

static int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

size_t l2_printable_len(const char *piece, size_t len) {
    if (!piece || len == 0 || piece[0] == '\0') return 0;
    if (len == 1) {  /* isprint || isspace in the C locale, without depending on the locale */
        unsigned char b = (unsigned char)piece[0];
        return (b >= 0x20 && b < 0x7f) || (b >= 9 && b <= 13) ? 1 : 0;
    }
    const char *nul = memchr(piece, '\0', len);
    return nul ? (size_t)(nul - piece) : len;
}

l2_status l2_tokenizer_decode(const l2_tokenizer *tok, int32_t prev, int32_t token,
                              const char **piece, size_t *len, l2_error *err) {
    l2_clear_error(err);
    if (!tok || !piece || !len) return l2_fail(err, L2_ERR_ARG, "l2_tokenizer_decode: NULL argument");
    *piece = NULL;
    *len = 0;
    if (token < 0 || token >= tok->vocab_size || prev < 0 || prev >= tok->vocab_size)
        return l2_fail(err, L2_ERR_ARG, "token id %d is outside 0..%d", token < 0 ||
                       token >= tok->vocab_size ? token : prev, tok->vocab_size - 1);
    const unsigned char *p = piece_bytes(tok, token);
    size_t n = piece_len(tok, token);
    /* After BOS, sentencepiece drops the dummy-prefix space of the first word. */
    if (prev == L2_TOK_BOS && n > 0 && p[0] == ' ') {
        p++;
        n--;
    }
    /* A raw-byte piece "<0xHH>" stands for that one byte. */
    if (n == 6 && p[0] == '<' && p[1] == '0' && p[2] == 'x' && p[5] == '>') {
        int hi = hex_value(p[3]), lo = hex_value(p[4]);
        if (hi >= 0 && lo >= 0) {
            *piece = (const char *)&tok->bytes[hi * 16 + lo];
            *len = 1;
            return L2_OK;
        }
    }
    *piece = (const char *)p;
    *len = n;
    return L2_OK;
}
