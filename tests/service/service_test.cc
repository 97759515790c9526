// In-process tests of llm-server's gRPC surface: a real GrpcServer on a free port, the engine, the
// CPU backend and a tiny Hugging Face fixture model. Expected tokens come from running the
// Transformer directly on whole histories (ReferenceGreedy), independently of the engine's paging.
#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "llm/v1/llm.grpc.pb.h"
#include "server/engine/engine.h"
#include "server/model/checkpoint.h"
#include "server/model/transformer.h"
#include "server/service/grpc_server.h"

namespace llm::service {
namespace {

using ::grpc::health::v1::Health;
using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;

const std::filesystem::path kModelDir = std::filesystem::path(LLM_TEST_FIXTURES_DIR) / "hf/llama_gqa";

struct ServerSetup {
  int32_t kv_blocks = 256;
  int32_t block_size = 16;
  engine::EngineOptions engine = {};
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

std::vector<int32_t> Prompt(int32_t length, int32_t salt) {
  std::vector<int32_t> prompt = {1};
  for (int32_t i = 1; i < length; ++i) prompt.push_back(3 + (salt * 31 + i * 17) % 250);
  return prompt;
}

// Greedy continuation computed by a separate model instance, feeding the whole history as one chunk
// of a fresh sequence at every step: no chunking, no batching, no reuse of KV blocks.
std::vector<int32_t> ReferenceGreedy(std::vector<int32_t> history, int32_t count) {
  std::unique_ptr<Checkpoint> checkpoint = *Checkpoint::Open(kModelDir);
  std::unique_ptr<Backend> backend = CreateCpuBackend(1);
  const int32_t blocks = 64;
  std::unique_ptr<Transformer> model = *Transformer::Create(
      *checkpoint, *backend, {.kv_num_blocks = blocks, .kv_block_size = 16, .max_batch_tokens = 1024,
                              .max_batch_sequences = 4});
  std::vector<int32_t> out;
  for (int32_t step = 0; step < count; ++step) {
    SequenceChunk chunk;
    chunk.tokens = history;
    for (int32_t b = 0; b < (static_cast<int32_t>(history.size()) + 15) / 16; ++b) {
      chunk.block_table.push_back(b);
    }
    std::vector<ChunkResult> result = *model->Forward({&chunk, 1});
    out.push_back(result[0].sampled.token);
    history.push_back(out.back());
  }
  return out;
}

class ServiceTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (server_ != nullptr) server_->Drain(absl::ZeroDuration());
    server_.reset();
    engine_.reset();
  }

  // Listens; the engine is attached only when `attach` is true.
  void Start(const ServerSetup& setup = {}, bool attach = true) {
    checkpoint_ = *Checkpoint::Open(kModelDir);
    backend_ = CreateCpuBackend(2);
    std::unique_ptr<Transformer> model = *Transformer::Create(
        *checkpoint_, *backend_,
        {.kv_num_blocks = setup.kv_blocks, .kv_block_size = setup.block_size,
         .max_batch_tokens = setup.engine.max_batch_tokens,
         .max_batch_sequences = setup.engine.max_running_sequences});
    engine_ = *engine::Engine::Create(std::move(model), setup.engine);
    ASSERT_TRUE(engine_->Warmup().ok());
    server_ = *GrpcServer::Start("127.0.0.1:0");
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::LlmService::NewStub(channel_);
    if (attach) Attach();
  }
  void Attach() {
    engine_->Start();
    server_->AttachEngine(engine_.get(), kModelDir.string());
  }

  static void SetDeadline(grpc::ClientContext& context, int seconds = 30) {
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  }

  grpc::Status Prefill(const std::vector<int32_t>& tokens, v1::PrefillResponse* response,
                       std::optional<uint64_t> extend = std::nullopt, int top_logprobs = 0) {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::PrefillRequest request;
    for (int32_t token : tokens) request.mutable_tokens()->add_ids(token);
    if (extend.has_value()) request.set_sequence_id(*extend);
    request.set_num_top_logprobs(top_logprobs);
    return stub_->Prefill(&context, request, response);
  }
  grpc::Status Decode(uint64_t id, v1::DecodeResponse* response,
                      std::optional<int32_t> token = std::nullopt) {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::DecodeRequest request;
    request.set_sequence_id(id);
    if (token.has_value()) request.set_token_id(*token);
    return stub_->Decode(&context, request, response);
  }
  grpc::Status Release(uint64_t id, v1::ReleaseResponse* response) {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::ReleaseRequest request;
    request.set_sequence_id(id);
    return stub_->Release(&context, request, response);
  }
  struct Streamed {
    std::vector<int32_t> tokens;
    std::vector<int32_t> indices;
    v1::GenerateFinished finished;
    bool saw_finished = false;
    grpc::Status status;
  };
  Streamed Generate(const std::vector<int32_t>& prompt, int32_t max_tokens,
                    std::chrono::milliseconds timeout = std::chrono::seconds(60),
                    float temperature = 0.0f) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + timeout);
    v1::GenerateRequest request;
    for (int32_t token : prompt) request.mutable_tokens()->add_ids(token);
    request.set_max_tokens(max_tokens);
    request.set_ignore_eos(true);
    request.mutable_sampling()->set_temperature(temperature);
    auto reader = stub_->Generate(&context, request);
    Streamed out;
    v1::GenerateResponse message;
    while (reader->Read(&message)) {
      if (message.has_token()) {
        out.tokens.push_back(message.token().token_id());
        out.indices.push_back(message.index());
      } else if (message.has_finished()) {
        out.finished = message.finished();
        out.saw_finished = true;
      }
    }
    out.status = reader->Finish();
    return out;
  }
  HealthCheckResponse::ServingStatus Health(const std::string& service = "") {
    auto health = Health::NewStub(channel_);
    grpc::ClientContext context;
    SetDeadline(context, 5);
    HealthCheckRequest request;
    request.set_service(service);
    HealthCheckResponse response;
    grpc::Status status = health->Check(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.status();
  }

  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<Backend> backend_;  // outlives engine_, whose model uses it
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<GrpcServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::LlmService::Stub> stub_;
};

TEST_F(ServiceTest, HealthIsServingOnlyOnceTheEngineIsAttached) {
  Start({}, /*attach=*/false);
  EXPECT_EQ(Health(), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Health("llm.v1.LlmService"), HealthCheckResponse::NOT_SERVING);
  v1::PrefillResponse response;
  grpc::Status status = Prefill({1, 2, 3}, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("loading"));
  Attach();
  EXPECT_EQ(Health(), HealthCheckResponse::SERVING);
  EXPECT_EQ(Health("llm.v1.LlmService"), HealthCheckResponse::SERVING);
  EXPECT_TRUE(Prefill({1, 2, 3}, &response).ok());
}

TEST_F(ServiceTest, GetModelInfoDescribesTheLoadedModelAndCapacity) {
  Start({.kv_blocks = 40, .block_size = 8});
  grpc::ClientContext context;
  SetDeadline(context);
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.architecture(), checkpoint_->config().architecture);
  EXPECT_EQ(info.vocab_size(), 256);
  EXPECT_EQ(info.num_layers(), 2);
  EXPECT_EQ(info.num_attention_heads(), 8);
  EXPECT_EQ(info.num_kv_heads(), 2);
  EXPECT_EQ(info.max_position_embeddings(), 512);
  EXPECT_EQ(info.backend(), "cpu");
  EXPECT_EQ(info.compute_dtype(), "F32");
  EXPECT_EQ(info.kv_block_size(), 8);
  EXPECT_EQ(info.kv_num_blocks(), 40);
  EXPECT_EQ(info.kv_capacity_tokens(), 320);
  EXPECT_GT(info.kv_cache_bytes(), 0);
  EXPECT_GT(info.weight_bytes(), 0);
  EXPECT_THAT(info.eos_token_ids(), ::testing::ElementsAre(2));
  EXPECT_EQ(info.bos_token_id(), 1);
}

TEST_F(ServiceTest, PrefillDecodeAndGenerateMatchTheReferenceModel) {
  Start();
  const std::vector<int32_t> prompt = Prompt(21, 1);
  const std::vector<int32_t> expected = ReferenceGreedy(prompt, 6);

  v1::PrefillResponse prefill;
  ASSERT_TRUE(Prefill(prompt, &prefill, std::nullopt, 4).ok());
  EXPECT_EQ(prefill.length(), 21);
  EXPECT_EQ(prefill.next().token_id(), expected[0]);
  ASSERT_EQ(prefill.next().top_logprobs_size(), 4);
  EXPECT_EQ(prefill.next().top_logprobs(0).token_id(), expected[0]);
  EXPECT_FLOAT_EQ(prefill.next().top_logprobs(0).logprob(), prefill.next().logprob());
  for (int i = 1; i < 4; ++i) {
    EXPECT_LE(prefill.next().top_logprobs(i).logprob(), prefill.next().top_logprobs(i - 1).logprob());
  }
  std::vector<int32_t> stepped = {prefill.next().token_id()};
  for (int step = 1; step < 6; ++step) {
    v1::DecodeResponse decoded;
    ASSERT_TRUE(Decode(prefill.sequence_id(), &decoded).ok());
    EXPECT_EQ(decoded.length(), 21 + step);
    stepped.push_back(decoded.next().token_id());
  }
  EXPECT_EQ(stepped, expected);

  Streamed streamed = Generate(prompt, 6);
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  EXPECT_EQ(streamed.tokens, expected);
  EXPECT_EQ(streamed.indices, (std::vector<int32_t>{0, 1, 2, 3, 4, 5}));
  ASSERT_TRUE(streamed.saw_finished);
  EXPECT_EQ(streamed.finished.reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(streamed.finished.prompt_tokens(), 21);
  EXPECT_EQ(streamed.finished.completion_tokens(), 6);

  // Extending the conversation with Prefill continues at the right positions.
  std::vector<int32_t> history = prompt;
  history.insert(history.end(), expected.begin(), expected.end() - 1);
  const std::vector<int32_t> more = {9, 8, 7};
  history.insert(history.end(), more.begin(), more.end());
  v1::PrefillResponse extended;
  ASSERT_TRUE(Prefill(more, &extended, prefill.sequence_id()).ok());
  EXPECT_EQ(extended.length(), static_cast<int32_t>(history.size()));
  EXPECT_EQ(extended.next().token_id(), ReferenceGreedy(history, 1)[0]);

  v1::ReleaseResponse released;
  ASSERT_TRUE(Release(prefill.sequence_id(), &released).ok());
  EXPECT_EQ(released.released_tokens(), static_cast<int32_t>(history.size()));
  EXPECT_TRUE(Eventually([&] { return engine_->stats().kv_blocks_used == 0; }));
}

TEST_F(ServiceTest, SeededSamplingIsReproducible) {
  Start();
  grpc::ClientContext first_context, second_context;
  SetDeadline(first_context);
  SetDeadline(second_context);
  v1::GenerateRequest request;
  for (int32_t token : Prompt(5, 2)) request.mutable_tokens()->add_ids(token);
  request.set_max_tokens(12);
  request.set_ignore_eos(true);
  request.mutable_sampling()->set_temperature(1.0f);
  request.mutable_sampling()->set_seed(1234);
  auto collect = [&](grpc::ClientContext& context) {
    std::vector<int32_t> tokens;
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse message;
    while (reader->Read(&message)) {
      if (message.has_token()) tokens.push_back(message.token().token_id());
    }
    EXPECT_TRUE(reader->Finish().ok());
    return tokens;
  };
  const std::vector<int32_t> first = collect(first_context);
  EXPECT_EQ(first.size(), 12u);
  EXPECT_EQ(first, collect(second_context));
}

TEST_F(ServiceTest, InvalidArgumentsAreRejectedWithActionableMessages) {
  Start();
  v1::PrefillResponse prefill;
  grpc::Status status = Prefill({}, &prefill);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("empty"));
  status = Prefill({1, 256}, &prefill);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("[0, 256)"));
  {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::PrefillRequest request;
    request.mutable_tokens()->add_ids(1);
    request.mutable_sampling()->set_temperature(-0.5f);
    EXPECT_EQ(stub_->Prefill(&context, request, &prefill).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::PrefillRequest request;
    request.mutable_tokens()->add_ids(1);
    request.mutable_sampling()->set_top_p(0.0f);
    EXPECT_EQ(stub_->Prefill(&context, request, &prefill).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  Streamed too_long = Generate(Prompt(500, 3), 20);
  EXPECT_EQ(too_long.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(too_long.status.error_message(), HasSubstr("max_position_embeddings (512)"));
  EXPECT_TRUE(too_long.tokens.empty());
  v1::DecodeResponse decoded;
  EXPECT_EQ(Decode(77, &decoded, 300).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServiceTest, UnknownSequencesAreNotFound) {
  Start();
  v1::DecodeResponse decoded;
  grpc::Status status = Decode(987654, &decoded);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("Prefill"));
  v1::ReleaseResponse released;
  EXPECT_EQ(Release(987654, &released).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::PrefillResponse prefill;
  EXPECT_EQ(Prefill({1, 2}, &prefill, 987654).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServiceTest, DecodeDuringAnotherCallOnTheSameSequenceIsFailedPrecondition) {
  Start({.engine = {.max_batch_tokens = 2}});
  v1::PrefillResponse prefill;
  ASSERT_TRUE(Prefill(Prompt(4, 5), &prefill).ok());
  ASSERT_TRUE(Eventually([&] { return engine_->stats().running_requests == 0; }));
  // A 480-token extension at 2 tokens per step keeps the sequence busy for 240 steps.
  v1::PrefillResponse extended;
  grpc::Status extend_status;
  std::thread extender([&] { extend_status = Prefill(Prompt(480, 6), &extended, prefill.sequence_id()); });
  ASSERT_TRUE(Eventually([&] { return engine_->stats().running_requests == 1; }));
  v1::DecodeResponse decoded;
  grpc::Status status = Decode(prefill.sequence_id(), &decoded);
  extender.join();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("busy"));
  EXPECT_TRUE(extend_status.ok()) << extend_status.error_message();
  EXPECT_EQ(extended.length(), 484);
}

TEST_F(ServiceTest, KvExhaustionQueuesThenFailsResourceExhaustedWithoutLeaking) {
  Start({.kv_blocks = 4, .block_size = 16, .engine = {.max_queue_wait = absl::Milliseconds(200)}});
  // More than the whole cache: refused at once.
  Streamed huge = Generate(Prompt(50, 1), 30);
  EXPECT_EQ(huge.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(huge.status.error_message(), HasSubstr("larger KV budget"));
  // Fill the cache with one sequence; the next request queues, then gives up.
  v1::PrefillResponse holder;
  ASSERT_TRUE(Prefill(Prompt(64, 2), &holder).ok());
  v1::PrefillResponse waiting;
  grpc::Status status = Prefill(Prompt(8, 3), &waiting);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("KV cache full"));
  // A queued request is admitted as soon as blocks are released.
  std::thread releaser([&] {
    ASSERT_TRUE(Eventually([&] { return engine_->stats().waiting_requests == 1; }));
    v1::ReleaseResponse released;
    EXPECT_TRUE(Release(holder.sequence_id(), &released).ok());
  });
  Streamed admitted = Generate(Prompt(8, 3), 4);
  releaser.join();
  EXPECT_TRUE(admitted.status.ok()) << admitted.status.error_message();
  EXPECT_EQ(admitted.tokens, ReferenceGreedy(Prompt(8, 3), 4));
  EXPECT_TRUE(Eventually([&] {
    engine::EngineStats stats = engine_->stats();
    return stats.kv_blocks_used == 0 && stats.waiting_requests == 0 && stats.running_requests == 0;
  }));
}

TEST_F(ServiceTest, DeadlineWhileQueuedIsDeadlineExceededAndLeavesNothingBehind) {
  Start({.kv_blocks = 4, .block_size = 16});
  v1::PrefillResponse holder;
  ASSERT_TRUE(Prefill(Prompt(64, 2), &holder).ok());
  Streamed late = Generate(Prompt(8, 3), 4, std::chrono::milliseconds(150));
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(Eventually([&] { return engine_->stats().waiting_requests == 0; }));
  EXPECT_EQ(engine_->stats().kv_blocks_used, 4);
}

TEST_F(ServiceTest, CancellingAStreamMidwayReturnsItsBlocks) {
  Start();
  grpc::ClientContext context;
  SetDeadline(context);
  v1::GenerateRequest request;
  for (int32_t token : Prompt(40, 4)) request.mutable_tokens()->add_ids(token);
  request.set_max_tokens(450);
  request.set_ignore_eos(true);
  auto reader = stub_->Generate(&context, request);
  v1::GenerateResponse message;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Read(&message));
  EXPECT_GT(engine_->stats().kv_blocks_used, 0);
  context.TryCancel();
  while (reader->Read(&message)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(Eventually([&] {
    engine::EngineStats stats = engine_->stats();
    return stats.kv_blocks_used == 0 && stats.running_requests == 0;
  }));
}

TEST_F(ServiceTest, IdleSequencesExpireAfterTheTtl) {
  Start({.engine = {.sequence_ttl = absl::Milliseconds(100)}});
  v1::PrefillResponse prefill;
  ASSERT_TRUE(Prefill(Prompt(10, 1), &prefill).ok());
  ASSERT_TRUE(Eventually([&] { return engine_->stats().sequences_expired_total == 1; }));
  v1::DecodeResponse decoded;
  EXPECT_EQ(Decode(prefill.sequence_id(), &decoded).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(engine_->stats().kv_blocks_used, 0);
}

TEST_F(ServiceTest, SixtyFourConcurrentClientsGetTheTokensTheyGetAlone) {
  Start({.engine = {.max_batch_tokens = 512, .max_running_sequences = 64}});
  constexpr int kClients = 64;
  constexpr int kTokens = 8;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < kClients; ++i) prompts.push_back(Prompt(3 + (i * 7) % 29, i));
  // Alone: one request at a time, each step a batch of one.
  std::vector<std::vector<int32_t>> alone;
  for (const auto& prompt : prompts) {
    Streamed result = Generate(prompt, kTokens);
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    alone.push_back(result.tokens);
  }
  const int64_t steps_before = engine_->stats().steps_total;
  // Together: half of the clients stream with Generate, half drive Prefill + Decode.
  std::vector<std::vector<int32_t>> together(kClients);
  std::vector<grpc::Status> statuses(kClients);
  std::atomic<int> ready{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      ++ready;
      while (ready.load() < kClients) std::this_thread::yield();
      if (i % 2 == 0) {
        Streamed result = Generate(prompts[i], kTokens);
        statuses[i] = result.status;
        together[i] = result.tokens;
        return;
      }
      v1::PrefillResponse prefill;
      statuses[i] = Prefill(prompts[i], &prefill);
      if (!statuses[i].ok()) return;
      together[i].push_back(prefill.next().token_id());
      for (int step = 1; step < kTokens && statuses[i].ok(); ++step) {
        v1::DecodeResponse decoded;
        statuses[i] = Decode(prefill.sequence_id(), &decoded);
        together[i].push_back(decoded.next().token_id());
      }
      v1::ReleaseResponse released;
      if (statuses[i].ok()) statuses[i] = Release(prefill.sequence_id(), &released);
    });
  }
  for (std::thread& client : clients) client.join();
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(statuses[i].ok()) << "client " << i << ": " << statuses[i].error_message();
    EXPECT_EQ(together[i], alone[i]) << "client " << i << " saw different greedy tokens in a batch";
  }
  EXPECT_EQ(alone[0], ReferenceGreedy(prompts[0], kTokens));
  const int64_t steps = engine_->stats().steps_total - steps_before;
  EXPECT_LT(steps, kClients * kTokens / 2) << "concurrent requests should share forward steps";
  EXPECT_TRUE(Eventually([&] { return engine_->stats().kv_blocks_used == 0; }));
}

TEST_F(ServiceTest, DrainFinishesInFlightStreamsThenRefusesWork) {
  Start();
  const std::vector<int32_t> prompt = Prompt(12, 9);
  Streamed streamed;
  std::thread client([&] { streamed = Generate(prompt, 200); });
  ASSERT_TRUE(Eventually([&] { return engine_->stats().running_requests == 1; }));
  server_->Drain(absl::Seconds(60));
  client.join();
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  EXPECT_EQ(streamed.tokens.size(), 200u);
  EXPECT_FALSE(engine_->accepting());
  v1::PrefillResponse prefill;
  grpc::Status status = Prefill({1, 2}, &prefill);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
}

// Reflection lets grpcurl work without the .proto. Its messages are built by hand (one field) so
// that the test needs no reflection stubs: ServerReflectionRequest{list_services: ""} is field 7,
// length-delimited, empty.
TEST_F(ServiceTest, ServerReflectionListsTheServices) {
  Start();
  grpc::GenericStub generic(channel_);
  grpc::ClientContext context;
  SetDeadline(context, 10);
  grpc::CompletionQueue queue;
  auto await = [&queue](intptr_t expected_tag) {
    void* tag = nullptr;
    bool ok = false;
    EXPECT_TRUE(queue.Next(&tag, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(tag), expected_tag);
    return ok;
  };
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call = generic.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &queue);
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(await(1));
  const std::string list_services("\x3a\x00", 2);
  grpc::Slice slice(list_services);
  grpc::ByteBuffer request(&slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  ASSERT_TRUE(await(2));
  call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(await(3));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  ASSERT_TRUE(await(4));
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& piece : slices) {
    bytes.append(reinterpret_cast<const char*>(piece.begin()), piece.size());
  }
  EXPECT_THAT(bytes, HasSubstr("llm.v1.LlmService"));
  EXPECT_THAT(bytes, HasSubstr("grpc.health.v1.Health"));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  await(5);
  EXPECT_TRUE(status.ok()) << status.error_message();
  queue.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (queue.Next(&tag, &ok)) {
  }
}

TEST_F(ServiceTest, CancellingAUnaryPrefillRollsTheSequenceBack) {
  Start({.engine = {.max_batch_tokens = 2}});
  v1::PrefillResponse prefill;
  ASSERT_TRUE(Prefill(Prompt(20, 7), &prefill).ok());  // 2 blocks of 16
  ASSERT_TRUE(Eventually([&] { return engine_->stats().running_requests == 0; }));
  const int32_t blocks_before = engine_->stats().kv_blocks_used;
  // A 480-token extension runs for 240 steps; the client gives up during it.
  grpc::ClientContext context;
  SetDeadline(context);
  v1::PrefillRequest request;
  for (int32_t token : Prompt(480, 8)) request.mutable_tokens()->add_ids(token);
  request.set_sequence_id(prefill.sequence_id());
  v1::PrefillResponse extended;
  grpc::Status status;
  std::thread caller([&] { status = stub_->Prefill(&context, request, &extended); });
  ASSERT_TRUE(Eventually([&] { return engine_->stats().running_requests == 1; }));
  context.TryCancel();
  caller.join();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(Eventually([&] {
    engine::EngineStats stats = engine_->stats();
    return stats.running_requests == 0 && stats.kv_blocks_used == blocks_before;
  }));
  // The sequence is as it was: decoding continues right after the original prompt.
  std::vector<int32_t> history = Prompt(20, 7);
  history.push_back(prefill.next().token_id());
  v1::DecodeResponse decoded;
  ASSERT_TRUE(Decode(prefill.sequence_id(), &decoded).ok());
  EXPECT_EQ(decoded.length(), 21);
  EXPECT_EQ(decoded.next().token_id(), ReferenceGreedy(history, 1)[0]);
}

}  // namespace
}  // namespace llm::service
