// The sampling contract of kernels/cpu/sampling.h: greedy ties, top-k/top-p masks, seeded
// reproducibility, raw-logit log-probs, and draws that follow the (cut, renormalised) softmax.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/sampling.h"

namespace llm::cpu {
namespace {

std::vector<double> LogSoftmax(const std::vector<float>& logits, double temperature = 1.0) {
  double max_value = -1e300;
  for (float l : logits) max_value = std::max(max_value, l / temperature);
  double sum = 0.0;
  for (float l : logits) sum += std::exp(l / temperature - max_value);
  std::vector<double> out;
  for (float l : logits) out.push_back(l / temperature - max_value - std::log(sum));
  return out;
}

// Draw `draws` tokens with seeds 0..draws-1 and return how often each token came up.
std::vector<int> Histogram(const std::vector<float>& logits, SamplingParams params, int draws) {
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i) {
    params.seed = 1000003ull * i + 17;
    params.draw_index = i % 5;
    ++counts[SampleFromLogits(logits.data(), static_cast<int32_t>(logits.size()), params).token];
  }
  return counts;
}

// Pearson chi-square of observed counts against expected probabilities (tokens with p = 0 must not
// occur).
double ChiSquare(const std::vector<int>& counts, const std::vector<double>& probabilities,
                 int draws) {
  double statistic = 0.0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double expected = probabilities[i] * draws;
    if (expected == 0.0) {
      if (counts[i] != 0) return 1e30;
      continue;
    }
    statistic += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return statistic;
}

TEST(SamplingTest, GreedyPicksLowestIdAmongTiedMaxima) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 2.0f};
  SamplingParams params;  // temperature 0
  for (uint64_t seed : {0ull, 1ull, 99ull}) {
    params.seed = seed;
    EXPECT_EQ(SampleFromLogits(logits.data(), 5, params).token, 1);
  }
}

TEST(SamplingTest, LogprobAndTopLogprobsUseRawLogitsRegardlessOfTemperature) {
  const std::vector<float> logits = {1.0f, 3.0f, -2.0f, 3.0f, 0.0f};
  const std::vector<double> expected = LogSoftmax(logits);
  SamplingParams params;
  params.temperature = 2.5f;
  params.top_k = 2;
  params.num_top_logprobs = 3;
  params.seed = 5;
  const SampledToken sampled = SampleFromLogits(logits.data(), 5, params);
  ASSERT_TRUE(sampled.token == 1 || sampled.token == 3);
  EXPECT_NEAR(sampled.logprob, expected[sampled.token], 1e-6);
  ASSERT_EQ(sampled.top_logprobs.size(), 3u);
  EXPECT_EQ(sampled.top_logprobs[0].first, 1);  // tie between 1 and 3: lower id first
  EXPECT_EQ(sampled.top_logprobs[1].first, 3);
  EXPECT_EQ(sampled.top_logprobs[2].first, 0);
  for (const auto& [token, logprob] : sampled.top_logprobs)
    EXPECT_NEAR(logprob, expected[token], 1e-6);

  params.temperature = 0.0f;
  params.num_top_logprobs = 10;  // more than the vocabulary: clamped
  const SampledToken greedy = SampleFromLogits(logits.data(), 5, params);
  EXPECT_EQ(greedy.token, 1);
  EXPECT_NEAR(greedy.logprob, expected[1], 1e-6);
  EXPECT_EQ(greedy.top_logprobs.size(), 5u);
}

TEST(SamplingTest, SameSeedAndDrawIndexGiveTheSameToken) {
  std::vector<float> logits(1000);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(0.37 * i) * 3.0f;
  SamplingParams params;
  params.temperature = 1.0f;
  params.top_p = 0.95f;
  std::set<int32_t> distinct;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    params.seed = seed;
    params.draw_index = seed * 3;
    const int32_t first = SampleFromLogits(logits.data(), 1000, params).token;
    EXPECT_EQ(SampleFromLogits(logits.data(), 1000, params).token, first);
    distinct.insert(first);
  }
  EXPECT_GT(distinct.size(), 5u) << "different seeds must give different draws";
}

TEST(SamplingTest, TopKKeepsOnlyTheKMostLikelyTokens) {
  const std::vector<float> logits = {0.1f, 2.0f, 1.5f, -0.3f, 1.9f, 0.0f};
  SamplingParams params;
  params.temperature = 1.0f;
  params.top_k = 3;  // tokens 1, 4, 2
  const int draws = 6000;
  const std::vector<int> counts = Histogram(logits, params, draws);
  EXPECT_EQ(counts[0] + counts[3] + counts[5], 0);
  std::vector<double> probabilities(6, 0.0);
  const double mass = std::exp(2.0) + std::exp(1.9) + std::exp(1.5);
  for (int token : {1, 4, 2})
    probabilities[token] = std::exp(static_cast<double>(logits[token])) / mass;
  // 2 degrees of freedom: P(chi2 > 20) ~ 5e-5.
  EXPECT_LT(ChiSquare(counts, probabilities, draws), 20.0);

  params.top_k = 1;
  const std::vector<int> only_argmax = Histogram(logits, params, 200);
  EXPECT_EQ(only_argmax[1], 200);
}

TEST(SamplingTest, TopPKeepsTheSmallestPrefixReachingTheMass) {
  // Probabilities 0.5, 0.3, 0.15, 0.05 (token order shuffled).
  const std::vector<float> logits = {std::log(0.15f), std::log(0.5f), std::log(0.05f),
                                     std::log(0.3f)};
  SamplingParams params;
  params.temperature = 1.0f;
  params.top_p = 0.75f;  // 0.5 < 0.75 <= 0.8: tokens 1 and 3
  const int draws = 5000;
  std::vector<int> counts = Histogram(logits, params, draws);
  EXPECT_EQ(counts[0] + counts[2], 0);
  EXPECT_LT(ChiSquare(counts, {0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8}, draws), 16.0);  // 1 dof

  params.top_p = 0.85f;  // needs the 0.15 token too
  counts = Histogram(logits, params, draws);
  EXPECT_EQ(counts[2], 0);
  EXPECT_GT(counts[0], 0);

  params.top_p = 0.1f;  // less than the first token: keep it alone
  counts = Histogram(logits, params, 300);
  EXPECT_EQ(counts[1], 300);
}

TEST(SamplingTest, DrawsFollowTheTemperedSoftmax) {
  const std::vector<float> logits = {0.3f, -1.2f, 2.1f, 0.0f, 1.4f, -0.5f, 0.9f, 1.0f};
  SamplingParams params;
  params.temperature = 0.7f;
  const int draws = 20000;
  const std::vector<int> counts = Histogram(logits, params, draws);
  std::vector<double> probabilities;
  for (double lp : LogSoftmax(logits, 0.7)) probabilities.push_back(std::exp(lp));
  // 7 degrees of freedom: P(chi2 > 30) ~ 1e-4; a biased sampler (e.g. no temperature) lands far
  // above.
  EXPECT_LT(ChiSquare(counts, probabilities, draws), 30.0);

  std::vector<double> untempered;
  for (double lp : LogSoftmax(logits)) untempered.push_back(std::exp(lp));
  EXPECT_GT(ChiSquare(counts, untempered, draws), 100.0)
      << "temperature must change the distribution";
}

TEST(SamplingTest, TopKThenTopPComposeOnTheRenormalisedDistribution) {
  // Probabilities 0.4, 0.3, 0.2, 0.1. top_k = 3 leaves mass 0.9; top_p = 0.7 of that is 0.63, so
  // the first two tokens (0.7) suffice.
  const std::vector<float> logits = {std::log(0.1f), std::log(0.2f), std::log(0.3f),
                                     std::log(0.4f)};
  SamplingParams params;
  params.temperature = 1.0f;
  params.top_k = 3;
  params.top_p = 0.7f;
  const int draws = 4000;
  const std::vector<int> counts = Histogram(logits, params, draws);
  EXPECT_EQ(counts[0] + counts[1], 0);
  EXPECT_LT(ChiSquare(counts, {0.0, 0.0, 0.3 / 0.7, 0.4 / 0.7}, draws), 16.0);
}

// The contract of sampling.h written the plain way: full sort, explicit masks. The optimised
// sampler (partial sorts, growing top-p prefix) must pick exactly the same token.
int32_t NaiveContractSample(const std::vector<float>& logits, const SamplingParams& params) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  const float max_logit = logits[order[0]];
  std::vector<double> weights(vocab);
  for (int32_t i = 0; i < vocab; ++i) {
    weights[i] = std::exp(static_cast<double>(logits[i] / params.temperature) -
                          static_cast<double>(max_logit / params.temperature));
  }
  std::vector<bool> keep(vocab, true);
  if (params.top_k > 0 && params.top_k < vocab) {
    for (int32_t r = params.top_k; r < vocab; ++r) keep[order[r]] = false;
  }
  if (params.top_p < 1.0f) {
    double mass = 0.0;
    for (int32_t i = 0; i < vocab; ++i) mass += keep[i] ? weights[i] : 0.0;
    double running = 0.0;
    bool reached = false;
    for (int32_t r = 0; r < vocab; ++r) {
      if (!keep[order[r]]) continue;
      if (reached) {
        keep[order[r]] = false;
        continue;
      }
      running += weights[order[r]];
      reached = running >= params.top_p * mass;
    }
  }
  double kept_mass = 0.0;
  int32_t last_kept = 0;
  for (int32_t i = 0; i < vocab; ++i) {
    if (keep[i]) kept_mass += weights[i], last_kept = i;
  }
  const double target = SampleUniform(params.seed, params.draw_index) * kept_mass;
  double running = 0.0;
  for (int32_t i = 0; i < vocab; ++i) {
    if (!keep[i]) continue;
    running += weights[i];
    if (running > target) return i;
  }
  return last_kept;
}

TEST(SamplingTest, MatchesThePlainContractImplementationOnALargeVocabulary) {
  std::mt19937 generator(77);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(5000);
  for (float& l : logits) l = std::round(normal(generator) * 8.0f) / 8.0f;  // many exact ties
  struct Case {
    float temperature;
    int32_t top_k;
    float top_p;
  };
  // top_p 0.9 over a wide distribution needs hundreds of tokens: the sorted prefix must grow.
  for (const Case c : {Case{1.0f, 0, 1.0f}, Case{1.0f, 0, 0.9f}, Case{0.6f, 40, 1.0f},
                       Case{1.3f, 700, 0.95f}, Case{2.0f, 0, 0.5f}}) {
    SamplingParams params;
    params.temperature = c.temperature;
    params.top_k = c.top_k;
    params.top_p = c.top_p;
    for (uint64_t seed = 0; seed < 50; ++seed) {
      params.seed = seed;
      params.draw_index = seed + 3;
      ASSERT_EQ(SampleFromLogits(logits.data(), 5000, params).token,
                NaiveContractSample(logits, params))
          << "temperature " << c.temperature << " top_k " << c.top_k << " top_p " << c.top_p
          << " seed " << seed;
    }
  }
}

}  // namespace
}  // namespace llm::cpu
