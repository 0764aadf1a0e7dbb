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
} out_tensor;

typedef struct {
    int fd;
    const char *path;
    l2_error *err;
} writer;

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
    default: {  /* q8: one block of BR rows, zero rows padding the last block */
        enum { BR = L2_Q8_BLOCK_ROWS };
        size_t gs = (size_t)t->gs, groups = (cols + gs - 1) / gs;
        int8_t *q = scratch;
        float *scales = (float *)(void *)(q + groups * gs * BR);
        memset(q, 0, groups * gs * BR);
        memset(scales, 0, groups * BR * sizeof(float));
        for (size_t r = 0; r < (size_t)n; r++) {
            const float *row = rows + r * cols;
            for (size_t g = 0; g < groups; g++) {
                size_t c0 = g * gs, len = cols - c0 < gs ? cols - c0 : gs;
                float amax = 0.0f;
                for (size_t i = 0; i < len; i++) amax = fmaxf(amax, fabsf(row[c0 + i]));
                float scale = amax / 127.0f;  /* as llama2.c's exporter: q = round(w / scale) */
                scales[g * BR + r] = scale;
                for (size_t i = 0; i < len; i++) {
                    float v = row[c0 + i];
                    long qv = scale > 0.0f ? lrintf(v / scale) : 0;
                    qv = qv > 127 ? 127 : qv < -127 ? -127 : qv;
                    q[(g * gs + i) * BR + r] = (int8_t)qv;
                    double e = fabs((double)((float)qv * scale) - (double)v);
                    if (e > rep->max_abs_error) rep->max_abs_error = e;
                }
            }
        }
        uint64_t block = (uint64_t)r0 / BR;
        l2_status st = write_at(w, q, groups * gs * BR, t->offset + block * groups * gs * BR);
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
    void *scratch = malloc(BR * (groups * gs + 4 * groups + 2 * cols));
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

l2_status l2_convert(const l2_model *m, const char *path, l2_type type, int32_t group_size,
                     l2_tensor_report *reports, int32_t max_reports, int32_t *n_reports,
                     l2_error *err) {
    l2_clear_error(err);
    if (n_reports) *n_reports = 0;
    const l2_model_info *c = &m->info;
    if (type != L2_TYPE_F32 && type != L2_TYPE_F16 && type != L2_TYPE_Q8)
        return l2_fail(err, L2_ERR_ARG, "output type must be f32, f16 or q8");
    int32_t gs = 0;
    if (type == L2_TYPE_Q8) {
        gs = group_size ? group_size : DEFAULT_GROUP;
        if (gs < 1 || gs > 65536) return l2_fail(err, L2_ERR_ARG, "group size %d is outside 1..65536", gs);
    }
    if (!path || !*path) return l2_fail(err, L2_ERR_ARG, "no output path given");
    if (is_mapped_file(path, &m->map))
        return l2_fail(err, L2_ERR_ARG, "%s is the model's own file: converting would replace "
                       "the model it reads; write to another file", path);
    /* the tensors in the order the forward pass reads them */
    size_t cap = (size_t)c->n_tensors, n = 0;
    out_tensor *ts = calloc(cap, sizeof *ts);
    if (!ts) return l2_fail(err, L2_ERR_NOMEM, "out of memory");
    l2_type wt = (l2_type)type;
#define ADD_MAT(nm, l, m_) ts[n++] = (out_tensor){nm, l, m_, NULL, wt, (m_)->rows, (m_)->cols, gs, 0, 0, 0, 0}
#define ADD_VEC(nm, l, v_) ts[n++] = (out_tensor){nm, l, NULL, v_, L2_TYPE_F32, 1, c->dim, 0, 0, 0, 0, 0}
    ADD_MAT("token_embedding", -1, &m->token_embedding);
    for (int32_t l = 0; l < c->n_layers; l++) {
        const l2_layer *ly = &m->layers[l];
        ADD_VEC("rms_att", l, ly->rms_att);
        ADD_MAT("wq", l, &ly->wq);
        ADD_MAT("wk", l, &ly->wk);
        ADD_MAT("wv", l, &ly->wv);
        ADD_MAT("wo", l, &ly->wo);
        ADD_VEC("rms_ffn", l, ly->rms_ffn);
        ADD_MAT("w1", l, &ly->w1);
        ADD_MAT("w3", l, &ly->w3);
        ADD_MAT("w2", l, &ly->w2);
    }
    ADD_VEC("rms_final", -1, m->rms_final);
    if (!c->shared_classifier) ADD_MAT("wcls", -1, &m->wcls);
#undef ADD_MAT
#undef ADD_VEC

    uint64_t header_bytes = align_up(L2_PACKED_HEADER_BYTES + n * L2_PACKED_ENTRY_BYTES);
    uint64_t at = header_bytes;
    for (size_t i = 0; i < n; i++) {
        out_tensor *t = &ts[i];
        t->offset = at;
        t->bytes = l2_packed_values_bytes(t->type, t->rows, t->cols, t->gs);
        at = align_up(at + t->bytes);
        t->scales_bytes = l2_packed_scales_bytes(t->type, t->rows, t->cols, t->gs);
        if (t->scales_bytes) {
            t->scales_offset = at;
            at = align_up(at + t->scales_bytes);
        }
    }
    uint64_t file_bytes = at;

    unsigned char *header = calloc(1, header_bytes);
    size_t tmp_len = strlen(path) + 5;
    char *tmp = malloc(tmp_len);
    if (!header || !tmp) {
        free(ts);
        free(header);
        free(tmp);
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
    put_u32(header + 56, c->shared_classifier ? 1u : 0u);
    put_u64(header + 64, file_bytes);
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
    writer w = {open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644), tmp, err};
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
        st = write_tensor(&w, &ts[i], &rep);
        if (st == L2_OK && reports && (int32_t)i < max_reports) reports[i] = rep;
        if (st == L2_OK && n_reports) *n_reports = (int32_t)(i + 1);
    }
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
