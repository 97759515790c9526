// Choosing the next token from one row of logits: the sampling contract every backend follows.
//
// SampleFromLogits(logits, vocab, params), exactly:
//  * "Descending order" ranks tokens by raw logit, larger first, the lower id first on ties.
//  * logprob and top_logprobs come from log_softmax of the RAW logits (no temperature, no cuts):
//    logprob(i) = logit[i] - max - log(sum_j exp(logit[j] - max)), the sum in double.
//    top_logprobs lists the first min(num_top_logprobs, vocab) tokens in descending order.
//  * Greedy (temperature <= 0): the first token in descending order (argmax, lowest id on ties).
//  * Otherwise:
//    1. weight[i] = exp(double(logit[i] / temperature) - double(max_logit / temperature)), the
//       divisions in fp32: the unnormalised softmax of the tempered logits.
//    2. top-k: when 0 < top_k < vocab, keep only the first top_k tokens in descending order.
//    3. top-p: when top_p < 1, let M = the weight sum of the tokens still kept, summed in ascending
//       id order; keep only the shortest prefix, in descending order, of those tokens whose running
//       weight sum (accumulated in descending order) is >= top_p * M. At least one token stays.
//    4. Draw u = SampleUniform(seed, draw_index) (kernels/sampling.h). With K = the weight sum of
//       the kept tokens in ascending id order, walk the kept tokens in ascending id order and pick
//       the first whose running weight sum exceeds u * K (the last kept token if rounding leaves
//       none). Walking in id order, not rank order, keeps the uncut case free of any sort.
// The CUDA backend calls this function for its non-greedy rows, so both backends pick the same
// token from the same logits.
#pragma once

#include <cstdint>

#include "kernels/sampling.h"

namespace llm::cpu {

SampledToken SampleFromLogits(const float* logits, int32_t vocab, const SamplingParams& params);

}  // namespace llm::cpu
