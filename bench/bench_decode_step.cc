// End-to-end decode step of a TinyLlama-1.1B-shaped model (hidden 2048, 22 layers, 32/4 heads,
// head_dim 64, intermediate 5632, vocab 32000) on the CUDA backend, with random bf16 weights made
// in process (a fake Checkpoint: no download). Each sequence first prefills 511 tokens; a step then
// decodes one token per sequence at position 511 (rewriting that slot each time, so the context
// stays 512) and samples greedily. Wall time of Transformer::Forward, which ends synchronised
// (sampling copies tokens back), median of `iterations` after warm-up. Run twice: decode graphs off
// (the plain eager path) and on (TransformerOptions::DecodeGraphs::kAuto: padded buckets, replayed
// CUDA graphs; the warm-up records them).
#include <cuda_profiler_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bench/bench_common.h"
#include "bench/kernel_timeline.h"

#ifdef LLM_BENCH_HAS_TRANSFORMER
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/flash_decode_trace.h"
#include "kernels/dtype.h"
#include "server/model/checkpoint.h"
#include "server/model/transformer.h"
#endif

namespace llm::bench {

#ifdef LLM_BENCH_HAS_TRANSFORMER
namespace {

// $LLM_BENCH_DECODE_PHASE_TRACE with a plugin built with LLM_CUDA_DECODE_PHASE_TRACE: one more
// step with flash decode's phase trace on, printed for the step's last attention launch (every
// launch of the step stamps the same entries; the last one's remain): per phase the mean and
// latest block, in us from the first block's entry, as the standalone trace of
// `--sections variants` prints them, but inside the graphed step.
void TraceAttentionInStep(const char* shape, Transformer& model,
                          const std::vector<SequenceChunk>& chunks) {
  constexpr int kPhases = cuda::kFlashDecodePhases;
  constexpr size_t kMaxBlocks = 1 << 16;
  unsigned long long* buffer = nullptr;
  if (cudaMalloc(&buffer, kMaxBlocks * kPhases * 8) != cudaSuccess) return;
  cudaMemset(buffer, 0, kMaxBlocks * kPhases * 8);
  if (!cuda::SetFlashDecodePhaseTrace(buffer)) {
    std::printf("phase trace: the plugin was built without LLM_CUDA_DECODE_PHASE_TRACE\n");
    cudaFree(buffer);
    return;
  }
  const bool ok = model.Forward(chunks).ok();
  cuda::SetFlashDecodePhaseTrace(nullptr);
  std::vector<unsigned long long> host(kMaxBlocks * kPhases);
  cudaMemcpy(host.data(), buffer, host.size() * 8, cudaMemcpyDeviceToHost);
  cudaFree(buffer);
  if (!ok) return;
  size_t blocks = 0;
  unsigned long long origin = ~0ull;
  while (blocks < kMaxBlocks && host[blocks * kPhases] != 0) {
    origin = std::min(origin, host[blocks * kPhases]);
    ++blocks;
  }
  static const char* const kNames[kPhases - 1] = {
      "entry",         "metadata",    "first tile",      "loop done",
      "warps in smem", "rows merged", "cluster barrier", "end"};
  std::printf(
      "flash decode phases in the graphed step (%s, last launch, %zu blocks; us from the "
      "first block's entry, mean / latest)\n",
      shape, blocks);
  for (int phase = 0; phase < kPhases - 1 && blocks > 0; ++phase) {
    double sum = 0, latest = 0;
    size_t stamped = 0;
    for (size_t b = 0; b < blocks; ++b) {
      const unsigned long long t = host[b * kPhases + phase];
      if (t == 0) continue;
      const double us = (t - origin) * 1e-3;
      sum += us;
      latest = std::max(latest, us);
      ++stamped;
    }
    if (stamped == 0) continue;
    std::printf("  %-16s %7.2f / %7.2f\n", kNames[phase], sum / stamped, latest);
  }
}

class RandomCheckpoint final : public Checkpoint {
 public:
  RandomCheckpoint() {
    config_.architecture = "LlamaForCausalLM";
    config_.hidden_size = 2048;
    config_.intermediate_size = 5632;
    config_.num_hidden_layers = 22;
    config_.num_attention_heads = 32;
    config_.num_key_value_heads = 4;
    config_.head_dim = 64;
    config_.rms_norm_eps = 1e-5f;
    config_.vocab_size = 32000;
    config_.max_position_embeddings = 2048;
    config_.rope_theta = 10000.f;
    config_.torch_dtype = "bfloat16";
    std::mt19937 generator(5);
    std::uniform_real_distribution<float> projection(-0.03f, 0.03f), norm(0.8f, 1.2f);
    // One random buffer backs every matrix (as large as the biggest, the embedding), one every
    // norm.
    matrix_.resize(static_cast<size_t>(config_.vocab_size) * config_.hidden_size);
    for (uint16_t& v : matrix_) v = FloatToBF16(projection(generator));
    norm_.resize(config_.hidden_size);
    for (uint16_t& v : norm_) v = FloatToBF16(norm(generator));
  }
  const ModelConfig& config() const override { return config_; }
  const std::filesystem::path& directory() const override { return directory_; }
  bool HasTensor(std::string_view name) const override { return !ShapeOf(name).empty(); }
  size_t stored_bytes() const override { return matrix_.size() * 2; }
  absl::StatusOr<HostTensor> Tensor(std::string_view name) const override {
    std::vector<int64_t> shape = ShapeOf(name);
    if (shape.empty()) return absl::NotFoundError(std::string(name));
    const bool is_norm = shape.size() == 1;
    return HostTensor{DType::kBF16, shape,
                      is_norm ? static_cast<const void*>(norm_.data()) : matrix_.data()};
  }

 private:
  std::vector<int64_t> ShapeOf(std::string_view name) const {
    const int64_t h = config_.hidden_size, i = config_.intermediate_size, v = config_.vocab_size;
    const int64_t q = int64_t{config_.num_attention_heads} * config_.head_dim;
    const int64_t kv = int64_t{config_.num_key_value_heads} * config_.head_dim;
    auto ends = [&](std::string_view suffix) { return name.ends_with(suffix); };
    if (name == "model.embed_tokens.weight" || name == "lm_head.weight") return {v, h};
    if (name == "model.norm.weight" || ends("layernorm.weight")) return {h};
    if (ends("q_proj.weight")) return {q, h};
    if (ends("k_proj.weight") || ends("v_proj.weight")) return {kv, h};
    if (ends("o_proj.weight")) return {h, q};
    if (ends("gate_proj.weight") || ends("up_proj.weight")) return {i, h};
    if (ends("down_proj.weight")) return {h, i};
    return {};
  }
  ModelConfig config_;
  std::filesystem::path directory_ = "<random TinyLlama-shaped weights>";
  std::vector<uint16_t> matrix_, norm_;
};

}  // namespace

constexpr int kTimelineSteps = 10;

// The median wall time (ms) of `runs` calls of `forward` after two warm-up calls; 0 (the error on
// stderr, under `name`) when one fails.
template <typename Forward>
double MedianWallMs(const char* name, int runs, Forward&& forward) {
  std::vector<double> ms;
  for (int i = 0; i < runs + 2; ++i) {
    const auto start = std::chrono::steady_clock::now();
    const absl::Status status = forward();
    const auto end = std::chrono::steady_clock::now();
    if (!status.ok()) {
      std::fprintf(stderr, "%s: %s\n", name, status.ToString().c_str());
      return 0;
    }
    if (i >= 2) ms.push_back(std::chrono::duration<double, std::milli>(end - start).count());
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

// kTimelineSteps more calls of `forward` with CUPTI's kernel records (kernel_timeline.h), the
// records of anything before dropped: prints the table and keeps its JSON for the output file.
template <typename Forward>
void TraceTimeline(const std::string& shape, Forward&& forward,
                   std::vector<std::string>& timeline_json) {
  KernelTimeline::TakeRecords();
  std::vector<uint64_t> marks;
  for (int i = 0; i < kTimelineSteps; ++i) {
    marks.push_back(KernelTimeline::Now());
    if (!forward().ok()) break;
  }
  const std::vector<KernelRecord> records = KernelTimeline::TakeRecords();
  const TimelineSummary summary = SummarizeTimeline(records, marks);
  PrintTimeline(shape, summary);
  timeline_json.push_back(TimelineJson(shape, summary, records, marks));
}

// One prompt of kPrefillTokens tokens in one Forward (chunk of max_batch_tokens), in fresh blocks
// from `first_block`: tokens/s and the model FLOP rate. FLOPs = 2 x tokens x (the layers' weight
// elements) + causal attention 4 x Hq x D x S(S+1)/2 per layer (the LM head runs for the last token
// only); MFU against the H100 SXM's 989 dense bf16 TFLOP/s. With `timeline` (the kernel timeline
// of $LLM_BENCH_KERNEL_TIMELINE), kTimelineSteps more prompts are traced, like the decode steps:
// the wall time hides the GPU's time behind the host's launches and its noise.
constexpr int kPrefillTokens = 2048;

static Result PrefillStep(Transformer& model, int first_block, int block_size,
                          std::mt19937& generator, std::uniform_int_distribution<int32_t>& token,
                          bool timeline, std::vector<std::string>& timeline_json) {
  const ModelConfig& c = model.config();
  SequenceChunk chunk;
  for (int t = 0; t < kPrefillTokens; ++t) chunk.tokens.push_back(token(generator));
  for (int b = 0; b < kPrefillTokens / block_size; ++b)
    chunk.block_table.push_back(first_block + b);
  const auto forward = [&] { return model.Forward(std::span(&chunk, 1)).status(); };
  const double median = MedianWallMs("model_prefill", 6, forward);
  if (median == 0) return Result{};
  const double q_width = double(c.num_attention_heads) * c.head_dim;
  const double kv_width = 2.0 * c.num_key_value_heads * c.head_dim;
  const double layer_weights = double(c.hidden_size) * (q_width + kv_width) +
                               q_width * c.hidden_size + 3.0 * c.hidden_size * c.intermediate_size;
  const double s = kPrefillTokens;
  const double flops =
      c.num_hidden_layers * (2.0 * s * layer_weights + 4.0 * q_width * s * (s + 1) / 2);
  const double tflops = flops / (median * 1e-3) / 1e12;
  char shape[64];
  std::snprintf(shape, sizeof(shape), "one prompt of %d tokens", kPrefillTokens);
  char note[96];
  std::snprintf(note, sizeof(note), "%.0f tokens/s, MFU %.1f%% of 989 TFLOP/s", s / (median * 1e-3),
                100.0 * tflops / 989.0);
  std::printf("%-34s %10.3f %12.0f  %.1f TFLOP/s, %s\n", shape, median, s / (median * 1e-3), tflops,
              note);
  if (timeline) TraceTimeline(shape, forward, timeline_json);
  return Result{"model_prefill", shape, median, tflops, 0, note};
}

// A continuous-batching step: `decodes` (one token each, at their contexts) next to a prompt chunk
// of kMixedChunkTokens tokens in fresh blocks from `first_block`, in one Forward (eager: graphs are
// for decode steps only). Wall time, median of 6, and the kernel timeline as PrefillStep's.
constexpr int kMixedChunkTokens = 512;

static Result MixedStep(Transformer& model, const std::vector<SequenceChunk>& decodes,
                        int first_block, int block_size, std::mt19937& generator,
                        std::uniform_int_distribution<int32_t>& token, bool timeline,
                        std::vector<std::string>& timeline_json) {
  std::vector<SequenceChunk> chunks = decodes;
  SequenceChunk prompt;
  for (int t = 0; t < kMixedChunkTokens; ++t) prompt.tokens.push_back(token(generator));
  for (int b = 0; b < kMixedChunkTokens / block_size; ++b)
    prompt.block_table.push_back(first_block + b);
  chunks.push_back(prompt);
  const auto forward = [&] { return model.Forward(chunks).status(); };
  const double median = MedianWallMs("mixed_step", 6, forward);
  if (median == 0) return Result{};
  char shape[80];
  std::snprintf(shape, sizeof(shape), "B%zu decodes + %d-token chunk", decodes.size(),
                kMixedChunkTokens);
  std::printf("%-34s %10.3f %12.0f\n", shape, median,
              (decodes.size() + kMixedChunkTokens) / (median * 1e-3));
  if (timeline) TraceTimeline(shape, forward, timeline_json);
  return Result{"mixed_step", shape, median, 0, 0, "wall time of Forward, eager"};
}

std::vector<Result> RunDecodeStepBench(int context_tokens, const std::vector<int>& default_batches,
                                       int iterations) {
  std::vector<Result> results;
  // $LLM_BENCH_DECODE_BATCHES (e.g. "1,8") and $LLM_BENCH_DECODE_MODES ("eager", "graphs" or both)
  // narrow the run, e.g. for a profiler.
  std::vector<int> batch_sizes = default_batches;
  if (const char* env = std::getenv("LLM_BENCH_DECODE_BATCHES"); env != nullptr && *env != '\0') {
    batch_sizes.clear();
    for (const char* p = env; *p != '\0';) {
      char* end = nullptr;
      const long value = std::strtol(p, &end, 10);
      if (end == p) break;
      if (value > 0) batch_sizes.push_back(static_cast<int>(value));
      p = *end == ',' ? end + 1 : end;
    }
    if (batch_sizes.empty()) batch_sizes = default_batches;
  }
  const char* modes_env = std::getenv("LLM_BENCH_DECODE_MODES");
  const std::string modes = modes_env != nullptr ? modes_env : "eager,graphs";
  auto backend = CreateCudaBackend();
  if (!backend.ok()) {
    std::fprintf(stderr, "decode_step: %s\n", backend.status().ToString().c_str());
    return results;
  }
  // $LLM_BENCH_KERNEL_TIMELINE=PATH: after each batch's timed steps, kTimelineSteps more with
  // CUPTI's kernel records (kernel_timeline.h): a table per batch, and PATH gets the JSON. CUPTI is
  // on for the whole run (it traces only graphs instantiated while it is on), so a run with it
  // is a diagnostic one; its step times may differ slightly from a run without.
  const char* timeline_path = std::getenv("LLM_BENCH_KERNEL_TIMELINE");
  const bool timeline =
      timeline_path != nullptr && *timeline_path != '\0' && KernelTimeline::Enable();
  std::vector<std::string> timeline_json;
  RandomCheckpoint checkpoint;
  using Mode = TransformerOptions::DecodeGraphs;
  for (const Mode mode : {Mode::kOff, Mode::kAuto}) {
    const char* mode_name = mode == Mode::kOff ? "eager" : "graphs";
    if (modes.find(mode_name) == std::string::npos) continue;
    const int max_batch = *std::max_element(batch_sizes.begin(), batch_sizes.end());
    const int block_size = 16;
    const int blocks_per_seq = (context_tokens + block_size - 1) / block_size;
    TransformerOptions options;
    options.kv_block_size = block_size;
    // + the blocks of one kPrefillTokens-token prompt (model_prefill, below).
    options.kv_num_blocks = max_batch * blocks_per_seq + kPrefillTokens / block_size + 8;
    options.max_batch_tokens = 2048;
    options.max_batch_sequences = std::max(64, max_batch);
    options.decode_graphs = mode;
    // $LLM_BENCH_NORM_GAINS=separate: the RMSNorm kernels instead of gains folded into the weights
    // (TransformerOptions::norm_gains), to compare the two in one run.
    if (const char* gains = std::getenv("LLM_BENCH_NORM_GAINS");
        gains != nullptr && std::string_view(gains) == "separate") {
      options.norm_gains = TransformerOptions::NormGains::kSeparate;
    }
    auto model = Transformer::Create(checkpoint, **backend, options);
    if (!model.ok()) {
      std::fprintf(stderr, "decode_step: %s\n", model.status().ToString().c_str());
      return results;
    }
    std::mt19937 generator(3);
    std::uniform_int_distribution<int32_t> token(1, checkpoint.config().vocab_size - 1);
    std::vector<SequenceChunk> sequences(max_batch);
    for (int s = 0; s < max_batch; ++s) {
      for (int b = 0; b < blocks_per_seq; ++b)
        sequences[s].block_table.push_back(s * blocks_per_seq + b);
      for (int t = 0; t < context_tokens - 1; ++t) sequences[s].tokens.push_back(token(generator));
    }
    // Prefill the contexts, a few sequences per step.
    const int per_step = std::max(1, options.max_batch_tokens / context_tokens);
    for (int s = 0; s < max_batch; s += per_step) {
      std::vector<SequenceChunk> chunks(sequences.begin() + s,
                                        sequences.begin() + std::min(max_batch, s + per_step));
      auto prefill = (*model)->Forward(chunks);
      if (!prefill.ok()) {
        std::fprintf(stderr, "decode_step prefill: %s\n", prefill.status().ToString().c_str());
        return results;
      }
    }
    std::printf("\n%-34s %10s %12s  (%s)\n", "decode step (TinyLlama-1.1B shape)", "ms", "tokens/s",
                mode_name);
    for (int batch : batch_sizes) {
      std::vector<SequenceChunk> chunks(batch);
      for (int s = 0; s < batch; ++s) {
        chunks[s].tokens = {token(generator)};
        chunks[s].start_position = context_tokens - 1;
        chunks[s].block_table = sequences[s].block_table;
      }
      // $LLM_BENCH_PROFILE_STEP=1: the last step runs between cudaProfilerStart and Stop, for
      // `ncu --profile-from-start off` (one decode step's kernels, nothing of the set-up).
      const bool profile = std::getenv("LLM_BENCH_PROFILE_STEP") != nullptr;
      std::vector<double> ms;
      for (int i = 0; i < iterations + 3; ++i) {
        const bool profiled = profile && i == iterations + 2;
        if (profiled) cudaProfilerStart();
        const auto start = std::chrono::steady_clock::now();
        auto step = (*model)->Forward(chunks);
        const auto end = std::chrono::steady_clock::now();
        if (profiled) cudaProfilerStop();
        if (!step.ok()) {
          std::fprintf(stderr, "decode_step: %s\n", step.status().ToString().c_str());
          return results;
        }
        if (i >= 3) ms.push_back(std::chrono::duration<double, std::milli>(end - start).count());
      }
      std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
      const double median = ms[ms.size() / 2];
      char shape[64];
      std::snprintf(shape, sizeof(shape), "B%d context %d %s", batch, context_tokens, mode_name);
      results.push_back(
          Result{"decode_step", shape, median, 0, 0, "wall time of Forward, greedy sampling"});
      std::printf("%-34s %10.3f %12.0f\n", shape, median, batch / (median * 1e-3));
      if (timeline) {
        TraceTimeline(
            shape, [&] { return (*model)->Forward(chunks).status(); }, timeline_json);
      }
      if (std::getenv("LLM_BENCH_DECODE_PHASE_TRACE") != nullptr) {
        TraceAttentionInStep(shape, **model, chunks);
      }
    }
    if (mode == Mode::kAuto) {
      // Up to 15 decodes ($LLM_BENCH_MIXED_DECODES: up to that many) and a prompt chunk in the
      // prefill's blocks: the mixed launch of flash decode (at 16 sequences of 512 positions 2 KV
      // splits, merged in clusters; 40 of 2048 take 2 splits and the merge kernel) and flash
      // prefill.
      const char* mixed_env = std::getenv("LLM_BENCH_MIXED_DECODES");
      const int mixed_decodes =
          mixed_env != nullptr && *mixed_env != '\0' ? std::atoi(mixed_env) : 15;
      std::vector<SequenceChunk> decodes(std::max(0, std::min(max_batch - 1, mixed_decodes)));
      for (size_t s = 0; s < decodes.size(); ++s) {
        decodes[s].tokens = {token(generator)};
        decodes[s].start_position = context_tokens - 1;
        decodes[s].block_table = sequences[s].block_table;
      }
      const Result mixed = MixedStep(**model, decodes, max_batch * blocks_per_seq, block_size,
                                     generator, token, timeline, timeline_json);
      if (mixed.median_ms > 0) results.push_back(mixed);
      const Result prefill = PrefillStep(**model, max_batch * blocks_per_seq, block_size, generator,
                                         token, timeline, timeline_json);
      if (prefill.median_ms > 0) results.push_back(prefill);
    }
  }
  if (timeline) {
    if (FILE* f = std::fopen(timeline_path, "w"); f != nullptr) {
      std::fprintf(f, "[\n");
      for (size_t i = 0; i < timeline_json.size(); ++i)
        std::fprintf(f, "%s%s\n", timeline_json[i].c_str(),
                     i + 1 < timeline_json.size() ? "," : "");
      std::fprintf(f, "]\n");
      std::fclose(f);
    } else {
      std::fprintf(stderr, "cannot write %s\n", timeline_path);
    }
  }
  return results;
}

#else

std::vector<Result> RunDecodeStepBench(int, const std::vector<int>&, int) {
  std::printf("\ndecode step: skipped (the transformer library is not built)\n");
  return {};
}

#endif

}  // namespace llm::bench
