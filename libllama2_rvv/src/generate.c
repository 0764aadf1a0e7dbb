/* llama2.c's generation loop (run.c's generate), one position per call, and its option rule:
 * l2run, the Python session loop and `storyteller run` all use these, so there is one loop
 * and one set of checks. */
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <stdlib.h>

#include "model.h"
#include "sampler.h"

enum { BOS = 1, EOS = 2 };  /* llama2.c's <s> and </s> */

l2_status l2_generate_begin(l2_session *s, l2_generation *g, l2_error *err) {
    l2_clear_error(err);
    if (!s || !g || !g->prompt) return l2_fail(err, L2_ERR_ARG, "l2_generate_begin: NULL argument");
    int32_t context = l2_session_context(s);
    if (g->max_pos == 0) g->max_pos = context;
    if (g->max_pos < 0 || g->max_pos > context)
        return l2_fail(err, L2_ERR_ARG, "%d positions do not fit the session's context of %d",
                       g->max_pos, context);
    if (l2_session_pos(s) != 0)
        return l2_fail(err, L2_ERR_ARG, "a generation starts at position 0: reset the session first");
    if (g->n_prompt < 1) return l2_fail(err, L2_ERR_ARG, "the prompt has no tokens (not even BOS)");
    if (g->n_prompt > g->max_pos)
        return l2_fail(err, L2_ERR_RANGE, "the prompt is %d tokens, longer than the %d steps of "
                       "context", g->n_prompt, g->max_pos);
    g->done = 0;
    g->token = g->prompt[0];
    g->forced = 1;
    g->piece = NULL;
    g->piece_len = 0;
    g->pos = 0;
    g->sampled = 0;
    /* the whole prompt in one call: only its last position needs logits */
    return l2_session_eval(s, g->prompt, g->n_prompt, err);
}

l2_status l2_generate_step(l2_session *s, l2_generation *g, l2_sampler *sampler,
                           const l2_tokenizer *tok, l2_error *err) {
    l2_clear_error(err);
    if (!s || !g || !sampler || !tok) return l2_fail(err, L2_ERR_ARG, "l2_generate_step: NULL argument");
    int32_t pos = g->pos, n = g->n_prompt;
    int forced = pos < n - 1;
    int more_samples = g->max_sampled < 0 || g->sampled < g->max_sampled;
    if (g->done || pos >= g->max_pos || !(forced || more_samples)) {
        g->done = 1;
        return L2_OK;
    }
    /* The llama2.c loop body: the prompt's tokens are echoed as forced choices; after the
     * prompt each token is evaluated, and the next one sampled from its logits. */
    if (!forced && l2_sampler_vocab_size(sampler) != l2_session_vocab_size(s))  /* before the eval */
        return l2_fail(err, L2_ERR_ARG, "the sampler's vocabulary (%d) is not the model's (%d)",
                       l2_sampler_vocab_size(sampler), l2_session_vocab_size(s));
    int32_t next;
    if (pos >= n) {
        l2_status st = l2_session_eval(s, &g->token, 1, err);
        if (st != L2_OK) return st;
    }
    if (forced) {
        next = g->prompt[pos + 1];
    } else {
        l2_status st = l2_session_sample(s, sampler, &next, err);
        if (st != L2_OK) return st;
        g->sampled++;
    }
    g->pos = pos + 1;
    if (next == BOS || (g->stop_on_eos && next == EOS)) {  /* BOS ends the story */
        g->done = 1;
        return L2_OK;
    }
    if (l2_tokenizer_decode(tok, g->token, next, &g->piece, &g->piece_len, err) != L2_OK) {
        g->piece = NULL;  /* as llama2.c: an id without a piece prints nothing */
        g->piece_len = 0;
        l2_clear_error(err);
    }
    g->token = next;
    g->forced = forced;
    return L2_OK;
}

/* ---------------------------------------------------------------- the options */

int32_t l2_run_positions(const l2_model *model, int32_t steps) {
    l2_model_info info;
    l2_model_info_get(model, &info);
    return steps <= 0 || steps > info.seq_len ? info.seq_len : steps;
}

/* Reads a whole `text` as a number (strtod, strtoll); 0 when it is not one. */
static int read_real(const char *text, double *out) {
    char *end;
    *out = strtod(text, &end);
    return end != text && !*end;
}

static int read_whole(const char *text, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    *out = v;
    return end != text && !*end && errno != ERANGE;
}

l2_status l2_check_option(char flag, const char *text, double *number, int64_t *whole,
                          l2_error *err) {
    l2_clear_error(err);
    if (!text || !number || !whole) return l2_fail(err, L2_ERR_ARG, "l2_check_option: NULL argument");
    *number = 0.0;
    *whole = 0;
    double d;
    int64_t w;
    const char *want;
    int ok;
    switch (flag) {
    case 't':  /* NaN fails the range test too */
        want = "a temperature of 0 or more";
        ok = read_real(text, &d) && d >= 0.0 && d <= FLT_MAX;
        w = 0;
        break;
    case 'p':
        want = "a top-p value from 0 to 1";
        ok = read_real(text, &d) && d >= 0.0 && d <= 1.0;
        w = 0;
        break;
    case 's':  /* as run's (unsigned long long) cast: a negative seed wraps */
        want = "a whole number";
        ok = read_whole(text, &w);
        d = (double)w;
        break;
    case 'n':
        want = "a number of steps, 0 or more (0: the model's seq_len)";
        ok = read_whole(text, &w) && w >= 0 && w <= INT32_MAX;
        d = (double)w;
        break;
    case 'v':
        want = "0 or 1";
        ok = read_whole(text, &w) && (w == 0 || w == 1);
        d = (double)w;
        break;
    default:
        return l2_fail(err, L2_ERR_ARG, "-%c is not a numeric option of run", flag);
    }
    if (!ok) return l2_fail(err, L2_ERR_ARG, "-%c needs %s, not '%s'", flag, want, text);
    *number = d;
    *whole = w;
    return L2_OK;
}
