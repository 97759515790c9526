// Starts the real llm-server binary on a free port (--port=0, read back from its log), runs
// `llm-client smoke` and a short `llm-bench` against it, and stops it with SIGTERM: the way an
// operator would.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/child_process.h"

namespace {

using ::llm::testing::ChildProcess;
using ::testing::HasSubstr;

TEST(ServerProcessTest, SmokeAndBenchPassAgainstTheRealServerAndSigtermExitsCleanly) {
  ChildProcess server({LLM_SERVER_BINARY, "--host=127.0.0.1", "--port=0", "--backend=auto",
                       "--kv_blocks=256", "--threads=2"});
  const std::string port = server.WaitForOutput(std::regex("SERVING llm\\.v1\\.LlmService on [0-9.]+:([0-9]+)"),
                                                std::chrono::seconds(60));
  ASSERT_FALSE(port.empty()) << "server did not come up:\n" << server.output();
  EXPECT_THAT(server.output(), HasSubstr("models/default"));
  EXPECT_THAT(server.output(), HasSubstr("KV cache"));

  ChildProcess smoke({LLM_CLIENT_BINARY, "--target=127.0.0.1:" + port, "--timeout=30s", "smoke"});
  const int smoke_exit = smoke.Wait();
  EXPECT_EQ(smoke_exit, 0) << smoke.output();
  EXPECT_THAT(smoke.output(), HasSubstr("smoke: all checks passed"));
  EXPECT_THAT(smoke.output(), ::testing::Not(HasSubstr("FAIL")));

  ChildProcess generate({LLM_CLIENT_BINARY, "--target=127.0.0.1:" + port, "--tokens=1,20,30",
                         "--max_tokens=4", "--ignore_eos", "generate"});
  EXPECT_EQ(generate.Wait(), 0) << generate.output();
  EXPECT_THAT(generate.output(), HasSubstr("finished: FINISH_REASON_LENGTH"));

  const std::string json_path =
      (std::filesystem::path(::testing::TempDir()) / "llm_bench_report.json").string();
  ChildProcess bench({LLM_BENCH_BINARY, "--target=127.0.0.1:" + port, "--concurrency=4",
                      "--requests=8", "--prompt_len_min=4", "--prompt_len_max=12",
                      "--output_len_min=3", "--output_len_max=6", "--json_out=" + json_path});
  EXPECT_EQ(bench.Wait(), 0) << bench.output();
  EXPECT_THAT(bench.output(), HasSubstr("time to first token"));
  std::ifstream json_file(json_path);
  const nlohmann::json report = nlohmann::json::parse(json_file, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(report.is_discarded()) << "llm-bench wrote no valid JSON to " << json_path;
  EXPECT_EQ(report["requests_ok"], 8);
  EXPECT_TRUE(report["errors"].empty());
  EXPECT_EQ(report["ttft_seconds"]["count"], 8);
  EXPECT_GT(report["generated_tokens_per_second"].get<double>(), 0.0);

  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(), 0) << server.output();
  EXPECT_THAT(server.output(), HasSubstr("draining"));
  EXPECT_THAT(server.output(), HasSubstr("stopped"));
}

TEST(ServerProcessTest, SmokeFailsWithNonZeroExitWhenNoServerListens) {
  ChildProcess smoke({LLM_CLIENT_BINARY, "--target=127.0.0.1:1", "--timeout=2s", "smoke"});
  EXPECT_NE(smoke.Wait(), 0);
  EXPECT_THAT(smoke.output(), HasSubstr("FAIL health is SERVING"));
}

TEST(ServerProcessTest, MissingCheckpointExitsWithAMessageNamingThePath) {
  ChildProcess server({LLM_SERVER_BINARY, "--host=127.0.0.1", "--port=0",
                       "--model=/nonexistent/checkpoint"});
  EXPECT_NE(server.Wait(), 0);
  EXPECT_THAT(server.output(), HasSubstr("/nonexistent/checkpoint"));
}

}  // namespace
