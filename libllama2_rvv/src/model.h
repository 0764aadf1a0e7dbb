/* The model as the forward pass sees it: views into the mapped file, whatever its format. */
#ifndef L2_MODEL_H
#define L2_MODEL_H

#include "common.h"
#include "kernels.h"

/* One weight matrix (rows, cols) in place in the mapping. */
typedef struct {
    l2_type type;
    int32_t rows, cols;
    int32_t group_size;              /* q8 types */
    int32_t tail;                    /* q8, version 2: the rows after the last whole block of 32,
                                      * stored row-major after the blocks (FORMAT.md); 0: the
                                      * last block is padded (version 1), or there is none */
    const void *data;                /* f32/f16: row-major; q8: blocks (kernels.h); q8 flat: int8;
                                      * q10: q8's values */
    const unsigned char *scales;     /* q8, q10: f32 per (block, group, row); q8 flat: per group */
    const uint8_t *plane;            /* q10: the 2-bit low parts after the values (kernels.h) */
} l2_matrix;

typedef struct {
    const float *rms_att;            /* (dim) */
    const float *rms_ffn;            /* (dim) */
    l2_matrix wq;                    /* (n_heads * head_size, dim) */
    l2_matrix wk;                    /* (kv_dim, dim) */
    l2_matrix wv;                    /* (kv_dim, dim) */
    l2_matrix wo;                    /* (dim, n_heads * head_size) */
    l2_matrix w1;                    /* (hidden_dim, dim) */
    l2_matrix w2;                    /* (dim, hidden_dim) */
    l2_matrix w3;                    /* (hidden_dim, dim) */
} l2_layer;

struct l2_model {
    l2_mapping map;
    l2_model_info info;
    l2_storage_info storage;         /* how the packed file was made (packed version 2) */
    int32_t head_size, kv_dim;
    l2_matrix token_embedding;       /* (vocab_size, dim) */
    l2_matrix wcls;                  /* (vocab_size, dim): a copy of token_embedding when shared */
    const float *rms_final;          /* (dim) */
    l2_layer *layers;                /* (n_layers) */
};

/* Tensors in a packed file of this shape (l2_model_info.n_tensors): the embedding, 9 per
 * layer, the final norm, and the classifier unless it is the embedding. */
static inline int32_t l2_tensor_count(int32_t n_layers, int32_t shared_classifier) {
    return 2 + 9 * n_layers + (shared_classifier ? 0 : 1);
}

/* The vocabulary of the session's model (model.c). */
int32_t l2_session_vocab_size(const l2_session *s);

/* The input vectors of the matrices (l2_convert_params' site masks are 1 << site). */
enum { L2_SITE_QKV, L2_SITE_WO, L2_SITE_W13, L2_SITE_W2, L2_SITE_CLS, L2_N_SITES };
#define L2_LAYER_SITES ((1u << L2_SITE_CLS) - 1u) /* the layer matrices' inputs: all but CLS */

/* Calls fn with every matrix input vector the session's forward pass computes (site, layer
 * or -1 for the classifier, the float vector before any quantization): l2_convert's
 * calibration. NULL stops it. */
typedef void (*l2_observer)(void *ctx, int site, int layer, const float *x, int n);
void l2_session_observe(l2_session *s, l2_observer fn, void *ctx);

/* Validates the file's header and sizes and fills model (loader.c). */
l2_status l2_load(l2_model *model, const char *path, l2_error *err);

/* Row `row` of m as float32 into out[0..m->cols): a token's embedding (matrix.c). */
void l2_matrix_row(const l2_matrix *m, int32_t row, float *out);

/* Bytes a matrix of this type and shape occupies in a packed file: values, then scales
 * (matrix.c). */
uint64_t l2_packed_values_bytes(l2_type type, int32_t rows, int32_t cols, int32_t gs, int32_t tail);
uint64_t l2_packed_scales_bytes(l2_type type, int32_t rows, int32_t cols, int32_t gs, int32_t tail);

/* The packed format (FORMAT.md). */
#define L2_PACKED_MAGIC 0x5652324cu  /* "L2RV" little-endian */
#define L2_PACKED_VERSION 2  /* written; version 1 files are read too */
#define L2_PACKED_HEADER_BYTES 128
#define L2_PACKED_ENTRY_BYTES 64
#define L2_PACKED_ALIGN 64

#endif
