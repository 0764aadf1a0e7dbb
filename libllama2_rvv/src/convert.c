/* Writing the packed format (FORMAT.md) from any model the loader opens.
 * Streams one block of rows at a time, so converting needs little memory even on a board. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model.h"

#define DEFAULT_GROUP 32

typedef struct {
    const char *name;
    int32_t layer;
    const l2_matrix *src;    /* NULL for norm vectors */
    const float *vec;        /* norm weights (dim) */
    l2_type type;
    int32_t rows, cols, gs;
    uint64_t offset, bytes, scales_offset, scales_bytes;
    int site;                /* L2_SITE_* of a matrix; -1 for the lookup table and norms */
    uint64_t plane_offset;   /* q10: where the 2-bit low parts start (after the int8 values) */
} out_tensor;

typedef struct {
    int fd;
    const char *path;
    l2_error *err;
    /* GPTQ (FORMAT.md "Modes"): of the tensor being written, the inputs' Gram matrix H and the
     * upper Cholesky factor U of H^-1 (cols x cols), or NULL for rounding to nearest */
    const double *h, *u;
    double err_sq, ref_sq, out_err, out_ref;  /* the error statistics, summed */
} writer;

/* e' H e for a row vector e of n, H symmetric (n x n) */
static double quad(const double *h, const double *e, size_t n) {
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        double row = 0.0;
        for (size_t j = 0; j < n; j++) row += h[i * n + j] * e[j];
        sum += e[i] * row;
    }
    return sum;
}

/* The integer levels of q8 (top 127) and q10 (top 508: v = 4 h + l with h = floor(v / 4) in
 * -127..127, l in 0..3; kernels.h): round(w / scale), scale = max|w| / top over a group,
 * clamped here */
static long clamp_level(long q, long top) { return q > top ? top : q < -top ? -top : q; }

/* Row `row` (cols) of a q8 or q10 matrix group-quantized with GPTQ: each column rounded in
 * turn, its rounding error spread over the columns not yet rounded (weighted by U), group
 * scales taken from the updated values when a group starts. Writes lv[(g*gs+i)*BR + r],
 * scales. */
static void gptq_row(writer *w, const float *row, size_t cols, size_t gs, size_t r, long top,
                     int16_t *lv, float *scales, double *work, double *err) {
    enum { BR = L2_Q8_BLOCK_ROWS };
    const double *u = w->u;
    for (size_t c = 0; c < cols; c++) work[c] = row[c];
    for (size_t c0 = 0; c0 < cols; c0 += gs) {
        size_t len = cols - c0 < gs ? cols - c0 : gs;
        float amax = 0.0f;
        for (size_t i = 0; i < len; i++) amax = fmaxf(amax, fabsf((float)work[c0 + i]));
        float scale = amax / (float)top;
        scales[(c0 / gs) * BR + r] = scale;
        for (size_t i = 0; i < len; i++) {
            size_t c = c0 + i;
            long qv = clamp_level(scale > 0.0f ? lrint(work[c] / scale) : 0, top);
            lv[(c0 + i) * BR + r] = (int16_t)qv;
            double e = (work[c] - (double)((float)qv * scale)) / u[c * cols + c];
            for (size_t j = c + 1; j < cols; j++) work[j] -= e * u[c * cols + j];
            err[c] = (double)row[c] - (double)((float)qv * scale);
        }
    }
}

/* Levels lv[0..n) as stored: q8's int8 values, or q10's high parts and, into `plane` (which
 * holds n / 4 bytes), the low parts of every four consecutive levels `stride` apart (the
 * blocks' layout: stride BR, quads of columns; the tail's: stride 1, the flattened rows). */
static void pack_levels(const int16_t *lv, size_t n, int q10, size_t stride, int8_t *q,
                        uint8_t *plane) {
    if (q10) memset(plane, 0, (n + 3) / 4);
    for (size_t i = 0; i < n; i++) {
        long v = lv[i], lo = q10 ? ((v % 4) + 4) % 4 : 0;
        q[i] = (int8_t)((v - lo) / (q10 ? 4 : 1));
        /* element i = (quad k, column j in it, row r): plane byte k * stride + r */
        size_t quad = i / (4 * stride), j = i / stride % 4, at = quad * stride + i % stride;
        if (q10) plane[at] |= (uint8_t)(lo << (2 * j));
    }
}

static uint64_t align_up(uint64_t n) { return (n + L2_PACKED_ALIGN - 1) / L2_PACKED_ALIGN * L2_PACKED_ALIGN; }

static l2_status write_at(writer *w, const void *buf, size_t n, uint64_t offset) {
    const char *p = buf;
    while (n > 0) {
        ssize_t k = pwrite(w->fd, p, n, (off_t)offset);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return l2_fail(w->err, L2_ERR_IO, "cannot write %s: %s", w->path, strerror(errno));
        p += k;
        n -= (size_t)k;
        offset += (uint64_t)k;
    }
    return L2_OK;
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

/* The last rows%32 rows of a q8 or q10 matrix, row-major after its blocks, in groups of gs of
 * the flattened tail, rounded to nearest (FORMAT.md): rows[0..n) are rows r0.. of t. */
static l2_status write_tail(writer *w, const out_tensor *t, int32_t r0, int32_t n,
                            const float *rows, void *scratch, l2_tensor_report *rep) {
    size_t cols = (size_t)t->cols, gs = (size_t)t->gs, groups = (cols + gs - 1) / gs;
    size_t total = (size_t)n * cols, tail_groups = (total + gs - 1) / gs;
    int q10 = t->type == L2_TYPE_Q10;
    long top = q10 ? 508 : 127;
    int16_t *lv = scratch;
    int8_t *q = (int8_t *)(lv + total);
    uint8_t *plane = (uint8_t *)q + total;
    float *scales = (float *)(void *)(plane + (total + 3) / 4 * 4);
    for (size_t g = 0; g < tail_groups; g++) {
        size_t f0 = g * gs, len = total - f0 < gs ? total - f0 : gs;
        float amax = 0.0f;
        for (size_t i = 0; i < len; i++) amax = fmaxf(amax, fabsf(rows[f0 + i]));
        float scale = amax / (float)top;
        scales[g] = scale;
        for (size_t i = 0; i < len; i++) {
            float v = rows[f0 + i];
            long qv = clamp_level(scale > 0.0f ? lrintf(v / scale) : 0, top);
            lv[f0 + i] = (int16_t)qv;
            double e = fabs((double)((float)qv * scale) - (double)v);
            if (e > rep->max_abs_error) rep->max_abs_error = e;
            w->err_sq += e * e;
        }
    }
    pack_levels(lv, total, q10, 1, q, plane);
    uint64_t full = (uint64_t)r0;  /* the tail starts after the whole blocks */
    l2_status st = write_at(w, q, total, t->offset + full * groups * gs);
    if (st == L2_OK && q10)  /* the tail's plane, after the blocks' */
        st = write_at(w, plane, (total + 3) / 4, t->plane_offset + full * groups * gs / 4);
    if (st != L2_OK) return st;
    return write_at(w, scales, 4 * tail_groups, t->scales_offset + 4 * full * groups);
}

/* Converts rows [r0, r0+n) of t's source into the output type and writes them. */
static l2_status write_rows(writer *w, const out_tensor *t, int32_t r0, int32_t n, float *rows,
                            void *scratch, l2_tensor_report *rep) {
    size_t cols = (size_t)t->cols;
    for (int32_t r = 0; r < n; r++) {
        float *row = rows + (size_t)r * cols;
        if (t->src) l2_matrix_row(t->src, r0 + r, row);
        else memcpy(row, t->vec, cols * sizeof(float));
        for (size_t c = 0; c < cols; c++) {
            if (!isfinite(row[c]))
                return l2_fail(w->err, L2_ERR_NUMERIC, "%s (layer %d) row %d holds NaN or infinity",
                               t->name, t->layer, r0 + r);
            double a = fabs((double)row[c]);
            if (a > rep->max_abs_value) rep->max_abs_value = a;
            if (t->type == L2_TYPE_Q8 || t->type == L2_TYPE_Q10) w->ref_sq += (double)row[c] * row[c];
        }
    }
    uint64_t first = (uint64_t)r0 * cols;
    switch (t->type) {
    case L2_TYPE_F32:
        return write_at(w, rows, (size_t)n * cols * 4, t->offset + 4 * first);
    case L2_TYPE_F16: {
        uint16_t *h = scratch;
        for (size_t i = 0; i < (size_t)n * cols; i++) {
            h[i] = l2_f32_to_f16(rows[i]);
            if ((h[i] & 0x7c00u) == 0x7c00u)
                return l2_fail(w->err, L2_ERR_RANGE, "%s (layer %d) row %d holds %g, too large for "
                               "f16 (|w| <= 65504): convert to f32 or q8", t->name, t->layer,
                               r0 + (int32_t)(i / cols), (double)rows[i]);
            double e = fabs((double)l2_f16_to_f32(h[i]) - (double)rows[i]);
            if (e > rep->max_abs_error) rep->max_abs_error = e;
        }
        return write_at(w, h, (size_t)n * cols * 2, t->offset + 2 * first);
    }
    default: {  /* q8, q10: one block of BR rows, or the tail rows after the last one */
        enum { BR = L2_Q8_BLOCK_ROWS };
        if (n < BR) return write_tail(w, t, r0, n, rows, scratch, rep);
        size_t gs = (size_t)t->gs, groups = (cols + gs - 1) / gs, values = groups * gs * BR;
        int q10 = t->type == L2_TYPE_Q10;
        long top = q10 ? 508 : 127;
        int16_t *lv = scratch;
        int8_t *q = (int8_t *)(lv + values);
        uint8_t *plane = (uint8_t *)q + values;
        float *scales = (float *)(void *)(plane + values / 4);
        double *work = (double *)(void *)(scales + groups * BR), *err = work + cols;
        memset(lv, 0, values * sizeof *lv);
        memset(scales, 0, groups * BR * sizeof(float));
        for (size_t r = 0; r < (size_t)n; r++) {
            const float *row = rows + r * cols;
            if (w->u) {
                gptq_row(w, row, cols, gs, r, top, lv, scales, work, err);
                for (size_t c = 0; c < cols; c++) {
                    double e = fabs(err[c]);
                    if (e > rep->max_abs_error) rep->max_abs_error = e;
                    w->err_sq += e * e;
                    work[c] = row[c];
                }
                w->out_err += quad(w->h, err, cols);
                w->out_ref += quad(w->h, work, cols);
                continue;
            }
            for (size_t g = 0; g < groups; g++) {
                size_t c0 = g * gs, len = cols - c0 < gs ? cols - c0 : gs;
                float amax = 0.0f;
                for (size_t i = 0; i < len; i++) amax = fmaxf(amax, fabsf(row[c0 + i]));
                float scale = amax / (float)top;  /* as llama2.c's exporter: q = round(w / scale) */
                scales[g * BR + r] = scale;
                for (size_t i = 0; i < len; i++) {
                    float v = row[c0 + i];
                    long qv = clamp_level(scale > 0.0f ? lrintf(v / scale) : 0, top);
                    lv[(g * gs + i) * BR + r] = (int16_t)qv;
                    double e = fabs((double)((float)qv * scale) - (double)v);
                    if (e > rep->max_abs_error) rep->max_abs_error = e;
                    w->err_sq += e * e;
                }
            }
        }
        pack_levels(lv, values, q10, BR, q, plane);
        uint64_t block = (uint64_t)r0 / BR;
        l2_status st = write_at(w, q, values, t->offset + block * values);
        if (st == L2_OK && q10)
            st = write_at(w, plane, values / 4, t->plane_offset + block * values / 4);
        if (st != L2_OK) return st;
        return write_at(w, scales, groups * BR * 4, t->scales_offset + block * groups * BR * 4);
    }
    }
}

static l2_status write_tensor(writer *w, const out_tensor *t, l2_tensor_report *rep) {
    enum { BR = L2_Q8_BLOCK_ROWS };
    size_t cols = (size_t)t->cols, gs = t->gs > 0 ? (size_t)t->gs : 1;
    size_t groups = (cols + gs - 1) / gs;
    float *rows = malloc(BR * cols * sizeof(float));
    /* q8, q10: a block's levels, values, plane and scales, and GPTQ's two rows of doubles */
    void *scratch = malloc(BR * (4 * groups * gs + 4 * groups + 2 * cols) + 16 * cols + 64);
    l2_status st = L2_OK;
    if (!rows || !scratch) st = l2_fail(w->err, L2_ERR_NOMEM, "out of memory");
    for (int32_t r0 = 0; st == L2_OK && r0 < t->rows; r0 += BR) {
        int32_t n = t->rows - r0 < BR ? t->rows - r0 : BR;
        st = write_rows(w, t, r0, n, rows, scratch, rep);
    }
    free(rows);
    free(scratch);
    return st;
}

/* 1 when `path` names the file `map` maps (by any name: links, "./", hard links). */
static int is_mapped_file(const char *path, const l2_mapping *map) {
    struct stat st;
    return stat(path, &st) == 0 && (uint64_t)st.st_dev == map->dev && (uint64_t)st.st_ino == map->ino;
}

/* Makes a rename into the directory of `path` durable: fsync of the directory. */
static l2_status sync_parent_dir(const char *path, l2_error *err) {
    const char *slash = strrchr(path, '/');
    size_t len = slash ? (size_t)(slash - path) : 0;
    char *dir = malloc(len + 2);
    if (!dir) return l2_fail(err, L2_ERR_NOMEM, "out of memory");
    if (!slash) strcpy(dir, ".");
    else if (len == 0) strcpy(dir, "/");
    else {
        memcpy(dir, path, len);
        dir[len] = '\0';
    }
    l2_status st = L2_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL))  /* EINVAL: no syncing directories there */
        st = l2_fail(err, L2_ERR_IO, "cannot sync directory %s: %s", dir, strerror(errno));
    if (fd >= 0) close(fd);
    free(dir);
    return st;
}

l2_status l2_convert_mode(const char *name, l2_convert_params *out, l2_error *err) {
    l2_clear_error(err);
    if (!out) return l2_fail(err, L2_ERR_ARG, "l2_convert_mode: NULL argument");
    /* The levers FORMAT.md's "Modes" measures: GPTQ rounding, an f16 lookup table, two-part
     * inputs where int8 activations cost most, f16 for layer 0's attention (on stories260K
     * the single most sensitive set of matrices, 3 % of stories15M's weights), and 10-bit
     * layer matrices (faithful: the classifier, most of stories15M's bytes, stays int8). */
    enum { QKV = 1u << L2_SITE_QKV, WO = 1u << L2_SITE_WO, W2 = 1u << L2_SITE_W2,
           LAYERS = L2_LAYER_SITES };
    static const uint32_t first_attention[] = {QKV};
    static const struct { const char *name; l2_convert_params p; } modes[] = {
        {"f32", {.type = L2_TYPE_F32}},
        {"f16", {.type = L2_TYPE_F16}},
        {"q8", {.type = L2_TYPE_Q8, .group_size = DEFAULT_GROUP}},
        {"fast", {.type = L2_TYPE_Q8, .group_size = DEFAULT_GROUP, .method = L2_METHOD_GPTQ,
                  .f16_embedding = 1, .two_part_sites = QKV | WO | W2,
                  .f16_layer_sites = first_attention, .n_f16_layer_sites = 1}},
        {"balanced", {.type = L2_TYPE_Q8, .group_size = DEFAULT_GROUP, .method = L2_METHOD_GPTQ,
                      .f16_embedding = 1, .two_part_sites = LAYERS,
                      .f16_layer_sites = first_attention, .n_f16_layer_sites = 1}},
        {"faithful", {.type = L2_TYPE_Q8, .group_size = DEFAULT_GROUP, .method = L2_METHOD_GPTQ,
                      .f16_embedding = 1, .two_part_sites = LAYERS, .q10_sites = LAYERS}},
    };
    for (size_t i = 0; name && i < sizeof modes / sizeof modes[0]; i++)
        if (!strcmp(name, modes[i].name)) {
            *out = modes[i].p;
            return L2_OK;
        }
    return l2_fail(err, L2_ERR_ARG, "unknown mode '%s' (f32, f16, q8, fast, balanced, faithful)",
                   name ? name : "");
}

l2_status l2_convert(const l2_model *m, const char *path, l2_type type, int32_t group_size,
                     l2_tensor_report *reports, int32_t max_reports, int32_t *n_reports,
                     l2_error *err) {
    l2_convert_params p = {.type = type, .group_size = group_size};
    return l2_convert_with(m, path, &p, reports, max_reports, n_reports, err);
}

/* ---------------------------------------------------------------- GPTQ calibration */

/* Gram matrices sum(x x') of every matrix input, per layer and site, and the classifier's. */
typedef struct {
    const l2_model *m;
    double **h;              /* [layer * 4 + site], the classifier's last */
    size_t *n;
} grams;

static size_t gram_index(const grams *g, int site, int layer) {
    return site == L2_SITE_CLS ? 4 * (size_t)g->m->info.n_layers : 4 * (size_t)layer + (size_t)site;
}

static void observe(void *ctx, int site, int layer, const float *x, int n) {
    grams *g = ctx;
    double *h = g->h[gram_index(g, site, layer)];
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) h[(size_t)i * (size_t)n + (size_t)j] += (double)x[i] * x[j];
}

static void grams_free(grams *g) {
    if (g->h)
        for (size_t i = 0; i <= 4 * (size_t)g->m->info.n_layers; i++) free(g->h[i]);
    free(g->h);
    free(g->n);
}

/* Runs the model on the calibration tokens (or on n tokens it samples itself from BOS at
 * temperature 1, streams of up to 256, xorshift seeded 1) and sums each input's x x'. */
static l2_status calibrate(const l2_model *m, const int32_t *tokens, int32_t n, grams *g,
                           l2_error *err) {
    const l2_model_info *c = &m->info;
    size_t count = 4 * (size_t)c->n_layers + 1;
    g->m = m;
    g->h = calloc(count, sizeof *g->h);
    g->n = calloc(count, sizeof *g->n);
    if (!g->h || !g->n) return l2_fail(err, L2_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < count; i++) {
        int site = i == count - 1 ? L2_SITE_CLS : (int)(i % 4);
        g->n[i] = (size_t)(site == L2_SITE_W2 ? c->hidden_dim : c->dim);
        g->h[i] = calloc(g->n[i] * g->n[i], sizeof(double));
        if (!g->h[i]) return l2_fail(err, L2_ERR_NOMEM, "out of memory for GPTQ's statistics");
    }
    l2_session_params sp = {c->seq_len < 256 ? c->seq_len : 256, L2_TYPE_F32, NULL};
    l2_session *s;
    l2_status st = l2_session_new(m, &sp, &s, err);
    if (st != L2_OK) return st;
    l2_session_observe(s, observe, g);
    uint64_t rng = 1;
    int32_t tok = tokens ? tokens[0] : 1;
    float *probs = malloc((size_t)c->vocab_size * sizeof(float));
    if (!probs) st = l2_fail(err, L2_ERR_NOMEM, "out of memory");
    for (int32_t i = 0; st == L2_OK && i < n; i++) {
        if (l2_session_pos(s) == sp.context) l2_session_reset(s);
        st = l2_session_eval(s, &tok, 1, err);
        if (st != L2_OK) break;
        if (tokens) {
            tok = i + 1 < n ? tokens[i + 1] : 1;
            continue;
        }
        /* sample the next token: softmax and a draw (xorshift*, as llama2.c's sampler) */
        const float *logits = l2_session_logits(s);
        float max = logits[0];
        for (int32_t v = 1; v < c->vocab_size; v++) max = fmaxf(max, logits[v]);
        double sum = 0.0;
        for (int32_t v = 0; v < c->vocab_size; v++) sum += probs[v] = expf(logits[v] - max);
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        double coin = (double)((rng * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0 * sum;
        int32_t next = c->vocab_size - 1;
        for (int32_t v = 0; v < c->vocab_size; v++)
            if ((coin -= probs[v]) < 0.0) {
                next = v;
                break;
            }
        if (next == 1) l2_session_reset(s);  /* BOS: a new story */
        tok = next;
    }
    free(probs);
    l2_session_free(s);
    for (size_t i = 0; i < count; i++)  /* mirror the lower triangle */
        for (size_t a = 0; a < g->n[i]; a++)
            for (size_t b = 0; b < a; b++) g->h[i][b * g->n[i] + a] = g->h[i][a * g->n[i] + b];
    return st;
}

/* In place: the lower Cholesky factor of the n x n matrix a; 0 if it is not positive definite. */
static int cholesky(double *a, size_t n) {
    for (size_t j = 0; j < n; j++) {
        double d = a[j * n + j];
        for (size_t k = 0; k < j; k++) d -= a[j * n + k] * a[j * n + k];
        if (!(d > 0.0)) return 0;
        d = sqrt(d);
        a[j * n + j] = d;
        for (size_t i = j + 1; i < n; i++) {
            double v = a[i * n + j];
            for (size_t k = 0; k < j; k++) v -= a[i * n + k] * a[j * n + k];
            a[i * n + j] = v / d;
        }
        for (size_t k = j + 1; k < n; k++) a[j * n + k] = 0.0;
    }
    return 1;
}

/* u = the upper Cholesky factor of (H + damp)^-1, as GPTQ uses it (damping: 1% of the mean
 * diagonal, more if that is not enough; an input that is always 0 gets a diagonal of 1). */
static l2_status gptq_factor(const double *h, size_t n, double *u, double *tmp, l2_error *err) {
    double mean = 0.0;
    for (size_t i = 0; i < n; i++) mean += h[i * n + i] / (double)n;
    for (double damp = 0.01; damp < 1e4; damp *= 10) {
        memcpy(tmp, h, n * n * sizeof(double));
        for (size_t i = 0; i < n; i++)
            tmp[i * n + i] = h[i * n + i] > 0.0 ? h[i * n + i] + damp * mean : 1.0;
        if (!cholesky(tmp, n)) continue;
        /* L^-1 (lower) by forward substitution, into u */
        memset(u, 0, n * n * sizeof(double));
        for (size_t j = 0; j < n; j++) {
            u[j * n + j] = 1.0 / tmp[j * n + j];
            for (size_t i = j + 1; i < n; i++) {
                double v = 0.0;
                for (size_t k = j; k < i; k++) v -= tmp[i * n + k] * u[k * n + j];
                u[i * n + j] = v / tmp[i * n + i];
            }
        }
        /* H^-1 = L^-T L^-1 into tmp, its lower factor, transposed into u */
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j <= i; j++) {
                double v = 0.0;
                for (size_t k = i; k < n; k++) v += u[k * n + i] * u[k * n + j];
                tmp[i * n + j] = tmp[j * n + i] = v;
            }
        if (!cholesky(tmp, n)) continue;
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++) u[i * n + j] = tmp[j * n + i];
        return L2_OK;
    }
    return l2_fail(err, L2_ERR_NUMERIC, "GPTQ: the calibration statistics are not usable");
}

/* ---------------------------------------------------------------- the writer */

l2_status l2_convert_with(const l2_model *m, const char *path, const l2_convert_params *params,
                          l2_tensor_report *reports, int32_t max_reports, int32_t *n_reports,
                          l2_error *err) {
    l2_clear_error(err);
    if (n_reports) *n_reports = 0;
    if (!m || !params) return l2_fail(err, L2_ERR_ARG, "l2_convert_with: NULL argument");
    const l2_model_info *c = &m->info;
    l2_convert_params p = *params;
    int32_t type = p.type;
    if (type != L2_TYPE_F32 && type != L2_TYPE_F16 && type != L2_TYPE_Q8)
        return l2_fail(err, L2_ERR_ARG, "output type must be f32, f16 or q8");
    int32_t gs = 0;
    if (type == L2_TYPE_Q8) {
        gs = p.group_size ? p.group_size : DEFAULT_GROUP;
        if (gs < 1 || gs > 65536) return l2_fail(err, L2_ERR_ARG, "group size %d is outside 1..65536", gs);
    }
    if (p.method != L2_METHOD_ABSMAX && p.method != L2_METHOD_GPTQ)
        return l2_fail(err, L2_ERR_ARG, "unknown method %d", p.method);
    if (type != L2_TYPE_Q8 && (p.method || p.f16_embedding || p.f16_sites || p.two_part_sites ||
                               p.q10_sites || p.n_f16_layer_sites))
        return l2_fail(err, L2_ERR_ARG, "methods, f16 parts and two-part inputs apply to q8 only");
    if (p.f16_sites >= (1u << L2_N_SITES) || p.two_part_sites >= (1u << L2_N_SITES) ||
        p.n_calib < 0 || (p.calib && p.n_calib == 0) || p.n_f16_layer_sites < 0 ||
        p.n_f16_layer_sites > c->n_layers || (p.n_f16_layer_sites && !p.f16_layer_sites))
        return l2_fail(err, L2_ERR_ARG, "invalid conversion parameters");
    for (int32_t l = 0; l < p.n_f16_layer_sites; l++)
        if (p.f16_layer_sites[l] & ~L2_LAYER_SITES)
            return l2_fail(err, L2_ERR_ARG, "f16 sites 0x%x of layer %d: only layer matrices",
                           p.f16_layer_sites[l], l);
    if (p.q10_sites & ~L2_LAYER_SITES)
        return l2_fail(err, L2_ERR_ARG, "q10 sites 0x%x: only layer matrices", p.q10_sites);
    if (p.q10_sites & ~p.two_part_sites)
        return l2_fail(err, L2_ERR_ARG, "q10 matrices need two-part inputs (sites 0x%x)",
                       p.q10_sites & ~p.two_part_sites);
    if (p.q10_sites && (gs % 4 || gs > L2_MAX_Q10_GROUP))
        return l2_fail(err, L2_ERR_ARG, "q10 matrices need a group size of 4k <= %d",
                       L2_MAX_Q10_GROUP);
    if (p.two_part_sites && gs > L2_MAX_TWO_PART_GROUP)
        return l2_fail(err, L2_ERR_ARG, "two-part inputs need a group size of at most %d",
                       L2_MAX_TWO_PART_GROUP);
    for (int32_t i = 0; p.calib && i < p.n_calib; i++)
        if (p.calib[i] < 0 || p.calib[i] >= c->vocab_size)
            return l2_fail(err, L2_ERR_ARG, "calibration token %d (at %d) is outside 0..%d",
                           p.calib[i], i, c->vocab_size - 1);
    /* 8192: on stories260K more tokens lowered the KL up to there (FORMAT.md) */
    if (p.method == L2_METHOD_GPTQ && p.n_calib == 0) p.n_calib = 8192;
    if (p.method != L2_METHOD_GPTQ) p.n_calib = 0;
    if (!path || !*path) return l2_fail(err, L2_ERR_ARG, "no output path given");
    if (is_mapped_file(path, &m->map))
        return l2_fail(err, L2_ERR_ARG, "%s is the model's own file: converting would replace "
                       "the model it reads; write to another file", path);
    /* the tensors in the order the forward pass reads them; the lookup table apart from the
     * classifier when their types differ */
    l2_type wt = (l2_type)type;
    l2_type emb_type = p.f16_embedding ? L2_TYPE_F16 : wt;
    l2_type cls_type = p.f16_sites & (1u << L2_SITE_CLS) ? L2_TYPE_F16 : wt;
    int shared = c->shared_classifier && emb_type == cls_type;
    size_t cap = (size_t)l2_tensor_count(c->n_layers, 0), n = 0;  /* the most it can be */
    out_tensor *ts = calloc(cap, sizeof *ts);
    if (!ts) return l2_fail(err, L2_ERR_NOMEM, "out of memory");
#define F16_SITES(l) (p.f16_sites | ((l) >= 0 && (l) < p.n_f16_layer_sites ? p.f16_layer_sites[l] : 0))
#define ADD_MAT(nm, l, m_, site_) ts[n++] = (out_tensor){nm, l, m_, NULL, \
        F16_SITES(l) & (1u << (site_)) ? L2_TYPE_F16 : p.q10_sites & (1u << (site_)) ? L2_TYPE_Q10 : wt, \
        (m_)->rows, (m_)->cols, gs, 0, 0, 0, 0, site_, 0}
#define ADD_VEC(nm, l, v_) ts[n++] = (out_tensor){nm, l, NULL, v_, L2_TYPE_F32, 1, c->dim, 0, 0, 0, 0, 0, -1, 0}
    ts[n++] = (out_tensor){"token_embedding", -1, &m->token_embedding, NULL, shared ? cls_type : emb_type,
                           c->vocab_size, c->dim, gs, 0, 0, 0, 0, shared ? L2_SITE_CLS : -1, 0};
    for (int32_t l = 0; l < c->n_layers; l++) {
        const l2_layer *ly = &m->layers[l];
        ADD_VEC("rms_att", l, ly->rms_att);
        ADD_MAT("wq", l, &ly->wq, L2_SITE_QKV);
        ADD_MAT("wk", l, &ly->wk, L2_SITE_QKV);
        ADD_MAT("wv", l, &ly->wv, L2_SITE_QKV);
        ADD_MAT("wo", l, &ly->wo, L2_SITE_WO);
        ADD_VEC("rms_ffn", l, ly->rms_ffn);
        ADD_MAT("w1", l, &ly->w1, L2_SITE_W13);
        ADD_MAT("w3", l, &ly->w3, L2_SITE_W13);
        ADD_MAT("w2", l, &ly->w2, L2_SITE_W2);
    }
    ADD_VEC("rms_final", -1, m->rms_final);
    if (!shared) ADD_MAT("wcls", -1, &m->wcls, L2_SITE_CLS);
#undef F16_SITES
#undef ADD_MAT
#undef ADD_VEC
    for (size_t i = 0; i < n; i++)  /* f32/f16 tensors carry no group size */
        if (ts[i].type != L2_TYPE_Q8 && ts[i].type != L2_TYPE_Q10) ts[i].gs = 0;

    uint64_t header_bytes = align_up(L2_PACKED_HEADER_BYTES + n * L2_PACKED_ENTRY_BYTES);
    uint64_t at = header_bytes;
    for (size_t i = 0; i < n; i++) {
        out_tensor *t = &ts[i];
        t->offset = at;
        int32_t tail = t->gs ? t->rows % L2_Q8_BLOCK_ROWS : 0;  /* q8, q10 */
        t->bytes = l2_packed_values_bytes(t->type, t->rows, t->cols, t->gs, tail);
        if (t->type == L2_TYPE_Q10)
            t->plane_offset = t->offset + l2_packed_values_bytes(L2_TYPE_Q8, t->rows, t->cols, t->gs, tail);
        at = align_up(at + t->bytes);
        t->scales_bytes = l2_packed_scales_bytes(t->type, t->rows, t->cols, t->gs, tail);
        if (t->scales_bytes) {
            t->scales_offset = at;
            at = align_up(at + t->scales_bytes);
        }
    }
    uint64_t file_bytes = at;

    /* GPTQ: the inputs' statistics first, and room for one input's factor at a time */
    grams g = {0};
    size_t widest = (size_t)(c->dim > c->hidden_dim ? c->dim : c->hidden_dim);
    double *u = NULL, *factor_tmp = NULL;
    if (p.method == L2_METHOD_GPTQ) {
        l2_status cs = calibrate(m, p.calib, p.n_calib, &g, err);
        u = malloc(widest * widest * sizeof(double));
        factor_tmp = malloc(widest * widest * sizeof(double));
        if (cs == L2_OK && (!u || !factor_tmp)) cs = l2_fail(err, L2_ERR_NOMEM, "out of memory");
        if (cs != L2_OK) {
            grams_free(&g);
            free(u);
            free(factor_tmp);
            free(ts);
            return cs;
        }
    }

    unsigned char *header = calloc(1, header_bytes);
    size_t tmp_len = strlen(path) + 5;
    char *tmp = malloc(tmp_len);
    if (!header || !tmp) {
        free(ts);
        free(header);
        free(tmp);
        grams_free(&g);
        free(u);
        free(factor_tmp);
        return l2_fail(err, L2_ERR_NOMEM, "out of memory");
    }
    put_u32(header, L2_PACKED_MAGIC);
    put_u32(header + 4, L2_PACKED_VERSION);
    put_u32(header + 8, (uint32_t)header_bytes);
    put_u32(header + 12, (uint32_t)n);
    const int32_t cfg[7] = {c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
                            c->vocab_size, c->seq_len};
    for (int i = 0; i < 7; i++) put_u32(header + 16 + 4 * i, (uint32_t)cfg[i]);
    put_u32(header + 44, (uint32_t)type);
    put_u32(header + 48, (uint32_t)gs);
    put_u32(header + 52, type == L2_TYPE_Q8 ? L2_Q8_BLOCK_ROWS : 0);
    put_u32(header + 56, shared ? 1u : 0u);
    put_u32(header + 60, p.two_part_sites);
    put_u64(header + 64, file_bytes);
    put_u32(header + 72, (uint32_t)p.method);
    put_u32(header + 76, (uint32_t)p.n_calib);  /* the error statistics (80, 88) come last */
    for (size_t i = 0; i < n; i++) {
        unsigned char *e = header + L2_PACKED_HEADER_BYTES + i * L2_PACKED_ENTRY_BYTES;
        const out_tensor *t = &ts[i];
        memcpy(e, t->name, strlen(t->name));  /* names are < 16 bytes; the rest stays zero */
        put_u32(e + 16, (uint32_t)t->layer);
        put_u32(e + 20, (uint32_t)t->type);
        put_u32(e + 24, (uint32_t)t->rows);
        put_u32(e + 28, (uint32_t)t->cols);
        put_u64(e + 32, t->offset);
        put_u64(e + 40, t->bytes);
        put_u64(e + 48, t->scales_offset);
        put_u64(e + 56, t->scales_bytes);
    }

    snprintf(tmp, tmp_len, "%s.tmp", path);
    /* O_EXCL | O_NOFOLLOW: a new file of our own, never one already there (another
     * conversion's, or a symlink that would have us write through it elsewhere) */
    writer w = {open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644), tmp, err,
                NULL, NULL, 0.0, 0.0, 0.0, 0.0};
    l2_status st = L2_OK;
    if (w.fd < 0 && errno == EEXIST)
        st = l2_fail(err, L2_ERR_IO, "cannot create %s: it exists (another conversion is writing "
                     "it, or one was interrupted: remove it and convert again)", tmp);
    else if (w.fd < 0)
        st = l2_fail(err, L2_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    if (st == L2_OK) st = write_at(&w, header, header_bytes, 0);
    if (st == L2_OK && ftruncate(w.fd, (off_t)file_bytes) != 0)  /* zero padding between tensors */
        st = l2_fail(err, L2_ERR_IO, "cannot size %s: %s", tmp, strerror(errno));
    for (size_t i = 0; st == L2_OK && i < n; i++) {
        l2_tensor_report rep = {{0}, ts[i].layer, ts[i].rows, ts[i].cols,
                                ts[i].bytes + ts[i].scales_bytes, 0.0, 0.0};
        snprintf(rep.name, sizeof rep.name, "%s", ts[i].name);
        w.h = w.u = NULL;
        if (g.h && ts[i].gs && ts[i].site >= 0) {  /* q8, q10 */
            size_t gi = gram_index(&g, ts[i].site, ts[i].layer);
            /* one factor per input: wq, wk, wv share theirs, w1 and w3 theirs */
            if (i == 0 || gi != gram_index(&g, ts[i - 1].site, ts[i - 1].layer) ||
                !ts[i - 1].gs || ts[i - 1].site < 0)
                st = gptq_factor(g.h[gi], g.n[gi], u, factor_tmp, err);
            w.h = g.h[gi];
            w.u = u;
        }
        if (st == L2_OK) st = write_tensor(&w, &ts[i], &rep);
        if (st == L2_OK && reports && (int32_t)i < max_reports) reports[i] = rep;
        if (st == L2_OK && n_reports) *n_reports = (int32_t)(i + 1);
    }
    if (st == L2_OK) {  /* the error statistics, now known */
        double stats[2] = {w.ref_sq > 0.0 ? w.err_sq / w.ref_sq : 0.0,
                           w.out_ref > 0.0 ? w.out_err / w.out_ref : 0.0};
        for (int i = 0; i < 2; i++) {
            uint64_t bits;
            memcpy(&bits, &stats[i], sizeof bits);
            put_u64(header + 80 + 8 * i, bits);
        }
        st = write_at(&w, header, L2_PACKED_HEADER_BYTES, 0);
    }
    grams_free(&g);
    free(u);
    free(factor_tmp);
    /* the data reaches the disk before the name does, so a crash leaves the old file or
     * the whole new one, never a renamed file with holes */
    if (st == L2_OK && fsync(w.fd) != 0)
        st = l2_fail(err, L2_ERR_IO, "cannot sync %s: %s", tmp, strerror(errno));
    if (w.fd >= 0 && close(w.fd) != 0 && st == L2_OK)
        st = l2_fail(err, L2_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    int renamed = 0;
    if (st == L2_OK) {
        if (rename(tmp, path) != 0)
            st = l2_fail(err, L2_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        else renamed = 1;
    }
    if (renamed) st = sync_parent_dir(path, err);
    if (!renamed && w.fd >= 0) unlink(tmp);
    free(ts);
    free(header);
    free(tmp);
    return st;
}
