// The CUDA plugin loader: a clear NotFound for a missing plugin, and (with a GPU) a working backend
// loaded by dlopen from the default search or the build tree.
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_plugin_loader.h"
#include "tests/kernels/gpu/gpu_test_util.h"

namespace llm {
namespace {

TEST(CudaPluginLoaderTest, MissingPluginIsNotFoundAndNamesThePath) {
  auto backend = LoadCudaBackend(CudaPluginOptions{"/nonexistent/libllm_cuda_backend.so", 0});
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(backend.status().message().find("/nonexistent/libllm_cuda_backend.so"),
            std::string::npos);
}

TEST(CudaPluginLoaderTest, LoadsABackendThatRunsAnOp) {
  SKIP_WITHOUT_GPU();
  auto backend = LoadCudaBackend();
  if (!backend.ok() && backend.status().code() == absl::StatusCode::kNotFound) {
    backend = LoadCudaBackend(CudaPluginOptions{LLM_CUDA_PLUGIN_BUILD_PATH, 0});
  }
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->name(), "cuda");
  EXPECT_EQ((*backend)->compute_dtype(), DType::kBF16);
  const std::vector<uint16_t> a = {FloatToBF16(1.5f), FloatToBF16(-2.f)};
  const std::vector<uint16_t> b = {FloatToBF16(0.25f), FloatToBF16(4.f)};
  DeviceBuffer da = gpu_testing::Upload(**backend, a), db = gpu_testing::Upload(**backend, b);
  ASSERT_TRUE((*backend)->Add(da.data(), db.data(), 2).ok());
  const std::vector<uint16_t> sum = gpu_testing::Download<uint16_t>(**backend, da, 2);
  EXPECT_EQ(BF16ToFloat(sum[0]), 1.75f);
  EXPECT_EQ(BF16ToFloat(sum[1]), 2.f);
}

TEST(CudaPluginLoaderTest, NoGpuIsAFailedPreconditionNotACrash) {
  if (gpu_testing::HasCudaDevice()) GTEST_SKIP() << "a GPU is present; this checks the no-GPU path";
  auto backend = LoadCudaBackend(CudaPluginOptions{LLM_CUDA_PLUGIN_BUILD_PATH, 0});
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition) << backend.status();
}

}  // namespace
}  // namespace llm
