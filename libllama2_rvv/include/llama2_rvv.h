/* libllama2_rvv — llama2.c-compatible inference for small Llama 2 models.
 *
 * One model (mmap'd, read-only, shared by every session), one tokenizer, any number of
 * sessions (KV cache + activations: the only per-generation memory), and a sampler.
 * Nothing here prints, exits, installs signal handlers or keeps global mutable state. A failed
 * allocation is an L2_ERR_NOMEM error, never an abort.
 *
 * Errors: what every call promises
 *
 *   A call that can fail returns an l2_status and takes an l2_error (which may be NULL): it
 *   empties err->message on entry, and on failure (any status but L2_OK) fills it with one
 *   line to show the user. A failed call's out-parameters hold NULL or 0 (a failed
 *   l2_session_eval: see below). The other calls cannot fail on the objects they are given
 *   (getters, l2_*_free, l2_session_cancel, l2_session_reset); passing NULL for an object is a
 *   caller's bug, except to l2_*_free, which then does nothing.
 *
 * Threads and lifetimes: what is promised
 *
 *   Shared freely. A model and a tokenizer do not change once opened: any number of threads
 *   may use one at the same time (l2_model_info_get, l2_session_new, l2_convert on a model;
 *   l2_tokenizer_encode, _decode, _vocab_size on a tokenizer), and any number of sessions
 *   may share them.
 *
 *   One thread at a time. A session (and the logits l2_session_logits points to) and a
 *   sampler belong to one thread at a time: calls on one session must not overlap, except
 *   l2_session_cancel, which any thread may call at any moment while the session exists.
 *   Handing a session from thread to thread between calls is fine. As a guard (not a
 *   licence) an l2_session_eval that finds another eval running on its session returns
 *   L2_ERR_BUSY at once and touches nothing; the other calls are not checked.
 *
 *   A failed l2_session_eval (any status) leaves the position where it was before the call:
 *   the positions it evaluated are forgotten and the session goes on from there. What it
 *   wrote into the KV cache beyond that position, and the logits, are unspecified: read the
 *   logits only after a successful eval.
 *
 *   Cancelling. l2_session_cancel makes the eval running on the session (or the next one, if
 *   none is running) stop before its next layer and return L2_ERR_CANCELLED; every eval
 *   returns that until l2_session_reset. A long prompt evaluated in one call stops within
 *   one layer of one position (about a millisecond for stories15M's shape on a PC:
 *   scripts/bench-cancel).
 *
 *   Lifetimes. Free every session of a model before the model, and stop using a tokenizer
 *   before freeing it (a piece from l2_tokenizer_decode lives until l2_tokenizer_free).
 *   Freeing an object another thread is using is undefined: cancel its eval and wait for
 *   the call to return first (the Python binding does exactly that in close()).
 *
 *   Files. Models and tokenizers are mapped and read in place, never copied, and only
 *   regular files are opened (a FIFO or device is refused, not read). A file truncated or
 *   overwritten in place while it is open makes the next read of a lost page raise SIGBUS,
 *   which kills the process unless it handles the signal (l2run reports it in one line).
 *   Replace model and tokenizer files by writing a new file and renaming it over the old
 *   one, as l2_convert does: a process holding the old file keeps reading it, intact.
 *
 * The declarations between the CDEF markers are also read by the Python binding (cffi),
 * so they stay plain C: no macros, no includes.
 */
#ifndef LLAMA2_RVV_H
#define LLAMA2_RVV_H

/* The library's version: l2_version() returns it; the Python package and setup.py read it here. */
#define L2_VERSION "0.3.0"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CDEF-BEGIN */
typedef enum {
    L2_OK = 0,
    L2_ERR_IO = 1,        /* cannot open, read, map or write a file */
    L2_ERR_FORMAT = 2,    /* malformed or unsupported file */
    L2_ERR_NOMEM = 3,     /* allocation failed */
    L2_ERR_ARG = 4,       /* invalid argument (bad option, token id, ...) */
    L2_ERR_RANGE = 5,     /* does not fit: context full, buffer too small */
    L2_ERR_NUMERIC = 6,   /* the model produced NaN or infinity */
    L2_ERR_CANCELLED = 7, /* l2_session_cancel stopped the eval (until l2_session_reset) */
    L2_ERR_BUSY = 8       /* another thread is evaluating the same session */
} l2_status;

typedef struct {
    char message[256];    /* NUL-terminated, empty when there is no error */
} l2_error;

/* Weight storage types; the packed format's FORMAT.md describes each. */
typedef enum {
    L2_TYPE_AUTO = -1,    /* l2_session_params.kv_type only: l2_default_kv_type's choice */
    L2_TYPE_F32 = 0,
    L2_TYPE_F16 = 1,
    L2_TYPE_Q8 = 2,       /* int8, one f32 scale per group of a row, row-blocked (packed files) */
    L2_TYPE_Q8_FLAT = 3,  /* int8, one f32 scale per group of the flattened tensor (llama2.c v2) */
    L2_TYPE_Q10 = 4       /* 10-bit: q8's int8 values as the high part, a 2-bit plane after them
                           * (a packed q8 file's layer matrices; FORMAT.md) */
} l2_type;

typedef enum {
    L2_FILE_V0 = 0,       /* llama2.c legacy float32 (run.c) */
    L2_FILE_V1 = 1,       /* llama2.c version 1 float32 */
    L2_FILE_V2 = 2,       /* llama2.c version 2 Q8_0 (runq.c) */
    L2_FILE_PACKED = 3    /* this library's packed format */
} l2_file_kind;

typedef struct {
    int32_t dim;
    int32_t hidden_dim;
    int32_t n_layers;
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t vocab_size;
    int32_t seq_len;
    int32_t shared_classifier; /* 1: the classifier is the token embedding */
    l2_type weight_type;       /* of the matrices */
    int32_t group_size;        /* q8 group size, 0 for float types */
    l2_file_kind file_kind;
    int32_t format_version;    /* version field of the file (0 for v0) */
    int32_t n_tensors;         /* tensors l2_convert writes (and reports): 2 + 9 * n_layers,
                                * and the classifier when it is not shared */
    uint64_t file_bytes;
    uint64_t weight_bytes_per_token; /* bytes of weights one forward pass reads */
} l2_model_info;

typedef struct l2_model l2_model;
typedef struct l2_tokenizer l2_tokenizer;
typedef struct l2_session l2_session;
typedef struct l2_sampler l2_sampler;

/* ---- names of the enums above: NULL for a value that is not one of them ---- */
/* "f32", "f16", "q8", "q8 (llama2.c v2)"; "auto" */
const char *l2_type_name(l2_type type);
/* "llama2.c v0", "llama2.c v1", "llama2.c v2 (Q8_0)", "packed" */
const char *l2_file_kind_name(l2_file_kind kind);

/* ---- model ---- */
/* Opens a llama2.c v0/v1/v2 checkpoint or a packed file (the format is detected). */
l2_status l2_model_open(const char *path, l2_model **out, l2_error *err);
/* The model's shape and storage (see l2_model_info). */
void l2_model_info_get(const l2_model *model, l2_model_info *out);
/* The KV cache type L2_TYPE_AUTO means for this model: f16 for packed f16 and q8 models
 * (their weights are not exact anyway), f32 otherwise (llama2.c's own files: same numbers
 * as upstream run). */
l2_type l2_default_kv_type(const l2_model *model);
void l2_model_free(l2_model *model);

/* ---- packed-format writer ---- */
typedef struct {
    char name[24];          /* e.g. "wq", "token_embedding" */
    int32_t layer;          /* -1 for tensors outside the layers */
    int32_t rows;
    int32_t cols;
    uint64_t bytes;         /* bytes written for this tensor (values and scales) */
    double max_abs_value;
    double max_abs_error;   /* largest |stored - source| over the tensor */
} l2_tensor_report;

/* Writes `model` as a packed file of `type` (f32, f16 or q8; group_size for q8, 0 picks the
 * default). The file is written to "<path>.tmp", created new (O_EXCL, never through a
 * symlink: an existing "<path>.tmp" is an L2_ERR_IO error naming it), synced to disk, and
 * renamed into place only when complete (then the directory is synced): `path` holds the old
 * file or the whole new one, never a part. A `path` that is the model's own file (by any
 * name) is refused with L2_ERR_ARG. Per-tensor reports go to reports[0..max_reports) and
 * *n_reports gets the count. */
l2_status l2_convert(const l2_model *model, const char *path, l2_type type, int32_t group_size,
                     l2_tensor_report *reports, int32_t max_reports, int32_t *n_reports,
                     l2_error *err);

/* How l2_convert_with stores a model: FORMAT.md, "Modes". All zeros but `type` is what
 * l2_convert writes. The site masks name the matrices by the vector they read:
 * 1 = wq/wk/wv, 2 = wo, 4 = w1/w3, 8 = w2, 16 = the classifier. */
enum { L2_METHOD_ABSMAX = 0, L2_METHOD_GPTQ = 1 };
typedef struct {
    l2_type type;            /* of the matrices: f32, f16 or q8 */
    int32_t group_size;      /* q8 group size; 0 picks the default */
    int32_t method;          /* q8 rounding: L2_METHOD_ABSMAX or L2_METHOD_GPTQ */
    int32_t f16_embedding;   /* q8: 1 keeps the embedding lookup table f16 (the classifier q8) */
    uint32_t f16_sites;      /* q8: these matrices stay f16 (mixed precision) */
    uint32_t two_part_sites; /* q8: these inputs are quantized in two int8 parts (~12 bits) */
    uint32_t q10_sites;      /* q8: these layer matrices 10-bit (their inputs must be two-part) */
    const int32_t *calib;    /* GPTQ calibration token ids; NULL: n_calib tokens the model samples */
    int32_t n_calib;         /* 0: 8192 */
    /* q8: layer i < n_f16_layer_sites also keeps the matrices of f16_layer_sites[i] f16 */
    const uint32_t *f16_layer_sites;
    int32_t n_f16_layer_sites;
} l2_convert_params;

/* The named modes "f32", "f16", "q8" (l2_convert's), "fast", "balanced" and "faithful"
 * (FORMAT.md, "Modes") into *out. */
l2_status l2_convert_mode(const char *name, l2_convert_params *out, l2_error *err);

/* l2_convert with every choice of l2_convert_params (same file handling and reports). */
l2_status l2_convert_with(const l2_model *model, const char *path, const l2_convert_params *params,
                          l2_tensor_report *reports, int32_t max_reports, int32_t *n_reports,
                          l2_error *err);

/* How a packed file was made (its version 2 header; zeros for other files). */
typedef struct {
    int32_t method;          /* L2_METHOD_* */
    int32_t calib_tokens;    /* GPTQ: calibration tokens used */
    uint32_t two_part_sites; /* as l2_convert_params */
    int32_t embedding_type;  /* l2_type of the lookup table */
    double weight_error;     /* sum |W - Q|^2 / sum |W|^2 over the q8 matrices (0: none) */
    double output_error;     /* GPTQ: the same for W x over the calibration inputs, else 0 */
} l2_storage_info;
void l2_model_storage_get(const l2_model *model, l2_storage_info *out);

/* ---- tokenizer ---- */
/* Opens a llama2.c tokenizer.bin holding at least vocab_size pieces. */
l2_status l2_tokenizer_open(const char *path, int32_t vocab_size, l2_tokenizer **out,
                            l2_error *err);
/* Pieces the file holds (may exceed the vocab_size it was opened with). */
int32_t l2_tokenizer_pieces_in_file(const l2_tokenizer *tok);
/* The vocab_size it was opened with: ids 0..vocab_size-1 encode and decode. */
int32_t l2_tokenizer_vocab_size(const l2_tokenizer *tok);
/* llama2.c encode: optional BOS, dummy-prefix space, BPE merges, optional EOS.
 * tokens must hold at least strlen(text) + 3 ids; *n_tokens gets the count. */
l2_status l2_tokenizer_encode(const l2_tokenizer *tok, const char *text, int32_t bos, int32_t eos,
                              int32_t *tokens, int32_t max_tokens, int32_t *n_tokens,
                              l2_error *err);
/* The bytes to print for `token` following `prev` (llama2.c decode): *piece points into the
 * tokenizer and stays valid until l2_tokenizer_free; not NUL-terminated. An id outside
 * 0..vocab_size-1 is L2_ERR_ARG (*piece NULL, *len 0). */
l2_status l2_tokenizer_decode(const l2_tokenizer *tok, int32_t prev, int32_t token,
                              const char **piece, size_t *len, l2_error *err);
/* llama2.c's print rule (run.c's safe_printf): how many bytes of a decoded piece to print.
 * None for an empty piece, one starting with NUL, or a single byte that is neither printable
 * ASCII nor whitespace; otherwise the bytes up to the first NUL. l2run and the Python text
 * decoder apply it. */
size_t l2_printable_len(const char *piece, size_t len);
void l2_tokenizer_free(l2_tokenizer *tok);

/* ---- session: KV cache and activations for one generation ---- */
typedef struct {
    int32_t context;        /* positions to hold, 1..seq_len; 0 means seq_len */
    l2_type kv_type;        /* L2_TYPE_F32, L2_TYPE_F16 or L2_TYPE_AUTO (l2_default_kv_type) */
    const char *kernels;    /* NULL or "" for the fastest available, or a name from l2_kernels_name */
} l2_session_params;

l2_status l2_session_new(const l2_model *model, const l2_session_params *params,
                         l2_session **out, l2_error *err);
/* Runs the forward pass on tokens[0..n) at positions pos..pos+n-1; afterwards
 * l2_session_logits holds the logits of the last one. On failure the position is unchanged
 * (see "Threads and lifetimes" above). */
l2_status l2_session_eval(l2_session *s, const int32_t *tokens, int32_t n, l2_error *err);
/* From any thread: the running eval stops before its next layer with L2_ERR_CANCELLED, and
 * so does every eval after it until l2_session_reset. */
void l2_session_cancel(l2_session *s);
/* vocab_size logits of the last evaluated position; l2_session_sample overwrites them. */
float *l2_session_logits(l2_session *s);
/* Positions evaluated so far: the next eval starts there. */
int32_t l2_session_pos(const l2_session *s);
/* Positions the session holds (its params' context, 0 resolved to seq_len). */
int32_t l2_session_context(const l2_session *s);
/* The KV cache type in use (L2_TYPE_AUTO resolved). */
l2_type l2_session_kv_type(const l2_session *s);
/* The name of its kernel set: the forward pass and l2_session_sample use it. */
const char *l2_session_kernels(const l2_session *s);
/* Forgets every position (the next eval starts at 0) and clears a cancel. */
void l2_session_reset(l2_session *s);
void l2_session_free(l2_session *s);

/* Name of the index-th kernel set this build can run on this CPU, fastest first (index 0 is
 * the default); NULL past the last. */
const char *l2_kernels_name(int32_t index);

/* ---- sampler: llama2.c's xorshift RNG, temperature, top-p ---- */
/* temperature 0 or more (0: argmax), topp in [0, 1] (0 or 1: plain multinomial), as
 * l2_check_option says; any seed (0 too: choosing one from the time is the caller's job). */
l2_status l2_sampler_new(int32_t vocab_size, float temperature, float topp, uint64_t seed,
                         l2_sampler **out, l2_error *err);
/* Samples a token id from logits[0..vocab_size), which it overwrites (as llama2.c does), with
 * the portable kernels; l2_session_sample does it with the session's. */
l2_status l2_sampler_sample(l2_sampler *sampler, float *logits, int32_t *token, l2_error *err);
/* Samples a token id from the session's logits (overwritten) with the session's kernels; the
 * sampler's vocab_size must be the model's (L2_ERR_ARG). */
l2_status l2_session_sample(l2_session *s, l2_sampler *sampler, int32_t *token, l2_error *err);
void l2_sampler_free(l2_sampler *sampler);

/* ---- generation: llama2.c's loop (run.c's generate), one position per call ----
 * l2run, the Python session loop and `storyteller run` all step through this:
 *   the prompt's tokens (BOS first) are evaluated by l2_generate_begin, in one call;
 *   each l2_generate_step then gives the next token: the prompt's next one (forced) while
 *   there is one, else a sampled one (after evaluating the last), with its piece; the
 *   generation is done at max_pos positions, after max_sampled sampled tokens, at a sampled
 *   BOS, or at a sampled EOS with stop_on_eos. */
typedef struct {
    /* set before l2_generate_begin */
    const int32_t *prompt;  /* (n_prompt) token ids, BOS first (l2_tokenizer_encode) */
    int32_t n_prompt;       /* 1..max_pos */
    int32_t max_pos;        /* positions to run, 1..the session's context; 0: the context */
    int32_t max_sampled;    /* sampled tokens at most; -1: no limit */
    int32_t stop_on_eos;    /* 1: a sampled EOS ends it too (run.c ends only at BOS) */
    /* the last step's result */
    int32_t done;           /* 1: over; the fields below are not a step */
    int32_t token;          /* the token chosen */
    int32_t forced;         /* 1: the prompt's, 0: sampled */
    const char *piece;      /* its bytes after the previous token (l2_tokenizer_decode) */
    size_t piece_len;
    /* kept by the calls */
    int32_t pos;            /* positions stepped through */
    int32_t sampled;        /* tokens sampled */
} l2_generation;

/* Checks g's settings and evaluates the prompt on `s`, which must be at position 0 (new or
 * reset). L2_ERR_RANGE when the prompt is longer than max_pos; a failed eval's status. */
l2_status l2_generate_begin(l2_session *s, l2_generation *g, l2_error *err);
/* One position: fills done, or token, forced and piece. A failed eval's status (the
 * session and g stay where they were). `sampler` and `tok` serve the whole generation. */
l2_status l2_generate_step(l2_session *s, l2_generation *g, l2_sampler *sampler,
                           const l2_tokenizer *tok, l2_error *err);

/* llama2.c's -n: the positions a run of `steps` covers (steps, or the model's seq_len when
 * steps is 0 or more than it). l2run and `storyteller run` size their session with it. */
int32_t l2_run_positions(const l2_model *model, int32_t steps);

/* llama2.c's run options as l2run and `storyteller run` read them, one rule for both:
 * -t temperature (a number, 0 or more, within a float), -p top-p (0 to 1), -s seed (a whole
 * number in int64; a negative one wraps as run's cast does), -n steps (0 to INT32_MAX; 0: the
 * model's seq_len), -v (0 or 1). Other flags are L2_ERR_ARG. On success *value holds it; the
 * error reads "-t needs a temperature of 0 or more, not 'abc'". */
l2_status l2_check_option(char flag, const char *text, double *number, int64_t *whole,
                          l2_error *err);

/* L2_VERSION */
const char *l2_version(void);
/* CDEF-END */

#ifdef __cplusplus
}
#endif
#endif /* LLAMA2_RVV_H */
