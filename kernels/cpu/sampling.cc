// Sampling by the contract in sampling.h: sort once by raw logit, cut, renormalise, draw.
#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace llm::cpu {
namespace {

// Token ids sorted by raw logit (descending, lower id first on ties); only the first `count` are
// guaranteed sorted.
std::vector<int32_t> DescendingOrder(const float* logits, int32_t vocab, int32_t count) {
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  const auto before = [logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  if (count >= vocab) {
    std::sort(order.begin(), order.end(), before);
  } else {
    std::partial_sort(order.begin(), order.begin() + count, order.end(), before);
  }
  return order;
}

}  // namespace

SampledToken SampleFromLogits(const float* logits, int32_t vocab, const SamplingParams& params) {
  float max_logit = logits[0];
  int32_t argmax = 0;
  for (int32_t i = 1; i < vocab; ++i) {
    if (logits[i] > max_logit) {  // strict: the lowest id wins ties
      max_logit = logits[i];
      argmax = i;
    }
  }
  double sum_exp = 0.0;
  for (int32_t i = 0; i < vocab; ++i)
    sum_exp += std::exp(static_cast<double>(logits[i]) - max_logit);
  const double log_normalizer = static_cast<double>(max_logit) + std::log(sum_exp);
  const auto log_prob = [&](int32_t token) {
    return static_cast<float>(static_cast<double>(logits[token]) - log_normalizer);
  };

  SampledToken result;
  const bool greedy = params.temperature <= 0.0f;
  const bool top_k_cut = params.top_k > 0 && params.top_k < vocab;
  const bool top_p_cut = params.top_p < 1.0f;
  const int32_t num_top = std::clamp(params.num_top_logprobs, 0, vocab);

  if (greedy) {
    result.token = argmax;
  } else {
    // Only top-p needs the whole order; top-k alone needs its first top_k.
    const int32_t sorted_count = top_p_cut ? vocab : (top_k_cut ? params.top_k : vocab);
    const std::vector<int32_t> order =
        DescendingOrder(logits, vocab, std::max(sorted_count, num_top));
    const float tempered_max = max_logit / params.temperature;
    int32_t kept = top_k_cut ? params.top_k : vocab;
    std::vector<double> weights(kept);
    double kept_mass = 0.0;
    for (int32_t r = 0; r < kept; ++r) {
      weights[r] = std::exp(static_cast<double>(logits[order[r]] / params.temperature) -
                            static_cast<double>(tempered_max));
      kept_mass += weights[r];
    }
    if (top_p_cut) {
      const double needed = static_cast<double>(params.top_p) * kept_mass;
      double running = 0.0;
      int32_t prefix = 0;
      while (prefix < kept) {
        running += weights[prefix++];
        if (running >= needed) break;
      }
      kept = std::max(prefix, 1);
      kept_mass = std::accumulate(weights.begin(), weights.begin() + kept, 0.0);
    }
    const double target =
        static_cast<double>(SampleUniform(params.seed, params.draw_index)) * kept_mass;
    double running = 0.0;
    result.token = order[kept - 1];
    for (int32_t r = 0; r < kept; ++r) {
      running += weights[r];
      if (running > target) {
        result.token = order[r];
        break;
      }
    }
    if (num_top > 0) {
      for (int32_t r = 0; r < num_top; ++r)
        result.top_logprobs.emplace_back(order[r], log_prob(order[r]));
    }
  }
  result.logprob = log_prob(result.token);
  if (num_top > 0 && result.top_logprobs.empty()) {
    const std::vector<int32_t> order = DescendingOrder(logits, vocab, num_top);
    for (int32_t r = 0; r < num_top; ++r)
      result.top_logprobs.emplace_back(order[r], log_prob(order[r]));
  }
  return result;
}

}  // namespace llm::cpu
