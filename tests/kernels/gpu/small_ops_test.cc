// The CUDA backend's small ops (RoPE + KV append, RMSNorm, AddRmsNorm, Add, SiluMul, Embed,
// GatherRows, Matmul, UploadWeight, Sample) against the CPU backend on the same bf16-rounded
// inputs.
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kvcache/kv_layout.h"
#include "tests/kernels/gpu/gpu_test_util.h"

namespace llm {
namespace {

using gpu_testing::CountNonFinite;
using gpu_testing::Download;
using gpu_testing::FromBf16;
using gpu_testing::Poisoned;
using gpu_testing::RandomBf16Values;
using gpu_testing::RelativeError;
using gpu_testing::ToBf16;
using gpu_testing::Upload;

constexpr double kTolerance = 1e-2;

class SmallOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_GPU();
    auto backend = CreateCudaBackend();
    ASSERT_TRUE(backend.ok()) << backend.status();
    gpu_ = std::move(*backend);
    cpu_ = CreateCpuBackend(0);
  }

  // Uploads bf16-rounded floats as bf16.
  DeviceBuffer UploadBf16(const std::vector<float>& values) {
    return Upload(*gpu_, ToBf16(values));
  }
  std::vector<float> DownloadBf16(const DeviceBuffer& buffer, size_t count) {
    return FromBf16(Download<uint16_t>(*gpu_, buffer, count));
  }
  void ExpectClose(const std::vector<float>& actual, const std::vector<float>& expected,
                   const char* what, double tolerance = kTolerance) {
    EXPECT_EQ(CountNonFinite(actual), 0u) << what;
    const double error = RelativeError(actual, expected);
    EXPECT_LT(error, tolerance) << what;
    std::printf("    %-22s relative error %.3e\n", what, error);
  }

  std::unique_ptr<Backend> gpu_;
  std::unique_ptr<Backend> cpu_;
  std::mt19937 generator_{1234};
};

TEST_F(SmallOpsTest, RopeAppendKvMatchesCpu) {
  for (int32_t head_dim : {64, 128}) {
    const int32_t hq = 8, hkv = 2, block_size = 16, tokens = 37, layer = 1;
    const kvcache::KvLayout layout{2, 8, block_size, hkv, head_dim};
    std::vector<int32_t> positions(tokens), slots(tokens);
    std::uniform_int_distribution<int32_t> position(0, 40000);
    std::vector<int32_t> shuffled(layout.num_blocks * block_size);
    std::iota(shuffled.begin(), shuffled.end(), 0);
    std::shuffle(shuffled.begin(), shuffled.end(), generator_);
    for (int32_t t = 0; t < tokens; ++t) {
      positions[t] = position(generator_);
      slots[t] = shuffled[t];
    }
    std::vector<float> inv_freq(head_dim / 2);
    for (int32_t i = 0; i < head_dim / 2; ++i) inv_freq[i] = std::pow(10000.f, -2.f * i / head_dim);
    const int64_t row = static_cast<int64_t>(hq + 2 * hkv) * head_dim;
    std::vector<float> qkv = RandomBf16Values(tokens * row, generator_);
    std::vector<float> pool = RandomBf16Values(layout.total_elements(), generator_);

    AttentionBatch batch;
    batch.num_tokens = tokens;
    batch.num_seqs = 1;
    batch.positions = positions.data();
    batch.slot_mapping = slots.data();
    const AttentionShape shape{hq, hkv, head_dim, 1.f / std::sqrt(float(head_dim))};
    std::vector<float> cpu_qkv = qkv, cpu_pool = pool;
    ASSERT_TRUE(cpu_->RopeAppendKv(cpu_qkv.data(), batch, shape, RopeParams{inv_freq.data(), 1.f},
                                   KvCacheView{cpu_pool.data(), layout}, layer)
                    .ok());

    DeviceBuffer d_qkv = UploadBf16(qkv), d_pool = UploadBf16(pool);
    DeviceBuffer d_positions = Upload(*gpu_, positions), d_slots = Upload(*gpu_, slots);
    DeviceBuffer d_inv_freq = Upload(*gpu_, inv_freq);
    batch.positions = d_positions.as<int32_t>();
    batch.slot_mapping = d_slots.as<int32_t>();
    ASSERT_TRUE(gpu_->RopeAppendKv(d_qkv.data(), batch, shape,
                                   RopeParams{d_inv_freq.as<float>(), 1.f},
                                   KvCacheView{d_pool.data(), layout}, layer)
                    .ok());
    ASSERT_TRUE(gpu_->Synchronize().ok());
    ExpectClose(DownloadBf16(d_qkv, qkv.size()), cpu_qkv, "rope qkv");
    // Only the appended slots changed; compare those K and V rows.
    const std::vector<float> gpu_pool = DownloadBf16(d_pool, pool.size());
    std::vector<float> gpu_rows, cpu_rows;
    for (int32_t t = 0; t < tokens; ++t) {
      for (auto kind : {kvcache::KvKind::kKey, kvcache::KvKind::kValue}) {
        for (int32_t h = 0; h < hkv; ++h) {
          const int64_t base =
              layout.layer_offset(layer, kind) +
              layout.offset_in_layer(slots[t] / block_size, h, slots[t] % block_size, 0);
          for (int32_t d = 0; d < head_dim; ++d) {
            gpu_rows.push_back(gpu_pool[base + d]);
            cpu_rows.push_back(cpu_pool[base + d]);
          }
        }
      }
    }
    ExpectClose(gpu_rows, cpu_rows, "rope appended k/v");
    EXPECT_EQ(RelativeError(gpu_pool, cpu_pool) < kTolerance, true);
  }
}

TEST_F(SmallOpsTest, RmsNormAndAddRmsNormMatchCpu) {
  for (int32_t hidden : {64, 2048, 4096, 5120}) {
    const int32_t rows = 19;
    std::vector<float> x = RandomBf16Values(rows * hidden, generator_, -3.f, 3.f);
    std::vector<float> residual = RandomBf16Values(rows * hidden, generator_, -3.f, 3.f);
    std::vector<float> weight = RandomBf16Values(hidden, generator_, 0.5f, 1.5f);
    std::vector<float> cpu_out(rows * hidden), cpu_residual = residual;
    ASSERT_TRUE(cpu_->RmsNorm(x.data(), weight.data(), rows, hidden, 1e-5f, cpu_out.data()).ok());
    DeviceBuffer d_x = UploadBf16(x), d_w = UploadBf16(weight), d_r = UploadBf16(residual);
    DeviceBuffer d_out = Poisoned(*gpu_, rows * hidden * 2);
    ASSERT_TRUE(gpu_->RmsNorm(d_x.data(), d_w.data(), rows, hidden, 1e-5f, d_out.data()).ok());
    ExpectClose(DownloadBf16(d_out, rows * hidden), cpu_out, "rms_norm");

    ASSERT_TRUE(cpu_->AddRmsNorm(cpu_residual.data(), x.data(), weight.data(), rows, hidden, 1e-5f,
                                 cpu_out.data())
                    .ok());
    DeviceBuffer d_out2 = Poisoned(*gpu_, rows * hidden * 2);
    ASSERT_TRUE(
        gpu_->AddRmsNorm(d_r.data(), d_x.data(), d_w.data(), rows, hidden, 1e-5f, d_out2.data())
            .ok());
    ExpectClose(DownloadBf16(d_out2, rows * hidden), cpu_out, "add_rms_norm out");
    ExpectClose(DownloadBf16(d_r, rows * hidden), cpu_residual, "add_rms_norm residual");
  }
}

TEST_F(SmallOpsTest, AddSiluMulEmbedGatherMatchCpu) {
  const int32_t rows = 23, inter = 1000, hidden = 264, vocab = 500;
  std::vector<float> a = RandomBf16Values(rows * hidden, generator_),
                     b = RandomBf16Values(rows * hidden, generator_);
  std::vector<float> cpu_a = a;
  ASSERT_TRUE(cpu_->Add(cpu_a.data(), b.data(), rows * hidden).ok());
  DeviceBuffer d_a = UploadBf16(a), d_b = UploadBf16(b);
  ASSERT_TRUE(gpu_->Add(d_a.data(), d_b.data(), rows * hidden).ok());
  ExpectClose(DownloadBf16(d_a, a.size()), cpu_a, "add");

  std::vector<float> gate_up = RandomBf16Values(rows * 2 * inter, generator_, -4.f, 4.f);
  std::vector<float> cpu_out(rows * inter);
  ASSERT_TRUE(cpu_->SiluMul(gate_up.data(), rows, inter, cpu_out.data()).ok());
  DeviceBuffer d_gu = UploadBf16(gate_up), d_out = Poisoned(*gpu_, rows * inter * 2);
  ASSERT_TRUE(gpu_->SiluMul(d_gu.data(), rows, inter, d_out.data()).ok());
  ExpectClose(DownloadBf16(d_out, rows * inter), cpu_out, "silu_mul");

  std::vector<float> table = RandomBf16Values(vocab * hidden, generator_);
  std::vector<int32_t> ids(rows);
  std::uniform_int_distribution<int32_t> id(0, vocab - 1);
  for (int32_t& i : ids) i = id(generator_);
  std::vector<float> cpu_embed(rows * hidden);
  ASSERT_TRUE(cpu_->Embed(ids.data(), rows, table.data(), hidden, cpu_embed.data()).ok());
  DeviceBuffer d_table = UploadBf16(table), d_ids = Upload(*gpu_, ids),
               d_embed = Poisoned(*gpu_, rows * hidden * 2);
  ASSERT_TRUE(gpu_->Embed(d_ids.as<int32_t>(), rows, d_table.data(), hidden, d_embed.data()).ok());
  EXPECT_EQ(DownloadBf16(d_embed, rows * hidden), cpu_embed) << "embed must copy exactly";

  std::vector<float> cpu_gather(rows * 7);  // x: the table read as rows of 7 columns
  std::vector<int32_t> gather_ids(rows);
  for (int32_t& i : gather_ids) i = id(generator_);
  ASSERT_TRUE(cpu_->GatherRows(table.data(), gather_ids.data(), rows, 7, cpu_gather.data()).ok());
  DeviceBuffer d_gids = Upload(*gpu_, gather_ids), d_gathered = Poisoned(*gpu_, rows * 7 * 2);
  ASSERT_TRUE(
      gpu_->GatherRows(d_table.data(), d_gids.as<int32_t>(), rows, 7, d_gathered.data()).ok());
  EXPECT_EQ(DownloadBf16(d_gathered, rows * 7), cpu_gather) << "gather must copy exactly";
}

TEST_F(SmallOpsTest, MatmulMatchesCpu) {
  for (auto [m, n, k] :
       {std::tuple{1, 512, 256}, std::tuple{37, 1000, 264}, std::tuple{128, 2048, 2048},
        // m <= 4 with k % 8 == 0 takes the GEMV kernel (gemv.cu); k = 262 falls back to cuBLASLt.
        std::tuple{2, 1003, 2048}, std::tuple{3, 77, 5632}, std::tuple{4, 2560, 1032},
        std::tuple{2, 100, 262}}) {
    std::vector<float> x = RandomBf16Values(m * k, generator_),
                       w = RandomBf16Values(n * k, generator_);
    std::vector<float> cpu_out(m * n);
    ASSERT_TRUE(cpu_->Matmul(x.data(), w.data(), m, n, k, cpu_out.data()).ok());
    DeviceBuffer d_x = UploadBf16(x), d_w = UploadBf16(w);
    DeviceBuffer d_out = Poisoned(*gpu_, m * n * 2), d_out32 = Poisoned(*gpu_, m * n * 4);
    ASSERT_TRUE(gpu_->Matmul(d_x.data(), d_w.data(), m, n, k, d_out.data()).ok());
    ASSERT_TRUE(gpu_->Matmul(d_x.data(), d_w.data(), m, n, k, d_out32.data(), true).ok());
    ExpectClose(DownloadBf16(d_out, m * n), cpu_out, "matmul bf16 out");
    ExpectClose(Download<float>(*gpu_, d_out32, m * n), cpu_out, "matmul f32 out", 1e-4);
  }
}

TEST_F(SmallOpsTest, UploadWeightConvertsF32AndF16) {
  std::vector<float> values = RandomBf16Values(1000, generator_, -10.f, 10.f);
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    std::vector<uint16_t> half(values.size());
    for (size_t i = 0; i < values.size(); ++i)
      half[i] = dtype == DType::kF16 ? FloatToF16(values[i]) : FloatToBF16(values[i]);
    HostTensor tensor{dtype,
                      {10, 100},
                      dtype == DType::kF32 ? static_cast<const void*>(values.data()) : half.data()};
    auto buffer = gpu_->UploadWeight(tensor);
    ASSERT_TRUE(buffer.ok()) << buffer.status();
    std::vector<float> expected(values.size());
    ConvertToFloat(dtype, tensor.data, values.size(), expected.data());
    for (float& e : expected) e = BF16ToFloat(FloatToBF16(e));
    EXPECT_EQ(DownloadBf16(*buffer, values.size()), expected) << DTypeName(dtype);
  }
}

TEST_F(SmallOpsTest, SampleMatchesCpuGreedyAndSeeded) {
  const int32_t rows = 6, vocab = 32000;
  std::vector<float> logits(rows * vocab);
  std::normal_distribution<float> normal(0.f, 3.f);
  for (float& l : logits) l = normal(generator_);
  logits[2 * vocab + 77] = logits[2 * vocab + 5] = 40.f;  // a tie: the lower id wins
  std::vector<SamplingParams> params(rows);
  params[1].temperature = 0.8f;
  params[1].seed = 9;
  params[1].draw_index = 3;
  params[3].temperature = 1.2f;
  params[3].top_k = 40;
  params[3].top_p = 0.9f;
  params[3].seed = 11;
  params[4].num_top_logprobs = 5;
  std::vector<SampledToken> cpu_out(rows), gpu_out(rows);
  ASSERT_TRUE(cpu_->Sample(logits.data(), rows, vocab, params, cpu_out).ok());
  DeviceBuffer d_logits = Upload(*gpu_, logits);
  ASSERT_TRUE(gpu_->Sample(d_logits.as<float>(), rows, vocab, params, gpu_out).ok());
  for (int32_t r = 0; r < rows; ++r) {
    EXPECT_EQ(gpu_out[r].token, cpu_out[r].token) << "row " << r;
    EXPECT_NEAR(gpu_out[r].logprob, cpu_out[r].logprob, 1e-4) << "row " << r;
    EXPECT_EQ(gpu_out[r].top_logprobs.size(), cpu_out[r].top_logprobs.size()) << "row " << r;
  }
  EXPECT_EQ(gpu_out[2].token, 5);
}

}  // namespace
}  // namespace llm
