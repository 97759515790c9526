// The real llm-server, llm-client and llm-bench binaries with the security and reliability
// settings an operator uses: TLS + API keys end to end, settings that must stop the server at
// startup with a clear message and exit code, a corrupt model directory, and SIGTERM while streams
// are running.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/child_process.h"
#include "tests/service/test_certificates.h"

namespace {

using ::llm::testing::ChildProcess;
using ::testing::HasSubstr;

constexpr char kKey[] = "integration-key-0123456789";
const std::regex kServingPort("SERVING llm\\.v1\\.LlmService on [0-9.]+:([0-9]+)");

std::filesystem::path TempDir(const std::string& name) {
  // One directory per process: ctest runs each test in its own process, two at a time, and a
  // shared name let one test's set-up delete the certificates another was reading.
  std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / (name + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string FixtureModel() { return std::string(LLM_TEST_FIXTURES_DIR) + "/hf/llama_gqa"; }

TEST(SecurityProcessTest, TlsAndApiKeyServerServesOnlyClientsWithBoth) {
  if (!llm::testing::HaveOpenssl())
    GTEST_SKIP() << "the openssl CLI is not installed (apt-get install openssl)";
  const std::filesystem::path dir = TempDir("secure_server");
  llm::testing::TestCertificates certs;
  ASSERT_TRUE(llm::testing::MakeTestCertificates(dir, &certs))
      << llm::testing::ReadTextFile(dir / "openssl.log");
  std::ofstream(dir / "keys") << "# test keys\n" << kKey << "\n";
  ChildProcess server(
      {LLM_SERVER_BINARY, "--host=127.0.0.1", "--port=0", "--model=" + FixtureModel(),
       "--kv_blocks=256", "--threads=2", "--tls_cert=" + certs.server_cert().string(),
       "--tls_key=" + certs.server_key().string(), "--api_keys_file=" + (dir / "keys").string()});
  const std::string port = server.WaitForOutput(kServingPort, std::chrono::seconds(60));
  ASSERT_FALSE(port.empty()) << server.output();
  EXPECT_THAT(server.output(), HasSubstr("transport TLS, 1 API key(s)"));
  EXPECT_THAT(server.output(), ::testing::Not(HasSubstr(kKey))) << "keys must never be logged";
  const std::string target = "127.0.0.1:" + port;
  const std::string ca = "--tls_ca=" + certs.ca().string();

  ChildProcess smoke({LLM_CLIENT_BINARY, "--target=" + target, ca, std::string("--api_key=") + kKey,
                      "--timeout=30s", "smoke"});
  EXPECT_EQ(smoke.Wait(), 0) << smoke.output();
  // The key from the environment, and the bench through TLS.
  ChildProcess bench(
      {LLM_BENCH_BINARY, "--target=" + target, ca, "--concurrency=4", "--requests=8",
       "--prompt_len_min=4", "--prompt_len_max=8", "--output_len_min=2", "--output_len_max=4"},
      {std::string("LLM_API_KEY=") + kKey});
  EXPECT_EQ(bench.Wait(), 0) << bench.output();
  EXPECT_THAT(bench.output(), HasSubstr("requests ok 8, errors 0"));

  ChildProcess no_key({LLM_CLIENT_BINARY, "--target=" + target, ca, "--timeout=10s", "info"});
  EXPECT_NE(no_key.Wait(), 0);
  EXPECT_THAT(no_key.output(), HasSubstr("UNAUTHENTICATED"));
  ChildProcess plaintext({LLM_CLIENT_BINARY, "--target=" + target, std::string("--api_key=") + kKey,
                          "--timeout=5s", "info"});
  EXPECT_NE(plaintext.Wait(), 0);
  EXPECT_THAT(plaintext.output(), HasSubstr("UNAVAILABLE"));
  // Health needs no key (load balancers probe it).
  ChildProcess health({LLM_CLIENT_BINARY, "--target=" + target, ca, "--timeout=10s", "health"});
  EXPECT_EQ(health.Wait(), 0) << health.output();

  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(), 0) << server.output();
}

TEST(SecurityProcessTest, BadSecuritySettingsStopTheServerWithExitCode2AndTheFlagName) {
  const std::filesystem::path dir = TempDir("bad_settings");
  std::ofstream(dir / "short_keys") << "short\n";
  struct Setting {
    std::string flag;
    std::string message;
  };
  for (const Setting& setting : std::vector<Setting>{
           {"--tls_cert=" + (dir / "cert.pem").string(), "--tls_key"},
           {"--api_keys_file=" + (dir / "missing").string(), (dir / "missing").string()},
           {"--api_keys_file=" + (dir / "short_keys").string(), "at least 16"},
           {"--tls_client_ca=" + (dir / "ca.pem").string(), "--tls_cert"}}) {
    ChildProcess server({LLM_SERVER_BINARY, "--host=127.0.0.1", "--port=0",
                         "--model=" + FixtureModel(), setting.flag});
    EXPECT_EQ(server.Wait(), 2) << setting.flag << "\n" << server.output();
    EXPECT_THAT(server.output(), HasSubstr(setting.message)) << setting.flag;
  }
}

TEST(SecurityProcessTest, CorruptModelDirectoryExitsWithAMessage) {
  const std::filesystem::path dir = TempDir("corrupt_model");
  std::filesystem::create_directories(dir / "bad_json");
  std::ofstream(dir / "bad_json" / "config.json") << "{\"hidden_size\": 64, ";
  std::filesystem::create_directories(dir / "no_weights");
  std::filesystem::copy_file(FixtureModel() + "/config.json", dir / "no_weights" / "config.json");
  std::filesystem::create_directories(dir / "truncated_weights");
  std::filesystem::copy_file(FixtureModel() + "/config.json",
                             dir / "truncated_weights" / "config.json");
  {
    std::ifstream weights(FixtureModel() + "/model.safetensors", std::ios::binary);
    std::string bytes(4096, '\0');
    weights.read(bytes.data(), bytes.size());
    std::ofstream(dir / "truncated_weights" / "model.safetensors", std::ios::binary)
        .write(bytes.data(), weights.gcount());
  }
  for (const char* name : {"bad_json", "no_weights", "truncated_weights"}) {
    ChildProcess server(
        {LLM_SERVER_BINARY, "--host=127.0.0.1", "--port=0", "--model=" + (dir / name).string()});
    const int exit_code = server.Wait();
    EXPECT_EQ(exit_code, 1) << name << "\n" << server.output();
    EXPECT_THAT(server.output(), HasSubstr("loading the checkpoint failed")) << name;
    EXPECT_THAT(server.output(), ::testing::Not(HasSubstr("SERVING llm"))) << name;
  }
}

TEST(SecurityProcessTest, SigtermWhileStreamingDrainsAndClientsGetCleanStatuses) {
  ChildProcess server({LLM_SERVER_BINARY, "--host=127.0.0.1", "--port=0",
                       "--model=" + FixtureModel(), "--kv_blocks=512", "--threads=2",
                       "--max_batch_tokens=64", "--shutdown_grace=2s"});
  const std::string port = server.WaitForOutput(kServingPort, std::chrono::seconds(60));
  ASSERT_FALSE(port.empty()) << server.output();
  const std::string json_path = (TempDir("sigterm") / "bench.json").string();
  ChildProcess bench({LLM_BENCH_BINARY, "--target=127.0.0.1:" + port, "--concurrency=16",
                      "--requests=0", "--duration=8s", "--prompt_len_min=8", "--prompt_len_max=32",
                      "--output_len_min=100", "--output_len_max=400", "--timeout=30s",
                      "--json_out=" + json_path});
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const auto signalled = std::chrono::steady_clock::now();
  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(), 0) << server.output();
  const double drain_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - signalled).count();
  EXPECT_LT(drain_seconds, 10.0) << "the drain must end soon after --shutdown_grace";
  EXPECT_THAT(server.output(), HasSubstr("draining"));
  bench.Wait();
  std::ifstream json_file(json_path);
  const nlohmann::json report = nlohmann::json::parse(json_file, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << bench.output();
  EXPECT_GT(report["requests_ok"].get<int>(), 0) << bench.output();
  // Streams finish, or end UNAVAILABLE ("draining"; later, nobody listening) or CANCELLED when the
  // grace ran out: never UNKNOWN, INTERNAL or a hang.
  for (const auto& [code, count] : report["errors"].items()) {
    EXPECT_THAT(code, ::testing::AnyOf("UNAVAILABLE", "CANCELLED")) << count;
  }
}

}  // namespace
