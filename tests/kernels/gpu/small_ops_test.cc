// The CUDA backend's small ops (RoPE + KV append, RMSNorm, AddRmsNorm, Add, SiluMul, MatmulAdd,
// Embed, GatherRows, Matmul, UploadWeight, Sample) against the CPU backend on the same
// bf16-rounded inputs.
#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <string>
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

  // The batch fields RoPE + KV append read: each token's position and cache slot.
  static AttentionBatch RopeBatch(int32_t tokens, int32_t seqs, const int32_t* positions,
                                  const int32_t* slots) {
    AttentionBatch batch;
    batch.num_tokens = tokens;
    batch.num_seqs = seqs;
    batch.positions = positions;
    batch.slot_mapping = slots;
    return batch;
  }

  std::unique_ptr<Backend> gpu_;
  std::unique_ptr<Backend> cpu_;
  std::mt19937 generator_{1234};
};

// Decode-sized (37 tokens: the per-pair kernel with early loads) and prefill-sized launches (300:
// the block-per-token kernel at head_dim 64 and 128, the per-pair one at 72).
TEST_F(SmallOpsTest, RopeAppendKvMatchesCpu) {
  for (const auto& [head_dim, tokens] : {std::pair{64, 37}, std::pair{128, 37}, std::pair{64, 300},
                                         std::pair{128, 300}, std::pair{72, 300}}) {
    SCOPED_TRACE("head_dim " + std::to_string(head_dim) + ", tokens " + std::to_string(tokens));
    const int32_t hq = 8, hkv = 2, block_size = 16, layer = 1;
    const kvcache::KvLayout layout{2, 20, block_size, hkv, head_dim};
    std::vector<int32_t> positions(tokens), slots(tokens);
    std::uniform_int_distribution<int32_t> position(0, 40000);
    std::vector<int32_t> shuffled(layout.num_blocks * block_size);
    std::iota(shuffled.begin(), shuffled.end(), 0);
    std::shuffle(shuffled.begin(), shuffled.end(), generator_);
    for (int32_t t = 0; t < tokens; ++t) {
      positions[t] = position(generator_);
      slots[t] = shuffled[t];
    }
    const std::vector<float> inv_freq = gpu_testing::RopeInverseFrequencies(head_dim);
    const int64_t row = static_cast<int64_t>(hq + 2 * hkv) * head_dim;
    std::vector<float> qkv = RandomBf16Values(tokens * row, generator_);
    std::vector<float> pool = RandomBf16Values(layout.total_elements(), generator_);

    AttentionBatch batch = RopeBatch(tokens, 1, positions.data(), slots.data());
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

// The ops of the folded-norm path (TransformerOptions::norm_gains): RopeAppendKv and SiluMul with
// a row scale taken from x (the vector and the scalar row sums: hidden 2048 and 1004), at a
// decode-sized and a prefill-sized token count (the kernels load in a different order above 256),
// and MatmulAdd through the GEMV (m <= 4) and cuBLASLt with beta = 1.
TEST_F(SmallOpsTest, FoldedNormOpsMatchCpu) {
  for (const auto& [hidden, tokens] :
       {std::pair{2048, 21}, std::pair{1004, 21}, std::pair{2048, 300}}) {
    const int32_t hq = 8, hkv = 2, head_dim = 64, block_size = 16, layer = 0;
    const kvcache::KvLayout layout{1, 20, block_size, hkv, head_dim};
    std::vector<int32_t> positions(tokens), slots(tokens);
    for (int32_t t = 0; t < tokens; ++t) {
      positions[t] = 3 * t + 5;
      // Distinct slots (7 is prime to the pool's 320), one token not kept.
      slots[t] = t == 4 ? -1 : (t * 7) % (layout.num_blocks * block_size);
    }
    const std::vector<float> inv_freq = gpu_testing::RopeInverseFrequencies(head_dim);
    const int64_t row = static_cast<int64_t>(hq + 2 * hkv) * head_dim;
    std::vector<float> qkv = RandomBf16Values(tokens * row, generator_, -20.f, 20.f);
    std::vector<float> x = RandomBf16Values(tokens * hidden, generator_, -6.f, 6.f);
    std::vector<float> pool(layout.total_elements(), 0.f);
    AttentionBatch batch = RopeBatch(tokens, 1, positions.data(), slots.data());
    const AttentionShape shape{hq, hkv, head_dim, 1.f / std::sqrt(float(head_dim))};
    std::vector<float> cpu_qkv = qkv, cpu_pool = pool;
    ASSERT_TRUE(cpu_->RopeAppendKv(cpu_qkv.data(), batch, shape,
                                   RopeParams{inv_freq.data(), 1.f, {x.data(), hidden, 1e-5f}},
                                   KvCacheView{cpu_pool.data(), layout}, layer)
                    .ok());
    DeviceBuffer d_qkv = UploadBf16(qkv), d_pool = UploadBf16(pool), d_x = UploadBf16(x);
    DeviceBuffer d_positions = Upload(*gpu_, positions), d_slots = Upload(*gpu_, slots);
    DeviceBuffer d_inv_freq = Upload(*gpu_, inv_freq);
    batch.positions = d_positions.as<int32_t>();
    batch.slot_mapping = d_slots.as<int32_t>();
    ASSERT_TRUE(
        gpu_->RopeAppendKv(d_qkv.data(), batch, shape,
                           RopeParams{d_inv_freq.as<float>(), 1.f, {d_x.data(), hidden, 1e-5f}},
                           KvCacheView{d_pool.data(), layout}, layer)
            .ok());
    ASSERT_TRUE(gpu_->Synchronize().ok());
    ExpectClose(DownloadBf16(d_qkv, qkv.size()), cpu_qkv, "scaled rope qkv");
    ExpectClose(DownloadBf16(d_pool, pool.size()), cpu_pool, "scaled rope k/v pool");

    for (int32_t inter : {5632, 77}) {  // vector and scalar SwiGLU kernels
      std::vector<float> gate_up = RandomBf16Values(tokens * 2 * inter, generator_, -30.f, 30.f);
      std::vector<float> cpu_out(tokens * inter);
      ASSERT_TRUE(cpu_->SiluMul(gate_up.data(), tokens, inter, RowRmsScale{x.data(), hidden, 1e-5f},
                                cpu_out.data())
                      .ok());
      DeviceBuffer d_gate_up = UploadBf16(gate_up);
      DeviceBuffer d_out = Poisoned(*gpu_, tokens * inter * 2);
      ASSERT_TRUE(gpu_->SiluMul(d_gate_up.data(), tokens, inter,
                                RowRmsScale{d_x.data(), hidden, 1e-5f}, d_out.data())
                      .ok());
      ExpectClose(DownloadBf16(d_out, cpu_out.size()), cpu_out, "scaled silu_mul");
    }
  }
  for (int32_t m : {1, 3, 64, 130}) {
    const int32_t n = 320, k = 1024;
    std::vector<float> x = RandomBf16Values(m * k, generator_);
    std::vector<float> w = RandomBf16Values(n * k, generator_, -0.1f, 0.1f);
    std::vector<float> residual = RandomBf16Values(m * n, generator_, -4.f, 4.f);
    std::vector<float> cpu_out = residual;
    ASSERT_TRUE(cpu_->MatmulAdd(x.data(), w.data(), m, n, k, cpu_out.data()).ok());
    DeviceBuffer d_x = UploadBf16(x), d_w = UploadBf16(w), d_out = UploadBf16(residual);
    ASSERT_TRUE(gpu_->MatmulAdd(d_x.data(), d_w.data(), m, n, k, d_out.data()).ok());
    const std::vector<float> gpu_out = DownloadBf16(d_out, cpu_out.size());
    ExpectClose(gpu_out, cpu_out, (std::string("matmul_add m=") + std::to_string(m)).c_str());
    // The product is rounded to bf16 before the add, bf16(residual + bf16(x w^T)), on both paths
    // (the GEMV, and cuBLASLt with beta = 1, which rounds that way), not once as
    // bf16(residual + x w^T): bit for bit except where fp32 summation order moves a value across a
    // rounding boundary. (Measured on the H100: cuBLASLt 1 of 20480 differ from two roundings,
    // 4393 from one.)
    size_t once = 0, twice = 0;
    for (int32_t r = 0; r < m; ++r) {
      for (int32_t j = 0; j < n; ++j) {
        double product = 0.0;
        for (int32_t i = 0; i < k; ++i) product += double{x[r * k + i]} * w[j * k + i];
        const float start = residual[r * n + j];
        const float rounded_once =
            BF16ToFloat(FloatToBF16(static_cast<float>(start + static_cast<float>(product))));
        const float rounded_twice =
            BF16ToFloat(FloatToBF16(start + BF16ToFloat(FloatToBF16(static_cast<float>(product)))));
        once += gpu_out[r * n + j] != rounded_once;
        twice += gpu_out[r * n + j] != rounded_twice;
      }
    }
    std::printf("    matmul_add m=%d: %zu of %d differ from one rounding, %zu from two\n", m, once,
                m * n, twice);
    EXPECT_LT(twice, static_cast<size_t>(m * n) / 50) << "m=" << m;
  }
}

TEST_F(SmallOpsTest, RmsNormAndAddRmsNormMatchCpu) {
  for (int32_t hidden : {64, 1004, 2048, 4096, 5120}) {  // 1004: the scalar kernel
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

  for (int32_t width : {inter, inter + 4}) {  // 16-byte and scalar kernels
    std::vector<float> gate_up = RandomBf16Values(rows * 2 * width, generator_, -4.f, 4.f);
    std::vector<float> cpu_out(rows * width);
    ASSERT_TRUE(cpu_->SiluMul(gate_up.data(), rows, width, RowRmsScale{}, cpu_out.data()).ok());
    DeviceBuffer d_gu = UploadBf16(gate_up), d_out = Poisoned(*gpu_, rows * width * 2);
    ASSERT_TRUE(gpu_->SiluMul(d_gu.data(), rows, width, RowRmsScale{}, d_out.data()).ok());
    ExpectClose(DownloadBf16(d_out, rows * width), cpu_out, "silu_mul");
  }

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

// FusedMatmul (the GEMV with the norm before it and the residual add or SwiGLU after it) against
// the CPU backend's unfused ops, and against the CUDA backend's own unfused ops (RmsNorm, Matmul,
// Add / SiluMul), which it must reproduce up to fp32 summation order.
TEST_F(SmallOpsTest, FusedMatmulMatchesUnfusedOps) {
  const float eps = 1e-5f;
  for (int32_t m = 1; m <= 4; ++m) {
    for (auto [n, k] : {std::pair{2560, 2048}, std::pair{2048, 5632}, std::pair{1003, 1032},
                        std::pair{77, 64}, std::pair{4608, 256}}) {
      for (MatmulPrologue prologue :
           {MatmulPrologue::kNone, MatmulPrologue::kRmsNorm, MatmulPrologue::kRmsScale}) {
        const bool scaled = prologue == MatmulPrologue::kRmsScale;
        ASSERT_TRUE(gpu_->SupportsFusedMatmul(m, k));
        // w has 2n rows: the SwiGLU epilogue reads all of them, the others the first n.
        std::vector<float> x = RandomBf16Values(m * k, generator_, -3.f, 3.f),
                           w = RandomBf16Values(2 * n * k, generator_),
                           norm = RandomBf16Values(k, generator_, 0.5f, 1.5f),
                           residual = RandomBf16Values(m * n, generator_, -4.f, 4.f);
        // CPU reference: the unfused ops in fp32.
        std::vector<float> cpu_in(m * k), cpu_pair(m * 2 * n), cpu_swiglu(m * n);
        const float* cpu_x = x.data();
        if (prologue == MatmulPrologue::kRmsNorm) {
          ASSERT_TRUE(cpu_->RmsNorm(x.data(), norm.data(), m, k, eps, cpu_in.data()).ok());
          cpu_x = cpu_in.data();
        }
        ASSERT_TRUE(cpu_->Matmul(cpu_x, w.data(), m, 2 * n, k, cpu_pair.data()).ok());
        // kRmsScale: each product row times 1 / rms(x row) (SiluMul takes it as a RowRmsScale).
        const RowRmsScale cpu_scale = scaled ? RowRmsScale{x.data(), k, eps} : RowRmsScale{};
        ASSERT_TRUE(cpu_->SiluMul(cpu_pair.data(), m, n, cpu_scale, cpu_swiglu.data()).ok());
        std::vector<float> cpu_out(m * n), cpu_added = residual;
        for (int32_t r = 0; r < m; ++r) {
          double squares = 0.0;
          for (int32_t i = 0; i < k; ++i) squares += double{x[r * k + i]} * x[r * k + i];
          const double row_scale = scaled ? 1.0 / std::sqrt(squares / k + eps) : 1.0;
          for (int32_t j = 0; j < n; ++j) cpu_out[r * n + j] = cpu_pair[r * 2 * n + j] * row_scale;
        }
        ASSERT_TRUE(cpu_->Add(cpu_added.data(), cpu_out.data(), m * n).ok());

        // GPU unfused: the same ops through the backend (w's first n rows for the plain product).
        DeviceBuffer d_x = UploadBf16(x), d_w = UploadBf16(w), d_norm = UploadBf16(norm);
        DeviceBuffer d_in = Poisoned(*gpu_, m * k * 2), d_plain = Poisoned(*gpu_, m * n * 2),
                     d_pair = Poisoned(*gpu_, m * 2 * n * 2),
                     d_plain_swiglu = Poisoned(*gpu_, m * n * 2);
        const void* plain_x = d_x.data();
        if (prologue == MatmulPrologue::kRmsNorm) {
          ASSERT_TRUE(gpu_->RmsNorm(d_x.data(), d_norm.data(), m, k, eps, d_in.data()).ok());
          plain_x = d_in.data();
        }
        ASSERT_TRUE(gpu_->Matmul(plain_x, d_w.data(), m, n, k, d_plain.data()).ok());
        ASSERT_TRUE(gpu_->Matmul(plain_x, d_w.data(), m, 2 * n, k, d_pair.data()).ok());
        ASSERT_TRUE(gpu_->SiluMul(d_pair.data(), m, n,
                                  scaled ? RowRmsScale{d_x.data(), k, eps} : RowRmsScale{},
                                  d_plain_swiglu.data())
                        .ok());
        DeviceBuffer d_plain_added = UploadBf16(residual);
        ASSERT_TRUE(gpu_->Add(d_plain_added.data(), d_plain.data(), m * n).ok());

        // GPU fused: stored (bf16 and F32), added into the residual, SwiGLU of the pairs.
        FusedMatmulArgs args;
        args.x = d_x.data();
        args.prologue = prologue;
        args.norm_weight = d_norm.data();
        args.eps = eps;
        args.w = d_w.data();
        args.m = m;
        args.n = n;
        args.k = k;
        DeviceBuffer d_fused = Poisoned(*gpu_, m * n * 2), d_fused32 = Poisoned(*gpu_, m * n * 4),
                     d_added = UploadBf16(residual), d_swiglu = Poisoned(*gpu_, m * n * 2);
        args.out = d_fused.data();
        ASSERT_TRUE(gpu_->FusedMatmul(args).ok());
        args.out = d_fused32.data();
        args.out_f32 = true;
        ASSERT_TRUE(gpu_->FusedMatmul(args).ok());
        args.out_f32 = false;
        args.out = d_added.data();
        args.epilogue = MatmulEpilogue::kAdd;
        ASSERT_TRUE(gpu_->FusedMatmul(args).ok());
        args.out = d_swiglu.data();
        args.epilogue = MatmulEpilogue::kSiluMul;
        ASSERT_TRUE(gpu_->FusedMatmul(args).ok());
        ASSERT_TRUE(gpu_->Synchronize().ok());

        SCOPED_TRACE("m" + std::to_string(m) + " n" + std::to_string(n) + " k" + std::to_string(k) +
                     " prologue " + std::to_string(static_cast<int>(prologue)));
        const std::vector<float> fused = DownloadBf16(d_fused, m * n),
                                 added = DownloadBf16(d_added, m * n),
                                 swiglu = DownloadBf16(d_swiglu, m * n);
        ExpectClose(fused, cpu_out, "fused vs cpu");
        ExpectClose(Download<float>(*gpu_, d_fused32, m * n), cpu_out, "fused f32 vs cpu");
        ExpectClose(added, cpu_added, "fused add vs cpu");
        ExpectClose(swiglu, cpu_swiglu, "fused swiglu vs cpu");
        // Against the GPU's own unfused ops: equal up to summation order (a bf16 ulp here and
        // there in the normed activations). kRmsScale has no unfused op for the plain product
        // times the scale; its SwiGLU is SiluMul with the row scale.
        if (!scaled) {
          ExpectClose(fused, DownloadBf16(d_plain, m * n), "fused vs gpu unfused", 2e-3);
          ExpectClose(added, DownloadBf16(d_plain_added, m * n), "add vs gpu unfused", 2e-3);
        }
        ExpectClose(swiglu, DownloadBf16(d_plain_swiglu, m * n), "swiglu vs gpu unfused", 2e-3);
      }
    }
  }
}

// FusedMatmul with the RoPE + KV append epilogue (the decode step's qkv product) against the GPU's
// unfused RmsNorm, Matmul and RopeAppendKv (equal up to summation order) and the CPU's (fp32).
TEST_F(SmallOpsTest, FusedMatmulRopeAppendMatchesUnfusedOps) {
  const float eps = 1e-5f;
  for (int32_t head_dim : {64, 128}) {
    for (int32_t tokens = 1; tokens <= 4; ++tokens) {
      const int32_t hq = 8, hkv = 2, block_size = 16, layer = 1, k = 512;
      const int32_t n = (hq + 2 * hkv) * head_dim;
      const kvcache::KvLayout layout{2, 8, block_size, hkv, head_dim};
      std::vector<int32_t> positions(tokens), slots(tokens);
      std::uniform_int_distribution<int32_t> position(0, 40000);
      std::vector<int32_t> shuffled(layout.num_blocks * block_size);
      std::iota(shuffled.begin(), shuffled.end(), 0);
      std::shuffle(shuffled.begin(), shuffled.end(), generator_);
      for (int32_t t = 0; t < tokens; ++t) {
        positions[t] = position(generator_);
        slots[t] = t == 2 ? -1 : shuffled[t];  // a padded row: no append
      }
      const std::vector<float> inv_freq = gpu_testing::RopeInverseFrequencies(head_dim);
      std::vector<float> x = RandomBf16Values(tokens * k, generator_, -3.f, 3.f),
                         w = RandomBf16Values(n * k, generator_),
                         norm = RandomBf16Values(k, generator_, 0.5f, 1.5f),
                         pool = RandomBf16Values(layout.total_elements(), generator_);
      const AttentionShape shape{hq, hkv, head_dim, 1.f / std::sqrt(float(head_dim))};
      AttentionBatch batch = RopeBatch(tokens, tokens, positions.data(), slots.data());

      std::vector<float> cpu_normed(tokens * k), cpu_qkv(tokens * n), cpu_pool = pool;
      ASSERT_TRUE(cpu_->RmsNorm(x.data(), norm.data(), tokens, k, eps, cpu_normed.data()).ok());
      ASSERT_TRUE(cpu_->Matmul(cpu_normed.data(), w.data(), tokens, n, k, cpu_qkv.data()).ok());
      ASSERT_TRUE(cpu_->RopeAppendKv(cpu_qkv.data(), batch, shape, RopeParams{inv_freq.data(), 1.f},
                                     KvCacheView{cpu_pool.data(), layout}, layer)
                      .ok());

      DeviceBuffer d_x = UploadBf16(x), d_w = UploadBf16(w), d_norm = UploadBf16(norm);
      DeviceBuffer d_positions = Upload(*gpu_, positions), d_slots = Upload(*gpu_, slots),
                   d_inv_freq = Upload(*gpu_, inv_freq);
      batch.positions = d_positions.as<int32_t>();
      batch.slot_mapping = d_slots.as<int32_t>();
      const RopeParams rope{d_inv_freq.as<float>(), 1.f};
      // Unfused on the GPU.
      DeviceBuffer d_normed = Poisoned(*gpu_, tokens * k * 2),
                   d_plain_qkv = Poisoned(*gpu_, tokens * n * 2), d_plain_pool = UploadBf16(pool);
      ASSERT_TRUE(gpu_->RmsNorm(d_x.data(), d_norm.data(), tokens, k, eps, d_normed.data()).ok());
      ASSERT_TRUE(gpu_->Matmul(d_normed.data(), d_w.data(), tokens, n, k, d_plain_qkv.data()).ok());
      const KvCacheView plain_cache{d_plain_pool.data(), layout};
      ASSERT_TRUE(
          gpu_->RopeAppendKv(d_plain_qkv.data(), batch, shape, rope, plain_cache, layer).ok());
      // Fused.
      DeviceBuffer d_qkv = Poisoned(*gpu_, tokens * n * 2), d_pool = UploadBf16(pool);
      const KvCacheView cache{d_pool.data(), layout};
      FusedMatmulArgs args;
      args.x = d_x.data();
      args.prologue = MatmulPrologue::kRmsNorm;
      args.norm_weight = d_norm.data();
      args.eps = eps;
      args.w = d_w.data();
      args.m = tokens;
      args.n = n;
      args.k = k;
      args.out = d_qkv.data();
      args.epilogue = MatmulEpilogue::kRopeAppendKv;
      args.batch = &batch;
      args.shape = &shape;
      args.rope = &rope;
      args.cache = &cache;
      args.layer = layer;
      ASSERT_TRUE(gpu_->SupportsFusedMatmul(tokens, k));
      ASSERT_TRUE(gpu_->FusedMatmul(args).ok());
      ASSERT_TRUE(gpu_->Synchronize().ok());

      SCOPED_TRACE("head_dim " + std::to_string(head_dim) + " tokens " + std::to_string(tokens));
      const std::vector<float> qkv = DownloadBf16(d_qkv, tokens * n),
                               fused_pool = DownloadBf16(d_pool, pool.size());
      ExpectClose(qkv, cpu_qkv, "fused rope qkv vs cpu");
      ExpectClose(fused_pool, cpu_pool, "fused rope pool vs cpu");
      ExpectClose(qkv, DownloadBf16(d_plain_qkv, tokens * n), "rope qkv vs gpu unfused", 2e-3);
      // The whole pool: appended rows equal, every other element untouched.
      const std::vector<float> plain_pool = DownloadBf16(d_plain_pool, pool.size());
      ExpectClose(fused_pool, plain_pool, "rope pool vs gpu unfused", 1e-3);
      size_t differing = 0;
      for (size_t i = 0; i < pool.size(); ++i) differing += fused_pool[i] != plain_pool[i];
      EXPECT_LE(differing, static_cast<size_t>(tokens) * 2 * hkv * head_dim);

      // kRmsScale (the norm's gain folded into w): against Matmul of x itself, then RopeAppendKv
      // with the row scale of x; the same GEMV sums and the same scale, so the same bits.
      DeviceBuffer d_scaled_plain_qkv = Poisoned(*gpu_, tokens * n * 2),
                   d_scaled_plain_pool = UploadBf16(pool),
                   d_scaled_qkv = Poisoned(*gpu_, tokens * n * 2), d_scaled_pool = UploadBf16(pool);
      ASSERT_TRUE(
          gpu_->Matmul(d_x.data(), d_w.data(), tokens, n, k, d_scaled_plain_qkv.data()).ok());
      const RopeParams scaled_rope{d_inv_freq.as<float>(), 1.f, {d_x.data(), k, eps}};
      ASSERT_TRUE(gpu_->RopeAppendKv(d_scaled_plain_qkv.data(), batch, shape, scaled_rope,
                                     KvCacheView{d_scaled_plain_pool.data(), layout}, layer)
                      .ok());
      const KvCacheView scaled_cache{d_scaled_pool.data(), layout};
      args.prologue = MatmulPrologue::kRmsScale;
      args.norm_weight = nullptr;
      args.out = d_scaled_qkv.data();
      args.cache = &scaled_cache;
      ASSERT_TRUE(gpu_->FusedMatmul(args).ok());
      args.rope = &scaled_rope;  // the GEMV applies the scale itself: a row_scale is refused
      EXPECT_EQ(gpu_->FusedMatmul(args).code(), absl::StatusCode::kInvalidArgument);
      ASSERT_TRUE(gpu_->Synchronize().ok());
      const std::vector<float> scaled_qkv = DownloadBf16(d_scaled_qkv, tokens * n),
                               scaled_pool = DownloadBf16(d_scaled_pool, pool.size());
      ExpectClose(scaled_qkv, DownloadBf16(d_scaled_plain_qkv, tokens * n),
                  "scaled rope qkv vs gpu unfused", 1e-6);
      ExpectClose(scaled_pool, DownloadBf16(d_scaled_plain_pool, pool.size()),
                  "scaled rope pool vs gpu unfused", 1e-6);
    }
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

// The greedy kernel (a cluster of blocks per row, each block a slice) against the CPU backend's
// SampleFromLogits on fresh random rows at vocab sizes around and between the slice and block
// sizes, 1 to 257 rows, with the patterns it must not get wrong: ties (lowest id, also across the
// blocks' slices), -inf entries, very negative values, a single finite entry, constant rows, rows
// of only -inf (token 0 and logprob NaN, as the CPU backend gives).
TEST_F(SmallOpsTest, GreedyArgmaxLogprobMatchesCpuAtManyShapes) {
  constexpr int kPatterns = 9;
  const std::vector<std::pair<int32_t, int32_t>> shapes = {
      {1, 1},     {3, 5},      {9, 31},      {2, 257},   {4, 1000},  {9, 2047},  {5, 4096},
      {1, 32000}, {64, 32000}, {257, 32000}, {9, 32003}, {3, 50257}, {9, 128256}};
  std::uniform_real_distribution<float> unit(0.f, 1.f);
  int checked_rows = 0;
  for (const auto& [rows, vocab] : shapes) {
    std::vector<float> logits(static_cast<size_t>(rows) * vocab);
    std::normal_distribution<float> normal(0.f, 3.f);
    for (float& l : logits) l = normal(generator_);
    std::uniform_int_distribution<int32_t> position(0, vocab - 1);
    const int32_t slice = (vocab + 7) / 8;  // the kernel's per-block slice at 8 blocks per row
    for (int32_t r = 0; r < rows; ++r) {
      float* row = logits.data() + static_cast<size_t>(r) * vocab;
      switch (r % kPatterns) {
        case 0:  // plain random
          break;
        case 1: {  // a tie of the maximum at two random ids: the lower wins
          const int32_t a = position(generator_), b = position(generator_);
          row[a] = row[b] = 50.f;
          break;
        }
        case 2:  // half the entries -inf, some very negative
          for (int32_t i = 0; i < vocab; ++i) {
            const float u = unit(generator_);
            if (u < 0.5f)
              row[i] = -INFINITY;
            else if (u < 0.6f)
              row[i] = -1e30f;
          }
          break;
        case 3:  // one finite entry among -inf: logprob 0
          std::fill(row, row + vocab, -INFINITY);
          row[position(generator_)] = normal(generator_);
          break;
        case 4:  // a constant row: token 0, logprob -log(vocab)
          std::fill(row, row + vocab, 1.25f);
          break;
        case 5:  // only -inf: token 0, logprob NaN
          std::fill(row, row + vocab, -INFINITY);
          break;
        case 6:  // tied maxima on both sides of a slice boundary, and at the last id
          if (vocab > slice) row[slice] = row[slice - 1] = 60.f;
          row[vocab - 1] = 60.f;
          break;
        case 7:  // everything very negative and distinct
          for (int32_t i = 0; i < vocab; ++i) row[i] = -1e30f * (1.f + unit(generator_));
          break;
        case 8:  // the maximum alone at the last id
          row[vocab - 1] = 70.f;
          break;
      }
    }
    const std::vector<SamplingParams> params(rows);  // greedy
    std::vector<SampledToken> cpu_out(rows), gpu_out(rows);
    ASSERT_TRUE(cpu_->Sample(logits.data(), rows, vocab, params, cpu_out).ok());
    DeviceBuffer d_logits = Upload(*gpu_, logits);
    ASSERT_TRUE(gpu_->Sample(d_logits.as<float>(), rows, vocab, params, gpu_out).ok());
    for (int32_t r = 0; r < rows; ++r) {
      const std::string where = "row " + std::to_string(r) + " of " + std::to_string(rows) +
                                ", vocab " + std::to_string(vocab) + ", pattern " +
                                std::to_string(r % kPatterns);
      EXPECT_EQ(gpu_out[r].token, cpu_out[r].token) << where;
      if (std::isnan(cpu_out[r].logprob)) {
        EXPECT_TRUE(std::isnan(gpu_out[r].logprob)) << where;
      } else {
        EXPECT_NEAR(gpu_out[r].logprob, cpu_out[r].logprob,
                    1e-4 * std::max(1.f, std::fabs(cpu_out[r].logprob)))
            << where;
      }
      ++checked_rows;
    }
  }
  std::printf("    greedy argmax: %d rows over %zu shapes equal to the CPU backend\n", checked_rows,
              shapes.size());
}

}  // namespace
}  // namespace llm
