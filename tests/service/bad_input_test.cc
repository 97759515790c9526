// The bad-input catalogue (docs/RELIABILITY.md lists the same cases): malformed and hostile
// requests against an in-process server, each answered with its documented status code and message,
// after which the server still serves and every KV block is back.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <future>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"
#include "gtest/gtest.h"
#include "tests/service/test_server.h"

namespace llm::service {
namespace {

using ::llm::service::testing::Eventually;
using ::llm::service::testing::Prompt;
using ::llm::service::testing::SetDeadline;
using ::llm::service::testing::TestServer;
using ::testing::HasSubstr;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

struct Case {
  std::string input;
  grpc::StatusCode expected;
  std::string message;  // substring of the status message
  std::function<grpc::Status()> send;
};

class BadInputTest : public ::testing::Test {
 protected:
  BadInputTest()
      : server_({.engine = {.max_batch_tokens = 64}, .server = {.max_message_bytes = 1 << 20}}),
        stub_(v1::LlmService::NewStub(server_.PlaintextChannel())) {}

  grpc::Status Prefill(const v1::PrefillRequest& request, v1::PrefillResponse* response = nullptr) {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::PrefillResponse ignored;
    return stub_->Prefill(&context, request, response != nullptr ? response : &ignored);
  }
  grpc::Status Decode(const v1::DecodeRequest& request, v1::DecodeResponse* response = nullptr) {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::DecodeResponse ignored;
    return stub_->Decode(&context, request, response != nullptr ? response : &ignored);
  }
  grpc::Status Release(uint64_t id) {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::ReleaseRequest request;
    request.set_sequence_id(id);
    v1::ReleaseResponse response;
    return stub_->Release(&context, request, &response);
  }
  grpc::Status Generate(const v1::GenerateRequest& request, int* tokens = nullptr,
                        std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    grpc::ClientContext context;
    SetDeadline(context, timeout);
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse message;
    int count = 0;
    while (reader->Read(&message)) count += message.has_token() ? 1 : 0;
    if (tokens != nullptr) *tokens = count;
    return reader->Finish();
  }
  static v1::PrefillRequest PrefillOf(std::vector<int32_t> tokens) {
    v1::PrefillRequest request;
    for (int32_t token : tokens) request.mutable_tokens()->add_ids(token);
    return request;
  }
  static v1::GenerateRequest GenerateOf(std::vector<int32_t> tokens, int32_t max_tokens) {
    v1::GenerateRequest request;
    for (int32_t token : tokens) request.mutable_tokens()->add_ids(token);
    request.set_max_tokens(max_tokens);
    request.set_ignore_eos(true);
    return request;
  }
  static v1::PrefillRequest WithSampling(std::function<void(v1::SamplingParams*)> set) {
    v1::PrefillRequest request = PrefillOf({1, 2, 3});
    set(request.mutable_sampling());
    return request;
  }
  bool Healthy() {
    grpc::ClientContext context;
    SetDeadline(context, std::chrono::seconds(5));
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = grpc::health::v1::Health::NewStub(server_.PlaintextChannel())
                              ->Check(&context, {}, &response);
    return status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  }
  // Raw bytes on the gRPC port; true when the server closes the connection within 10 s.
  bool ServerDropsRawBytes(const std::string& bytes) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(server_.port()));
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      close(fd);
      return false;
    }
    timeval timeout{.tv_sec = 10, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    (void)!send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    char buffer[4096];
    bool closed = false;
    while (true) {
      const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        closed = true;  // orderly close or reset
        break;
      }
      if (n < 0) break;  // timed out with the connection still open
    }
    close(fd);
    return closed;
  }
  // A generic unary call with raw request bytes.
  grpc::Status RawUnary(const std::string& method, const std::string& body) {
    grpc::GenericStub generic(server_.PlaintextChannel());
    grpc::ClientContext context;
    SetDeadline(context, std::chrono::seconds(10));
    grpc::Slice slice(body);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    std::promise<grpc::Status> done;
    generic.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                      [&done](grpc::Status status) { done.set_value(status); });
    return done.get_future().get();
  }

  TestServer server_;
  std::unique_ptr<v1::LlmService::Stub> stub_;
};

TEST_F(BadInputTest, EveryCataloguedInputGetsItsDocumentedStatusAndTheServerStaysClean) {
  // A live sequence for the cases that need one, and a released one.
  v1::PrefillResponse live;
  ASSERT_TRUE(Prefill(PrefillOf(Prompt(20, 1)), &live).ok());
  v1::PrefillResponse gone;
  ASSERT_TRUE(Prefill(PrefillOf(Prompt(5, 2)), &gone).ok());
  ASSERT_TRUE(Release(gone.sequence_id()).ok());
  const int32_t baseline_blocks = server_.engine().stats().kv_blocks_used;  // `live` holds 2
  const uint64_t live_id = live.sequence_id();
  const uint64_t gone_id = gone.sequence_id();
  auto decode = [&](uint64_t id, std::optional<int32_t> token = std::nullopt) {
    v1::DecodeRequest request;
    request.set_sequence_id(id);
    if (token.has_value()) request.set_token_id(*token);
    return request;
  };
  using Code = grpc::StatusCode;
  const std::vector<Case> cases = {
      {"Prefill, empty prompt", Code::INVALID_ARGUMENT, "empty",
       [&] { return Prefill(PrefillOf({})); }},
      {"Prefill, negative token id", Code::INVALID_ARGUMENT, "outside the vocabulary",
       [&] {
         return Prefill(PrefillOf({1, -1}));
       }},
      {"Prefill, token id = vocab_size", Code::INVALID_ARGUMENT, "[0, 256)",
       [&] {
         return Prefill(PrefillOf({1, 256}));
       }},
      {"Prefill, token id INT32_MAX", Code::INVALID_ARGUMENT, "outside the vocabulary",
       [&] { return Prefill(PrefillOf({std::numeric_limits<int32_t>::max()})); }},
      {"Prefill, temperature NaN", Code::INVALID_ARGUMENT, "temperature",
       [&] { return Prefill(WithSampling([](auto* s) { s->set_temperature(kNaN); })); }},
      {"Prefill, temperature -1", Code::INVALID_ARGUMENT, "temperature",
       [&] { return Prefill(WithSampling([](auto* s) { s->set_temperature(-1.0f); })); }},
      {"Prefill, temperature +inf", Code::INVALID_ARGUMENT, "temperature",
       [&] { return Prefill(WithSampling([](auto* s) { s->set_temperature(kInf); })); }},
      {"Prefill, top_p 1.5", Code::INVALID_ARGUMENT, "top_p",
       [&] { return Prefill(WithSampling([](auto* s) { s->set_top_p(1.5f); })); }},
      {"Prefill, top_p 0", Code::INVALID_ARGUMENT, "top_p",
       [&] { return Prefill(WithSampling([](auto* s) { s->set_top_p(0.0f); })); }},
      {"Prefill, top_p NaN", Code::INVALID_ARGUMENT, "top_p",
       [&] { return Prefill(WithSampling([](auto* s) { s->set_top_p(kNaN); })); }},
      {"Prefill, top_k -1", Code::INVALID_ARGUMENT, "top_k",
       [&] { return Prefill(WithSampling([](auto* s) { s->set_top_k(-1); })); }},
      {"Prefill, num_top_logprobs 21", Code::INVALID_ARGUMENT, "num_top_logprobs",
       [&] {
         v1::PrefillRequest request = PrefillOf({1, 2});
         request.set_num_top_logprobs(21);
         return Prefill(request);
       }},
      {"Prefill, num_top_logprobs -1", Code::INVALID_ARGUMENT, "num_top_logprobs",
       [&] {
         v1::PrefillRequest request = PrefillOf({1, 2});
         request.set_num_top_logprobs(-1);
         return Prefill(request);
       }},
      {"Prefill, prompt of 513 tokens (> max_position_embeddings)", Code::INVALID_ARGUMENT,
       "max_position_embeddings", [&] { return Prefill(PrefillOf(Prompt(513, 3))); }},
      {"Prefill, huge prompt (200k tokens, under the message limit)", Code::INVALID_ARGUMENT,
       "max_position_embeddings",
       [&] { return Prefill(PrefillOf(std::vector<int32_t>(200000, 5))); }},
      {"Prefill, message over --max_message_bytes (600k ids, ~1.2 MB)", Code::RESOURCE_EXHAUSTED,
       "larger than max", [&] { return Prefill(PrefillOf(std::vector<int32_t>(600000, 200))); }},
      {"Prefill extending an unknown sequence id", Code::NOT_FOUND, "unknown",
       [&] {
         v1::PrefillRequest request = PrefillOf({4});
         request.set_sequence_id(123456789);
         return Prefill(request);
       }},
      {"Prefill extending a released sequence", Code::NOT_FOUND, "unknown",
       [&] {
         v1::PrefillRequest request = PrefillOf({4});
         request.set_sequence_id(gone_id);
         return Prefill(request);
       }},
      {"Prefill extending past max_position_embeddings", Code::INVALID_ARGUMENT,
       "max_position_embeddings",
       [&] {
         v1::PrefillRequest request = PrefillOf(Prompt(500, 4));
         request.set_sequence_id(live_id);
         return Prefill(request);
       }},
      {"Decode, unknown sequence id", Code::NOT_FOUND, "Prefill",
       [&] { return Decode(decode(987654321)); }},
      {"Decode, sequence id UINT64_MAX", Code::NOT_FOUND, "unknown",
       [&] { return Decode(decode(std::numeric_limits<uint64_t>::max())); }},
      {"Decode, released sequence", Code::NOT_FOUND, "released",
       [&] { return Decode(decode(gone_id)); }},
      {"Decode, token_id = vocab_size", Code::INVALID_ARGUMENT, "outside the vocabulary",
       [&] { return Decode(decode(live_id, 256)); }},
      {"Decode, negative token_id", Code::INVALID_ARGUMENT, "outside the vocabulary",
       [&] { return Decode(decode(live_id, -7)); }},
      {"Decode, temperature NaN", Code::INVALID_ARGUMENT, "temperature",
       [&] {
         v1::DecodeRequest request = decode(live_id);
         request.mutable_sampling()->set_temperature(kNaN);
         return Decode(request);
       }},
      {"Decode, num_top_logprobs 1000", Code::INVALID_ARGUMENT, "num_top_logprobs",
       [&] {
         v1::DecodeRequest request = decode(live_id);
         request.set_num_top_logprobs(1000);
         return Decode(request);
       }},
      {"Release, unknown sequence id", Code::NOT_FOUND, "unknown",
       [&] { return Release(55555555); }},
      {"Release, already released", Code::NOT_FOUND, "unknown", [&] { return Release(gone_id); }},
      {"Generate, empty prompt", Code::INVALID_ARGUMENT, "empty",
       [&] { return Generate(GenerateOf({}, 4)); }},
      {"Generate, out-of-vocab prompt id", Code::INVALID_ARGUMENT, "outside the vocabulary",
       [&] {
         return Generate(GenerateOf({1, 9999}, 4));
       }},
      {"Generate, max_tokens 1e9", Code::INVALID_ARGUMENT, "max_position_embeddings",
       [&] {
         return Generate(GenerateOf({1, 2}, 1000000000));
       }},
      {"Generate, max_tokens -1", Code::INVALID_ARGUMENT, "max_tokens",
       [&] {
         return Generate(GenerateOf({1, 2}, -1));
       }},
      {"Generate, temperature NaN", Code::INVALID_ARGUMENT, "temperature",
       [&] {
         v1::GenerateRequest request = GenerateOf({1, 2}, 4);
         request.mutable_sampling()->set_temperature(kNaN);
         return Generate(request);
       }},
      {"Generate, top_p 2", Code::INVALID_ARGUMENT, "top_p",
       [&] {
         v1::GenerateRequest request = GenerateOf({1, 2}, 4);
         request.mutable_sampling()->set_top_p(2.0f);
         return Generate(request);
       }},
      {"Generate, max_tokens 0 (= --default_max_tokens, 16 tokens)", Code::OK, "",
       [&] {
         int tokens = 0;
         grpc::Status status = Generate(GenerateOf({1, 2, 3}, 0), &tokens);
         EXPECT_EQ(tokens, 16);
         return status;
       }},
      {"Generate, stop_token_ids outside the vocabulary (never match; ignored)", Code::OK, "",
       [&] {
         v1::GenerateRequest request = GenerateOf({1, 2, 3}, 3);
         request.add_stop_token_ids(-5);
         request.add_stop_token_ids(1 << 30);
         int tokens = 0;
         grpc::Status status = Generate(request, &tokens);
         EXPECT_EQ(tokens, 3);
         return status;
       }},
      {"Generate, 1 ms deadline on a long generation", Code::DEADLINE_EXCEEDED, "",
       [&] {
         return Generate(GenerateOf(Prompt(8, 5), 400), nullptr, std::chrono::milliseconds(1));
       }},
      {"Undeclared method /llm.v1.LlmService/Nope", Code::UNIMPLEMENTED, "",
       [&] { return RawUnary("/llm.v1.LlmService/Nope", "x"); }},
      {"Prefill body that is not protobuf", Code::UNIMPLEMENTED, "",
       [&] {
         return RawUnary("/llm.v1.LlmService/Prefill", std::string("\xff\xff\xff\xff\x0f", 5));
       }},
  };
  ASSERT_GE(cases.size(), 30u);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.input);
    const grpc::Status status = c.send();
    std::printf("%-70s -> %d %s\n", c.input.c_str(), status.error_code(),
                status.error_message().substr(0, 160).c_str());
    EXPECT_EQ(status.error_code(), c.expected) << c.input << ": " << status.error_message();
    if (!c.message.empty()) {
      EXPECT_THAT(status.error_message(), HasSubstr(c.message)) << c.input;
    }
    ASSERT_TRUE(Healthy()) << "server unhealthy after: " << c.input;
  }
  // Not gRPC at all: random bytes, then an HTTP/1.1 request. The server hangs up and keeps serving.
  std::mt19937 rng(7);
  std::string garbage(65536, '\0');
  for (char& byte : garbage) byte = static_cast<char>(rng());
  EXPECT_TRUE(ServerDropsRawBytes(garbage)) << "garbage bytes on the gRPC port";
  EXPECT_TRUE(ServerDropsRawBytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
      << "HTTP/1.1 on the gRPC port";
  EXPECT_TRUE(ServerDropsRawBytes(std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") +
                                  std::string(100, '\xff')))
      << "an HTTP/2 preface followed by a corrupt frame";
  EXPECT_TRUE(Healthy());

  // The live sequence is intact: decoding continues at the right length.
  v1::DecodeResponse decoded;
  ASSERT_TRUE(Decode(decode(live_id), &decoded).ok());
  EXPECT_EQ(decoded.length(), 21);
  EXPECT_TRUE(server_.Idle(baseline_blocks));
  ASSERT_TRUE(Release(live_id).ok());
  EXPECT_TRUE(server_.Idle(0)) << "KV blocks in use did not return to zero";
}

TEST_F(BadInputTest, ConcurrentDecodesOnOneSequenceEitherRunOrGetFailedPrecondition) {
  v1::PrefillResponse prefill;
  ASSERT_TRUE(Prefill(PrefillOf(Prompt(10, 1)), &prefill).ok());
  constexpr int kRacers = 8;
  std::vector<grpc::Status> statuses(kRacers);
  std::vector<std::thread> racers;
  for (int i = 0; i < kRacers; ++i) {
    racers.emplace_back([&, i] {
      v1::DecodeRequest request;
      request.set_sequence_id(prefill.sequence_id());
      statuses[i] = Decode(request);
    });
  }
  for (std::thread& racer : racers) racer.join();
  int ok = 0;
  for (const grpc::Status& status : statuses) {
    if (status.ok()) {
      ++ok;
    } else {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
          << status.error_message();
      EXPECT_THAT(status.error_message(), HasSubstr("busy"));
    }
  }
  EXPECT_GE(ok, 1);
  // Exactly the successful decodes were appended: nothing half-applied.
  v1::DecodeRequest request;
  request.set_sequence_id(prefill.sequence_id());
  v1::DecodeResponse decoded;
  ASSERT_TRUE(Decode(request, &decoded).ok());
  EXPECT_EQ(decoded.length(), 10 + ok + 1);
  ASSERT_TRUE(Release(prefill.sequence_id()).ok());
  EXPECT_TRUE(server_.Idle());
}

TEST_F(BadInputTest, AClientThatNeverReadsItsStreamDoesNotPinKvOrBlockOthers) {
  // 450 tokens with 20 top log-probs each are ~100 kB of messages: more than the HTTP/2 flow
  // control window, so the server's writes back up while the engine keeps going.
  const int64_t generated_before = server_.engine().stats().generated_tokens_total;
  grpc::ClientContext stalled_context;
  SetDeadline(stalled_context, std::chrono::seconds(120));
  v1::GenerateRequest stalled_request = GenerateOf(Prompt(8, 9), 450);
  stalled_request.set_num_top_logprobs(20);
  auto stalled = stub_->Generate(&stalled_context, stalled_request);
  // The engine finishes the sequence (the stream only queues messages) and frees its blocks.
  EXPECT_TRUE(Eventually(
      [&] { return server_.engine().stats().generated_tokens_total >= generated_before + 450; },
      std::chrono::seconds(60)));
  EXPECT_TRUE(server_.Idle());
  // Others are served meanwhile.
  int tokens = 0;
  EXPECT_TRUE(Generate(GenerateOf(Prompt(6, 2), 5), &tokens).ok());
  EXPECT_EQ(tokens, 5);
  stalled_context.TryCancel();
  v1::GenerateResponse message;
  while (stalled->Read(&message)) {
  }
  stalled->Finish();
  EXPECT_TRUE(Healthy());
  EXPECT_TRUE(server_.Idle());
}

}  // namespace
}  // namespace llm::service
