/* The thread contract of llama2_rvv.h, from C: cancelling an eval from another thread, two
 * threads evaluating one session, and what a failed eval leaves behind.
 *
 *   test_threads MODEL    (a model of at least 16 positions; tests/python/test_threads.py
 *                          writes one and runs this on the normal and the ASan build)
 *
 * The outcomes are checked whatever the interleaving turns out to be: a cancel may land
 * before, during or after an eval, and either of two racing evals may be the one refused.
 * Under ASan, the racing evals also show that neither writes past the session's memory. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama2_rvv.h"

static int failures;

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            failures++;                                                           \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                         \
            fputc('\n', stderr);                                                  \
        }                                                                         \
    } while (0)

static l2_session *new_session(const l2_model *m, int32_t context) {
    l2_session_params p = {context, L2_TYPE_F32, NULL};
    l2_session *s = NULL;
    l2_error err;
    if (l2_session_new(m, &p, &s, &err) != L2_OK) {
        fprintf(stderr, "test_threads: %s\n", err.message);
        exit(2);
    }
    return s;
}

/* ---------------------------------------------------------------- cancel */

static void *cancel_soon(void *arg) {
    l2_session_cancel(arg);
    return NULL;
}

static void test_cancel(const l2_model *m, int32_t ctx) {
    l2_session *s = new_session(m, ctx);
    int32_t *toks = malloc((size_t)ctx * sizeof *toks);
    for (int32_t i = 0; i < ctx; i++) toks[i] = 3 + i % 50;
    l2_error err;

    /* a cancel before an eval stops it, and the ones after, until reset */
    CHECK(l2_session_eval(s, toks, 2, &err) == L2_OK, "%s", err.message);
    l2_session_cancel(s);
    CHECK(l2_session_eval(s, toks, 3, &err) == L2_ERR_CANCELLED, "%s", err.message);
    CHECK(strstr(err.message, "cancelled") != NULL, "%s", err.message);
    CHECK(l2_session_eval(s, toks, 1, &err) == L2_ERR_CANCELLED, "%s", err.message);
    CHECK(l2_session_pos(s) == 2, "pos %d after cancelled evals", l2_session_pos(s));
    l2_session_reset(s);
    CHECK(l2_session_eval(s, toks, 4, &err) == L2_OK, "%s", err.message);
    CHECK(l2_session_pos(s) == 4, "pos %d", l2_session_pos(s));

    /* a cancel from another thread, during a whole-context eval or after it */
    for (int round = 0; round < 20; round++) {
        l2_session_reset(s);
        pthread_t t;
        pthread_create(&t, NULL, cancel_soon, s);
        l2_status st = l2_session_eval(s, toks, ctx, &err);
        pthread_join(t, NULL);
        if (st == L2_ERR_CANCELLED) {
            CHECK(l2_session_pos(s) == 0, "a cancelled eval left pos %d", l2_session_pos(s));
        } else {
            CHECK(st == L2_OK, "%s", err.message);
            CHECK(l2_session_pos(s) == ctx, "pos %d", l2_session_pos(s));
        }
        CHECK(l2_session_eval(s, toks, 1, &err) == L2_ERR_CANCELLED, "status after cancel");
    }
    l2_session_reset(s);
    CHECK(l2_session_eval(s, toks, ctx, &err) == L2_OK, "%s", err.message);
    free(toks);
    l2_session_free(s);
}

/* ---------------------------------------------------------------- two threads, one session */

typedef struct {
    l2_session *s;
    atomic_int *go;
    int ok, busy, other;
} racer;

/* Evaluates one token at a time until the context is full. */
static void *race(void *arg) {
    racer *r = arg;
    while (!atomic_load(r->go)) {}
    for (;;) {
        int32_t tok = 5;
        l2_error err;
        l2_status st = l2_session_eval(r->s, &tok, 1, &err);
        if (st == L2_OK) r->ok++;
        else if (st == L2_ERR_BUSY) r->busy++;
        else if (st == L2_ERR_RANGE) break;
        else {
            r->other++;
            break;
        }
    }
    return NULL;
}

static void test_two_threads(const l2_model *m, int32_t ctx) {
    l2_session *s = new_session(m, ctx);
    int busy = 0;
    for (int round = 0; round < 200; round++) {
        l2_session_reset(s);
        atomic_int go;
        atomic_init(&go, 0);
        racer a = {s, &go, 0, 0, 0}, b = {s, &go, 0, 0, 0};
        pthread_t ta, tb;
        pthread_create(&ta, NULL, race, &a);
        pthread_create(&tb, NULL, race, &b);
        atomic_store(&go, 1);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        /* every position evaluated once, none past the context */
        CHECK(a.ok + b.ok == ctx, "round %d: %d + %d evals succeeded, context %d", round, a.ok,
              b.ok, ctx);
        CHECK(l2_session_pos(s) == ctx, "round %d: pos %d", round, l2_session_pos(s));
        CHECK(a.other == 0 && b.other == 0, "round %d: unexpected status", round);
        busy += a.busy + b.busy;
    }
    printf("two threads, one session: %d evals refused as busy in 200 rounds\n", busy);
    l2_session_free(s);
}

/* ---------------------------------------------------------------- failures leave pos */

static void test_failed_evals_leave_pos(const l2_model *m, int32_t ctx) {
    l2_model_info info;
    l2_model_info_get(m, &info);
    l2_session *s = new_session(m, ctx);
    l2_error err;
    int32_t toks[3] = {1, 2, 3};
    CHECK(l2_session_eval(s, toks, 3, &err) == L2_OK, "%s", err.message);
    int32_t bad[2] = {4, info.vocab_size};
    CHECK(l2_session_eval(s, bad, 2, &err) == L2_ERR_ARG, "%s", err.message);
    CHECK(l2_session_pos(s) == 3, "pos %d", l2_session_pos(s));
    int32_t *many = calloc((size_t)ctx, sizeof *many);
    CHECK(l2_session_eval(s, many, ctx, &err) == L2_ERR_RANGE, "%s", err.message);
    CHECK(l2_session_pos(s) == 3, "pos %d", l2_session_pos(s));
    CHECK(l2_session_eval(s, toks, 1, &err) == L2_OK, "%s", err.message);
    CHECK(l2_session_pos(s) == 4, "pos %d", l2_session_pos(s));
    free(many);
    l2_session_free(s);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_threads MODEL\n");
        return 2;
    }
    l2_model *m;
    l2_error err;
    if (l2_model_open(argv[1], &m, &err) != L2_OK) {
        fprintf(stderr, "test_threads: %s\n", err.message);
        return 2;
    }
    l2_model_info info;
    l2_model_info_get(m, &info);
    int32_t ctx = info.seq_len < 16 ? info.seq_len : 16;
    test_cancel(m, info.seq_len);
    test_two_threads(m, ctx);
    test_failed_evals_leave_pos(m, ctx);
    l2_model_free(m);
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
