// llm-bench-engine: the engine's offline throughput, in process, without gRPC.
//
// Loads a checkpoint and builds the backend, the Transformer and the Engine with llm-server's
// defaults (same flags, same KV sizing, same backend selection: server/service/backend_selection.cc
// is compiled in), then drives the engine like llm-bench's closed loop: --concurrency streams each
// submit a Generate request (--prompt_len random token ids, --output_len tokens, greedy, EOS
// ignored), and a stream whose request finished submits the next one, until --requests have been
// issued or --duration has passed; requests in flight then run to completion. Tokens/s is generated
// tokens over the wall time from the first submission to the last completion, as llm-bench counts
// it, so that the two compare (bench/served_vs_offline.py).
//
// Step times come from the engine's own observer: the forward step (Transformer::Forward with
// sampling, what llm_engine_step_duration_seconds measures), and the interval between consecutive
// decode steps (one engine loop iteration: planning, the forward, bookkeeping, the completions).
// TTFT and inter-token gaps are taken in the token callbacks, as a client in the same process would
// see them. Prints a table and writes JSON (--json_out).
//
//   llm-bench-engine --model=/tmp/tinyllama-1.1b-random --backend=cuda --concurrency=64
//       --prompt_len=128 --output_len=384 --duration=15s --kv_cache_bytes=1073741824
//       --json_out=engine.json
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "client/latency_summary.h"
#include "nlohmann/json.hpp"
#include "server/engine/engine.h"
#include "server/model/checkpoint.h"
#include "server/model/transformer.h"
#include "server/service/backend_selection.h"

// Model and engine set-up: the names and defaults of llm-server's flags (server/service/main.cc).
ABSL_FLAG(std::string, model, "",
          "Hugging Face checkpoint directory (config.json + *.safetensors).");
ABSL_FLAG(std::string, backend, "auto",
          "Compute backend: auto (CUDA if available, else CPU), cpu, cuda.");
ABSL_FLAG(int64_t, kv_cache_bytes, 256ll << 20,
          "Memory budget of the paged KV cache in bytes; sets the number of blocks unless "
          "--kv_blocks is given.");
ABSL_FLAG(int, kv_blocks, 0, "Number of KV blocks; overrides --kv_cache_bytes when > 0.");
ABSL_FLAG(int, block_size, 16, "Tokens per KV block.");
ABSL_FLAG(int, max_batch_tokens, 512,
          "Most query tokens (decode + prefill chunks) in one engine step.");
ABSL_FLAG(int, max_sequences, 64, "Most sequences in one engine step.");
ABSL_FLAG(int, max_waiting, 1024, "Most requests queued for KV space.");
ABSL_FLAG(bool, prefix_cache, true, "Share the KV blocks of common prompt prefixes.");
ABSL_FLAG(int, threads, 0, "CPU backend threads (0 = all cores).");
// The load: llm-bench's closed loop with fixed lengths.
ABSL_FLAG(int, concurrency, 64, "Requests kept in flight.");
ABSL_FLAG(int, requests, 0, "Total requests (0 = until --duration).");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(15), "Longest the benchmark issues requests.");
ABSL_FLAG(int, prompt_len, 128, "Prompt tokens per request (random ids).");
ABSL_FLAG(int, output_len, 384, "Generated tokens per request (EOS ignored).");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the prompt token draws.");
ABSL_FLAG(std::string, json_out, "", "Write the JSON report here (\"-\" = stdout).");

namespace llm::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration duration) { return std::chrono::duration<double>(duration).count(); }

// The phase of a step, as the metrics module names it (server/metrics/engine_step_observer.cc).
const char* PhaseName(const engine::StepStats& step) {
  if (step.decode_tokens == 0) return "prefill";
  if (step.prefill_tokens == 0) return "decode";
  return "mixed";
}

// Keeps every step the engine reports. OnStep runs on the engine thread; Steps() is read after the
// load has finished.
class StepRecorder : public engine::EngineObserver {
 public:
  struct Step {
    Clock::time_point reported;  // end of the step's bookkeeping
    engine::StepStats stats;
  };

  void OnStep(const engine::StepStats& step) override {
    std::lock_guard<std::mutex> lock(mutex_);
    steps_.push_back({Clock::now(), step});
  }
  std::vector<Step> Steps() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return steps_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<Step> steps_;
};

// What one request saw; written on the engine thread by its callbacks, handed to the driver by
// `done`.
struct RequestTrace {
  Clock::time_point submitted;
  Clock::time_point previous_token;
  double ttft_seconds = -1.0;
  std::vector<double> inter_token_seconds;
  int64_t tokens = 0;
};

struct Completion {
  std::unique_ptr<RequestTrace> trace;
  absl::Status status;
};

// The closed loop: the driver thread submits, the engine's done callbacks hand completions back.
class ClosedLoop {
 public:
  ClosedLoop(engine::Engine& engine, int vocab_size) : engine_(engine), vocab_size_(vocab_size) {}

  struct Totals {
    double elapsed_seconds = 0.0;
    int64_t requests_ok = 0;
    std::map<std::string, int64_t> errors;  // by status code name
    int64_t completion_tokens = 0;
    int64_t prompt_tokens = 0;
    std::vector<double> ttft_seconds;
    std::vector<double> inter_token_seconds;
  };

  Totals Run(int concurrency, int total_requests, absl::Duration duration, int prompt_len,
             int output_len, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const Clock::time_point start = Clock::now();
    const Clock::time_point end_by = start + absl::ToChronoNanoseconds(duration);
    int issued = 0;
    int in_flight = 0;
    auto may_issue = [&] {
      return Clock::now() < end_by && (total_requests == 0 || issued < total_requests);
    };
    auto submit = [&] {
      ++issued;
      ++in_flight;
      Submit(rng, prompt_len, output_len);
    };
    Totals totals;
    for (int stream = 0; stream < concurrency && may_issue(); ++stream) submit();
    while (in_flight > 0) {
      Completion completion;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        finished_cv_.wait(lock, [this] { return !finished_.empty(); });
        completion = std::move(finished_.front());
        finished_.pop_front();
      }
      --in_flight;
      if (completion.status.ok()) {
        ++totals.requests_ok;
        totals.prompt_tokens += prompt_len;
        totals.completion_tokens += completion.trace->tokens;
        if (completion.trace->ttft_seconds >= 0) {
          totals.ttft_seconds.push_back(completion.trace->ttft_seconds);
        }
        totals.inter_token_seconds.insert(totals.inter_token_seconds.end(),
                                          completion.trace->inter_token_seconds.begin(),
                                          completion.trace->inter_token_seconds.end());
      } else {
        ++totals.errors[absl::StatusCodeToString(completion.status.code())];
      }
      if (may_issue()) submit();
    }
    totals.elapsed_seconds = Seconds(Clock::now() - start);
    return totals;
  }

 private:
  void Submit(std::mt19937_64& rng, int prompt_len, int output_len) {
    engine::GenerateWork work;
    std::uniform_int_distribution<int32_t> token(0, vocab_size_ - 1);
    for (int i = 0; i < prompt_len; ++i) work.tokens.push_back(token(rng));
    work.max_tokens = output_len;
    work.ignore_eos = true;
    // The callbacks share the trace; `done` runs last and moves it to the driver.
    auto trace = std::make_shared<std::unique_ptr<RequestTrace>>(std::make_unique<RequestTrace>());
    work.on_token = [trace](const SampledToken&, int32_t) {
      RequestTrace& t = **trace;
      const Clock::time_point now = Clock::now();
      if (t.ttft_seconds < 0) {
        t.ttft_seconds = Seconds(now - t.submitted);
      } else {
        t.inter_token_seconds.push_back(Seconds(now - t.previous_token));
      }
      t.previous_token = now;
      ++t.tokens;
    };
    work.done = [this, trace](absl::StatusOr<engine::GenerateSummary> summary) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        finished_.push_back({std::move(*trace), summary.status()});
      }
      finished_cv_.notify_one();
    };
    (*trace)->submitted = Clock::now();
    engine_.SubmitGenerate(std::move(work));
  }

  engine::Engine& engine_;
  const int vocab_size_;
  std::mutex mutex_;
  std::condition_variable finished_cv_;
  std::deque<Completion> finished_;
};

nlohmann::json SummaryJson(const client::LatencySummary& s) {
  return {{"count", s.count}, {"mean", s.mean}, {"p50", s.p50},
          {"p90", s.p90},     {"p99", s.p99},   {"max", s.max}};
}

// Step statistics by phase, plus the decode loop iteration: the interval between two consecutive
// decode steps' reports, when nothing else ran between them.
struct StepReport {
  std::map<std::string, int64_t> steps_by_phase;
  std::vector<double> decode_step_seconds;
  std::vector<double> decode_iteration_seconds;
  double decode_forward_in_iterations_seconds = 0.0;  // forward time of those iterations' steps
  double decode_batch_sequences_mean = 0.0;
  double all_step_seconds = 0.0;
};

StepReport ReportSteps(const std::vector<StepRecorder::Step>& steps) {
  StepReport report;
  int64_t decode_sequences = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    const engine::StepStats& step = steps[i].stats;
    const std::string phase = PhaseName(step);
    ++report.steps_by_phase[phase];
    report.all_step_seconds += absl::ToDoubleSeconds(step.duration);
    if (phase != "decode") continue;
    report.decode_step_seconds.push_back(absl::ToDoubleSeconds(step.duration));
    decode_sequences += step.num_sequences;
    if (i > 0 && std::string(PhaseName(steps[i - 1].stats)) == "decode") {
      report.decode_iteration_seconds.push_back(Seconds(steps[i].reported - steps[i - 1].reported));
      report.decode_forward_in_iterations_seconds += absl::ToDoubleSeconds(step.duration);
    }
  }
  if (!report.decode_step_seconds.empty()) {
    report.decode_batch_sequences_mean =
        static_cast<double>(decode_sequences) / report.decode_step_seconds.size();
  }
  return report;
}

int Run() {
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const int prompt_len = absl::GetFlag(FLAGS_prompt_len);
  const int output_len = absl::GetFlag(FLAGS_output_len);
  const int block_size = absl::GetFlag(FLAGS_block_size);
  if (model_dir.empty() || concurrency < 1 || prompt_len < 1 || output_len < 1 || block_size < 1) {
    std::cerr << "need --model=<checkpoint dir>, --concurrency, --prompt_len, --output_len and "
                 "--block_size >= 1\n";
    return 2;
  }
  absl::StatusOr<service::BackendChoice> backend =
      service::SelectBackend(absl::GetFlag(FLAGS_backend), absl::GetFlag(FLAGS_threads));
  if (!backend.ok()) {
    std::cerr << backend.status().message() << "\n";
    return 2;
  }
  std::cerr << "llm-bench-engine: " << backend->reason << "\n";
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(model_dir);
  if (!checkpoint.ok()) {
    std::cerr << "loading the checkpoint failed: " << checkpoint.status().message() << "\n";
    return 1;
  }
  const ModelConfig& config = (*checkpoint)->config();
  // KV sizing as llm-server does it.
  const size_t block_bytes = KvBlockBytes(config, block_size, backend->backend->compute_dtype());
  int kv_blocks = absl::GetFlag(FLAGS_kv_blocks);
  if (kv_blocks <= 0) {
    kv_blocks =
        static_cast<int>(absl::GetFlag(FLAGS_kv_cache_bytes) / static_cast<int64_t>(block_bytes));
  }
  if (kv_blocks <= 0) {
    std::cerr << "--kv_cache_bytes holds no KV block of " << block_bytes << " bytes; raise it\n";
    return 2;
  }
  const int64_t tokens_needed = static_cast<int64_t>(concurrency) *
                                ((prompt_len + output_len + block_size - 1) / block_size) *
                                block_size;
  if (tokens_needed > static_cast<int64_t>(kv_blocks) * block_size) {
    std::cerr << absl::StrFormat(
        "llm-bench-engine: warning: %d streams of %d tokens need %d KV slots, the cache has %d: "
        "requests will queue or be preempted (raise --kv_cache_bytes)\n",
        concurrency, prompt_len + output_len, tokens_needed, kv_blocks * block_size);
  }
  absl::StatusOr<std::unique_ptr<Transformer>> model =
      Transformer::Create(**checkpoint, *backend->backend,
                          {.kv_num_blocks = kv_blocks,
                           .kv_block_size = block_size,
                           .max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens),
                           .max_batch_sequences = absl::GetFlag(FLAGS_max_sequences)});
  if (!model.ok()) {
    std::cerr << "creating the model failed: " << model.status().message() << "\n";
    return 1;
  }
  const size_t weight_bytes = (*model)->weight_bytes();
  engine::EngineOptions engine_options{.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens),
                                       .max_running_sequences = absl::GetFlag(FLAGS_max_sequences),
                                       .max_waiting_requests = absl::GetFlag(FLAGS_max_waiting)};
  engine_options.enable_prefix_cache = absl::GetFlag(FLAGS_prefix_cache);
  absl::StatusOr<std::unique_ptr<engine::Engine>> engine =
      engine::Engine::Create(*std::move(model), engine_options);
  if (!engine.ok()) {
    std::cerr << "creating the engine failed: " << engine.status().message() << "\n";
    return 2;
  }
  if (absl::Status warm = (*engine)->Warmup(); !warm.ok()) {
    std::cerr << warm.message() << "\n";
    return 1;
  }
  std::cerr << absl::StrFormat(
      "llm-bench-engine: %s: %d layers, hidden %d, %d/%d q/kv heads, vocab %d; weights %.1f MiB "
      "(%s), KV %d blocks x %d tokens\n",
      model_dir, config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
      config.num_key_value_heads, config.vocab_size, weight_bytes / 1048576.0,
      DTypeName((*engine)->compute_dtype()), kv_blocks, block_size);

  StepRecorder recorder;
  (*engine)->Start(&recorder);
  ClosedLoop loop(**engine, config.vocab_size);
  const ClosedLoop::Totals totals =
      loop.Run(concurrency, absl::GetFlag(FLAGS_requests), absl::GetFlag(FLAGS_duration),
               prompt_len, output_len, absl::GetFlag(FLAGS_seed));
  (*engine)->Shutdown(absl::Seconds(1));
  const StepReport steps = ReportSteps(recorder.Steps());

  const double elapsed = totals.elapsed_seconds;
  const client::LatencySummary ttft = client::Summarize(totals.ttft_seconds);
  const client::LatencySummary itl = client::Summarize(totals.inter_token_seconds);
  const client::LatencySummary step = client::Summarize(steps.decode_step_seconds);
  const client::LatencySummary iteration = client::Summarize(steps.decode_iteration_seconds);
  int64_t error_count = 0;
  for (const auto& [code, count] : totals.errors) error_count += count;
  const double tokens_per_second = totals.completion_tokens / elapsed;
  // Engine time per decode iteration outside the forward step (scheduling, bookkeeping, callbacks).
  const double loop_overhead = steps.decode_iteration_seconds.empty()
                                   ? 0.0
                                   : (std::accumulate(steps.decode_iteration_seconds.begin(),
                                                      steps.decode_iteration_seconds.end(), 0.0) -
                                      steps.decode_forward_in_iterations_seconds) /
                                         steps.decode_iteration_seconds.size();

  std::printf("llm-bench-engine: %s, backend %s, concurrency %d, prompt %d, output %d, %.2f s\n",
              model_dir.c_str(), (*engine)->backend_name().c_str(), concurrency, prompt_len,
              output_len, elapsed);
  std::printf("requests ok %lld, errors %lld, %.2f req/s, %.1f generated tokens/s\n",
              static_cast<long long>(totals.requests_ok), static_cast<long long>(error_count),
              totals.requests_ok / elapsed, tokens_per_second);
  auto step_count = [&steps](const std::string& phase) {
    const auto it = steps.steps_by_phase.find(phase);
    return static_cast<long long>(it == steps.steps_by_phase.end() ? 0 : it->second);
  };
  std::printf("steps: %lld decode (mean batch %.1f sequences), %lld mixed, %lld prefill\n",
              step_count("decode"), steps.decode_batch_sequences_mean, step_count("mixed"),
              step_count("prefill"));
  std::printf("%-26s %8s %10s %10s %10s %10s %10s\n", "time (ms)", "count", "mean", "p50", "p90",
              "p99", "max");
  for (const auto& [name, summary] :
       {std::pair{"decode step (forward)", step}, std::pair{"decode loop iteration", iteration},
        std::pair{"time to first token", ttft}, std::pair{"inter-token", itl}}) {
    std::printf("%-26s %8d %10.3f %10.3f %10.3f %10.3f %10.3f\n", name, summary.count,
                summary.mean * 1e3, summary.p50 * 1e3, summary.p90 * 1e3, summary.p99 * 1e3,
                summary.max * 1e3);
  }
  std::printf("engine loop overhead per decode iteration (iteration - forward): %.3f ms\n",
              loop_overhead * 1e3);
  for (const auto& [code, count] : totals.errors) {
    std::printf("error %s: %lld\n", code.c_str(), static_cast<long long>(count));
  }

  const std::string json_out = absl::GetFlag(FLAGS_json_out);
  if (!json_out.empty()) {
    nlohmann::json report = {
        {"model", model_dir},
        {"backend", (*engine)->backend_name()},
        {"dtype", std::string(DTypeName((*engine)->compute_dtype()))},
        {"concurrency", concurrency},
        {"prompt_len", prompt_len},
        {"output_len", output_len},
        {"kv_blocks", kv_blocks},
        {"block_size", block_size},
        {"max_batch_tokens", absl::GetFlag(FLAGS_max_batch_tokens)},
        {"elapsed_seconds", elapsed},
        {"requests_ok", totals.requests_ok},
        {"errors", totals.errors},
        {"requests_per_second", totals.requests_ok / elapsed},
        {"generated_tokens", totals.completion_tokens},
        {"generated_tokens_per_second", tokens_per_second},
        {"prompt_tokens_per_second", totals.prompt_tokens / elapsed},
        {"steps_by_phase", steps.steps_by_phase},
        {"step_seconds_total", steps.all_step_seconds},
        {"decode_step_seconds", SummaryJson(step)},
        {"decode_batch_sequences_mean", steps.decode_batch_sequences_mean},
        {"decode_iteration_seconds", SummaryJson(iteration)},
        {"engine_loop_overhead_seconds_per_decode_iteration", loop_overhead},
        {"ttft_seconds", SummaryJson(ttft)},
        {"inter_token_seconds", SummaryJson(itl)},
    };
    if (json_out == "-") {
      std::cout << report.dump(2) << "\n";
    } else {
      std::ofstream(json_out) << report.dump(2) << "\n";
    }
  }
  return error_count == 0 && totals.completion_tokens > 0 ? 0 : 1;
}

}  // namespace
}  // namespace llm::bench

int main(int argc, char** argv) {
  // --help lists this program's own flags (Abseil's default matches files named like the binary).
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "bench/engine_bench");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);
  absl::SetProgramUsageMessage(
      "llm-bench-engine --model=DIR [flags]: the engine's offline generated tokens/s and step "
      "times "
      "under a closed loop of fixed-length Generate requests, without gRPC.");
  absl::ParseCommandLine(argc, argv);
  return llm::bench::Run();
}
