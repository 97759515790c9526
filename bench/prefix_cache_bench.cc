// Prefix-cache benchmark (CPU backend): time to first token of prompts that share a long system
// prompt, with the engine's prefix cache off and on.
//
// For each system-prompt length, a fresh engine serves `repeats` Prefill requests one after
// another, each the system prompt plus a distinct user suffix, releasing each sequence after its
// reply (its blocks stay cached when the cache is on). TTFT is the Prefill call's wall time as the
// caller sees it (submission to reply). The first request is cold in both modes; the table reports
// it apart from the median of the rest. Prints a table and writes JSON.
//
//   llm-bench-prefix-cache [--model_dir=models/default] [--threads=2] [--repeats=5]
//                          [--suffix_tokens=32] [--json=prefix_cache_bench.json]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "server/engine/engine.h"
#include "server/model/checkpoint.h"
#include "server/model/transformer.h"

namespace {

struct Options {
  std::string model_dir = "models/default";
  int threads = 2;
  int repeats = 5;
  int suffix_tokens = 32;
  std::string json = "prefix_cache_bench.json";
};

struct Row {
  int system_tokens = 0;
  bool cache = false;
  double first_ms = 0;        // cold request
  double warm_median_ms = 0;  // median of the following requests
  double hit_rate = 0;        // engine's prefix-cache hit rate over the run
  int64_t prompt_tokens_computed = 0;
};

Options ParseOptions(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&](std::string_view name) -> const char* {
      return arg.starts_with(name) ? argv[i] + name.size() : nullptr;
    };
    if (const char* v = value("--model_dir="))
      options.model_dir = v;
    else if (const char* v = value("--threads="))
      options.threads = std::atoi(v);
    else if (const char* v = value("--repeats="))
      options.repeats = std::max(2, std::atoi(v));
    else if (const char* v = value("--suffix_tokens="))
      options.suffix_tokens = std::atoi(v);
    else if (const char* v = value("--json="))
      options.json = v;
    else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      std::exit(2);
    }
  }
  return options;
}

std::vector<int32_t> Tokens(int count, int salt, int vocab) {
  std::vector<int32_t> tokens;
  for (int i = 0; i < count; ++i) tokens.push_back(3 + (salt * 131 + i * 17) % (vocab - 3));
  return tokens;
}

absl::StatusOr<llm::engine::StepOutput> PrefillAndWait(llm::engine::Engine& engine,
                                                       std::vector<int32_t> tokens) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<llm::engine::StepOutput>>>();
  llm::engine::PrefillWork work;
  work.tokens = std::move(tokens);
  work.done = [promise](absl::StatusOr<llm::engine::StepOutput> output) {
    promise->set_value(std::move(output));
  };
  engine.SubmitPrefill(std::move(work));
  return promise->get_future().get();
}

void Release(llm::engine::Engine& engine, llm::engine::SequenceId id) {
  std::promise<void> released;
  engine.SubmitRelease(id, [&released](absl::StatusOr<int32_t>) { released.set_value(); });
  released.get_future().wait();
}

absl::StatusOr<Row> Measure(const llm::Checkpoint& checkpoint, llm::Backend& backend,
                            const Options& options, int system_tokens, bool cache) {
  const int total = system_tokens + options.suffix_tokens;
  absl::StatusOr<std::unique_ptr<llm::Transformer>> model =
      llm::Transformer::Create(checkpoint, backend,
                               {.kv_num_blocks = (total / 16 + 2) * (options.repeats + 1),
                                .kv_block_size = 16,
                                .max_batch_tokens = 2048,
                                .max_batch_sequences = 8});
  if (!model.ok()) return model.status();
  const int vocab = (*model)->config().vocab_size;
  absl::StatusOr<std::unique_ptr<llm::engine::Engine>> engine = llm::engine::Engine::Create(
      *std::move(model), {.max_batch_tokens = 2048, .enable_prefix_cache = cache});
  if (!engine.ok()) return engine.status();
  if (absl::Status status = (*engine)->Warmup(); !status.ok()) return status;
  (*engine)->Start();

  const std::vector<int32_t> system = Tokens(system_tokens, 1, vocab);
  std::vector<double> ms;
  for (int r = 0; r < options.repeats; ++r) {
    std::vector<int32_t> prompt = system;
    const std::vector<int32_t> suffix = Tokens(options.suffix_tokens, 1000 + r, vocab);
    prompt.insert(prompt.end(), suffix.begin(), suffix.end());
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<llm::engine::StepOutput> output = PrefillAndWait(**engine, std::move(prompt));
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
    if (!output.ok()) return output.status();
    Release(**engine, output->sequence_id);
  }
  Row row{.system_tokens = system_tokens, .cache = cache, .first_ms = ms[0]};
  std::vector<double> warm(ms.begin() + 1, ms.end());
  std::sort(warm.begin(), warm.end());
  row.warm_median_ms = warm[warm.size() / 2];
  const llm::engine::EngineStats stats = (*engine)->stats();
  row.hit_rate = stats.prefix_cache_hit_rate();
  row.prompt_tokens_computed = stats.prompt_tokens_total;
  (*engine)->Shutdown(absl::Seconds(1));
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = ParseOptions(argc, argv);
  absl::StatusOr<std::unique_ptr<llm::Checkpoint>> checkpoint =
      llm::Checkpoint::Open(options.model_dir);
  if (!checkpoint.ok()) {
    std::fprintf(stderr, "%s\n", std::string(checkpoint.status().message()).c_str());
    return 1;
  }
  std::unique_ptr<llm::Backend> backend = llm::CreateCpuBackend(options.threads);
  std::vector<Row> rows;
  for (int system_tokens : {256, 1024}) {
    for (bool cache : {false, true}) {
      absl::StatusOr<Row> row = Measure(**checkpoint, *backend, options, system_tokens, cache);
      if (!row.ok()) {
        std::fprintf(stderr, "%s\n", std::string(row.status().message()).c_str());
        return 1;
      }
      rows.push_back(*row);
    }
  }

  std::printf("model %s, CPU backend, %d threads, user suffix %d tokens, %d requests per row\n",
              options.model_dir.c_str(), options.threads, options.suffix_tokens, options.repeats);
  std::printf(
      "| system tokens | prefix cache | first TTFT ms | later TTFT ms (median) | hit rate | "
      "prompt tokens computed |\n| --- | --- | --- | --- | --- | --- |\n");
  for (const Row& row : rows) {
    std::printf("| %d | %s | %.1f | %.1f | %.3f | %lld |\n", row.system_tokens,
                row.cache ? "on" : "off", row.first_ms, row.warm_median_ms, row.hit_rate,
                static_cast<long long>(row.prompt_tokens_computed));
  }
  FILE* json = std::fopen(options.json.c_str(), "w");
  if (json == nullptr) {
    std::fprintf(stderr, "cannot write %s\n", options.json.c_str());
    return 1;
  }
  std::fprintf(json,
               "{\n  \"model_dir\": \"%s\",\n  \"backend\": \"cpu\",\n  \"threads\": %d,\n"
               "  \"suffix_tokens\": %d,\n  \"repeats\": %d,\n  \"results\": [\n",
               options.model_dir.c_str(), options.threads, options.suffix_tokens, options.repeats);
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    std::fprintf(json,
                 "    {\"system_tokens\": %d, \"prefix_cache\": %s, \"first_ttft_ms\": %.3f, "
                 "\"later_ttft_median_ms\": %.3f, \"hit_rate\": %.4f, "
                 "\"prompt_tokens_computed\": %lld}%s\n",
                 row.system_tokens, row.cache ? "true" : "false", row.first_ms, row.warm_median_ms,
                 row.hit_rate, static_cast<long long>(row.prompt_tokens_computed),
                 i + 1 < rows.size() ? "," : "");
  }
  std::fprintf(json, "  ]\n}\n");
  std::fclose(json);
  std::printf("wrote %s\n", options.json.c_str());
  return 0;
}
