/* The llama2.c sampler, bit for bit: xorshift RNG, temperature, softmax, multinomial or
 * top-p ("nucleus") sampling. Same seed, same logits, same float operations in the same
 * order => the same token ids as upstream `run`.
 *
 * temperature and topp are used exactly as given, within l2_check_option's ranges (llama2.c's
 * CLI clamps values outside them; l2run and storyteller run refuse them). Replacing seed 0
 * with the time is the caller's job (l2run does it); here seed 0 is an ordinary seed.
 */
#include "sampler.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

typedef struct {
    float prob;
    int32_t index;
} prob_index;  /* a top-p candidate: its probability and token id */

struct l2_sampler {
    int32_t vocab_size;
    float temperature;          /* 0: greedy (argmax) */
    float topp;                 /* in (0, 1): top-p; otherwise plain multinomial */
    uint64_t rng_state;         /* xorshift state */
    prob_index *candidates;     /* (vocab_size) top-p scratch; only when top-p is in use */
};

/* ----------------------------------------------------------------------------
 * RNG: xorshift64* (upper 32 bits), as in llama2.c */

static uint32_t random_u32(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

/* A float in [0, 1) with 24 random bits. */
static float random_f32(uint64_t *state) {
    return (float)(random_u32(state) >> 8) / 16777216.0f;
}

/* ----------------------------------------------------------------------------
 * Sampling strategies */

/* Inverse-CDF draw over all ids; the last id if rounding leaves coin above the total. */
static int32_t sample_multinomial(const float *probs, int32_t n, float coin) {
    float cdf = 0.0f;
    for (int32_t i = 0; i < n; i++) {
        cdf += probs[i];
        if (coin < cdf) return i;
    }
    return n - 1;
}

/* Probability descending, then id ascending: a total order, so the outcome does not depend
 * on how the C library's qsort treats equal elements (upstream leaves ties unordered). */
static int compare_candidates(const void *pa, const void *pb) {
    const prob_index *a = pa, *b = pb;
    if (a->prob > b->prob) return -1;
    if (a->prob < b->prob) return 1;
    return a->index < b->index ? -1 : a->index > b->index ? 1 : 0;
}

/* Top-p: draw from the smallest set of most likely ids whose probabilities sum past topp. */
static int32_t sample_topp(const float *probs, int32_t n, float topp, prob_index *cand,
                           float coin) {
    /* Ids below this cutoff cannot be in the nucleus (upstream's pre-filter, which also decides
     * which ids take part when rounding matters, so it is kept exactly). */
    int32_t n0 = 0;
    if (n > 1) {
        const float cutoff = (1.0f - topp) / (float)(n - 1);
        for (int32_t i = 0; i < n; i++) {
            if (probs[i] >= cutoff) {
                cand[n0].prob = probs[i];
                cand[n0].index = i;
                n0++;
            }
        }
    }
    /* Nothing passed the cutoff (one id, or a near-uniform distribution with a tiny topp):
     * upstream reads before its buffer here; we return the most likely id. */
    if (n0 == 0) return l2_argmax_generic(probs, n);
    qsort(cand, (size_t)n0, sizeof *cand, compare_candidates);

    float cumulative = 0.0f;
    int32_t last = n0 - 1;  /* if the sum never exceeds topp, keep them all */
    for (int32_t i = 0; i < n0; i++) {
        cumulative += cand[i].prob;
        if (cumulative > topp) {
            last = i;
            break;
        }
    }
    float r = coin * cumulative;
    float cdf = 0.0f;
    for (int32_t i = 0; i <= last; i++) {
        cdf += cand[i].prob;
        if (r < cdf) return cand[i].index;
    }
    return cand[last].index;
}

/* ----------------------------------------------------------------------------
 * Public API */

l2_status l2_sampler_new(int32_t vocab_size, float temperature, float topp, uint64_t seed,
                         l2_sampler **out, l2_error *err) {
    l2_clear_error(err);
    if (out) *out = NULL;
    if (!out) return l2_fail(err, L2_ERR_ARG, "l2_sampler_new: NULL argument");
    if (vocab_size < 1)
        return l2_fail(err, L2_ERR_ARG, "sampler vocab_size must be at least 1 (got %d)",
                       vocab_size);
    if (!(temperature >= 0.0f && temperature <= FLT_MAX))  /* NaN fails too */
        return l2_fail(err, L2_ERR_ARG, "temperature must be 0 or more (got %g)", (double)temperature);
    if (!(topp >= 0.0f && topp <= 1.0f))
        return l2_fail(err, L2_ERR_ARG, "top-p must be from 0 to 1 (got %g)", (double)topp);
    l2_sampler *s = calloc(1, sizeof *s);
    if (!s) return l2_fail(err, L2_ERR_NOMEM, "out of memory creating the sampler");
    s->vocab_size = vocab_size;
    s->temperature = temperature;
    s->topp = topp;
    s->rng_state = seed;
    /* the candidate buffer (8 bytes per id) is only paid for by samplers that use top-p */
    if (temperature != 0.0f && topp > 0.0f && topp < 1.0f) {
        s->candidates = malloc((size_t)vocab_size * sizeof *s->candidates);
        if (!s->candidates) {
            free(s);
            return l2_fail(err, L2_ERR_NOMEM, "out of memory creating the sampler");
        }
    }
    *out = s;
    return L2_OK;
}

static int32_t sample(l2_sampler *sampler, const l2_kernels *k, float *logits) {
    const int32_t n = sampler->vocab_size;
    if (sampler->temperature == 0.0f) return k->argmax(logits, n);  /* no coin drawn */

    for (int32_t i = 0; i < n; i++) logits[i] /= sampler->temperature;
    k->softmax(logits, n);  /* llama2.c's softmax: every set's is bitwise equal */
    /* One coin per sample whatever the strategy, so the RNG stream matches upstream. */
    float coin = random_f32(&sampler->rng_state);
    if (sampler->topp <= 0.0f || sampler->topp >= 1.0f) return sample_multinomial(logits, n, coin);

    return sample_topp(logits, n, sampler->topp, sampler->candidates, coin);
}

l2_status l2_sampler_sample_with(l2_sampler *sampler, const l2_kernels *k, float *logits,
                                 int32_t *token, l2_error *err) {
    l2_clear_error(err);
    if (token) *token = 0;
    if (!sampler || !logits || !token) return l2_fail(err, L2_ERR_ARG, "l2_sampler_sample: NULL argument");
    *token = sample(sampler, k, logits);
    return L2_OK;
}

l2_status l2_sampler_sample(l2_sampler *sampler, float *logits, int32_t *token, l2_error *err) {
    return l2_sampler_sample_with(sampler, &l2_kernels_generic, logits, token, err);
}

int32_t l2_sampler_vocab_size(const l2_sampler *sampler) { return sampler->vocab_size; }

uint32_t l2_sampler_random_u32(l2_sampler *sampler) {
    if (!sampler) return 0;
    return random_u32(&sampler->rng_state);
}

void l2_sampler_free(l2_sampler *sampler) {
    if (!sampler) return;
    free(sampler->candidates);
    free(sampler);
}
