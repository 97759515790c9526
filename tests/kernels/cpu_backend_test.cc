// The CpuBackend object: memory accounting, weight conversion, argument checks, and that its ops
// reach the reference functions (spot-checked against hand-computed values).
#include "kernels/cpu/cpu_backend.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/dtype.h"

namespace llm {
namespace {

TEST(CpuBackendTest, ReportsFp32AndTracksAllocatedBytes) {
  std::unique_ptr<Backend> backend = CreateCpuBackend(2);
  EXPECT_EQ(backend->compute_dtype(), DType::kF32);
  EXPECT_EQ(backend->name(), "cpu");
  const size_t before = backend->memory_stats().allocated_bytes;
  {
    absl::StatusOr<DeviceBuffer> buffer = backend->Allocate(1000);
    ASSERT_TRUE(buffer.ok()) << buffer.status();
    EXPECT_EQ(buffer->bytes(), 1000u);
    EXPECT_GE(backend->memory_stats().allocated_bytes, before + 1000);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buffer->data()) % 64, 0u);
  }
  EXPECT_EQ(backend->memory_stats().allocated_bytes, before);
}

TEST(CpuBackendTest, UploadWeightConvertsBf16ToFloat) {
  std::unique_ptr<Backend> backend = CreateCpuBackend(1);
  const std::vector<float> values = {1.0f, -2.5f, 0.15625f, 3.0e5f};
  std::vector<uint16_t> bf16;
  for (float v : values) bf16.push_back(FloatToBF16(v));
  HostTensor tensor{DType::kBF16, {2, 2}, bf16.data()};
  absl::StatusOr<DeviceBuffer> weight = backend->UploadWeight(tensor);
  ASSERT_TRUE(weight.ok()) << weight.status();
  std::vector<float> back(4);
  ASSERT_TRUE(backend->CopyToHost(back.data(), weight->data(), 16).ok());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(back[i], BF16ToFloat(bf16[i]));
}

TEST(CpuBackendTest, SampleRejectsMismatchedParamsCount) {
  std::unique_ptr<Backend> backend = CreateCpuBackend(1);
  const std::vector<float> logits(8, 0.0f);
  std::vector<SamplingParams> params(1);
  std::vector<SampledToken> out(2);
  const absl::Status status = backend->Sample(logits.data(), 2, 4, params, out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
}

TEST(CpuBackendTest, AttentionRejectsHeadCountsThatDoNotGroup) {
  std::unique_ptr<Backend> backend = CreateCpuBackend(1);
  std::vector<float> pool(1024), qkv(64), out(64);
  KvCacheView cache{pool.data(), kvcache::KvLayout{1, 2, 4, 2, 8}};
  AttentionShape shape{3, 2, 8, 1.0f};  // 3 query heads cannot share 2 kv heads
  AttentionBatch batch;
  EXPECT_EQ(backend->PagedAttention(qkv.data(), batch, shape, cache, 0, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  AttentionShape wrong_layer{2, 2, 8, 1.0f};
  EXPECT_EQ(backend->PagedAttention(qkv.data(), batch, wrong_layer, cache, 1, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CpuBackendTest, OpsComputeThroughTheBackendInterface) {
  std::unique_ptr<Backend> backend = CreateCpuBackend(2);
  // Matmul: [1, 2] x W^T with W = [[1, 0], [1, 1]] -> [1, 3].
  const std::vector<float> x = {1, 2}, w = {1, 0, 1, 1};
  std::vector<float> out(2);
  ASSERT_TRUE(backend->Matmul(x.data(), w.data(), 1, 2, 2, out.data(), true).ok());
  EXPECT_EQ(out, (std::vector<float>{1, 3}));
  // RmsNorm of [3, 4] with eps 0: rms = sqrt(12.5).
  const std::vector<float> row = {3, 4}, weight = {1, 2};
  ASSERT_TRUE(backend->RmsNorm(row.data(), weight.data(), 1, 2, 0.0f, out.data()).ok());
  EXPECT_NEAR(out[0], 3 / std::sqrt(12.5), 1e-6);
  EXPECT_NEAR(out[1], 8 / std::sqrt(12.5), 1e-6);
  // Greedy sampling through Sample.
  const std::vector<float> logits = {0, 5, 1, 5};
  std::vector<SamplingParams> params(1);
  std::vector<SampledToken> sampled(1);
  ASSERT_TRUE(backend->Sample(logits.data(), 1, 4, params, sampled).ok());
  EXPECT_EQ(sampled[0].token, 1);
}

}  // namespace
}  // namespace llm
