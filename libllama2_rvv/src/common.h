/* Internal helpers shared by the library's source files. */
#ifndef L2_COMMON_H
#define L2_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "llama2_rvv.h"

#if defined(__GNUC__)
#define L2_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define L2_PRINTF(f, a)
#endif

/* Fills err (if any) with the formatted message and returns status. */
l2_status l2_fail(l2_error *err, l2_status status, const char *fmt, ...) L2_PRINTF(3, 4);

/* Empties err's message: the first thing every public call that takes an l2_error does. */
static inline void l2_clear_error(l2_error *err) {
    if (err) err->message[0] = '\0';
}

/* A whole file mapped read-only; the pages stay file-backed and shared between processes.
 * Truncating or overwriting the file in place while it is mapped makes reads of the lost
 * pages raise SIGBUS: files are replaced by renaming a new file over them (llama2_rvv.h). */
typedef struct {
    const unsigned char *data;
    uint64_t size;
    uint64_t dev, ino;      /* the file's identity (st_dev, st_ino), to recognise it by */
} l2_mapping;

/* Maps a regular file (anything else, a FIFO or a device, is refused without reading it). */
l2_status l2_map_file(const char *path, l2_mapping *map, l2_error *err);
void l2_unmap_file(l2_mapping *map);

/* IEEE half -> single, branch-free so loops over it vectorise: shifting the half's exponent
 * and mantissa into place and scaling by 2^112 rebiases normals and subnormals alike. */
static inline float l2_f16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = {(uint32_t)(h & 0x7fffu) << 13};
    v.f *= 0x1p112f;
    if ((h & 0x7c00u) == 0x7c00u) v.u |= 0x7f800000u;  /* inf and NaN keep their exponent */
    v.u |= (uint32_t)(h & 0x8000u) << 16;
    return v.f;
}
/* single -> half, round to nearest even */
uint16_t l2_f32_to_f16(float f);

/* Unaligned little-endian reads from a file image. */
static inline int32_t l2_read_i32(const unsigned char *p) {
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}
static inline uint32_t l2_read_u32(const unsigned char *p) { return (uint32_t)l2_read_i32(p); }
static inline uint64_t l2_read_u64(const unsigned char *p) {
    return (uint64_t)l2_read_u32(p) | (uint64_t)l2_read_u32(p + 4) << 32;
}
float l2_read_f32(const unsigned char *p);

#endif
