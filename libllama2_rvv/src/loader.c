/* Opening checkpoints: llama2.c v0/v1/v2 and the packed format, detected from the header.
 * Every field and size is checked against the file length before anything is read, so a
 * malformed file gives an error message, never an out-of-bounds read. */
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define LLAMA2C_MAGIC 0x616b3432u  /* "ak42" */
#define LLAMA2C_HEADER_BYTES 256

/* Limits far above any TinyStories model; they keep every size product inside 64 bits. */
enum { MAX_DIM = 1 << 16, MAX_HIDDEN = 1 << 18, MAX_LAYERS = 1 << 10, MAX_VOCAB = 1 << 21,
       MAX_SEQ = 1 << 20, MAX_GROUP = 1 << 16 };

/* ---------------------------------------------------------------- config */

static l2_status check_config(const l2_model_info *c, const char *path, l2_error *err) {
    struct { const char *name; int32_t v, max; } f[] = {
        {"dim", c->dim, MAX_DIM}, {"hidden_dim", c->hidden_dim, MAX_HIDDEN},
        {"n_layers", c->n_layers, MAX_LAYERS}, {"n_heads", c->n_heads, MAX_DIM},
        {"n_kv_heads", c->n_kv_heads, MAX_DIM}, {"vocab_size", c->vocab_size, MAX_VOCAB},
        {"seq_len", c->seq_len, MAX_SEQ},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v <= 0 || f[i].v > f[i].max)
            return l2_fail(err, L2_ERR_FORMAT, "%s: %s = %d is outside 1..%d", path, f[i].name,
                           f[i].v, f[i].max);
    if (c->dim % c->n_heads != 0 || (c->dim / c->n_heads) % 2 != 0)
        return l2_fail(err, L2_ERR_FORMAT, "%s: dim %d does not split into %d heads of even size",
                       path, c->dim, c->n_heads);
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads != 0)
        return l2_fail(err, L2_ERR_FORMAT, "%s: n_heads %d is not a multiple of n_kv_heads %d",
                       path, c->n_heads, c->n_kv_heads);
    if (c->vocab_size < 3)
        return l2_fail(err, L2_ERR_FORMAT, "%s: vocab_size %d has no room for BOS and EOS", path,
                       c->vocab_size);
    return L2_OK;
}

static void read_config(l2_model_info *c, const unsigned char *p) {
    c->dim = l2_read_i32(p);
    c->hidden_dim = l2_read_i32(p + 4);
    c->n_layers = l2_read_i32(p + 8);
    c->n_heads = l2_read_i32(p + 12);
    c->n_kv_heads = l2_read_i32(p + 16);
    c->vocab_size = l2_read_i32(p + 20);
    c->seq_len = l2_read_i32(p + 24);
}

/* Checks the config, then sizes the model from it: head size, KV width, the layer table. */
static l2_status shape_model(l2_model *m, const char *path, l2_error *err) {
    const l2_model_info *c = &m->info;
    l2_status st = check_config(c, path, err);
    if (st != L2_OK) return st;
    m->head_size = c->dim / c->n_heads;
    m->kv_dim = c->n_kv_heads * m->head_size;
    m->layers = calloc((size_t)c->n_layers, sizeof(l2_layer));
    return m->layers ? L2_OK : l2_fail(err, L2_ERR_NOMEM, "out of memory");
}

/* Walks a file image, handing out consecutive tensors and failing once past the end. */
typedef struct {
    const unsigned char *base;
    uint64_t size, offset;
    int overflow;
} cursor;

static const unsigned char *take(cursor *cur, uint64_t bytes) {
    if (cur->overflow || bytes > cur->size - cur->offset) {
        cur->overflow = 1;
        return NULL;
    }
    const unsigned char *p = cur->base + cur->offset;
    cur->offset += bytes;
    return p;
}

static const float *take_f32(cursor *cur, uint64_t n) {
    return (const float *)(const void *)take(cur, 4 * n);
}

static void take_matrix(cursor *cur, l2_matrix *m, l2_type type, int32_t rows, int32_t cols,
                        int32_t gs) {
    m->type = type;
    m->rows = rows;
    m->cols = cols;
    m->group_size = gs;
    m->tail = 0;
    m->data = take(cur, l2_packed_values_bytes(type, rows, cols, gs, 0));
    m->scales = take(cur, l2_packed_scales_bytes(type, rows, cols, gs, 0));
    m->plane = NULL;
}

/* ---------------------------------------------------------------- llama2.c files */

/* The per-layer matrices, each as one (n_layers, rows, cols) tensor in file order. */
enum { WQ, WK, WV, WO, W1, W2, W3, N_MATS };

static l2_matrix *layer_matrix(l2_layer *l, int which) {
    l2_matrix *m[N_MATS] = {&l->wq, &l->wk, &l->wv, &l->wo, &l->w1, &l->w2, &l->w3};
    return m[which];
}

/* the input vector (L2_SITE_*) a layer matrix reads */
static int site_of_matrix(int which) {
    static const int site[N_MATS] = {L2_SITE_QKV, L2_SITE_QKV, L2_SITE_QKV, L2_SITE_WO,
                                     L2_SITE_W13, L2_SITE_W2, L2_SITE_W13};
    return site[which];
}

static void matrix_shape(const l2_model *m, int which, int32_t *rows, int32_t *cols) {
    const l2_model_info *c = &m->info;
    int32_t shapes[N_MATS][2] = {{c->dim, c->dim}, {m->kv_dim, c->dim}, {m->kv_dim, c->dim},
                                 {c->dim, c->dim}, {c->hidden_dim, c->dim},
                                 {c->dim, c->hidden_dim}, {c->hidden_dim, c->dim}};
    *rows = shapes[which][0];
    *cols = shapes[which][1];
}

/* Matrices first..last (WQ..W3 order) of llama2.c files, each stored as one
 * (n_layers, rows, cols) block. */
static void take_layers(cursor *cur, l2_model *m, int first, int last, l2_type type, int32_t gs) {
    for (int w = first; w <= last; w++) {
        int32_t rows, cols;
        matrix_shape(m, w, &rows, &cols);
        for (int l = 0; l < m->info.n_layers; l++)
            take_matrix(cur, layer_matrix(&m->layers[l], w), type, rows, cols, gs);
    }
}

static void take_rms(cursor *cur, l2_model *m, int ffn) {
    for (int l = 0; l < m->info.n_layers; l++) {
        const float *p = take_f32(cur, (uint64_t)m->info.dim);
        if (ffn) m->layers[l].rms_ffn = p;
        else m->layers[l].rms_att = p;
    }
}

static l2_status load_v0(l2_model *m, cursor *cur, const char *path, l2_error *err) {
    l2_model_info *c = &m->info;
    uint64_t dim = (uint64_t)c->dim;
    cur->offset = 28;
    take_matrix(cur, &m->token_embedding, L2_TYPE_F32, c->vocab_size, c->dim, 0);
    take_rms(cur, m, 0);
    /* v0 interleaves the rms_ffn weights between wo and w1 */
    take_layers(cur, m, WQ, WO, L2_TYPE_F32, 0);
    take_rms(cur, m, 1);
    take_layers(cur, m, W1, W3, L2_TYPE_F32, 0);
    m->rms_final = take_f32(cur, dim);
    /* Two unused RoPE tables of (seq_len, head_size / 2) floats: they are what backs the
     * seq_len a file declares, and with it the largest session it can ask for. */
    uint64_t rope_bytes = 4 * (uint64_t)c->seq_len * (uint64_t)m->head_size;
    if (c->shared_classifier && !cur->overflow) {
        /* they end the file, and published files can be short there (stories260K.bin by 160
         * bytes): the second table may be cut, the first must be whole, so the seq_len a
         * file asks for is at most twice what it holds */
        uint64_t left = cur->size - cur->offset;
        if (left < rope_bytes / 2)
            return l2_fail(err, L2_ERR_FORMAT, "%s: seq_len %d needs %llu bytes of RoPE tables "
                           "but the file holds %llu (truncated file or wrong seq_len)", path,
                           c->seq_len, (unsigned long long)rope_bytes, (unsigned long long)left);
        if (left <= rope_bytes) cur->offset = cur->size;
        else take(cur, rope_bytes);
    } else {
        take(cur, rope_bytes);
        if (!c->shared_classifier) take_matrix(cur, &m->wcls, L2_TYPE_F32, c->vocab_size, c->dim, 0);
    }
    return L2_OK;
}

static void load_v1(l2_model *m, cursor *cur) {
    l2_model_info *c = &m->info;
    cur->offset = LLAMA2C_HEADER_BYTES;
    take_rms(cur, m, 0);
    take_rms(cur, m, 1);
    m->rms_final = take_f32(cur, (uint64_t)c->dim);
    take_matrix(cur, &m->token_embedding, L2_TYPE_F32, c->vocab_size, c->dim, 0);
    take_layers(cur, m, WQ, W3, L2_TYPE_F32, 0);
    if (!c->shared_classifier)
        take_matrix(cur, &m->wcls, L2_TYPE_F32, c->vocab_size, c->dim, 0);
}

static l2_status load_v2(l2_model *m, cursor *cur, const char *path, l2_error *err) {
    l2_model_info *c = &m->info;
    int32_t gs = c->group_size;
    cur->offset = LLAMA2C_HEADER_BYTES;
    take_rms(cur, m, 0);
    take_rms(cur, m, 1);
    m->rms_final = take_f32(cur, (uint64_t)c->dim);
    /* runq quantizes each tensor in flat groups: every tensor size must be a multiple */
    for (int w = 0; w < N_MATS; w++) {
        int32_t rows, cols;
        matrix_shape(m, w, &rows, &cols);
        if ((uint64_t)rows * (uint64_t)cols % (uint64_t)gs != 0)
            return l2_fail(err, L2_ERR_FORMAT, "%s: a %dx%d tensor is not a whole number of "
                           "groups of %d", path, rows, cols, gs);
    }
    if ((uint64_t)c->vocab_size * (uint64_t)c->dim % (uint64_t)gs != 0)
        return l2_fail(err, L2_ERR_FORMAT, "%s: the embedding is not a whole number of groups of %d",
                       path, gs);
    take_matrix(cur, &m->token_embedding, L2_TYPE_Q8_FLAT, c->vocab_size, c->dim, gs);
    take_layers(cur, m, WQ, W3, L2_TYPE_Q8_FLAT, gs);
    if (!c->shared_classifier)
        take_matrix(cur, &m->wcls, L2_TYPE_Q8_FLAT, c->vocab_size, c->dim, gs);
    return L2_OK;
}

/* ---------------------------------------------------------------- packed files */

/* The version 2 fields (FORMAT.md): how the file was made. */
static l2_status read_storage(l2_model *m, const unsigned char *h, uint32_t wtype,
                              const char *path, l2_error *err) {
    l2_storage_info *si = &m->storage;
    uint32_t sites = l2_read_u32(h + 60), method = l2_read_u32(h + 72), calib = l2_read_u32(h + 76);
    double e[2];
    for (int i = 0; i < 2; i++) {
        uint64_t bits = l2_read_u64(h + 80 + 8 * i);
        memcpy(&e[i], &bits, sizeof e[i]);
        if (!(e[i] >= 0.0 && e[i] <= 1e6))  /* NaN too */
            return l2_fail(err, L2_ERR_FORMAT, "%s: error statistic %d is %g, not a ratio", path, i,
                           e[i]);
    }
    if (sites >= (1u << L2_N_SITES) || (sites && wtype != L2_TYPE_Q8))
        return l2_fail(err, L2_ERR_FORMAT, "%s: two-part sites 0x%x are not valid here", path, sites);
    if (sites && l2_read_u32(h + 48) > L2_MAX_TWO_PART_GROUP)  /* the kernels' int32 sums */
        return l2_fail(err, L2_ERR_FORMAT, "%s: two-part inputs need groups of at most %d columns",
                       path, L2_MAX_TWO_PART_GROUP);
    if (method > L2_METHOD_GPTQ || (method != L2_METHOD_ABSMAX && wtype != L2_TYPE_Q8))
        return l2_fail(err, L2_ERR_FORMAT, "%s: unknown quantization method %u", path, method);
    if (calib > INT32_MAX || (calib && method != L2_METHOD_GPTQ))
        return l2_fail(err, L2_ERR_FORMAT, "%s: %u calibration tokens recorded", path, calib);
    for (int i = 96; i < L2_PACKED_HEADER_BYTES; i++)
        if (h[i]) return l2_fail(err, L2_ERR_FORMAT, "%s: reserved header byte %d is not 0", path, i);
    si->method = (int32_t)method;
    si->calib_tokens = (int32_t)calib;
    si->two_part_sites = sites;
    si->weight_error = e[0];
    si->output_error = e[1];
    return L2_OK;
}

static const char *const tensor_names[] = {"token_embedding", "rms_final", "wcls", "rms_att",
                                           "rms_ffn", "wq", "wk", "wv", "wo", "w1", "w2", "w3"};
enum { T_EMB, T_RMS_FINAL, T_WCLS, T_RMS_ATT, T_RMS_FFN, T_WQ, N_TENSOR_NAMES = 12,
       FIRST_LAYER_TENSOR = T_RMS_ATT };

static l2_status load_packed(l2_model *m, const char *path, l2_error *err) {
    const unsigned char *h = m->map.data;
    l2_model_info *c = &m->info;
    uint64_t size = m->map.size;
    if (size < L2_PACKED_HEADER_BYTES)
        return l2_fail(err, L2_ERR_FORMAT, "%s: packed header truncated", path);
    c->format_version = (int32_t)l2_read_u32(h + 4);
    if (c->format_version != 1 && c->format_version != L2_PACKED_VERSION)
        return l2_fail(err, L2_ERR_FORMAT, "%s: packed format version %d is not supported (this "
                       "library reads versions 1 and %d; convert the model again)", path,
                       c->format_version, L2_PACKED_VERSION);
    uint32_t header_bytes = l2_read_u32(h + 8), n_tensors = l2_read_u32(h + 12);
    read_config(c, h + 16);
    uint32_t wtype = l2_read_u32(h + 44), gs = l2_read_u32(h + 48), block_rows = l2_read_u32(h + 52);
    uint32_t flags = l2_read_u32(h + 56);
    uint64_t file_bytes = l2_read_u64(h + 64);
    if (file_bytes != size)
        return l2_fail(err, L2_ERR_FORMAT, "%s: file is %llu bytes but its header says %llu "
                       "(truncated or appended to)", path, (unsigned long long)size,
                       (unsigned long long)file_bytes);
    if (wtype > L2_TYPE_Q8)
        return l2_fail(err, L2_ERR_FORMAT, "%s: unknown weight type %u", path, wtype);
    if (wtype == L2_TYPE_Q8 && (gs == 0 || gs > MAX_GROUP || block_rows != L2_Q8_BLOCK_ROWS))
        return l2_fail(err, L2_ERR_FORMAT, "%s: q8 group size %u / block rows %u not supported",
                       path, gs, block_rows);
    if (flags > 1) return l2_fail(err, L2_ERR_FORMAT, "%s: unknown flags 0x%x", path, flags);
    c->weight_type = (int32_t)wtype;
    c->group_size = wtype == L2_TYPE_Q8 ? (int32_t)gs : 0;
    c->shared_classifier = (int32_t)(flags & 1);
    l2_status st = c->format_version == 1 ? L2_OK : read_storage(m, h, wtype, path, err);
    if (st != L2_OK) return st;
    st = shape_model(m, path, err);
    if (st != L2_OK) return st;

    int32_t expected = l2_tensor_count(c->n_layers, c->shared_classifier);
    if (n_tensors != (uint32_t)expected)
        return l2_fail(err, L2_ERR_FORMAT, "%s: %u tensors listed, the config needs %d", path,
                       n_tensors, expected);
    if (header_bytes < L2_PACKED_HEADER_BYTES + (uint64_t)n_tensors * L2_PACKED_ENTRY_BYTES ||
        header_bytes > size)
        return l2_fail(err, L2_ERR_FORMAT, "%s: header size %u is inconsistent", path, header_bytes);

    /* each (name, layer) must appear exactly once */
    size_t n_slots = (size_t)l2_tensor_count(c->n_layers, 0);  /* every name, wcls too */
    unsigned char *seen = calloc(n_slots, 1);
    if (!seen) return l2_fail(err, L2_ERR_NOMEM, "out of memory");
    st = L2_OK;
    for (uint32_t i = 0; i < n_tensors && st == L2_OK; i++) {
        const unsigned char *e = h + L2_PACKED_HEADER_BYTES + (size_t)i * L2_PACKED_ENTRY_BYTES;
        char name[17];
        memcpy(name, e, 16);
        name[16] = '\0';
        int32_t layer = l2_read_i32(e + 16);
        uint32_t type = l2_read_u32(e + 20), rows = l2_read_u32(e + 24), cols = l2_read_u32(e + 28);
        uint64_t off = l2_read_u64(e + 32), bytes = l2_read_u64(e + 40);
        uint64_t soff = l2_read_u64(e + 48), sbytes = l2_read_u64(e + 56);
        int t = 0;
        while (t < N_TENSOR_NAMES && strcmp(name, tensor_names[t]) != 0) t++;
        int per_layer = t >= FIRST_LAYER_TENSOR;
        if (t == N_TENSOR_NAMES || (t == T_WCLS && c->shared_classifier) ||
            (per_layer ? layer < 0 || layer >= c->n_layers : layer != -1)) {
            st = l2_fail(err, L2_ERR_FORMAT, "%s: unexpected tensor entry %u ('%.16s', layer %d)",
                         path, i, name, layer);
            break;
        }
        size_t slot = per_layer ? 3 + (size_t)layer * 9 + (size_t)(t - FIRST_LAYER_TENSOR) : (size_t)t;
        if (seen[slot]++) {
            st = l2_fail(err, L2_ERR_FORMAT, "%s: tensor %s (layer %d) listed twice", path, name, layer);
            break;
        }
        /* expected type and shape */
        int is_rms = t == T_RMS_FINAL || t == T_RMS_ATT || t == T_RMS_FFN;
        int32_t erows = 1, ecols = c->dim;
        if (!is_rms) {
            if (t == T_EMB || t == T_WCLS) erows = c->vocab_size;
            else matrix_shape(m, t - T_WQ, &erows, &ecols);
        }
        /* version 2: a matrix of a q8 file may be f16 (mixed precision, the lookup table), and
         * a layer matrix q10 where its input is two-part and the groups suit the kernel */
        l2_type etype = is_rms ? L2_TYPE_F32 : (l2_type)wtype;
        if (!is_rms && c->format_version >= 2 && wtype == L2_TYPE_Q8 && type == L2_TYPE_F16)
            etype = L2_TYPE_F16;
        if (per_layer && !is_rms && c->format_version >= 2 && wtype == L2_TYPE_Q8 &&
            type == L2_TYPE_Q10) {
            if (!(m->storage.two_part_sites & (1u << site_of_matrix(t - T_WQ))) || gs % 4 ||
                gs > L2_MAX_Q10_GROUP) {
                st = l2_fail(err, L2_ERR_FORMAT, "%s: tensor %s (layer %d) is q10, which needs a "
                             "two-part input and groups of 4k <= %d columns", path, name, layer,
                             L2_MAX_Q10_GROUP);
                break;
            }
            etype = L2_TYPE_Q10;
        }
        int32_t egs = etype == L2_TYPE_Q8 || etype == L2_TYPE_Q10 ? (int32_t)gs : 0;
        /* version 2 stores a q8 matrix's last rows%32 rows unpadded (FORMAT.md) */
        int32_t tail = egs && c->format_version >= 2 ? erows % L2_Q8_BLOCK_ROWS : 0;
        uint64_t ebytes = l2_packed_values_bytes(etype, erows, ecols, egs, tail);
        uint64_t esbytes = l2_packed_scales_bytes(etype, erows, ecols, egs, tail);
        if (type != (uint32_t)etype || rows != (uint32_t)erows || cols != (uint32_t)ecols ||
            bytes != ebytes || sbytes != esbytes) {
            st = l2_fail(err, L2_ERR_FORMAT, "%s: tensor %s (layer %d) has type %u shape %ux%u, "
                         "expected type %d shape %dx%d", path, name, layer, type, rows, cols,
                         (int)etype, erows, ecols);
            break;
        }
        if (off % L2_PACKED_ALIGN || off < header_bytes || bytes > size || off > size - bytes ||
            (sbytes && (soff % L2_PACKED_ALIGN || soff < header_bytes || sbytes > size ||
                        soff > size - sbytes))) {
            st = l2_fail(err, L2_ERR_FORMAT, "%s: tensor %s (layer %d) lies outside the file or "
                         "is misaligned", path, name, layer);
            break;
        }
        l2_matrix mat = {etype, erows, ecols, egs, tail, h + off, sbytes ? h + soff : NULL, NULL};
        if (etype == L2_TYPE_Q10)  /* after the int8 values, as q8 stores them */
            mat.plane = h + off + l2_packed_values_bytes(L2_TYPE_Q8, erows, ecols, egs, tail);
        switch (t) {
        case T_EMB: m->token_embedding = mat; break;
        case T_WCLS: m->wcls = mat; break;
        case T_RMS_FINAL: m->rms_final = mat.data; break;
        case T_RMS_ATT: m->layers[layer].rms_att = mat.data; break;
        case T_RMS_FFN: m->layers[layer].rms_ffn = mat.data; break;
        default: *layer_matrix(&m->layers[layer], t - T_WQ) = mat;
        }
    }
    free(seen);
    /* the matrices reading one input vector share a type: it is quantized once for them */
    for (int32_t l = 0; st == L2_OK && l < c->n_layers; l++) {
        const l2_layer *w = &m->layers[l];
        if (w->wk.type != w->wq.type || w->wv.type != w->wq.type || w->w3.type != w->w1.type)
            st = l2_fail(err, L2_ERR_FORMAT, "%s: layer %d mixes matrix types among those that "
                         "read the same input (wq/wk/wv or w1/w3)", path, l);
    }
    return st;
}

/* ---------------------------------------------------------------- entry point */

l2_status l2_load(l2_model *m, const char *path, l2_error *err) {
    l2_status st = l2_map_file(path, &m->map, err);
    if (st != L2_OK) return st;
    const unsigned char *h = m->map.data;
    uint64_t size = m->map.size;
    l2_model_info *c = &m->info;
    c->file_bytes = size;
    uint32_t magic = size >= 4 ? l2_read_u32(h) : 0;

    if (magic == L2_PACKED_MAGIC) {
        c->file_kind = L2_FILE_PACKED;
        st = load_packed(m, path, err);
    } else {
        cursor cur = {h, size, 0, 0};
        if (magic == LLAMA2C_MAGIC) {
            if (size < LLAMA2C_HEADER_BYTES)
                return l2_fail(err, L2_ERR_FORMAT, "%s: llama2.c header truncated", path);
            c->format_version = l2_read_i32(h + 4);
            if (c->format_version != 1 && c->format_version != 2)
                return l2_fail(err, L2_ERR_FORMAT, "%s: llama2.c format version %d is not "
                               "supported (1 and 2 are)", path, c->format_version);
            c->file_kind = c->format_version == 1 ? L2_FILE_V1 : L2_FILE_V2;
            read_config(c, h + 8);
            if (h[36] > 1)
                return l2_fail(err, L2_ERR_FORMAT, "%s: shared_classifier flag is %d", path, h[36]);
            c->shared_classifier = h[36];
            c->weight_type = c->file_kind == L2_FILE_V1 ? L2_TYPE_F32 : L2_TYPE_Q8_FLAT;
            if (c->file_kind == L2_FILE_V2) {
                c->group_size = l2_read_i32(h + 37);
                if (c->group_size <= 0 || c->group_size > MAX_GROUP)
                    return l2_fail(err, L2_ERR_FORMAT, "%s: group size %d is outside 1..%d", path,
                                   c->group_size, MAX_GROUP);
            }
        } else {
            if (size < 28)
                return l2_fail(err, L2_ERR_FORMAT, "%s: too short for a llama2.c checkpoint", path);
            c->file_kind = L2_FILE_V0;
            c->format_version = 0;
            read_config(c, h);
            c->shared_classifier = c->vocab_size > 0;
            if (c->vocab_size < 0 && c->vocab_size != INT32_MIN) c->vocab_size = -c->vocab_size;
            c->weight_type = L2_TYPE_F32;
        }
        st = shape_model(m, path, err);
        if (st != L2_OK) return st;
        if (c->file_kind == L2_FILE_V0) st = load_v0(m, &cur, path, err);
        else if (c->file_kind == L2_FILE_V1) load_v1(m, &cur);
        else st = load_v2(m, &cur, path, err);
        if (st == L2_OK && (cur.overflow || cur.offset != size))
            st = l2_fail(err, L2_ERR_FORMAT, "%s: file is %llu bytes but its header describes %s",
                         path, (unsigned long long)size,
                         cur.overflow ? "more (truncated file or wrong header)" : "fewer");
    }
    if (st != L2_OK) return st;
    if (c->shared_classifier) m->wcls = m->token_embedding;
    m->storage.embedding_type = m->token_embedding.type;
    /* a packed file says its matrices' type; the lookup table may differ (version 2) */
    if (c->file_kind != L2_FILE_PACKED) c->weight_type = m->token_embedding.type;
    return L2_OK;
}
