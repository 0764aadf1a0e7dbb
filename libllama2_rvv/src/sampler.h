/* The sampler's internals shared with the session (model.c) and the tests. */
#ifndef L2_SAMPLER_H
#define L2_SAMPLER_H

#include "common.h"
#include "kernels.h"

/* l2_sampler_sample with the kernels `k` (argmax, softmax): a session's, or the generic set. */
l2_status l2_sampler_sample_with(l2_sampler *sampler, const l2_kernels *k, float *logits,
                                 int32_t *token, l2_error *err);
int32_t l2_sampler_vocab_size(const l2_sampler *sampler);

/* The next 32 bits of the sampler's RNG: a hook for tests of the RNG stream, exported from
 * the library but not part of its API. */
uint32_t l2_sampler_random_u32(l2_sampler *sampler);

#endif
