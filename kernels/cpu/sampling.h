// Choosing the next token from one row of logits: the sampling contract every backend follows.
//
// SampleFromLogits(logits, vocab, params), exactly:
//  * Ordering. "Descending order" means by raw logit, larger first, the lower token id first on
//  ties.
//  * logprob and top_logprobs always come from log_softmax of the RAW logits (no temperature, no
//    top-k/top-p): logprob(i) = logit[i] - max - log(sum_j exp(logit[j] - max)), sums in double.
//    top_logprobs holds the first min(num_top_logprobs, vocab) tokens in descending order.
//  * Greedy (temperature <= 0): the token is the first in descending order (argmax, lowest id on
//  ties).
//  * Otherwise:
//      1. weight[i] = exp(double(logit[i] / temperature - max_j logit[j] / temperature)), where the
//         division is done in fp32 and the rest in double (softmax numerators of the tempered
//         logits).
//      2. top-k: when 0 < top_k < vocab, keep the first top_k tokens in descending order.
//      3. top-p: when top_p < 1, keep the smallest prefix (in descending order) of the tokens kept
//      by
//         top-k whose weight sum is >= top_p * (weight sum of the tokens kept by top-k); at least
//         one.
//      4. u = SampleUniform(seed, draw_index) (kernels/sampling.h); target = u * (weight sum of the
//         kept tokens); walking the kept tokens in descending order, pick the first whose running
//         weight sum exceeds target (the last kept token if rounding leaves none).
// The CUDA backend calls this function for non-greedy rows, so the two backends agree bit for bit
// given the same logits.
#pragma once

#include <cstdint>

#include "kernels/sampling.h"

namespace llm::cpu {

SampledToken SampleFromLogits(const float* logits, int32_t vocab, const SamplingParams& params);

}  // namespace llm::cpu
