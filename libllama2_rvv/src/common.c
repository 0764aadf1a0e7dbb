#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

l2_status l2_fail(l2_error *err, l2_status status, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return status;
}

l2_status l2_map_file(const char *path, l2_mapping *map, l2_error *err) {
    map->data = NULL;
    map->size = 0;
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return l2_fail(err, L2_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return l2_fail(err, L2_ERR_IO, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return l2_fail(err, L2_ERR_IO, "%s is not a regular file (%s)", path,
                       S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO"
                       : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "a socket");
    }
    if (st.st_size == 0) {
        close(fd);
        return l2_fail(err, L2_ERR_FORMAT, "%s is empty", path);
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return l2_fail(err, L2_ERR_IO, "%s is too large to map", path);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return l2_fail(err, L2_ERR_IO, "cannot map %s: %s", path, strerror(errno));
    map->data = p;
    map->size = (uint64_t)st.st_size;
    map->dev = (uint64_t)st.st_dev;
    map->ino = (uint64_t)st.st_ino;
    return L2_OK;
}

void l2_unmap_file(l2_mapping *map) {
    if (map->data) munmap((void *)map->data, (size_t)map->size);
    map->data = NULL;
    map->size = 0;
}

float l2_read_f32(const unsigned char *p) {
    float f;
    memcpy(&f, p, sizeof f);  /* the formats are little-endian, like every target */
    return f;
}

uint16_t l2_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) return 0x7e00u;  /* NaN: the canonical quiet NaN (RISC-V's) */
    if (absx >= 0x477ff000u) return sign | 0x7c00u;          /* inf, or rounds to >= 65520 */
    if (absx < 0x38800000u) {                                /* result is subnormal or zero */
        if (absx < 0x33000000u) return sign;                 /* below half the smallest subnormal */
        uint32_t e = absx >> 23;
        uint32_t man = (absx & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e;                           /* 14..24 */
        uint32_t half = man >> shift;
        uint32_t rest = man & ((1u << shift) - 1u);
        uint32_t mid = 1u << (shift - 1u);
        if (rest > mid || (rest == mid && (half & 1u))) half++;
        return sign | (uint16_t)half;
    }
    uint32_t half = ((absx >> 13) - (112u << 10));           /* rebias exponent, keep 10 bits */
    uint32_t rest = absx & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) half++;
    return sign | (uint16_t)half;
}
