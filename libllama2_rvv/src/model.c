/* The model, the session state and the forward pass: the part that reads like llama2.c's
 * run.c. Weights are views into the mapped file (model.h); a session owns the KV cache and
 * the activations, which are all the memory one generation needs. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "sampler.h"

const char *l2_version(void) { return L2_VERSION; }

const char *l2_type_name(l2_type type) {
    switch (type) {
    case L2_TYPE_AUTO: return "auto";
    case L2_TYPE_F32: return "f32";
    case L2_TYPE_F16: return "f16";
    case L2_TYPE_Q8: return "q8";
    case L2_TYPE_Q8_FLAT: return "q8 (llama2.c v2)";
    case L2_TYPE_Q10: return "q10";
    }
    return NULL;
}

const char *l2_file_kind_name(l2_file_kind kind) {
    switch (kind) {
    case L2_FILE_V0: return "llama2.c v0";
    case L2_FILE_V1: return "llama2.c v1";
    case L2_FILE_V2: return "llama2.c v2 (Q8_0)";
    case L2_FILE_PACKED: return "packed";
    }
    return NULL;
}

/* ---------------------------------------------------------------- model */

static uint64_t matrix_bytes(const l2_matrix *m) {
    return l2_packed_values_bytes(m->type, m->rows, m->cols, m->group_size, m->tail) +
           l2_packed_scales_bytes(m->type, m->rows, m->cols, m->group_size, m->tail);
}

l2_status l2_model_open(const char *path, l2_model **out, l2_error *err) {
    l2_clear_error(err);
    if (!out) return l2_fail(err, L2_ERR_ARG, "l2_model_open: NULL argument");
    *out = NULL;
    if (!path) return l2_fail(err, L2_ERR_ARG, "no model path given");
    l2_model *m = calloc(1, sizeof *m);
    if (!m) return l2_fail(err, L2_ERR_NOMEM, "out of memory");
    l2_status st = l2_load(m, path, err);
    if (st != L2_OK) {
        l2_model_free(m);
        return st;
    }
    /* what one token streams: every layer, the classifier, one embedding row, the norms */
    const l2_model_info *c = &m->info;
    uint64_t bytes = matrix_bytes(&m->wcls) + matrix_bytes(&m->token_embedding) /
                     (uint64_t)c->vocab_size + 4 * (uint64_t)c->dim * (2 * (uint64_t)c->n_layers + 1);
    for (int l = 0; l < c->n_layers; l++) {
        const l2_layer *w = &m->layers[l];
        bytes += matrix_bytes(&w->wq) + matrix_bytes(&w->wk) + matrix_bytes(&w->wv) +
                 matrix_bytes(&w->wo) + matrix_bytes(&w->w1) + matrix_bytes(&w->w2) +
                 matrix_bytes(&w->w3);
    }
    m->info.weight_bytes_per_token = bytes;
    m->info.n_tensors = l2_tensor_count(c->n_layers, c->shared_classifier);
    *out = m;
    return L2_OK;
}

void l2_model_info_get(const l2_model *model, l2_model_info *out) { *out = model->info; }

l2_type l2_default_kv_type(const l2_model *model) {
    const l2_model_info *c = &model->info;
    return c->file_kind == L2_FILE_PACKED && c->weight_type != L2_TYPE_F32 ? L2_TYPE_F16 : L2_TYPE_F32;
}

void l2_model_storage_get(const l2_model *model, l2_storage_info *out) { *out = model->storage; }

void l2_model_free(l2_model *model) {
    if (!model) return;
    l2_unmap_file(&model->map);
    free(model->layers);
    free(model);
}

/* ---------------------------------------------------------------- session */

struct l2_session {
    const l2_model *model;
    const l2_kernels *k;
    int32_t context;        /* positions the KV cache holds */
    int32_t pos;            /* next position to evaluate */
    l2_type kv_type;
    /* activations, as in run.c */
    float *x;               /* (dim) the residual stream */
    float *xb, *xb2;        /* (dim) */
    float *hb, *hb2;        /* (hidden_dim) */
    float *q;               /* (dim) */
    float *k_new, *v_new;   /* (kv_dim) this position's key and value before they enter the cache */
    float *att;             /* (n_heads, context) */
    float *logits;          /* (vocab_size) */
    float *rope_cos, *rope_sin; /* (head_size / 2) this position's rotation */
    int8_t *xq;             /* (max(dim, hidden) rounded up to groups) q8 input vector */
    float *xs;              /* (groups) its scales */
    /* a two-part input's low part (FORMAT.md; empty unless the file has two-part sites) */
    int8_t *xlo;
    int two_part;           /* 1 while the vector last loaded is two-part */
    l2_observer observe;    /* l2_session_observe */
    void *observe_ctx;
    void *key_cache;        /* (layer, context, kv_dim) f32 or f16 */
    void *value_cache;      /* (layer, context, kv_dim) */
    void *block;            /* the one allocation all the above live in (64-byte aligned within) */
    atomic_int cancel;      /* 1: evals stop (l2_session_cancel, any thread); reset clears it */
    atomic_int busy;        /* 1 while an l2_session_eval runs: a second one is refused */
};

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

l2_status l2_session_new(const l2_model *model, const l2_session_params *params,
                         l2_session **out, l2_error *err) {
    l2_clear_error(err);
    if (!model || !out) return l2_fail(err, L2_ERR_ARG, "l2_session_new: NULL argument");
    *out = NULL;
    const l2_model_info *c = &model->info;
    l2_session_params p = {0, L2_TYPE_F32, NULL};
    if (params) p = *params;
    if (p.context == 0) p.context = c->seq_len;
    if (p.kv_type == L2_TYPE_AUTO) p.kv_type = l2_default_kv_type(model);
    if (p.context < 0 || p.context > c->seq_len)
        return l2_fail(err, L2_ERR_ARG, "context %d is outside 1..%d (the model's seq_len)",
                       p.context, c->seq_len);
    if (p.kv_type != L2_TYPE_F32 && p.kv_type != L2_TYPE_F16)
        return l2_fail(err, L2_ERR_ARG, "KV cache type must be f32 or f16");
    const l2_kernels *k = l2_kernels_find(p.kernels);
    if (!k) return l2_fail(err, L2_ERR_ARG, "kernel set '%s' is not available on this CPU",
                           p.kernels);

    int32_t gs = c->group_size > 0 ? c->group_size : 1;
    size_t widest = (size_t)(c->dim > c->hidden_dim ? c->dim : c->hidden_dim);
    size_t groups = (widest + (size_t)gs - 1) / (size_t)gs;
    size_t dim = (size_t)c->dim, hidden = (size_t)c->hidden_dim, kv_dim = (size_t)model->kv_dim;
    size_t kv_elem = p.kv_type == L2_TYPE_F16 ? 2 : 4;
    size_t cache = (size_t)c->n_layers * (size_t)p.context * kv_dim * kv_elem;
    size_t two = model->storage.two_part_sites ? 1 : 0;
    size_t sizes[] = {
        4 * dim, 4 * dim, 4 * dim, 4 * hidden, 4 * hidden, 4 * dim, 4 * kv_dim, 4 * kv_dim,
        4 * (size_t)c->n_heads * (size_t)p.context, 4 * (size_t)c->vocab_size,
        2 * (size_t)model->head_size, 2 * (size_t)model->head_size,
        groups * (size_t)gs, 4 * groups, cache, cache,
        two * groups * (size_t)gs,
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) total += align64(sizes[i]);

    /* calloc: the KV cache's pages stay untouched (and uncharged) until positions use them */
    l2_session *s = calloc(1, sizeof *s);
    void *block = calloc(1, total + 63);
    if (!s || !block) {
        free(s);
        free(block);
        return l2_fail(err, L2_ERR_NOMEM, "out of memory for a %d-position session (%zu bytes)",
                       p.context, total);
    }
    void **slots[] = {
        (void **)&s->x, (void **)&s->xb, (void **)&s->xb2, (void **)&s->hb, (void **)&s->hb2,
        (void **)&s->q, (void **)&s->k_new, (void **)&s->v_new, (void **)&s->att,
        (void **)&s->logits, (void **)&s->rope_cos, (void **)&s->rope_sin, (void **)&s->xq,
        (void **)&s->xs, &s->key_cache, &s->value_cache, (void **)&s->xlo,
    };
    char *at = (char *)(((uintptr_t)block + 63) & ~(uintptr_t)63);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        *slots[i] = at;
        at += align64(sizes[i]);
    }
    s->block = block;
    s->model = model;
    s->k = k;
    s->context = p.context;
    s->kv_type = p.kv_type;
    atomic_init(&s->cancel, 0);
    atomic_init(&s->busy, 0);
    *out = s;
    return L2_OK;
}

void l2_session_free(l2_session *s) {
    if (!s) return;
    free(s->block);
    free(s);
}

void l2_session_reset(l2_session *s) {
    s->pos = 0;
    atomic_store(&s->cancel, 0);
}

void l2_session_cancel(l2_session *s) { atomic_store(&s->cancel, 1); }

static int cancelled(const l2_session *s) {
    return atomic_load_explicit(&s->cancel, memory_order_relaxed);
}
int32_t l2_session_pos(const l2_session *s) { return s->pos; }
int32_t l2_session_context(const l2_session *s) { return s->context; }
l2_type l2_session_kv_type(const l2_session *s) { return s->kv_type; }
int32_t l2_session_vocab_size(const l2_session *s) { return s->model->info.vocab_size; }
const char *l2_session_kernels(const l2_session *s) { return s->k->name; }
float *l2_session_logits(l2_session *s) { return s->logits; }

l2_status l2_session_sample(l2_session *s, l2_sampler *sampler, int32_t *token, l2_error *err) {
    if (s && sampler && l2_sampler_vocab_size(sampler) != s->model->info.vocab_size) {
        if (token) *token = 0;
        return l2_fail(err, L2_ERR_ARG, "the sampler's vocabulary (%d) is not the model's (%d)",
                       l2_sampler_vocab_size(sampler), s->model->info.vocab_size);
    }
    return l2_sampler_sample_with(sampler, s ? s->k : NULL, s ? s->logits : NULL, token, err);
}

/* ---------------------------------------------------------------- neural net blocks */

void l2_session_observe(l2_session *s, l2_observer fn, void *ctx) {
    s->observe = fn;
    s->observe_ctx = ctx;
}

/* q8 matrices take the input vector quantized: done once per vector, shared by its matmuls
 * (`first` is one of them); at a two-part site in two parts. */
static void load_input(l2_session *s, const float *x, int n, int site, int layer,
                       const l2_matrix *first) {
    if (s->observe) s->observe(s->observe_ctx, site, layer, x, n);
    s->two_part = 0;
    if (first->type != L2_TYPE_Q8 && first->type != L2_TYPE_Q10) return;
    if (s->model->storage.two_part_sites & (1u << site)) {
        s->k->quantize_q8_two_part(s->xq, s->xlo, s->xs, x, n, first->group_size);
        s->two_part = 1;
    } else {
        s->k->quantize_q8(s->xq, s->xs, x, n, first->group_size);
    }
}

/* out = w @ x, x the vector last given to load_input */
static void matmul(l2_session *s, float *out, const l2_matrix *w, const float *x) {
    switch (w->type) {
    case L2_TYPE_F32: s->k->matvec_f32(out, w->data, x, w->rows, w->cols); break;
    case L2_TYPE_F16: s->k->matvec_f16(out, w->data, x, w->rows, w->cols); break;
    case L2_TYPE_Q8:
    case L2_TYPE_Q10: {  /* q10: its input is two-part (the loader's rule) */
        int full = w->rows - w->tail;  /* the rows in whole blocks */
        const float *ws = (const float *)(const void *)w->scales;
        if (full > 0 && w->type == L2_TYPE_Q10)
            s->k->matvec_q10(out, w->data, w->plane, ws, s->xq, s->xlo, s->xs, full, w->cols,
                             w->group_size);
        else if (full > 0 && s->two_part)
            s->k->matvec_q8_two_part(out, w->data, ws, s->xq, s->xlo, s->xs, full, w->cols,
                                     w->group_size);
        else if (full > 0)
            s->k->matvec_q8(out, w->data, ws, s->xq, s->xs, full, w->cols, w->group_size);
        if (w->tail) {  /* the tail rows (version 2), row-major, times the float input */
            size_t gs = (size_t)w->group_size, groups = ((size_t)w->cols + gs - 1) / gs;
            size_t at = (size_t)full * groups * gs;  /* their first value */
            const int8_t *wq = (const int8_t *)w->data + at;
            if (w->type == L2_TYPE_Q10)  /* with the tail's own plane, after the blocks' */
                l2_matvec_q10_flat(out + full, wq, w->plane + at / 4, ws + (size_t)full * groups,
                                   x, w->tail, w->cols, w->group_size);
            else
                l2_matvec_q8_flat(out + full, wq, w->scales + 4 * (size_t)full * groups, x,
                                  w->tail, w->cols, w->group_size);
        }
        break;
    }
    case L2_TYPE_Q8_FLAT:
        l2_matvec_q8_flat(out, w->data, w->scales, x, w->rows, w->cols, w->group_size);
        break;
    default: break;  /* L2_TYPE_AUTO: never a matrix's type (a case of its own costs a
                      * compare per matmul on RISC-V builds) */
    }
}

/* RoPE angles of this position, computed as llama2.c does, once for all heads and layers. */
static void rope_angles(l2_session *s, int pos) {
    int head_size = s->model->head_size;
    for (int i = 0; i < head_size; i += 2) {
        float freq = 1.0f / powf(10000.0f, (float)i / (float)head_size);
        float val = (float)pos * freq;
        s->rope_cos[i / 2] = cosf(val);
        s->rope_sin[i / 2] = sinf(val);
    }
}

static void add(float *x, const float *y, int n) {
    for (int i = 0; i < n; i++) x[i] += y[i];
}

/* One position. With want_logits = 0 (prompt tokens whose logits nobody reads) the
 * classifier, 60% of a stories15M token, is skipped. Returns 0, or 1 when l2_session_cancel
 * stopped it (checked before each layer: a cancel waits for at most one layer). */
static int forward(l2_session *s, int32_t token, int want_logits) {
    const l2_model *m = s->model;
    const l2_model_info *p = &m->info;
    const l2_kernels *k = s->k;
    int dim = p->dim, hidden = p->hidden_dim, kv_dim = m->kv_dim, hs = m->head_size;
    int kv_mul = p->n_heads / p->n_kv_heads, pos = s->pos;
    size_t ctx = (size_t)s->context;
    float *x = s->x;

    l2_matrix_row(&m->token_embedding, token, x);
    rope_angles(s, pos);

    for (int l = 0; l < p->n_layers; l++) {
        if (cancelled(s)) return 1;
        const l2_layer *w = &m->layers[l];
        size_t layer_off = (size_t)l * ctx * (size_t)kv_dim;
        size_t pos_off = layer_off + (size_t)pos * (size_t)kv_dim;
        int f16 = s->kv_type == L2_TYPE_F16;
        /* f32 caches take k and v in place; f16 ones after conversion */
        float *kc = f16 ? s->k_new : (float *)s->key_cache + pos_off;
        float *vc = f16 ? s->v_new : (float *)s->value_cache + pos_off;

        /* attention: qkv matmuls, RoPE, cache */
        k->rmsnorm(s->xb, x, w->rms_att, dim);
        load_input(s, s->xb, dim, L2_SITE_QKV, l, &w->wq);
        matmul(s, s->q, &w->wq, s->xb);
        matmul(s, kc, &w->wk, s->xb);
        matmul(s, vc, &w->wv, s->xb);
        k->rope(s->q, dim, hs, s->rope_cos, s->rope_sin);
        k->rope(kc, kv_dim, hs, s->rope_cos, s->rope_sin);
        if (f16) {
            k->to_f16((uint16_t *)s->key_cache + pos_off, kc, kv_dim);
            k->to_f16((uint16_t *)s->value_cache + pos_off, vc, kv_dim);
        }

        /* multihead attention over positions 0..pos */
        for (int h = 0; h < p->n_heads; h++) {
            const float *q = s->q + (size_t)h * (size_t)hs;
            float *att = s->att + (size_t)h * ctx;
            size_t head_off = layer_off + (size_t)(h / kv_mul) * (size_t)hs;
            float *out = s->xb + (size_t)h * (size_t)hs;
            if (f16) {
                k->attn_scores_f16(att, q, (const uint16_t *)s->key_cache + head_off, pos + 1,
                                   (size_t)kv_dim, hs);
                k->softmax(att, pos + 1);
                k->attn_mix_f16(out, att, (const uint16_t *)s->value_cache + head_off, pos + 1,
                                (size_t)kv_dim, hs);
            } else {
                k->attn_scores_f32(att, q, (const float *)s->key_cache + head_off, pos + 1,
                                   (size_t)kv_dim, hs);
                k->softmax(att, pos + 1);
                k->attn_mix_f32(out, att, (const float *)s->value_cache + head_off, pos + 1,
                                (size_t)kv_dim, hs);
            }
        }
        load_input(s, s->xb, dim, L2_SITE_WO, l, &w->wo);
        matmul(s, s->xb2, &w->wo, s->xb);
        add(x, s->xb2, dim);

        /* feed-forward: w2(silu(w1 x) * w3 x) */
        k->rmsnorm(s->xb, x, w->rms_ffn, dim);
        load_input(s, s->xb, dim, L2_SITE_W13, l, &w->w1);
        matmul(s, s->hb, &w->w1, s->xb);
        matmul(s, s->hb2, &w->w3, s->xb);
        k->silu_mul(s->hb, s->hb2, hidden);
        load_input(s, s->hb, hidden, L2_SITE_W2, l, &w->w2);
        matmul(s, s->xb, &w->w2, s->hb);
        add(x, s->xb, dim);
    }

    if (want_logits) {
        k->rmsnorm(x, x, m->rms_final, dim);
        load_input(s, x, dim, L2_SITE_CLS, -1, &m->wcls);
        matmul(s, s->logits, &m->wcls, x);
    }
    s->pos++;
    return 0;
}

/* l2_session_eval with the session to itself. */
static l2_status eval(l2_session *s, const int32_t *tokens, int32_t n, l2_error *err) {
    const l2_model_info *p = &s->model->info;
    if (n <= 0 || !tokens) return l2_fail(err, L2_ERR_ARG, "no tokens to evaluate");
    if (n > s->context - s->pos)
        return l2_fail(err, L2_ERR_RANGE, "%d tokens at position %d do not fit the context of %d",
                       n, s->pos, s->context);
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= p->vocab_size)
            return l2_fail(err, L2_ERR_ARG, "token id %d is outside 0..%d", tokens[i],
                           p->vocab_size - 1);
    int32_t start = s->pos;
    for (int32_t i = 0; i < n; i++) {
        if (forward(s, tokens[i], i == n - 1)) {
            s->pos = start;  /* a failed eval leaves no position behind */
            return l2_fail(err, L2_ERR_CANCELLED, "cancelled at position %d of %d (the session "
                           "evaluates again once reset)", start + i, start + n);
        }
    }
    if (!s->k->all_finite(s->logits, p->vocab_size)) {
        s->pos = start;
        return l2_fail(err, L2_ERR_NUMERIC, "the model produced a non-finite logit at "
                       "position %d (corrupt weights?)", start + n - 1);
    }
    return L2_OK;
}

l2_status l2_session_eval(l2_session *s, const int32_t *tokens, int32_t n, l2_error *err) {
    l2_clear_error(err);
    /* the context check and the position update must not interleave with another eval's */
    if (atomic_exchange_explicit(&s->busy, 1, memory_order_acquire))
        return l2_fail(err, L2_ERR_BUSY, "the session is being evaluated by another thread (a "
                       "session is for one thread at a time)");
    l2_status st = cancelled(s) ? l2_fail(err, L2_ERR_CANCELLED, "the session was cancelled (it "
                                          "evaluates again once reset)")
                                : eval(s, tokens, n, err);
    atomic_store_explicit(&s->busy, 0, memory_order_release);
    return st;
}
