// Load soak: llm-bench drives 256 concurrent Generate streams against the real llm-server (CPU
// backend, tiny llama_gqa fixture) on loopback for a bounded time. Afterwards: no errors, every KV
// block free again (the server's /metrics), and the server's resident memory grew by a bounded
// amount. The default run soaks for LLM_SOAK_SECONDS (15 s); the "slow" build of this file
// (integration_soak_slow_tests) for 120 s. Figures go to stdout and docs/RELIABILITY.md.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/child_process.h"

#ifndef LLM_SOAK_SECONDS
#define LLM_SOAK_SECONDS 15
#endif

namespace {

using ::llm::testing::ChildProcess;

// GET http://127.0.0.1:<port><path>; the body, or "" on failure.
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return "";
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  (void)!send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string response;
  char buffer[8192];
  ssize_t n;
  while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) response.append(buffer, n);
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// A port that was free a moment ago (--metrics_port=0 means "no metrics", so the test picks one).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = 0;
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

// The value of the first sample line of `metric` whose labels contain `labels`, or -1.
double MetricValue(const std::string& text, const std::string& metric, const std::string& labels) {
  std::regex line("^" + metric + "\\{([^}]*)\\} ([-0-9.eE+]+)$", std::regex::multiline);
  for (std::sregex_iterator it(text.begin(), text.end(), line), end; it != end; ++it) {
    if ((*it)[1].str().find(labels) != std::string::npos) return std::stod((*it)[2].str());
  }
  return -1;
}

TEST(SoakProcessTest, TwoHundredFiftySixConcurrentStreamsLeaveNoErrorsBlocksOrGrowth) {
  ChildProcess server({LLM_SERVER_BINARY, "--host=127.0.0.1", "--port=0",
                       "--metrics_port=" + std::to_string(FreePort()), "--metrics_host=127.0.0.1",
                       std::string("--model=") + LLM_TEST_FIXTURES_DIR + "/hf/llama_gqa",
                       "--kv_blocks=2048", "--threads=2", "--max_sequences=256",
                       "--max_batch_tokens=1024", "--max_waiting=1024"});
  const std::string port = server.WaitForOutput(
      std::regex("SERVING llm\\.v1\\.LlmService on [0-9.]+:([0-9]+)"), std::chrono::seconds(60));
  ASSERT_FALSE(port.empty()) << server.output();
  const std::string metrics_port = server.WaitForOutput(
      std::regex("metrics on http://127\\.0\\.0\\.1:([0-9]+)/metrics"), std::chrono::seconds(5));
  ASSERT_FALSE(metrics_port.empty()) << server.output();
  const int64_t rss_before_kb = server.ProcStatusKb("VmRSS");

  const std::string json_path =
      (std::filesystem::path(::testing::TempDir()) / "soak_bench.json").string();
  const std::string seconds = std::to_string(LLM_SOAK_SECONDS);
  ChildProcess bench({LLM_BENCH_BINARY, "--target=127.0.0.1:" + port, "--concurrency=256",
                      "--requests=0", "--duration=" + seconds + "s", "--prompt_len_min=4",
                      "--prompt_len_max=64", "--output_len_min=4", "--output_len_max=64",
                      "--timeout=60s", "--json_out=" + json_path});
  // Sample the server's memory while the load runs.
  int64_t rss_peak_kb = rss_before_kb;
  while (true) {
    const int64_t rss = server.ProcStatusKb("VmRSS");
    rss_peak_kb = std::max(rss_peak_kb, rss);
    if (bench.output().find("llm-bench:") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (bench.output().find("failed") != std::string::npos) break;
  }
  const int bench_exit = bench.Wait();
  EXPECT_EQ(bench_exit, 0) << bench.output();
  std::ifstream json_file(json_path);
  const nlohmann::json report = nlohmann::json::parse(json_file, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << bench.output();
  EXPECT_TRUE(report["errors"].empty()) << report["errors"].dump();
  EXPECT_GT(report["requests_ok"].get<int64_t>(), 256);

  // Blocks back to zero once the last streams are done.
  double used_blocks = -1;
  std::string metrics;
  for (int attempt = 0; attempt < 100; ++attempt) {
    metrics = HttpGet(std::stoi(metrics_port), "/metrics");
    used_blocks = MetricValue(metrics, "llm_kv_cache_blocks", "state=\"used\"");
    if (used_blocks == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(used_blocks, 0) << metrics.substr(0, 4000);
  const int64_t rss_after_kb = server.ProcStatusKb("VmRSS");
  const int64_t hwm_kb = server.ProcStatusKb("VmHWM");
  std::printf(
      "soak %s s, concurrency 256: %lld requests ok, %.0f tokens generated, %.1f req/s, %.0f "
      "generated tok/s; p99 TTFT "
      "%.1f ms, p99 inter-token %.1f ms, p99 end-to-end %.1f ms; server RSS %lld -> %lld kB "
      "(peak sampled %lld kB, VmHWM %lld kB)\n",
      seconds.c_str(), static_cast<long long>(report["requests_ok"].get<int64_t>()),
      report["generated_tokens_per_second"].get<double>() * report["elapsed_seconds"].get<double>(),
      report["requests_per_second"].get<double>(),
      report["generated_tokens_per_second"].get<double>(),
      report["ttft_seconds"]["p99"].get<double>() * 1e3,
      report["inter_token_seconds"]["p99"].get<double>() * 1e3,
      report["end_to_end_seconds"]["p99"].get<double>() * 1e3,
      static_cast<long long>(rss_before_kb), static_cast<long long>(rss_after_kb),
      static_cast<long long>(rss_peak_kb), static_cast<long long>(hwm_kb));
  // 256 streams' buffers and gRPC's arenas cost some memory (~11 MiB seen); a per-request leak
  // over thousands of requests would not fit.
  EXPECT_LT(rss_after_kb - rss_before_kb, 64 * 1024) << "server RSS grew by more than 64 MiB";

  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(), 0) << server.output();
}

}  // namespace
