// The transformer forward against a naive Llama forward written here in double precision over the
// same fake checkpoint: unfused projections, contiguous causal attention, RoPE from the textbook
// formula. Catches wrong fusion order, GQA mapping, residual wiring or norm placement.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/model/transformer.h"
#include "tests/model/fake_checkpoint.h"

namespace llm {
namespace {

using Matrix = std::vector<std::vector<double>>;  // [rows][columns]

// y[r] = W x[r] for W stored [out, in].
Matrix Linear(const Matrix& x, const std::vector<float>& w, size_t out_features) {
  const size_t in_features = x[0].size();
  Matrix y(x.size(), std::vector<double>(out_features, 0.0));
  for (size_t r = 0; r < x.size(); ++r)
    for (size_t o = 0; o < out_features; ++o)
      for (size_t i = 0; i < in_features; ++i) y[r][o] += w[o * in_features + i] * x[r][i];
  return y;
}

Matrix RmsNormRows(const Matrix& x, const std::vector<float>& weight, double eps) {
  Matrix y = x;
  for (auto& row : y) {
    double mean_square = 0.0;
    for (double v : row) mean_square += v * v;
    mean_square /= row.size();
    for (size_t i = 0; i < row.size(); ++i)
      row[i] = row[i] / std::sqrt(mean_square + eps) * weight[i];
  }
  return y;
}

// Rotate-half RoPE of head `h` (width d) inside each row, at position = row index.
void Rope(Matrix& x, int heads, int d, double theta) {
  for (size_t p = 0; p < x.size(); ++p) {
    for (int h = 0; h < heads; ++h) {
      double* v = &x[p][h * d];
      for (int i = 0; i < d / 2; ++i) {
        const double angle = p / std::pow(theta, 2.0 * i / d);
        const double a = v[i], b = v[i + d / 2];
        v[i] = a * std::cos(angle) - b * std::sin(angle);
        v[i + d / 2] = b * std::cos(angle) + a * std::sin(angle);
      }
    }
  }
}

Matrix NaiveLlamaLogits(const testing::FakeCheckpoint& checkpoint,
                        const std::vector<int32_t>& prompt) {
  const ModelConfig& c = checkpoint.config();
  const int hq = c.num_attention_heads, hkv = c.num_key_value_heads, d = c.head_dim;
  const size_t hidden = c.hidden_size, n = prompt.size();
  const std::vector<float>& embed = checkpoint.values("model.embed_tokens.weight");
  Matrix x(n, std::vector<double>(hidden));
  for (size_t t = 0; t < n; ++t)
    for (size_t i = 0; i < hidden; ++i) x[t][i] = embed[prompt[t] * hidden + i];
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    const Matrix h =
        RmsNormRows(x, checkpoint.values(p + "input_layernorm.weight"), c.rms_norm_eps);
    Matrix q = Linear(h, checkpoint.values(p + "self_attn.q_proj.weight"), hq * d);
    Matrix k = Linear(h, checkpoint.values(p + "self_attn.k_proj.weight"), hkv * d);
    const Matrix v = Linear(h, checkpoint.values(p + "self_attn.v_proj.weight"), hkv * d);
    Rope(q, hq, d, c.rope_theta);
    Rope(k, hkv, d, c.rope_theta);
    Matrix attention(n, std::vector<double>(hq * d, 0.0));
    for (size_t t = 0; t < n; ++t) {
      for (int head = 0; head < hq; ++head) {
        const int kv_head = head / (hq / hkv);
        std::vector<double> weights(t + 1);
        double max_score = -1e300, sum = 0.0;
        for (size_t j = 0; j <= t; ++j) {
          double dot = 0.0;
          for (int e = 0; e < d; ++e) dot += q[t][head * d + e] * k[j][kv_head * d + e];
          weights[j] = dot / std::sqrt(static_cast<double>(d));
          max_score = std::max(max_score, weights[j]);
        }
        for (double& w : weights) sum += (w = std::exp(w - max_score));
        for (size_t j = 0; j <= t; ++j)
          for (int e = 0; e < d; ++e)
            attention[t][head * d + e] += weights[j] / sum * v[j][kv_head * d + e];
      }
    }
    const Matrix o = Linear(attention, checkpoint.values(p + "self_attn.o_proj.weight"), hidden);
    for (size_t t = 0; t < n; ++t)
      for (size_t i = 0; i < hidden; ++i) x[t][i] += o[t][i];
    const Matrix h2 =
        RmsNormRows(x, checkpoint.values(p + "post_attention_layernorm.weight"), c.rms_norm_eps);
    const Matrix gate =
        Linear(h2, checkpoint.values(p + "mlp.gate_proj.weight"), c.intermediate_size);
    Matrix up = Linear(h2, checkpoint.values(p + "mlp.up_proj.weight"), c.intermediate_size);
    for (size_t t = 0; t < n; ++t)
      for (int i = 0; i < c.intermediate_size; ++i)
        up[t][i] *= gate[t][i] / (1.0 + std::exp(-gate[t][i]));
    const Matrix down = Linear(up, checkpoint.values(p + "mlp.down_proj.weight"), hidden);
    for (size_t t = 0; t < n; ++t)
      for (size_t i = 0; i < hidden; ++i) x[t][i] += down[t][i];
  }
  const Matrix normed = RmsNormRows(x, checkpoint.values("model.norm.weight"), c.rms_norm_eps);
  return Linear(
      normed,
      checkpoint.values(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"),
      c.vocab_size);
}

void ExpectForwardMatchesNaive(const ModelConfig& config) {
  testing::FakeCheckpoint checkpoint(config, 1234);
  std::unique_ptr<Backend> backend = CreateCpuBackend(2);
  TransformerOptions options;
  options.kv_num_blocks = 8;
  options.kv_block_size = 16;
  options.max_batch_tokens = 32;
  absl::StatusOr<std::unique_ptr<Transformer>> transformer =
      Transformer::Create(checkpoint, *backend, options);
  ASSERT_TRUE(transformer.ok()) << transformer.status();
  const std::vector<int32_t> prompt = {3,  17, 99, 0,  42, 42, 7,  63, 15,
                                       88, 21, 5,  60, 1,  2,  30, 77, 9};
  SequenceChunk chunk;
  chunk.tokens = prompt;
  chunk.block_table = {5, 2};
  chunk.return_logits = true;
  absl::StatusOr<std::vector<ChunkResult>> result = (*transformer)->Forward(std::span(&chunk, 1));
  ASSERT_TRUE(result.ok()) << result.status();
  const Matrix expected = NaiveLlamaLogits(checkpoint, prompt);
  double max_diff = 0.0, max_logit = 0.0;
  for (size_t t = 0; t < prompt.size(); ++t) {
    for (int v = 0; v < config.vocab_size; ++v) {
      max_diff = std::max(
          max_diff, std::abs((*result)[0].logits[t * config.vocab_size + v] - expected[t][v]));
      max_logit = std::max(max_logit, std::abs(expected[t][v]));
    }
  }
  EXPECT_LT(max_diff, 1e-4 * std::max(1.0, max_logit)) << "largest |logit| " << max_logit;
}

TEST(TransformerReferenceTest, GroupedQueryModelMatchesNaiveDoubleForward) {
  ExpectForwardMatchesNaive(testing::SmallLlamaConfig());
}

TEST(TransformerReferenceTest, TiedMultiHeadModelMatchesNaiveDoubleForward) {
  ModelConfig config = testing::SmallLlamaConfig();
  config.num_key_value_heads = config.num_attention_heads;
  config.tie_word_embeddings = true;
  config.rope_theta = 500000.0f;
  ExpectForwardMatchesNaive(config);
}

TEST(TransformerReferenceTest, MultiQueryModelWithWideHeadsMatchesNaiveDoubleForward) {
  ModelConfig config = testing::SmallLlamaConfig();
  config.num_attention_heads = 2;
  config.num_key_value_heads = 1;
  config.head_dim = 64;  // head_dim * heads != hidden_size, as configs with explicit head_dim allow
  ExpectForwardMatchesNaive(config);
}

}  // namespace
}  // namespace llm
