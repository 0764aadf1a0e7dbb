/* The weight matrices' storage, shared by the loader (sizes to check), the converter (sizes to
 * write) and the forward pass (the embedding row of a token): what FORMAT.md and kernels.h
 * describe, in one place. */
#include <string.h>

#include "model.h"

/* Rows in whole blocks of a q8 matrix: all of them padded to a block (tail 0, version 1), or
 * those before the tail rows that follow row-major (version 2). */
static uint64_t block_rows(int32_t rows, int32_t tail) {
    if (tail) return (uint64_t)rows - (uint64_t)tail;
    return ((uint64_t)rows + L2_Q8_BLOCK_ROWS - 1) / L2_Q8_BLOCK_ROWS * L2_Q8_BLOCK_ROWS;
}

/* gs % 4 == 0 (the loader's rule): a block's groups hold whole quads of columns */
static uint64_t q10_plane_bytes(int32_t rows, int32_t cols, int32_t gs, int32_t tail) {
    uint64_t groups = ((uint64_t)cols + (uint64_t)gs - 1) / (uint64_t)gs;
    return block_rows(rows, tail) * groups * (uint64_t)gs / 4 + ((uint64_t)tail * (uint64_t)cols + 3) / 4;
}

uint64_t l2_packed_values_bytes(l2_type type, int32_t rows, int32_t cols, int32_t gs, int32_t tail) {
    uint64_t n = (uint64_t)rows * (uint64_t)cols;
    switch (type) {
    case L2_TYPE_F32: return 4 * n;
    case L2_TYPE_F16: return 2 * n;
    case L2_TYPE_Q8: {
        uint64_t groups = ((uint64_t)cols + (uint64_t)gs - 1) / (uint64_t)gs;
        return block_rows(rows, tail) * groups * (uint64_t)gs + (uint64_t)tail * (uint64_t)cols;
    }
    case L2_TYPE_Q10:  /* q8's values, then the 2-bit plane: the blocks', then the tail's */
        return l2_packed_values_bytes(L2_TYPE_Q8, rows, cols, gs, tail) + q10_plane_bytes(rows, cols, gs, tail);
    case L2_TYPE_Q8_FLAT: return n;
    case L2_TYPE_AUTO: break;  /* a session's KV choice, never a matrix's type */
    }
    return 0;
}

uint64_t l2_packed_scales_bytes(l2_type type, int32_t rows, int32_t cols, int32_t gs, int32_t tail) {
    switch (type) {
    case L2_TYPE_Q8:
    case L2_TYPE_Q10: {
        uint64_t tail_values = (uint64_t)tail * (uint64_t)cols;
        return 4 * (block_rows(rows, tail) * (((uint64_t)cols + (uint64_t)gs - 1) / (uint64_t)gs) +
                    (tail_values + (uint64_t)gs - 1) / (uint64_t)gs);
    }
    case L2_TYPE_Q8_FLAT: return 4 * ((uint64_t)rows * (uint64_t)cols / (uint64_t)gs);
    default: return 0;
    }
}

void l2_matrix_row(const l2_matrix *m, int32_t row, float *out) {
    size_t cols = (size_t)m->cols;
    switch (m->type) {
    case L2_TYPE_F32:
        memcpy(out, (const float *)m->data + (size_t)row * cols, cols * sizeof(float));
        break;
    case L2_TYPE_F16: {
        const uint16_t *w = (const uint16_t *)m->data + (size_t)row * cols;
        for (size_t c = 0; c < cols; c++) out[c] = l2_f16_to_f32(w[c]);
        break;
    }
    case L2_TYPE_Q8:
    case L2_TYPE_Q10: {  /* q10: 4 h + l (kernels.h) */
        enum { BR = L2_Q8_BLOCK_ROWS };
        size_t gs = (size_t)m->group_size, groups = (cols + gs - 1) / gs;
        const uint8_t *wl = m->type == L2_TYPE_Q10 ? m->plane : NULL;
        size_t b = (size_t)row / BR, r = (size_t)row % BR, full = (size_t)(m->rows - m->tail);
        const int8_t *wq = m->data;
        const float *ws = (const float *)(const void *)m->scales;
        if (m->tail && (size_t)row >= full) {  /* a tail row: row-major, groups of the flat tail */
            size_t f = ((size_t)row - full) * cols;
            wq += full * groups * gs;
            ws += full * groups;
            const uint8_t *tl = wl ? wl + full * groups * gs / 4 : NULL;  /* the tail's plane */
            for (size_t c = 0; c < cols; c++, f++) {
                int v = tl ? 4 * wq[f] + (tl[f / 4] >> (2 * (f % 4)) & 3) : wq[f];
                out[c] = (float)v * ws[f / gs];
            }
            break;
        }
        for (size_t c = 0; c < cols; c++) {
            size_t bg = b * groups + c / gs;
            int v = wq[(bg * gs + c % gs) * BR + r];
            if (wl) v = 4 * v + (wl[(bg * (gs / 4) + c % gs / 4) * BR + r] >> (2 * (c % 4)) & 3);
            out[c] = (float)v * ws[bg * BR + r];
        }
        break;
    }
    case L2_TYPE_Q8_FLAT: {
        size_t f = (size_t)row * cols, gs = (size_t)m->group_size;
        const int8_t *wq = m->data;
        for (size_t c = 0; c < cols; c++, f++)
            out[c] = (float)wq[f] * l2_read_f32(m->scales + 4 * (f / gs));
        break;
    }
    case L2_TYPE_AUTO: break;  /* never a matrix's type */
    }
}
