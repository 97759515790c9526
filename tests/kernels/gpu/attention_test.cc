// Paged attention on the CUDA backend (flash decode, flash prefill, the generic kernel, and the
// automatic choice) against the CPU backend's fp32 PagedAttention on the same bf16-rounded inputs.
// Batches are ragged, block tables shuffled, chunks start mid-sequence and mid-block, the tested
// layer is 1 (so layer offsets count), and outputs are poisoned first. Error: ||out - ref|| /
// ||ref|| < 1e-2 and no NaN. The large cases (32k decode, 8k prefill chunk) use few heads to keep
// the CPU reference quick. Every case that runs flash prefill runs once per prefill kernel (the
// mma.sync one and, on compute capability 9.0, the wgmma one; suffix _mma / _wgmma), each time on
// fresh random inputs. Flash decode's split-KV merge runs both ways: inside a thread-block cluster
// (up to FlashDecodeClusterSplits() splits) and through the merge kernel; the split-count tests
// force each at the same split counts.
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/attention_params.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/flash_prefill_wgmma.h"
#include "kvcache/kv_layout.h"
#include "tests/kernels/gpu/gpu_test_util.h"

namespace llm {
namespace {

using gpu_testing::CountNonFinite;
using gpu_testing::RelativeError;
using Kernel = CudaBackendOptions::Attention;
using cuda::FlashPrefillImplementation;

constexpr double kTolerance = 1e-2;

struct Sequence {
  int32_t cached;      // tokens in the cache before this step
  int32_t new_tokens;  // query tokens of this step, at positions [cached, cached + new_tokens)
};

struct Problem {
  int32_t head_dim = 128;
  int32_t num_q_heads = 8;
  int32_t num_kv_heads = 2;
  int32_t block_size = 16;
  std::vector<Sequence> sequences;
  uint32_t seed = 1;
};

std::string KernelName(Kernel kernel) {
  switch (kernel) {
    case Kernel::kAuto:
      return "auto";
    case Kernel::kFlashDecode:
      return "flash_decode";
    case Kernel::kFlashPrefill:
      return "flash_prefill";
    case Kernel::kGeneric:
      return "generic";
  }
  return "?";
}

Backend& CudaBackendFor(Kernel kernel) {
  static std::map<Kernel, std::unique_ptr<Backend>> backends;
  auto& backend = backends[kernel];
  if (backend == nullptr) {
    CudaBackendOptions options;
    options.attention = kernel;
    auto created = CreateCudaBackend(options);
    EXPECT_TRUE(created.ok()) << created.status();
    backend = std::move(*created);
  }
  return *backend;
}

Backend& CpuReference() {
  static std::unique_ptr<Backend> backend = CreateCpuBackend(0);
  return *backend;
}

// Host inputs of one attention call, its CPU reference output, and a runner for any CUDA kernel.
class AttentionCase {
 public:
  explicit AttentionCase(const Problem& problem) : problem_(problem) {
    std::mt19937 generator(problem.seed);
    const int32_t bs = problem.block_size;
    int32_t total_blocks = 3;
    max_blocks_ = 1;
    for (const Sequence& s : problem.sequences) {
      const int32_t blocks = (s.cached + s.new_tokens + bs - 1) / bs;
      total_blocks += blocks;
      max_blocks_ = std::max(max_blocks_, blocks);
    }
    layout_ = kvcache::KvLayout{2, total_blocks, bs, problem.num_kv_heads, problem.head_dim};
    std::vector<int32_t> free_blocks(total_blocks);
    std::iota(free_blocks.begin(), free_blocks.end(), 0);
    std::shuffle(free_blocks.begin(), free_blocks.end(), generator);

    const int32_t stride = max_blocks_ + 1;
    block_tables_.assign(problem.sequences.size() * stride, -1);
    query_start_.push_back(0);
    size_t next_block = 0;
    for (size_t s = 0; s < problem.sequences.size(); ++s) {
      const Sequence& sequence = problem.sequences[s];
      const int32_t kv_len = sequence.cached + sequence.new_tokens;
      for (int32_t b = 0; b < (kv_len + bs - 1) / bs; ++b)
        block_tables_[s * stride + b] = free_blocks[next_block++];
      for (int32_t i = 0; i < sequence.new_tokens; ++i) {
        const int32_t position = sequence.cached + i;
        positions_.push_back(position);
        slot_mapping_.push_back(kvcache::FlatSlot(&block_tables_[s * stride], bs, position));
      }
      query_start_.push_back(static_cast<int32_t>(positions_.size()));
      kv_lens_.push_back(kv_len);
      max_query_len_ = std::max(max_query_len_, sequence.new_tokens);
      min_query_len_ = s == 0 ? sequence.new_tokens : std::min(min_query_len_, sequence.new_tokens);
      max_kv_len_ = std::max(max_kv_len_, kv_len);
    }
    num_tokens_ = static_cast<int32_t>(positions_.size());
    shape_ = AttentionShape{problem.num_q_heads, problem.num_kv_heads, problem.head_dim,
                            1.0f / std::sqrt(static_cast<float>(problem.head_dim))};
    const int64_t row =
        static_cast<int64_t>(problem.num_q_heads + 2 * problem.num_kv_heads) * problem.head_dim;
    // Queries at twice the keys' scale give peakier softmaxes than uniform noise alone.
    qkv_ = gpu_testing::RandomBf16Values(num_tokens_ * row, generator, -2.f, 2.f);
    pool_ = gpu_testing::RandomBf16Values(layout_.total_elements(), generator);

    AttentionBatch batch = HostBatch();
    reference_.assign(static_cast<size_t>(num_tokens_) * problem.num_q_heads * problem.head_dim,
                      0.f);
    const absl::Status status = CpuReference().PagedAttention(
        qkv_.data(), batch, shape_, KvCacheView{pool_.data(), layout_}, kLayer, reference_.data());
    EXPECT_TRUE(status.ok()) << status;
  }

  // The problem's inputs in device memory.
  struct DeviceInputs {
    DeviceBuffer qkv, pool, positions, slots, query_start, kv_lens, tables;
  };
  DeviceInputs UploadInputs(Backend& gpu) {
    return DeviceInputs{gpu_testing::Upload(gpu, gpu_testing::ToBf16(qkv_)),
                        gpu_testing::Upload(gpu, gpu_testing::ToBf16(pool_)),
                        gpu_testing::Upload(gpu, positions_),
                        gpu_testing::Upload(gpu, slot_mapping_),
                        gpu_testing::Upload(gpu, query_start_),
                        gpu_testing::Upload(gpu, kv_lens_),
                        gpu_testing::Upload(gpu, block_tables_)};
  }

  // Whether the batch tells the backend its shortest query (AttentionBatch::min_query_len).
  void set_known_min_query_len(bool known) { known_min_query_len_ = known; }
  // The kernel ChooseAttentionKernel picks for this case's batch.
  cuda::AttentionKernel AutoKernel() const {
    const DeviceBuffer none;
    cuda::PagedAttentionParams p = DeviceParams(none, none, none);
    p.min_query_len = known_min_query_len_ ? min_query_len_ : 0;
    return cuda::ChooseAttentionKernel(p);
  }

  // Runs `kernel` on the CUDA backend; returns the output as floats.
  std::vector<float> RunCuda(Kernel kernel) {
    Backend& gpu = CudaBackendFor(kernel);
    DeviceInputs in = UploadInputs(gpu);
    DeviceBuffer out = gpu_testing::Poisoned(gpu, reference_.size() * 2);
    AttentionBatch batch = HostBatch();
    batch.positions = in.positions.as<int32_t>();
    batch.slot_mapping = in.slots.as<int32_t>();
    batch.query_start = in.query_start.as<int32_t>();
    batch.kv_lens = in.kv_lens.as<int32_t>();
    batch.block_tables = in.tables.as<int32_t>();
    const absl::Status status = gpu.PagedAttention(
        in.qkv.data(), batch, shape_, KvCacheView{in.pool.data(), layout_}, kLayer, out.data());
    EXPECT_TRUE(status.ok()) << KernelName(kernel) << ": " << status;
    const absl::Status synced = gpu.Synchronize();
    EXPECT_TRUE(synced.ok()) << KernelName(kernel) << ": " << synced;
    return gpu_testing::FromBf16(gpu_testing::Download<uint16_t>(gpu, out, reference_.size()));
  }

  // Runs `kernel` and checks it against the reference; returns the relative error.
  double Check(Kernel kernel) {
    const std::vector<float> out = RunCuda(kernel);
    EXPECT_EQ(CountNonFinite(out), 0u) << KernelName(kernel) << ": unwritten or NaN outputs";
    const double error = RelativeError(out, reference_);
    EXPECT_LT(error, kTolerance) << KernelName(kernel);
    RecordProperty(KernelName(kernel) + "_relative_error", std::to_string(error));
    std::printf(
        "    %-14s relative error %.3e (tokens %d, seqs %zu, max kv %d, hd %d, Hq/Hkv %d/%d, bs "
        "%d, prefill kernel %s)\n",
        KernelName(kernel).c_str(), error, num_tokens_, problem_.sequences.size(), max_kv_len_,
        problem_.head_dim, problem_.num_q_heads, problem_.num_kv_heads, problem_.block_size,
        cuda::FlashPrefillImplementationName(cuda::ActiveFlashPrefillImplementation()));
    return error;
  }

  // Flash decode launched directly with `num_splits` forced (chunks of ceil(max_kv_len /
  // num_splits) positions, not rounded to the kernel's tiles), merged in a cluster or by the merge
  // kernel; in a batch with larger sequences flash prefill takes those (mixed_batch), as the
  // backend does. Returns the output as floats.
  std::vector<float> RunSplitKv(int32_t num_splits, bool in_cluster) {
    Backend& gpu = CudaBackendFor(Kernel::kAuto);
    DeviceInputs in = UploadInputs(gpu);
    DeviceBuffer out = gpu_testing::Poisoned(gpu, reference_.size() * 2);
    cuda::PagedAttentionParams p = DeviceParams(in.qkv, in.pool, out);
    p.positions = in.positions.as<int32_t>();
    p.query_start = in.query_start.as<int32_t>();
    p.kv_lens = in.kv_lens.as<int32_t>();
    p.block_tables = in.tables.as<int32_t>();
    p.mixed_batch = !cuda::FlashDecodeSupports(p);
    p.num_splits = num_splits;
    p.kv_chunk_size = (max_kv_len_ + num_splits - 1) / num_splits;
    p.merge_in_cluster = in_cluster;
    const size_t workspace_floats = cuda::FlashDecodeWorkspaceFloats(p);
    DeviceBuffer workspace = gpu_testing::Poisoned(gpu, std::max<size_t>(4, workspace_floats * 4));
    if (workspace_floats > 0) {
      p.partial_out = workspace.as<float>();
      p.partial_lse = p.partial_out +
                      static_cast<size_t>(num_tokens_) * p.num_q_heads * num_splits * p.head_dim;
    }
    EXPECT_TRUE(gpu.Synchronize().ok());  // the uploads, before launches on the default stream
    absl::Status status = cuda::LaunchFlashDecode(p, nullptr);
    if (status.ok() && p.mixed_batch) status = cuda::LaunchFlashPrefill(p, nullptr);
    EXPECT_TRUE(status.ok()) << "split-KV flash decode, " << num_splits << " splits: " << status;
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    return gpu_testing::FromBf16(gpu_testing::Download<uint16_t>(gpu, out, reference_.size()));
  }

  // RunSplitKv checked against the reference; returns the relative error.
  double CheckSplitKv(int32_t num_splits, bool in_cluster) {
    const std::vector<float> out = RunSplitKv(num_splits, in_cluster);
    const std::string what = "flash decode, " + std::to_string(num_splits) + " splits (" +
                             (in_cluster ? "cluster" : "merge kernel") + ")";
    EXPECT_EQ(CountNonFinite(out), 0u) << what << ": unwritten or NaN outputs";
    const double error = RelativeError(out, reference_);
    EXPECT_LT(error, kTolerance) << what;
    std::printf(
        "    %-34s relative error %.3e (tokens %d, seqs %zu, max kv %d, hd %d, Hq/Hkv %d/%d)\n",
        what.c_str(), error, num_tokens_, problem_.sequences.size(), max_kv_len_, problem_.head_dim,
        problem_.num_q_heads, problem_.num_kv_heads);
    return error;
  }

  // "N splits (cluster | merge kernel | none)": what ChooseDecodeSplits picks for this batch on
  // this device.
  std::string ChosenSplits() const {
    cuda::PagedAttentionParams p;
    p.num_seqs = static_cast<int32_t>(problem_.sequences.size());
    p.num_kv_heads = problem_.num_kv_heads;
    p.max_kv_len = max_kv_len_;
    int device = 0, num_sms = 1;
    EXPECT_EQ(cudaGetDevice(&device), cudaSuccess);
    EXPECT_EQ(cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device),
              cudaSuccess);
    cuda::ChooseDecodeSplits(p, num_sms);
    const char* merge = p.num_splits == 1    ? "none"
                        : p.merge_in_cluster ? "cluster"
                                             : "merge kernel";
    return std::to_string(p.num_splits) + " splits (" + merge + ")";
  }

  // RopeAppendAttention (RoPE + KV append, then attention) on the case's unrotated qkv rows, with
  // the rows scaled by the RMS of a random [tokens, hidden] x when `scaled`, and `dropped_token`'s
  // slot set to -1 (not appended) when >= 0: the CUDA backend's folded flash decode against the
  // CPU's two ops (fp32) and against the CUDA backend's own two launches (fold off), output and the
  // appended cache rows.
  void CheckRopeFold(bool scaled, int32_t dropped_token, int32_t hidden = 256) {
    std::vector<int32_t> slots = slot_mapping_;
    if (dropped_token >= 0) slots[dropped_token] = -1;
    const int32_t kHidden = hidden;
    std::mt19937 generator(problem_.seed + 77 + hidden);
    const std::vector<float> x =
        gpu_testing::RandomBf16Values(num_tokens_ * kHidden, generator, -3.f, 3.f);
    const std::vector<float> inv_freq = gpu_testing::RopeInverseFrequencies(problem_.head_dim);

    // CPU: the two ops in fp32.
    std::vector<float> cpu_qkv = qkv_, cpu_pool = pool_, cpu_out(reference_.size());
    AttentionBatch host = HostBatch();
    host.slot_mapping = slots.data();
    const RopeParams cpu_rope{inv_freq.data(), 1.f,
                              scaled ? RowRmsScale{x.data(), kHidden, 1e-5f} : RowRmsScale{}};
    ASSERT_TRUE(CpuReference()
                    .RopeAppendAttention(cpu_qkv.data(), host, shape_, cpu_rope,
                                         KvCacheView{cpu_pool.data(), layout_}, kLayer,
                                         cpu_out.data())
                    .ok());

    // CUDA, folded (at every split count: the default folds only unsplit) and as two launches.
    auto run = [&](bool fold, std::vector<float>& pool_out) {
      static std::map<bool, std::unique_ptr<Backend>> backends;
      auto& backend = backends[fold];
      if (backend == nullptr) {
        CudaBackendOptions options;
        options.fold_rope_into_decode = fold;
        options.fold_rope_into_split_decode = fold;  // the split (cluster, merge kernel) paths too
        backend = std::move(*CreateCudaBackend(options));
      }
      Backend& gpu = *backend;
      DeviceInputs in = UploadInputs(gpu);
      DeviceBuffer d_slots = gpu_testing::Upload(gpu, slots);
      DeviceBuffer d_x = gpu_testing::Upload(gpu, gpu_testing::ToBf16(x));
      DeviceBuffer d_inv_freq = gpu_testing::Upload(gpu, inv_freq);
      DeviceBuffer out = gpu_testing::Poisoned(gpu, reference_.size() * 2);
      AttentionBatch batch = HostBatch();
      batch.positions = in.positions.as<int32_t>();
      batch.slot_mapping = d_slots.as<int32_t>();
      batch.query_start = in.query_start.as<int32_t>();
      batch.kv_lens = in.kv_lens.as<int32_t>();
      batch.block_tables = in.tables.as<int32_t>();
      const RopeParams rope{d_inv_freq.as<float>(), 1.f,
                            scaled ? RowRmsScale{d_x.data(), kHidden, 1e-5f} : RowRmsScale{}};
      const absl::Status status =
          gpu.RopeAppendAttention(in.qkv.data(), batch, shape_, rope,
                                  KvCacheView{in.pool.data(), layout_}, kLayer, out.data());
      EXPECT_TRUE(status.ok()) << status;
      EXPECT_TRUE(gpu.Synchronize().ok());
      pool_out = gpu_testing::FromBf16(
          gpu_testing::Download<uint16_t>(gpu, in.pool, layout_.total_elements()));
      return gpu_testing::FromBf16(gpu_testing::Download<uint16_t>(gpu, out, reference_.size()));
    };
    std::vector<float> folded_pool, plain_pool;
    const std::vector<float> folded = run(true, folded_pool);
    const std::vector<float> plain = run(false, plain_pool);
    EXPECT_EQ(CountNonFinite(folded), 0u);
    const double error = RelativeError(folded, cpu_out);
    const double pool_error = RelativeError(folded_pool, cpu_pool);
    const double against_plain = RelativeError(folded, plain);
    size_t pool_differs = 0;
    for (size_t i = 0; i < folded_pool.size(); ++i) pool_differs += folded_pool[i] != plain_pool[i];
    EXPECT_LT(error, kTolerance);
    EXPECT_LT(pool_error, kTolerance);
    // The same arithmetic as the two launches (rope_pair.cuh, row_rms.cuh): equal but for the
    // odd value where the compiler contracts a product differently.
    EXPECT_LT(against_plain, 1e-3);
    EXPECT_LE(pool_differs, static_cast<size_t>(num_tokens_));
    std::printf(
        "    folded rope: vs cpu %.3e, pool vs cpu %.3e, vs two launches %.3e, pool values "
        "differing %zu (tokens %d, max kv %d, hd %d, Hq/Hkv %d/%d, %s, scaled %d (hidden %d), "
        "dropped %d)\n",
        error, pool_error, against_plain, pool_differs, num_tokens_, max_kv_len_, problem_.head_dim,
        problem_.num_q_heads, problem_.num_kv_heads, ChosenSplits().c_str(), scaled, hidden,
        dropped_token);
  }

  bool DecodeApplies() const {
    return max_query_len_ * (problem_.num_q_heads / problem_.num_kv_heads) <= 16 &&
           (problem_.head_dim == 64 || problem_.head_dim == 128);
  }

 private:
  static constexpr int32_t kLayer = 1;

  static void RecordProperty(const std::string& key, const std::string& value) {
    ::testing::Test::RecordProperty(key, value);
  }

  // The attention params of this case over device copies of its inputs (the batch arrays are
  // the caller's to fill).
  cuda::PagedAttentionParams DeviceParams(const DeviceBuffer& qkv, const DeviceBuffer& pool,
                                          const DeviceBuffer& out) const {
    cuda::PagedAttentionParams p;
    p.q = qkv.as<__nv_bfloat16>();
    p.q_row_stride =
        static_cast<int64_t>(problem_.num_q_heads + 2 * problem_.num_kv_heads) * problem_.head_dim;
    p.out = out.as<__nv_bfloat16>();
    p.out_row_stride = static_cast<int64_t>(problem_.num_q_heads) * problem_.head_dim;
    p.k_cache = pool.as<__nv_bfloat16>() + layout_.layer_offset(kLayer, kvcache::KvKind::kKey);
    p.v_cache = pool.as<__nv_bfloat16>() + layout_.layer_offset(kLayer, kvcache::KvKind::kValue);
    p.layout = layout_;
    p.block_table_stride = max_blocks_ + 1;
    p.num_seqs = static_cast<int32_t>(problem_.sequences.size());
    p.num_tokens = num_tokens_;
    p.max_query_len = max_query_len_;
    p.max_kv_len = max_kv_len_;
    p.num_q_heads = problem_.num_q_heads;
    p.num_kv_heads = problem_.num_kv_heads;
    p.head_dim = problem_.head_dim;
    p.softmax_scale = shape_.softmax_scale;
    return p;
  }

  AttentionBatch HostBatch() const {
    AttentionBatch batch;
    batch.num_tokens = num_tokens_;
    batch.num_seqs = static_cast<int32_t>(problem_.sequences.size());
    batch.positions = positions_.data();
    batch.slot_mapping = slot_mapping_.data();
    batch.query_start = query_start_.data();
    batch.kv_lens = kv_lens_.data();
    batch.block_tables = block_tables_.data();
    batch.block_table_stride = max_blocks_ + 1;
    batch.max_query_len = max_query_len_;
    batch.min_query_len = known_min_query_len_ ? min_query_len_ : 0;
    batch.max_kv_len = max_kv_len_;
    return batch;
  }

  Problem problem_;
  kvcache::KvLayout layout_;
  AttentionShape shape_;
  int32_t max_blocks_ = 0;
  int32_t num_tokens_ = 0;
  int32_t max_query_len_ = 0;
  int32_t min_query_len_ = 0;
  bool known_min_query_len_ = true;
  int32_t max_kv_len_ = 0;
  std::vector<int32_t> positions_, slot_mapping_, query_start_, kv_lens_, block_tables_;
  std::vector<float> qkv_, pool_, reference_;
};

std::vector<Sequence> RandomSequences(int count, int max_cached, int max_new,
                                      std::mt19937& generator) {
  std::uniform_int_distribution<int> cached(0, max_cached);
  std::uniform_int_distribution<int> fresh(1, max_new);
  std::vector<Sequence> sequences;
  for (int i = 0; i < count; ++i) sequences.push_back({cached(generator), fresh(generator)});
  return sequences;
}

// Forces one flash prefill kernel for the test's duration; skips the wgmma one where the device
// lacks it. Seeds are offset per kernel so each sees its own random inputs.
class PrefillKernelScope {
 public:
  explicit PrefillKernelScope(FlashPrefillImplementation implementation) {
    cuda::SetFlashPrefillImplementation(implementation);
  }
  ~PrefillKernelScope() {
    cuda::SetFlashPrefillImplementation(FlashPrefillImplementation::kDefault);
  }
};

uint32_t SeedOffset(FlashPrefillImplementation implementation) {
  return implementation == FlashPrefillImplementation::kWgmma ? 7919u : 0u;
}

std::string ImplementationSuffix(FlashPrefillImplementation implementation) {
  return implementation == FlashPrefillImplementation::kWgmma ? "wgmma" : "mma";
}

#define SKIP_WITHOUT_PREFILL_KERNEL(implementation)                                    \
  do {                                                                                 \
    SKIP_WITHOUT_GPU();                                                                \
    if ((implementation) == FlashPrefillImplementation::kWgmma &&                      \
        !cuda::FlashPrefillWgmmaAvailable())                                           \
      GTEST_SKIP() << "the wgmma flash prefill needs a compute capability 9.0 device"; \
  } while (0)

// (head_dim, group size, block size, prefill kernel)
class AttentionGridTest
    : public ::testing::TestWithParam<std::tuple<int, int, int, FlashPrefillImplementation>> {};

TEST_P(AttentionGridTest, RaggedPrefillMatchesCpuReference) {
  const auto [head_dim, group, block_size, implementation] = GetParam();
  SKIP_WITHOUT_PREFILL_KERNEL(implementation);
  PrefillKernelScope scope(implementation);
  Problem problem;
  problem.head_dim = head_dim;
  problem.num_kv_heads = 2;
  problem.num_q_heads = 2 * group;
  problem.block_size = block_size;
  problem.seed = head_dim * 1000 + group * 100 + block_size + SeedOffset(implementation);
  std::mt19937 generator(problem.seed);
  // Fresh prompts, chunks starting mid-block and mid-sequence, decode tokens, block boundaries.
  problem.sequences = {{0, 7},  {13, 9}, {40, 1},   {31, 1},   {0, 1},
                       {5, 20}, {64, 3}, {100, 70}, {250, 130}};
  for (const Sequence& s : RandomSequences(6, 600, 50, generator)) problem.sequences.push_back(s);
  AttentionCase test_case(problem);
  for (Kernel kernel : {Kernel::kAuto, Kernel::kFlashPrefill, Kernel::kGeneric})
    test_case.Check(kernel);
}

// A prefill step (every sequence more query rows than flash decode takes): with the shortest query
// known (AttentionBatch::min_query_len) the backend runs flash prefill alone; without it, the mixed
// launch (flash decode's grid and merge kernel, which skip every sequence, then flash prefill).
// Both against the CPU reference.
TEST(AttentionDispatchTest, PrefillStepRunsFlashPrefillAloneWhenItsShortestQueryIsKnown) {
  SKIP_WITHOUT_GPU();
  Problem problem;
  problem.head_dim = 64;
  problem.num_q_heads = 32;
  problem.num_kv_heads = 4;
  problem.sequences = {{0, 300}, {0, 3}, {100, 40}, {17, 3}};  // 3 x 8 rows > 16: not decode
  problem.seed = 4242;
  AttentionCase test_case(problem);
  EXPECT_EQ(test_case.AutoKernel(), cuda::AttentionKernel::kFlashPrefill);
  test_case.Check(Kernel::kAuto);
  test_case.set_known_min_query_len(false);
  EXPECT_EQ(test_case.AutoKernel(), cuda::AttentionKernel::kMixed);
  test_case.Check(Kernel::kAuto);
  // One decode token among them: mixed again, whatever is known.
  problem.sequences.push_back({50, 1});
  AttentionCase with_decode(problem);
  EXPECT_EQ(with_decode.AutoKernel(), cuda::AttentionKernel::kMixed);
  with_decode.Check(Kernel::kAuto);
}

TEST_P(AttentionGridTest, DecodeBatchMatchesCpuReference) {
  const auto [head_dim, group, block_size, implementation] = GetParam();
  SKIP_WITHOUT_PREFILL_KERNEL(implementation);
  PrefillKernelScope scope(implementation);
  Problem problem;
  problem.head_dim = head_dim;
  problem.num_kv_heads = 2;
  problem.num_q_heads = 2 * group;
  problem.block_size = block_size;
  problem.seed = 7 + head_dim * 1000 + group * 100 + block_size + SeedOffset(implementation);
  std::mt19937 generator(problem.seed);
  // One query token per sequence, and a few per sequence where the group leaves room (rows <= 16).
  const int max_new = std::max(1, 16 / group);
  problem.sequences = {{0, 1}, {15, 1}, {16, 1}, {1, max_new}};
  for (const Sequence& s : RandomSequences(12, 1500, 1, generator)) problem.sequences.push_back(s);
  for (const Sequence& s : RandomSequences(4, 900, max_new, generator))
    problem.sequences.push_back(s);
  AttentionCase test_case(problem);
  ASSERT_TRUE(test_case.DecodeApplies());
  // Split-KV with the merge launched after it: the same bits every time.
  const std::vector<float> first = test_case.RunCuda(Kernel::kFlashDecode);
  EXPECT_EQ(first, test_case.RunCuda(Kernel::kFlashDecode)) << "flash decode + merge: a race?";
  for (Kernel kernel :
       {Kernel::kAuto, Kernel::kFlashDecode, Kernel::kFlashPrefill, Kernel::kGeneric}) {
    test_case.Check(kernel);
  }
}

INSTANTIATE_TEST_SUITE_P(HeadDimGroupBlock, AttentionGridTest,
                         ::testing::Combine(::testing::Values(64, 128),
                                            ::testing::Values(1, 2, 4, 8),
                                            ::testing::Values(16, 32, 64),
                                            ::testing::Values(FlashPrefillImplementation::kMmaSync,
                                                              FlashPrefillImplementation::kWgmma)),
                         [](const auto& info) {
                           return "hd" + std::to_string(std::get<0>(info.param)) + "_g" +
                                  std::to_string(std::get<1>(info.param)) + "_bs" +
                                  std::to_string(std::get<2>(info.param)) + "_" +
                                  ImplementationSuffix(std::get<3>(info.param));
                         });

// (head_dim, group): flash decode at forced split counts on both sides of the cluster sizes (8
// portable, 16 non-portable), each merged in a cluster (where it fits) and by the merge kernel, on
// fresh inputs every time: 1 or 4 sequences (one with several query tokens), chunks not rounded to
// the tiles, chunks wholly past a sequence's end, sequences shorter than one chunk.
class FlashDecodeSplitTest : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(FlashDecodeSplitTest, ForcedSplitCountsMatchCpuReference) {
  SKIP_WITHOUT_GPU();
  const auto [head_dim, group] = GetParam();
  const int max_new = std::max(1, 16 / group);
  uint32_t seed = 500 + head_dim * 10 + group * 1000;
  for (int32_t num_splits : {2, 3, 5, 8, 11, 16, 17, 40}) {
    for (int32_t batch : {1, 4}) {
      for (bool in_cluster : {true, false}) {
        if (in_cluster && (num_splits > cuda::kFlashDecodeMaxClusterSplits ||
                           !cuda::FlashDecodeClusterMergeAvailable()))
          continue;
        Problem problem{head_dim, 2 * group, 2, batch == 1 ? 16 : 32, {}, ++seed};
        std::mt19937 generator(problem.seed);
        problem.sequences = RandomSequences(batch, 1300, 1, generator);
        if (batch > 1) {
          problem.sequences[1] = {static_cast<int32_t>(generator() % 300), max_new};
          problem.sequences[2].cached = static_cast<int32_t>(generator() % 20);
        }
        AttentionCase test_case(problem);
        test_case.CheckSplitKv(num_splits, in_cluster);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(HeadDimGroup, FlashDecodeSplitTest,
                         ::testing::Combine(::testing::Values(64, 128), ::testing::Values(1, 8)),
                         [](const auto& info) {
                           return "hd" + std::to_string(std::get<0>(info.param)) + "_g" +
                                  std::to_string(std::get<1>(info.param));
                         });

// What the backend picks itself (ChooseDecodeSplits; the cluster merge where the splits fit) at
// batch sizes 1 to 64, on TinyLlama's attention shape (Hq 32, Hkv 4, head_dim 64) with the decode
// step's context 512 at B1, and on a head_dim 128 shape; fresh inputs per batch size.
TEST(AttentionDecodeBatchTest, BatchSizesMatchCpuReference) {
  SKIP_WITHOUT_GPU();
  for (int32_t head_dim : {64, 128}) {
    for (int32_t batch : {1, 2, 5, 16, 33, 64}) {
      Problem problem{head_dim, 32, head_dim == 64 ? 4 : 8, 16, {}, 900u + head_dim + batch};
      std::mt19937 generator(problem.seed);
      problem.sequences = RandomSequences(batch, batch >= 16 ? 1000 : 2500, 1, generator);
      if (batch == 1) problem.sequences[0] = {511, 1};
      AttentionCase test_case(problem);
      std::printf("  B%d hd%d: %s\n", batch, head_dim, test_case.ChosenSplits().c_str());
      test_case.Check(Kernel::kAuto);
      const std::vector<float> first = test_case.RunCuda(Kernel::kFlashDecode);
      EXPECT_EQ(first, test_case.RunCuda(Kernel::kFlashDecode)) << "flash decode: a race?";
    }
  }
}

// RoPE + KV append folded into flash decode (Backend::RopeAppendAttention on a decode step):
// 1 split, cluster splits and merge-kernel splits; GQA, MQA and MHA; head_dim 64 and 128; with and
// without a folded norm's row scale; a token whose slot is -1 (not appended).
TEST(AttentionRopeFoldTest, MatchesTheTwoOpsOnDecodeSteps) {
  SKIP_WITHOUT_GPU();
  struct FoldCase {
    int32_t head_dim, hq, hkv;
    std::vector<Sequence> sequences;
  };
  std::mt19937 generator(91);
  const std::vector<FoldCase> cases = {
      {64, 32, 4, RandomSequences(64, 600, 1, generator)},
      {64, 32, 4, {{3000, 1}}},
      {64, 8, 1, RandomSequences(5, 300, 1, generator)},
      {128, 8, 2, {{20000, 1}, {7, 1}, {9000, 1}}},
      {128, 32, 8, RandomSequences(16, 2000, 1, generator)},
      {128, 4, 4, RandomSequences(7, 100, 1, generator)},
  };
  uint32_t seed = 500;
  for (const FoldCase& c : cases) {
    Problem problem;
    problem.head_dim = c.head_dim;
    problem.num_q_heads = c.hq;
    problem.num_kv_heads = c.hkv;
    problem.sequences = c.sequences;
    problem.seed = ++seed;
    AttentionCase attention(problem);
    for (bool scaled : {false, true}) {
      SCOPED_TRACE("hd " + std::to_string(c.head_dim) + " Hq/Hkv " + std::to_string(c.hq) + "/" +
                   std::to_string(c.hkv) + " scaled " + std::to_string(scaled));
      attention.CheckRopeFold(scaled, scaled ? static_cast<int32_t>(c.sequences.size()) / 2 : -1);
    }
    // The row scale at model widths (BlockInverseRms: 2048 and 4096 one and two 16-byte chunks a
    // sum thread, 4104 a partial third) and with rows not 16-byte aligned (2050: the scalar sum).
    for (int32_t hidden : {2048, 4096, 4104, 2050}) {
      SCOPED_TRACE("hd " + std::to_string(c.head_dim) + " scaled, hidden " +
                   std::to_string(hidden));
      attention.CheckRopeFold(true, -1, hidden);
    }
  }
}

TEST(AttentionLargeTest, Decode64SequencesUpTo8k) {
  SKIP_WITHOUT_GPU();
  Problem problem{128, 8, 2, 16, {}, 21};
  std::mt19937 generator(problem.seed);
  problem.sequences = RandomSequences(63, 8191, 1, generator);
  problem.sequences.push_back({8191, 1});
  AttentionCase test_case(problem);
  test_case.Check(Kernel::kAuto);
  test_case.Check(Kernel::kFlashDecode);
}

TEST(AttentionLargeTest, SingleSequence32kDecodeHeadDim64) {
  SKIP_WITHOUT_GPU();
  Problem problem{64, 4, 1, 16, {{32767, 1}}, 35};
  AttentionCase test_case(problem);
  test_case.Check(Kernel::kAuto);
}

// The large and edge-case prefill checks, once per prefill kernel.
class AttentionPrefillLargeTest : public ::testing::TestWithParam<FlashPrefillImplementation> {};

TEST_P(AttentionPrefillLargeTest, SingleSequence32kDecodeSplitsKv) {
  SKIP_WITHOUT_PREFILL_KERNEL(GetParam());
  PrefillKernelScope scope(GetParam());
  for (int32_t new_tokens : {1, 2}) {
    Problem problem{128,
                    8,
                    1,
                    32,
                    {{32768 - new_tokens, new_tokens}},
                    33u + new_tokens + SeedOffset(GetParam())};
    AttentionCase test_case(problem);
    const std::vector<float> first = test_case.RunCuda(Kernel::kFlashDecode);
    const std::vector<float> second = test_case.RunCuda(Kernel::kFlashDecode);
    EXPECT_EQ(first, second) << "flash decode is not deterministic: a race?";
    test_case.Check(Kernel::kFlashDecode);
    test_case.Check(Kernel::kFlashPrefill);
  }
}

TEST_P(AttentionPrefillLargeTest, PrefillChunkMidBlockAt8k) {
  SKIP_WITHOUT_PREFILL_KERNEL(GetParam());
  PrefillKernelScope scope(GetParam());
  Problem problem{128, 4, 1, 16, {{8190 - 203, 203}}, 41u + SeedOffset(GetParam())};
  AttentionCase test_case(problem);
  const std::vector<float> first = test_case.RunCuda(Kernel::kFlashPrefill);
  const std::vector<float> second = test_case.RunCuda(Kernel::kFlashPrefill);
  EXPECT_EQ(first, second) << "flash prefill is not deterministic: a race?";
  test_case.Check(Kernel::kAuto);
}

TEST_P(AttentionPrefillLargeTest, OneShotPrefill2048HeadDim64) {
  SKIP_WITHOUT_PREFILL_KERNEL(GetParam());
  PrefillKernelScope scope(GetParam());
  Problem problem{64, 8, 2, 32, {{0, 2048}}, 43u + SeedOffset(GetParam())};
  AttentionCase test_case(problem);
  test_case.Check(Kernel::kAuto);
}

TEST_P(AttentionPrefillLargeTest, RaggedBatchOf64Sequences) {
  SKIP_WITHOUT_PREFILL_KERNEL(GetParam());
  PrefillKernelScope scope(GetParam());
  Problem problem{128, 16, 4, 16, {}, 47u + SeedOffset(GetParam())};
  std::mt19937 generator(problem.seed);
  problem.sequences = RandomSequences(64, 400, 40, generator);
  AttentionCase test_case(problem);
  test_case.Check(Kernel::kAuto);
}

// Continuous batching: long-context decode tokens (split-KV in flash decode) in the same batch as
// prefill chunks (flash prefill), both kernels on one set of params.
TEST_P(AttentionPrefillLargeTest, MixedBatchLongDecodesAndPrefillChunks) {
  SKIP_WITHOUT_PREFILL_KERNEL(GetParam());
  PrefillKernelScope scope(GetParam());
  for (int32_t head_dim : {64, 128}) {
    Problem problem{head_dim,
                    8,
                    2,
                    16,
                    {{20000, 1}, {777, 150}, {9000, 2}, {0, 33}, {4097, 1}},
                    60u + head_dim + SeedOffset(GetParam())};
    AttentionCase test_case(problem);
    test_case.Check(Kernel::kAuto);
    test_case.Check(Kernel::kFlashPrefill);
  }
}

// Continuous batching with short decodes: forced split counts, merged in a cluster and by the
// merge kernel, next to prefill chunks that flash prefill takes.
TEST_P(AttentionPrefillLargeTest, MixedBatchShortDecodesAtForcedSplits) {
  SKIP_WITHOUT_PREFILL_KERNEL(GetParam());
  PrefillKernelScope scope(GetParam());
  uint32_t seed = 80u + SeedOffset(GetParam());
  for (int32_t head_dim : {64, 128}) {
    for (int32_t num_splits : {3, 8, 13}) {
      for (bool in_cluster : {true, false}) {
        if (in_cluster && !cuda::FlashDecodeClusterMergeAvailable()) continue;
        Problem problem{head_dim, 8, 2, 16, {}, ++seed};
        std::mt19937 generator(problem.seed);
        const auto cached = [&](int32_t most) { return static_cast<int32_t>(generator() % most); };
        problem.sequences = {{cached(900), 1}, {cached(300), 90}, {cached(600), 2},
                             {0, 40},          {cached(50), 1},   {cached(1000), 1}};
        AttentionCase test_case(problem);
        ASSERT_FALSE(test_case.DecodeApplies());
        test_case.CheckSplitKv(num_splits, in_cluster);
      }
    }
  }
}

// Block sizes that do not divide the kernels' 64- and 128-position K/V tiles (the prefill kernel
// walks block boundaries incrementally from tile to tile) and one below 16.
TEST_P(AttentionPrefillLargeTest, BlockSizesThatDoNotDivideTheTile) {
  SKIP_WITHOUT_PREFILL_KERNEL(GetParam());
  PrefillKernelScope scope(GetParam());
  for (int32_t block_size : {8, 24, 48, 80}) {
    for (int32_t head_dim : {64, 128}) {
      Problem problem{head_dim,
                      8,
                      2,
                      block_size,
                      {{0, 300}, {1000, 77}, {3001, 1}, {130, 2}},
                      70u + block_size + SeedOffset(GetParam())};
      AttentionCase test_case(problem);
      test_case.Check(Kernel::kAuto);
      test_case.Check(Kernel::kFlashPrefill);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(PrefillKernel, AttentionPrefillLargeTest,
                         ::testing::Values(FlashPrefillImplementation::kMmaSync,
                                           FlashPrefillImplementation::kWgmma),
                         [](const auto& info) { return ImplementationSuffix(info.param); });

TEST(AttentionLargeTest, GenericKernelTakesOtherHeadDims) {
  SKIP_WITHOUT_GPU();
  for (int32_t head_dim : {80, 96, 256}) {
    Problem problem{head_dim, 4, 2, 16, {{0, 9}, {30, 1}, {17, 12}}, 50u + head_dim};
    AttentionCase test_case(problem);
    test_case.Check(Kernel::kAuto);
  }
}

}  // namespace
}  // namespace llm
