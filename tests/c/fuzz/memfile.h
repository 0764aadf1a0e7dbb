/* Fuzz targets' input file: the bytes go to an in-memory file (memfd) that the library opens
 * by path through /proc/self/fd, so it maps it exactly as it maps a file on disk. */
#ifndef L2FUZZ_MEMFILE_H
#define L2FUZZ_MEMFILE_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int mem_fd = -1;
static char mem_path[64];

static void die(const char *what) {
    fprintf(stderr, "fuzz: %s: %s\n", what, strerror(errno));
    abort();
}

/* Replaces the in-memory file's contents with data; mem_path names it. */
static void write_memfile(const uint8_t *data, size_t size) {
    if (mem_fd < 0) {
        mem_fd = memfd_create("l2fuzz", MFD_CLOEXEC);
        if (mem_fd < 0) die("memfd_create");
        snprintf(mem_path, sizeof mem_path, "/proc/self/fd/%d", mem_fd);
    }
    if (ftruncate(mem_fd, 0) != 0) die("ftruncate");
    size_t done = 0;
    while (done < size) {
        ssize_t k = pwrite(mem_fd, data + done, size - done, (off_t)done);
        if (k <= 0) die("pwrite");
        done += (size_t)k;
    }
}

#endif
