// RpcMetricsInterceptor on a real gRPC server (loopback) with a scripted LlmService: request
// counts by status code, time to first token, inter-token latency and the replica header.
#include "server/metrics/rpc_metrics_interceptor.h"

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "llm/v1/llm.grpc.pb.h"
#include "prometheus/registry.h"
#include "server/metrics/serving_metrics.h"
#include "server/metrics/text_exposition.h"
#include "tests/deploy/metrics_text.h"

namespace llm::metrics {
namespace {

using ::llm::metrics::testing::SampleValue;
using ::testing::Optional;

constexpr auto kTokenGap = std::chrono::milliseconds(20);

// Generate: three tokens kTokenGap apart, then the finished message. Decode: OK for sequence 1,
// NOT_FOUND otherwise. Prefill: OK at once.
class ScriptedService final : public v1::LlmService::Service {
 public:
  grpc::Status Prefill(grpc::ServerContext*, const v1::PrefillRequest*,
                       v1::PrefillResponse* response) override {
    response->set_sequence_id(1);
    return grpc::Status::OK;
  }
  grpc::Status Decode(grpc::ServerContext*, const v1::DecodeRequest* request,
                      v1::DecodeResponse* response) override {
    if (request->sequence_id() != 1) return {grpc::StatusCode::NOT_FOUND, "no such sequence"};
    response->set_sequence_id(1);
    return grpc::Status::OK;
  }
  grpc::Status Generate(grpc::ServerContext*, const v1::GenerateRequest*,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    for (int i = 0; i < 3; ++i) {
      std::this_thread::sleep_for(kTokenGap);
      v1::GenerateResponse token;
      token.mutable_token()->set_token_id(i);
      token.set_index(i);
      writer->Write(token);
    }
    v1::GenerateResponse finished;
    finished.mutable_finished()->set_reason(v1::FINISH_REASON_LENGTH);
    writer->Write(finished);
    return grpc::Status::OK;
  }
};

TEST(RpcMetricsInterceptorTest, RecordsRequestsTokenTimingAndTagsTheReplica) {
  auto registry = std::make_shared<prometheus::Registry>();
  ServingMetrics metrics(registry);
  ScriptedService service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  builder.experimental().SetInterceptorCreators(
      MakeRpcMetricsInterceptors(metrics, {.replica_id = "replica-a"}));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);

  auto stub = v1::LlmService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext context;
    v1::GenerateRequest request;
    std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
        stub->Generate(&context, request);
    v1::GenerateResponse response;
    int messages = 0;
    while (reader->Read(&response)) ++messages;
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(messages, 4);
    const auto& headers = context.GetServerInitialMetadata();
    auto replica = headers.find(kReplicaHeader);
    ASSERT_NE(replica, headers.end());
    EXPECT_EQ(std::string(replica->second.data(), replica->second.size()), "replica-a");
  }
  {
    grpc::ClientContext context;
    v1::PrefillRequest request;
    v1::PrefillResponse response;
    ASSERT_TRUE(stub->Prefill(&context, request, &response).ok());
  }
  for (uint64_t sequence : {1, 2}) {
    grpc::ClientContext context;
    v1::DecodeRequest request;
    request.set_sequence_id(sequence);
    v1::DecodeResponse response;
    stub->Decode(&context, request, &response);
  }
  server->Shutdown();

  const std::string text = SerializeToText({registry});
  EXPECT_THAT(SampleValue(text, R"(llm_requests_total{code="OK",rpc="Generate"})"), Optional(1.0));
  EXPECT_THAT(SampleValue(text, R"(llm_requests_total{code="OK",rpc="Prefill"})"), Optional(1.0));
  EXPECT_THAT(SampleValue(text, R"(llm_requests_total{code="OK",rpc="Decode"})"), Optional(1.0));
  EXPECT_THAT(SampleValue(text, R"(llm_requests_total{code="NOT_FOUND",rpc="Decode"})"),
              Optional(1.0));
  // Generate's duration covers its three token gaps.
  EXPECT_GE(SampleValue(text, R"(llm_request_duration_seconds_sum{rpc="Generate"})").value_or(0),
            0.055);
  // First tokens: Generate's first token message and Prefill's reply.
  EXPECT_THAT(SampleValue(text, "llm_time_to_first_token_seconds_count"), Optional(2.0));
  // Inter-token: Generate's two later tokens (the finished message is not a token) and the
  // successful Decode; the failed Decode sent no token.
  EXPECT_THAT(SampleValue(text, "llm_inter_token_latency_seconds_count"), Optional(3.0));
  // Two samples are at least kTokenGap; only the Decode one can be below 15 ms.
  EXPECT_THAT(SampleValue(text, R"(llm_inter_token_latency_seconds_bucket{le="0.015"})"),
              Optional(1.0));
}

TEST(RpcShortNameTest, KeepsTheMethodAfterTheLastSlash) {
  EXPECT_EQ(RpcShortName("/llm.v1.LlmService/Generate"), "Generate");
  EXPECT_EQ(RpcShortName("/grpc.health.v1.Health/Check"), "Check");
  EXPECT_EQ(RpcShortName("Bare"), "Bare");
  EXPECT_EQ(RpcShortName(nullptr), "unknown");
}

}  // namespace
}  // namespace llm::metrics
