// Sampling by the contract in sampling.h. Only as much of the vocabulary is sorted as the cuts
// need: top-k partially sorts its k tokens; top-p sorts a growing prefix until it holds the
// required mass.
#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace llm::cpu {
namespace {

// Descending order by logit, lower id first on ties: a strict total order, so any (partial) sort
// produces the same prefix.
struct RanksBefore {
  const float* logits;
  bool operator()(int32_t a, int32_t b) const {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  }
};

// Reorders `tokens` so its first `count` entries are its top `count` in descending order.
void SortPrefix(std::vector<int32_t>& tokens, size_t count, const float* logits) {
  count = std::min(count, tokens.size());
  std::partial_sort(tokens.begin(), tokens.begin() + count, tokens.end(), RanksBefore{logits});
}

std::vector<int32_t> AllTokens(int32_t vocab) {
  std::vector<int32_t> tokens(vocab);
  std::iota(tokens.begin(), tokens.end(), 0);
  return tokens;
}

// Applies top-p to `kept` (whose order is arbitrary) and returns the kept prefix in descending
// order.
std::vector<int32_t> TopPPrefix(std::vector<int32_t> kept, const std::vector<double>& weights,
                                const float* logits, float top_p) {
  // M summed in ascending id order, independent of how much gets sorted below.
  std::vector<int32_t> by_id = kept;
  std::sort(by_id.begin(), by_id.end());
  double mass = 0.0;
  for (int32_t token : by_id) mass += weights[token];
  const double needed = static_cast<double>(top_p) * mass;

  // Sort a prefix, doubling it until its running sum reaches `needed` (or it is everything).
  size_t sorted = std::min<size_t>(kept.size(), 64);
  while (true) {
    SortPrefix(kept, sorted, logits);
    double running = 0.0;
    for (size_t r = 0; r < sorted; ++r) {
      running += weights[kept[r]];
      if (running >= needed) {
        kept.resize(r + 1);
        return kept;
      }
    }
    if (sorted == kept.size()) return kept;  // rounding kept the sum below `needed`: keep all
    sorted = std::min(kept.size(), sorted * 2);
  }
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
  for (int32_t i = 0; i < vocab; ++i) {
    sum_exp += std::exp(static_cast<double>(logits[i]) - max_logit);
  }
  const double log_normalizer = static_cast<double>(max_logit) + std::log(sum_exp);
  const auto log_prob = [&](int32_t token) {
    return static_cast<float>(static_cast<double>(logits[token]) - log_normalizer);
  };

  SampledToken result;
  if (params.temperature <= 0.0f) {
    result.token = argmax;
  } else {
    const double tempered_max = max_logit / params.temperature;
    std::vector<double> weights(vocab);
    for (int32_t i = 0; i < vocab; ++i) {
      weights[i] = std::exp(static_cast<double>(logits[i] / params.temperature) - tempered_max);
    }
    // `kept` lists the surviving tokens; an empty list stands for the whole vocabulary, so the
    // uncut case allocates and sorts nothing.
    std::vector<int32_t> kept;
    if (params.top_k > 0 && params.top_k < vocab) {
      kept = AllTokens(vocab);
      SortPrefix(kept, params.top_k, logits);
      kept.resize(params.top_k);
    }
    if (params.top_p < 1.0f) {
      kept = TopPPrefix(kept.empty() ? AllTokens(vocab) : std::move(kept), weights, logits,
                        params.top_p);
    }
    std::sort(kept.begin(), kept.end());  // the draw walks in ascending id order

    const auto for_each_kept = [&](auto&& visit) {
      if (kept.empty()) {
        for (int32_t token = 0; token < vocab; ++token) {
          if (!visit(token)) return;
        }
      } else {
        for (int32_t token : kept) {
          if (!visit(token)) return;
        }
      }
    };
    double kept_mass = 0.0;
    for_each_kept([&](int32_t token) {
      kept_mass += weights[token];
      return true;
    });
    const double target =
        static_cast<double>(SampleUniform(params.seed, params.draw_index)) * kept_mass;
    double running = 0.0;
    result.token = kept.empty() ? vocab - 1 : kept.back();
    for_each_kept([&](int32_t token) {
      running += weights[token];
      if (running > target) {
        result.token = token;
        return false;
      }
      return true;
    });
  }
  result.logprob = log_prob(result.token);

  const int32_t num_top = std::clamp(params.num_top_logprobs, 0, vocab);
  if (num_top > 0) {
    std::vector<int32_t> order = AllTokens(vocab);
    SortPrefix(order, num_top, logits);
    for (int32_t r = 0; r < num_top; ++r) {
      result.top_logprobs.emplace_back(order[r], log_prob(order[r]));
    }
  }
  return result;
}

}  // namespace llm::cpu
