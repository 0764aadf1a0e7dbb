/* libFuzzer target: the packed ("L2RV") format's parser and everything behind it.
 *
 * Approach. Arbitrary bytes almost never reach past the packed loader's first checks: the
 * magic, then `file_bytes` (header offset 64) must equal the file's length exactly, and any
 * insertion or deletion by the mutator breaks that equality. So the input is laid out as
 *
 *     input[0]      control byte
 *     input[1..]    the packed file from byte 4 on (everything after the magic)
 *
 * and the harness builds the file "L2RV" + input[1..]. Unless control bit 0 is set, it then
 * overwrites file_bytes with the real length, so length-changing mutations of the tensor
 * table and data still reach the table checks (offsets, alignment, duplicates, shapes) and
 * the forward pass; with bit 0 set the field is kept as mutated, which explores the
 * file_bytes check itself. Control bit 1 selects an f32 KV cache instead of f16. Every other
 * header field is left to the mutator: libFuzzer's comparison tracing (-use_value_profile)
 * learns the constants the loader compares against (version, n_tensors, shapes, sizes).
 * The seeds (tests/python/make_seed_corpus.py) are valid packed files of every weight type
 * written by l2convert, in this layout, so mutations start from deep inside the parser.
 *
 * What is done with the file (open, session, eval, l2_convert, reload, the f32 oracle) is
 * fuzz_checkpoint.c's fuzz_model, included here. */
#define L2FUZZ_NO_ENTRY
#include "fuzz_checkpoint.c"

#define PACKED_FILE_BYTES_OFFSET 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > MAX_INPUT) return -1;
    uint8_t ctrl = data[0];
    size_t n = 4 + (size - 1);
    static uint8_t file[4 + MAX_INPUT];
    memcpy(file, "L2RV", 4);
    memcpy(file + 4, data + 1, size - 1);
    if (!(ctrl & 1) && n >= PACKED_FILE_BYTES_OFFSET + 8) {
        uint64_t v = n;
        for (int i = 0; i < 8; i++) file[PACKED_FILE_BYTES_OFFSET + i] = (uint8_t)(v >> (8 * i));
    }
    return fuzz_model(file, n, (ctrl & 2) ? L2_TYPE_F32 : L2_TYPE_F16);
}
