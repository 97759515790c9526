// llm-bench: a closed-loop load generator. --concurrency streams each send Generate requests back to
// back until --requests have been sent or --duration has passed; prompt and output lengths are drawn
// uniformly from [min, max]. Prints a table and writes JSON (--json_out, "-" = stdout).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "client/latency_summary.h"
#include "client/secure_channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "llm/v1/llm.grpc.pb.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, target, "localhost:50051", "Server address host:port.");
ABSL_FLAG(int, concurrency, 8, "Concurrent streams.");
ABSL_FLAG(int, requests, 64, "Total requests (0 = until --duration).");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(60), "Longest the benchmark runs.");
ABSL_FLAG(int, prompt_len_min, 16, "Shortest prompt, tokens.");
ABSL_FLAG(int, prompt_len_max, 64, "Longest prompt, tokens.");
ABSL_FLAG(int, output_len_min, 16, "Fewest generated tokens.");
ABSL_FLAG(int, output_len_max, 64, "Most generated tokens.");
ABSL_FLAG(double, temperature, 0.0, "Sampling temperature.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(120), "Deadline of each request.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the length and token draws.");
ABSL_FLAG(std::string, json_out, "", "Write the JSON report here (\"-\" = stdout).");

namespace {

using Clock = std::chrono::steady_clock;

struct Results {
  std::mutex mutex;
  std::vector<double> ttft_seconds, inter_token_seconds, e2e_seconds;
  int64_t prompt_tokens = 0, completion_tokens = 0, ok = 0;
  std::map<std::string, int64_t> errors;  // by status code name
};

std::string CodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {
      "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
      "UNAUTHENTICATED"};
  const int index = static_cast<int>(code);
  return index >= 0 && index <= 16 ? kNames[index] : "CODE_" + std::to_string(index);
}

double Seconds(Clock::duration duration) {
  return std::chrono::duration<double>(duration).count();
}

}  // namespace

int main(int argc, char** argv) {
  // --help lists this program's own flags (Abseil's default matches files named like the binary).
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "client/");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);
  absl::SetProgramUsageMessage(
      "llm-bench [flags]: Generate load against llm-server; TTFT, inter-token latency, throughput.");
  absl::ParseCommandLine(argc, argv);
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const int total_requests = absl::GetFlag(FLAGS_requests);
  if (concurrency < 1 || absl::GetFlag(FLAGS_prompt_len_min) < 1 ||
      absl::GetFlag(FLAGS_prompt_len_max) < absl::GetFlag(FLAGS_prompt_len_min) ||
      absl::GetFlag(FLAGS_output_len_min) < 1 ||
      absl::GetFlag(FLAGS_output_len_max) < absl::GetFlag(FLAGS_output_len_min)) {
    std::cerr << "need --concurrency >= 1 and 1 <= min <= max for the prompt and output lengths\n";
    return 2;
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      llm::client::MakeChannelFromFlags(absl::GetFlag(FLAGS_target));
  if (!channel.ok()) {
    std::cerr << channel.status().message() << "\n";
    return 2;
  }
  auto stub = llm::v1::LlmService::NewStub(*channel);
  llm::v1::ModelInfo info;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Status status = stub->GetModelInfo(&context, {}, &info);
    if (!status.ok()) {
      std::cerr << "GetModelInfo failed: " << status.error_message() << "\n";
      return 1;
    }
  }

  Results results;
  std::atomic<int> issued{0};
  const Clock::time_point start = Clock::now();
  const Clock::time_point end_by = start + absl::ToChronoNanoseconds(absl::GetFlag(FLAGS_duration));
  std::vector<std::thread> workers;
  for (int worker = 0; worker < concurrency; ++worker) {
    workers.emplace_back([&, worker] {
      std::mt19937_64 rng(absl::GetFlag(FLAGS_seed) * 7919 + worker);
      while (Clock::now() < end_by) {
        if (total_requests > 0 && issued.fetch_add(1) >= total_requests) break;
        const int prompt_len = std::uniform_int_distribution<int>(
            absl::GetFlag(FLAGS_prompt_len_min), absl::GetFlag(FLAGS_prompt_len_max))(rng);
        const int output_len = std::uniform_int_distribution<int>(
            absl::GetFlag(FLAGS_output_len_min), absl::GetFlag(FLAGS_output_len_max))(rng);
        llm::v1::GenerateRequest request;
        for (int i = 0; i < prompt_len; ++i) {
          request.mutable_tokens()->add_ids(
              std::uniform_int_distribution<int>(0, info.vocab_size() - 1)(rng));
        }
        request.set_max_tokens(output_len);
        request.set_ignore_eos(true);
        request.mutable_sampling()->set_temperature(
            static_cast<float>(absl::GetFlag(FLAGS_temperature)));
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() +
                             absl::ToChronoNanoseconds(absl::GetFlag(FLAGS_timeout)));
        const Clock::time_point sent = Clock::now();
        Clock::time_point previous = sent;
        std::vector<double> gaps;
        double ttft = -1.0;
        int64_t completion = 0;
        auto reader = stub->Generate(&context, request);
        llm::v1::GenerateResponse message;
        while (reader->Read(&message)) {
          if (!message.has_token()) continue;
          const Clock::time_point now = Clock::now();
          if (ttft < 0) {
            ttft = Seconds(now - sent);
          } else {
            gaps.push_back(Seconds(now - previous));
          }
          previous = now;
          ++completion;
        }
        const grpc::Status status = reader->Finish();
        const double e2e = Seconds(Clock::now() - sent);
        std::lock_guard<std::mutex> lock(results.mutex);
        if (!status.ok()) {
          ++results.errors[CodeName(status.error_code())];
          continue;
        }
        ++results.ok;
        results.prompt_tokens += prompt_len;
        results.completion_tokens += completion;
        if (ttft >= 0) results.ttft_seconds.push_back(ttft);
        results.inter_token_seconds.insert(results.inter_token_seconds.end(), gaps.begin(),
                                           gaps.end());
        results.e2e_seconds.push_back(e2e);
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  const double elapsed = Seconds(Clock::now() - start);

  int64_t error_count = 0;
  for (const auto& [code, count] : results.errors) error_count += count;
  const llm::client::LatencySummary ttft = llm::client::Summarize(results.ttft_seconds);
  const llm::client::LatencySummary itl = llm::client::Summarize(results.inter_token_seconds);
  const llm::client::LatencySummary e2e = llm::client::Summarize(results.e2e_seconds);

  std::printf("llm-bench: %s, backend %s, concurrency %d, %.2f s\n",
              absl::GetFlag(FLAGS_target).c_str(), info.backend().c_str(), concurrency, elapsed);
  std::printf("requests ok %lld, errors %lld, %.2f req/s, %.1f generated tokens/s, %.1f prompt tokens/s\n",
              static_cast<long long>(results.ok), static_cast<long long>(error_count),
              results.ok / elapsed, results.completion_tokens / elapsed,
              results.prompt_tokens / elapsed);
  std::printf("%-22s %8s %10s %10s %10s %10s %10s\n", "latency (ms)", "count", "mean", "p50", "p90",
              "p99", "max");
  for (const auto& [name, summary] :
       {std::pair{"time to first token", ttft}, std::pair{"inter-token", itl},
        std::pair{"end-to-end", e2e}}) {
    std::printf("%-22s %8d %10.2f %10.2f %10.2f %10.2f %10.2f\n", name, summary.count,
                summary.mean * 1e3, summary.p50 * 1e3, summary.p90 * 1e3, summary.p99 * 1e3,
                summary.max * 1e3);
  }
  for (const auto& [code, count] : results.errors) {
    std::printf("error %s: %lld\n", code.c_str(), static_cast<long long>(count));
  }

  const std::string json_out = absl::GetFlag(FLAGS_json_out);
  if (!json_out.empty()) {
    auto summary_json = [](const llm::client::LatencySummary& s) {
      return nlohmann::json{{"count", s.count}, {"mean", s.mean}, {"p50", s.p50},
                            {"p90", s.p90},     {"p99", s.p99},   {"max", s.max}};
    };
    nlohmann::json report = {
        {"target", absl::GetFlag(FLAGS_target)},
        {"backend", info.backend()},
        {"concurrency", concurrency},
        {"elapsed_seconds", elapsed},
        {"requests_ok", results.ok},
        {"errors", results.errors},
        {"requests_per_second", results.ok / elapsed},
        {"generated_tokens_per_second", results.completion_tokens / elapsed},
        {"prompt_tokens_per_second", results.prompt_tokens / elapsed},
        {"ttft_seconds", summary_json(ttft)},
        {"inter_token_seconds", summary_json(itl)},
        {"end_to_end_seconds", summary_json(e2e)},
        {"prompt_len", {absl::GetFlag(FLAGS_prompt_len_min), absl::GetFlag(FLAGS_prompt_len_max)}},
        {"output_len", {absl::GetFlag(FLAGS_output_len_min), absl::GetFlag(FLAGS_output_len_max)}},
    };
    if (json_out == "-") {
      std::cout << report.dump(2) << "\n";
    } else {
      std::ofstream(json_out) << report.dump(2) << "\n";
    }
  }
  return error_count == 0 ? 0 : 1;
}
