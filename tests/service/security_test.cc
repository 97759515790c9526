// Security of the gRPC surface: API keys (missing, wrong, right, either header; constant-time
// matching; loading), sequence ownership between keys, per-client and per-request limits, message
// size, TLS and mutual TLS with a throwaway PKI made by the openssl CLI.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "client/secure_channel.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "server/service/api_keys.h"
#include "server/service/tls_config.h"
#include "tests/service/test_certificates.h"
#include "tests/service/test_server.h"

namespace llm::service {
namespace {

using ::llm::service::testing::Prompt;
using ::llm::service::testing::SetDeadline;
using ::llm::service::testing::TestServer;
using ::llm::service::testing::TestServerSetup;
using ::testing::HasSubstr;

constexpr char kKeyA[] = "key-a-0123456789abcdef";
constexpr char kKeyB[] = "key-b-fedcba9876543210";

std::filesystem::path TempDir(const std::string& name) {
  // One directory per process: ctest runs each test in its own process, two at a time, and a
  // shared name let one test's set-up delete the certificates another was reading.
  std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / (name + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

GrpcServerOptions WithKeys() {
  GrpcServerOptions options;
  options.access.api_keys = *ApiKeySet::Create({kKeyA, kKeyB});
  return options;
}

std::shared_ptr<grpc::Channel> Channel(const TestServer& server, const std::string& key) {
  return *client::MakeChannel(server.address(), {.api_key = key});
}

grpc::Status Info(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::ClientContext context;
  SetDeadline(context);
  v1::ModelInfo info;
  return v1::LlmService::NewStub(channel)->GetModelInfo(&context, {}, &info);
}

grpc::Status Prefill(const std::shared_ptr<grpc::Channel>& channel, std::vector<int32_t> tokens,
                     v1::PrefillResponse* response) {
  grpc::ClientContext context;
  SetDeadline(context);
  v1::PrefillRequest request;
  for (int32_t token : tokens) request.mutable_tokens()->add_ids(token);
  return v1::LlmService::NewStub(channel)->Prefill(&context, request, response);
}

grpc::Status Decode(const std::shared_ptr<grpc::Channel>& channel, uint64_t id) {
  grpc::ClientContext context;
  SetDeadline(context);
  v1::DecodeRequest request;
  request.set_sequence_id(id);
  v1::DecodeResponse response;
  return v1::LlmService::NewStub(channel)->Decode(&context, request, &response);
}

grpc::Status Release(const std::shared_ptr<grpc::Channel>& channel, uint64_t id) {
  grpc::ClientContext context;
  SetDeadline(context);
  v1::ReleaseRequest request;
  request.set_sequence_id(id);
  v1::ReleaseResponse response;
  return v1::LlmService::NewStub(channel)->Release(&context, request, &response);
}

grpc::Status Generate(const std::shared_ptr<grpc::Channel>& channel,
                      const v1::GenerateRequest& request, int* tokens = nullptr) {
  grpc::ClientContext context;
  SetDeadline(context);
  auto reader = v1::LlmService::NewStub(channel)->Generate(&context, request);
  v1::GenerateResponse message;
  int count = 0;
  while (reader->Read(&message)) count += message.has_token() ? 1 : 0;
  if (tokens != nullptr) *tokens = count;
  return reader->Finish();
}

v1::GenerateRequest GenerateRequestOf(int32_t prompt_length, int32_t max_tokens) {
  v1::GenerateRequest request;
  for (int32_t token : Prompt(prompt_length, 3)) request.mutable_tokens()->add_ids(token);
  request.set_max_tokens(max_tokens);
  request.set_ignore_eos(true);
  return request;
}

grpc::health::v1::HealthCheckResponse::ServingStatus Health(
    const std::shared_ptr<grpc::Channel>& channel, grpc::Status* status) {
  grpc::ClientContext context;
  SetDeadline(context, std::chrono::seconds(5));
  grpc::health::v1::HealthCheckResponse response;
  *status = grpc::health::v1::Health::NewStub(channel)->Check(&context, {}, &response);
  return response.status();
}

TEST(ApiKeysTest, ConstantTimeEqualsComparesWholeStrings) {
  EXPECT_TRUE(ConstantTimeEquals("abcdef", "abcdef"));
  EXPECT_FALSE(ConstantTimeEquals("abcdeg", "abcdef"));
  EXPECT_FALSE(ConstantTimeEquals("abcde", "abcdef"));
  EXPECT_FALSE(ConstantTimeEquals("abcdefabcdef", "abcdef"));  // a repeat of the key is not it
  EXPECT_FALSE(ConstantTimeEquals("", "abcdef"));
  EXPECT_FALSE(ConstantTimeEquals("abcdef", ""));
}

TEST(ApiKeysTest, MatchFindsTheKeyIndexAndRejectsEverythingElse) {
  ApiKeySet keys = *ApiKeySet::Create({kKeyA, kKeyB});
  EXPECT_EQ(keys.Match(kKeyA), 0);
  EXPECT_EQ(keys.Match(kKeyB), 1);
  EXPECT_EQ(keys.Match(""), -1);
  EXPECT_EQ(keys.Match(std::string(kKeyA) + "x"), -1);
  EXPECT_EQ(keys.Match(std::string(kKeyA).substr(1)), -1);
}

TEST(ApiKeysTest, ShortOrUnprintableKeysAreRefusedWithTheReason) {
  absl::StatusOr<ApiKeySet> short_key = ApiKeySet::Create({"short"});
  ASSERT_FALSE(short_key.ok());
  EXPECT_THAT(short_key.status().message(), HasSubstr("at least 16"));
  EXPECT_FALSE(ApiKeySet::Create({"has a space in it somewhere"}).ok());
}

TEST(ApiKeysTest, FileSkipsCommentsAndBlankLinesAndNamesAMissingPath) {
  const std::filesystem::path dir = TempDir("api_keys_file");
  std::ofstream(dir / "keys") << "# operators' keys\n\n  " << kKeyA << "  \n" << kKeyB << "\n";
  absl::StatusOr<ApiKeySet> keys = ApiKeySet::Load((dir / "keys").string(), "");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys->size(), 2u);
  EXPECT_EQ(keys->Match(kKeyA), 0);
  absl::StatusOr<ApiKeySet> merged =
      ApiKeySet::Load((dir / "keys").string(), "key-c-from-the-environment");
  ASSERT_TRUE(merged.ok());
  EXPECT_EQ(merged->size(), 3u);
  absl::StatusOr<ApiKeySet> missing = ApiKeySet::Load((dir / "nope").string(), "");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr((dir / "nope").string()));
  std::ofstream(dir / "empty") << "# nothing\n";
  EXPECT_FALSE(ApiKeySet::Load((dir / "empty").string(), "").ok());
}

TEST(SecurityTest, WithApiKeysEveryLlmCallNeedsAValidKeyButHealthStaysOpen) {
  TestServer server({.server = WithKeys()});
  grpc::Status status = Info(server.PlaintextChannel());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(status.error_message(), HasSubstr("authorization: Bearer"));
  status = Info(Channel(server, "wrong-key-0123456789"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(status.error_message(), HasSubstr("not valid"));
  v1::PrefillResponse prefill;
  EXPECT_EQ(Prefill(server.PlaintextChannel(), {1, 2, 3}, &prefill).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Generate(server.PlaintextChannel(), GenerateRequestOf(4, 2)).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Decode(server.PlaintextChannel(), 1).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Release(server.PlaintextChannel(), 1).error_code(), grpc::StatusCode::UNAUTHENTICATED);

  EXPECT_TRUE(Info(Channel(server, kKeyA)).ok());
  EXPECT_TRUE(Generate(Channel(server, kKeyB), GenerateRequestOf(4, 2)).ok());
  {  // The x-api-key header works as well; a Basic authorization header does not.
    grpc::ClientContext context;
    SetDeadline(context);
    context.AddMetadata("x-api-key", kKeyA);
    v1::ModelInfo info;
    EXPECT_TRUE(
        v1::LlmService::NewStub(server.PlaintextChannel())->GetModelInfo(&context, {}, &info).ok());
    grpc::ClientContext basic;
    SetDeadline(basic);
    basic.AddMetadata("authorization", std::string("Basic ") + kKeyA);
    EXPECT_EQ(v1::LlmService::NewStub(server.PlaintextChannel())
                  ->GetModelInfo(&basic, {}, &info)
                  .error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  grpc::Status health_status;
  EXPECT_EQ(Health(server.PlaintextChannel(), &health_status),
            grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_TRUE(health_status.ok()) << health_status.error_message();
  EXPECT_TRUE(server.Idle());
}

TEST(SecurityTest, AKeyCannotUseOrReleaseAnotherKeysSequence) {
  TestServer server({.server = WithKeys()});
  auto alice = Channel(server, kKeyA);
  auto bob = Channel(server, kKeyB);
  v1::PrefillResponse prefill;
  ASSERT_TRUE(Prefill(alice, Prompt(10, 1), &prefill).ok());
  ASSERT_TRUE(
      testing::Eventually([&] { return server.server().access_guard().owned_sequences() == 1; }));
  grpc::Status status = Decode(bob, prefill.sequence_id());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(), HasSubstr("another API key"));
  EXPECT_EQ(Release(bob, prefill.sequence_id()).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::PrefillRequest extend;
    extend.set_sequence_id(prefill.sequence_id());
    extend.mutable_tokens()->add_ids(5);
    v1::PrefillResponse response;
    EXPECT_EQ(v1::LlmService::NewStub(bob)->Prefill(&context, extend, &response).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  EXPECT_TRUE(Decode(alice, prefill.sequence_id()).ok());
  EXPECT_TRUE(Release(alice, prefill.sequence_id()).ok());
  EXPECT_TRUE(
      testing::Eventually([&] { return server.server().access_guard().owned_sequences() == 0; }));
  EXPECT_TRUE(server.Idle());
}

TEST(SecurityTest, RequestsInFlightPerClientAreLimited) {
  GrpcServerOptions options = WithKeys();
  options.access.max_requests_per_client = 1;
  TestServer server({.engine = {.max_batch_tokens = 4}, .server = std::move(options)});
  auto alice = Channel(server, kKeyA);
  // A long stream holds alice's only slot.
  grpc::ClientContext long_context;
  SetDeadline(long_context);
  auto long_stream =
      v1::LlmService::NewStub(alice)->Generate(&long_context, GenerateRequestOf(8, 400));
  v1::GenerateResponse message;
  ASSERT_TRUE(long_stream->Read(&message));
  grpc::Status status = Generate(alice, GenerateRequestOf(4, 2));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("--max_requests_per_client"));
  v1::PrefillResponse prefill;
  EXPECT_EQ(Prefill(alice, {1, 2}, &prefill).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(Info(alice).ok()) << "metadata calls take no slot";
  // Another key has its own budget.
  EXPECT_TRUE(Generate(Channel(server, kKeyB), GenerateRequestOf(4, 2)).ok());
  long_context.TryCancel();
  while (long_stream->Read(&message)) {
  }
  EXPECT_EQ(long_stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The slot comes back when the call is over.
  ASSERT_TRUE(testing::Eventually(
      [&] { return server.server().access_guard().InFlight("api-key-0") == 0; }));
  EXPECT_TRUE(Generate(alice, GenerateRequestOf(4, 2)).ok());
  EXPECT_TRUE(server.Idle());
}

TEST(SecurityTest, SequencesHeldPerClientAreLimitedAndReleasedOrExpiredOnesCountNoMore) {
  GrpcServerOptions options;
  options.access.max_sequences_per_client = 2;
  TestServer server(
      {.engine = {.sequence_ttl = absl::Milliseconds(300)}, .server = std::move(options)});
  auto channel = server.PlaintextChannel();
  v1::PrefillResponse first, second, third;
  ASSERT_TRUE(Prefill(channel, {1, 2}, &first).ok());
  ASSERT_TRUE(Prefill(channel, {1, 3}, &second).ok());
  ASSERT_TRUE(
      testing::Eventually([&] { return server.server().access_guard().owned_sequences() == 2; }));
  grpc::Status status = Prefill(channel, {1, 4}, &third);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("--max_sequences_per_client"));
  // Extending a held sequence and Generate streams are not new held sequences.
  {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::PrefillRequest extend;
    extend.set_sequence_id(first.sequence_id());
    extend.mutable_tokens()->add_ids(5);
    v1::PrefillResponse extended;
    EXPECT_TRUE(v1::LlmService::NewStub(channel)->Prefill(&context, extend, &extended).ok());
  }
  EXPECT_TRUE(Generate(channel, GenerateRequestOf(4, 2)).ok());
  ASSERT_TRUE(Release(channel, first.sequence_id()).ok());
  ASSERT_TRUE(
      testing::Eventually([&] { return server.server().access_guard().owned_sequences() == 1; }));
  ASSERT_TRUE(Prefill(channel, {1, 4}, &third).ok());
  // Both held sequences expire; the first call that finds one gone (NOT_FOUND) frees its count.
  ASSERT_TRUE(testing::Eventually([&] { return server.engine().stats().kv_blocks_used == 0; }));
  EXPECT_EQ(Decode(channel, second.sequence_id()).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Decode(channel, third.sequence_id()).error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(
      testing::Eventually([&] { return server.server().access_guard().owned_sequences() == 0; }));
  EXPECT_TRUE(Prefill(channel, {1, 5}, &first).ok());
}

TEST(SecurityTest, PromptAndMaxTokensLimitsNameTheFlag) {
  GrpcServerOptions options;
  options.access.max_prompt_tokens = 32;
  options.access.max_tokens_limit = 50;
  TestServer server({.server = std::move(options)});
  auto channel = server.PlaintextChannel();
  grpc::Status status = Generate(channel, GenerateRequestOf(33, 4));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("--max_prompt_tokens"));
  v1::PrefillResponse prefill;
  status = Prefill(channel, Prompt(40, 1), &prefill);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("--max_prompt_tokens"));
  status = Generate(channel, GenerateRequestOf(8, 51));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("--max_tokens_limit"));
  int tokens = 0;
  EXPECT_TRUE(Generate(channel, GenerateRequestOf(32, 50), &tokens).ok());
  EXPECT_EQ(tokens, 50);
  EXPECT_TRUE(server.Idle());
}

TEST(SecurityTest, OversizedMessagesAreResourceExhausted) {
  GrpcServerOptions options;
  options.max_message_bytes = 1024;
  TestServer server({.server = std::move(options)});
  v1::PrefillResponse prefill;
  grpc::Status status =
      Prefill(server.PlaintextChannel(), std::vector<int32_t>(2000, 200), &prefill);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("larger than max"));
  EXPECT_TRUE(Prefill(server.PlaintextChannel(), {1, 2, 3}, &prefill).ok());
}

TEST(TlsConfigTest, BadSettingsNameTheFlag) {
  EXPECT_TRUE(MakeServerCredentials({}).ok());
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> half =
      MakeServerCredentials({.cert_path = "x.pem"});
  ASSERT_FALSE(half.ok());
  EXPECT_THAT(half.status().message(), HasSubstr("--tls_key"));
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> missing = MakeServerCredentials(
      {.cert_path = "/nonexistent/cert.pem", .key_path = "/nonexistent/key.pem"});
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/cert.pem"));
  const std::filesystem::path dir = TempDir("tls_not_pem");
  std::ofstream(dir / "cert.der") << "\x30\x82 not pem";
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> not_pem = MakeServerCredentials(
      {.cert_path = (dir / "cert.der").string(), .key_path = (dir / "cert.der").string()});
  ASSERT_FALSE(not_pem.ok());
  EXPECT_THAT(not_pem.status().message(), HasSubstr("not PEM"));
  EXPECT_FALSE(MakeServerCredentials({.client_ca_path = "ca.pem"}).ok());
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!llm::testing::HaveOpenssl())
      GTEST_SKIP() << "the openssl CLI is not installed (apt-get install openssl)";
    const std::filesystem::path dir = TempDir("tls_pki");
    ASSERT_TRUE(llm::testing::MakeTestCertificates(dir, &certs_))
        << llm::testing::ReadTextFile(dir / "openssl.log");
  }
  GrpcServerOptions TlsOptions(bool mutual) {
    GrpcServerOptions options;
    options.credentials =
        *MakeServerCredentials({.cert_path = certs_.server_cert().string(),
                                .key_path = certs_.server_key().string(),
                                .client_ca_path = mutual ? certs_.ca().string() : ""});
    return options;
  }
  llm::testing::TestCertificates certs_;
};

TEST_F(TlsTest, TlsServerTalksToClientsThatTrustItsCaOnly) {
  GrpcServerOptions options = TlsOptions(/*mutual=*/false);
  options.access.api_keys = *ApiKeySet::Create({kKeyA});
  TestServer server({.server = std::move(options)});
  auto trusted = *client::MakeChannel(server.address(),
                                      {.tls_ca_path = certs_.ca().string(), .api_key = kKeyA});
  EXPECT_TRUE(Info(trusted).ok());
  int tokens = 0;
  EXPECT_TRUE(Generate(trusted, GenerateRequestOf(6, 5), &tokens).ok());
  EXPECT_EQ(tokens, 5);
  // The name in the certificate is checked: "localhost" is in it, so an override to it works.
  auto by_name = *client::MakeChannel(
      server.address(),
      {.tls_ca_path = certs_.ca().string(), .tls_server_name = "localhost", .api_key = kKeyA});
  EXPECT_TRUE(Info(by_name).ok());
  auto wrong_name = *client::MakeChannel(
      server.address(),
      {.tls_ca_path = certs_.ca().string(), .tls_server_name = "evil.example", .api_key = kKeyA});
  EXPECT_EQ(Info(wrong_name).error_code(), grpc::StatusCode::UNAVAILABLE);
  auto untrusted = *client::MakeChannel(
      server.address(), {.tls_ca_path = certs_.other_ca().string(), .api_key = kKeyA});
  EXPECT_EQ(Info(untrusted).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Info(Channel(server, kKeyA)).error_code(), grpc::StatusCode::UNAVAILABLE)
      << "a plaintext client must not get through to a TLS port";
  // TLS does not replace the key.
  auto no_key = *client::MakeChannel(server.address(), {.tls_ca_path = certs_.ca().string()});
  EXPECT_EQ(Info(no_key).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(TlsTest, MutualTlsRequiresAClientCertificateFromTheCa) {
  TestServer server({.server = TlsOptions(/*mutual=*/true)});
  auto with_cert =
      *client::MakeChannel(server.address(), {.tls_ca_path = certs_.ca().string(),
                                              .tls_cert_path = certs_.client_cert().string(),
                                              .tls_key_path = certs_.client_key().string()});
  EXPECT_TRUE(Info(with_cert).ok());
  auto without_cert = *client::MakeChannel(server.address(), {.tls_ca_path = certs_.ca().string()});
  EXPECT_EQ(Info(without_cert).error_code(), grpc::StatusCode::UNAVAILABLE);
  // A certificate the server's CA did not sign (the server's own key pair, re-signed by no one it
  // trusts) is refused too: here, the other CA's self-signed certificate.
  const std::filesystem::path dir = certs_.dir;
  auto foreign =
      *client::MakeChannel(server.address(), {.tls_ca_path = certs_.ca().string(),
                                              .tls_cert_path = certs_.other_ca().string(),
                                              .tls_key_path = (dir / "other_ca.key").string()});
  EXPECT_EQ(Info(foreign).error_code(), grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace llm::service
