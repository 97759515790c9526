// An in-process llm-server for the reliability and security tests: the real GrpcServer (with its
// access guard and transport options), the engine, the CPU backend and the tiny llama_gqa fixture.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "llm/v1/llm.grpc.pb.h"
#include "server/engine/engine.h"
#include "server/model/checkpoint.h"
#include "server/model/transformer.h"
#include "server/service/grpc_server.h"

namespace llm::service::testing {

inline const std::filesystem::path kModelDir =
    std::filesystem::path(LLM_TEST_FIXTURES_DIR) / "hf/llama_gqa";

struct TestServerSetup {
  int32_t kv_blocks = 256;
  int32_t block_size = 16;
  engine::EngineOptions engine = {};
  GrpcServerOptions server = {};
};

template <typename Condition>
bool Eventually(Condition condition, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return condition();
}

inline std::vector<int32_t> Prompt(int32_t length, int32_t salt) {
  std::vector<int32_t> prompt = {1};
  for (int32_t i = 1; i < length; ++i) prompt.push_back(3 + (salt * 31 + i * 17) % 250);
  return prompt;
}

inline void SetDeadline(grpc::ClientContext& context,
                        std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  context.set_deadline(std::chrono::system_clock::now() + timeout);
}

class TestServer {
 public:
  explicit TestServer(TestServerSetup setup = {}) {
    checkpoint_ = *Checkpoint::Open(kModelDir);
    backend_ = CreateCpuBackend(2);
    std::unique_ptr<Transformer> model =
        *Transformer::Create(*checkpoint_, *backend_,
                             {.kv_num_blocks = setup.kv_blocks,
                              .kv_block_size = setup.block_size,
                              .max_batch_tokens = setup.engine.max_batch_tokens,
                              .max_batch_sequences = setup.engine.max_running_sequences});
    engine_ = *engine::Engine::Create(std::move(model), setup.engine);
    EXPECT_TRUE(engine_->Warmup().ok());
    absl::StatusOr<std::unique_ptr<GrpcServer>> server =
        GrpcServer::Start("127.0.0.1:0", {}, std::move(setup.server));
    EXPECT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    engine_->Start();
    server_->AttachEngine(engine_.get(), kModelDir.string());
  }
  ~TestServer() {
    if (server_ != nullptr) server_->Drain(absl::ZeroDuration());
    server_.reset();
    engine_.reset();
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", server_->port()); }
  int port() const { return server_->port(); }
  engine::Engine& engine() { return *engine_; }
  GrpcServer& server() { return *server_; }
  std::shared_ptr<grpc::Channel> PlaintextChannel() const {
    return grpc::CreateChannel(address(), grpc::InsecureChannelCredentials());
  }
  // Blocks used, running and waiting all back to zero (sequences held by Prefill excepted).
  bool Idle(int32_t blocks_held = 0) {
    return Eventually([&] {
      engine::EngineStats stats = engine_->stats();
      return stats.kv_blocks_used == blocks_held && stats.running_requests == 0 &&
             stats.waiting_requests == 0;
    });
  }

 private:
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<Backend> backend_;  // outlives engine_, whose model uses it
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<GrpcServer> server_;
};

}  // namespace llm::service::testing
