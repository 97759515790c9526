// Text in, text out through the real gRPC service and the default model (models/default): prompts
// as text, streamed text deltas, stop strings, Tokenize/Detokenize, and greedy output against
// Hugging Face transformers (tests/fixtures/text/default_model_greedy.json).
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "llm/v1/llm.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "server/engine/engine.h"
#include "server/model/checkpoint.h"
#include "server/model/transformer.h"
#include "server/service/grpc_server.h"
#include "server/text/tokenizer.h"

namespace llm::service {
namespace {

const std::filesystem::path kSourceDir = LLM_SOURCE_DIR;
const std::filesystem::path kDefaultModel = kSourceDir / "models/default";

// The real server wiring on a model directory, with its tokenizer when it has one.
class TextServer {
 public:
  explicit TextServer(const std::filesystem::path& model_dir) {
    checkpoint_ = *Checkpoint::Open(model_dir);
    if (std::filesystem::exists(model_dir / "tokenizer.model")) {
      tokenizer_ = *Tokenizer::Load(model_dir / "tokenizer.model");
    }
    backend_ = CreateCpuBackend(2);
    engine::EngineOptions options;
    std::unique_ptr<Transformer> model = *Transformer::Create(
        *checkpoint_, *backend_,
        {.kv_num_blocks = 128, .kv_block_size = 16, .max_batch_tokens = options.max_batch_tokens,
         .max_batch_sequences = options.max_running_sequences});
    engine_ = *engine::Engine::Create(std::move(model), options);
    EXPECT_TRUE(engine_->Warmup().ok());
    server_ = *GrpcServer::Start("127.0.0.1:0");
    engine_->Start();
    server_->AttachEngine(engine_.get(), model_dir.string(), tokenizer_.get());
    stub_ = v1::LlmService::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials()));
  }
  ~TextServer() {
    server_->Drain(absl::ZeroDuration());
    server_.reset();
    engine_.reset();
  }
  v1::LlmService::Stub& stub() { return *stub_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  engine::Engine& engine() { return *engine_; }

 private:
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<GrpcServer> server_;
  std::unique_ptr<v1::LlmService::Stub> stub_;
};

struct GenerateResult {
  grpc::Status status;
  std::vector<int32_t> ids;
  std::string text;  // token deltas then the final message's text
  v1::GenerateFinished finished;
};

GenerateResult Generate(v1::LlmService::Stub& stub, const v1::GenerateRequest& request) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub.Generate(&context, request);
  GenerateResult result;
  v1::GenerateResponse message;
  while (reader->Read(&message)) {
    if (message.has_token()) {
      result.ids.push_back(message.token().token_id());
      result.text += message.token().text();
    } else if (message.has_finished()) {
      result.finished = message.finished();
      result.text += message.text();
    }
  }
  result.status = reader->Finish();
  return result;
}

bool KvBackToZero(engine::Engine& engine) {
  for (int i = 0; i < 2000; ++i) {
    if (engine.stats().kv_blocks_used == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

class TextServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new TextServer(kDefaultModel); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static TextServer* server_;
};
TextServer* TextServiceTest::server_ = nullptr;

TEST_F(TextServiceTest, GreedyTextMatchesHuggingFaceTransformers) {
  std::ifstream in(kSourceDir / "tests/fixtures/text/default_model_greedy.json");
  const nlohmann::json reference = nlohmann::json::parse(in);
  ASSERT_GE(reference["cases"].size(), 3u);
  for (const auto& c : reference["cases"]) {
    v1::GenerateRequest request;
    request.set_text(c["prompt"].get<std::string>());
    const auto want_ids = c["greedy_ids"].get<std::vector<int32_t>>();
    request.set_max_tokens(static_cast<int32_t>(want_ids.size()));
    request.set_ignore_eos(false);
    const GenerateResult result = Generate(server_->stub(), request);
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_EQ(result.finished.prompt_tokens(),
              static_cast<int32_t>(c["prompt_ids"].size()));  // BOS + the tokenizer's ids
    EXPECT_EQ(result.ids, want_ids) << "prompt: " << c["prompt"];
    EXPECT_EQ(result.text, c["greedy_text"].get<std::string>());
  }
}

TEST_F(TextServiceTest, TextPromptGivesTheSameTokensAsItsIds) {
  const std::string prompt = "Q: What is a computer?\nA:";
  std::vector<int32_t> ids = *server_->tokenizer().Encode(prompt, /*add_bos=*/true);
  v1::GenerateRequest by_text, by_ids;
  by_text.set_text(prompt);
  by_ids.mutable_tokens()->mutable_ids()->Add(ids.begin(), ids.end());
  for (auto* request : {&by_text, &by_ids}) {
    request->set_max_tokens(12);
    request->mutable_sampling()->set_temperature(0.9f);
    request->mutable_sampling()->set_seed(1234);
  }
  const GenerateResult a = Generate(server_->stub(), by_text);
  const GenerateResult b = Generate(server_->stub(), by_ids);
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.text, b.text);
  EXPECT_EQ(a.finished.prompt_tokens(), static_cast<int32_t>(ids.size()));
}

TEST_F(TextServiceTest, StreamedTextIsTheDecodeOfTheStreamedIds) {
  v1::GenerateRequest request;
  request.set_text("Love is");
  request.set_max_tokens(40);
  request.mutable_sampling()->set_temperature(1.0f);
  request.mutable_sampling()->set_seed(99);
  const GenerateResult result = Generate(server_->stub(), request);
  ASSERT_TRUE(result.status.ok());
  std::vector<int32_t> prompt = *server_->tokenizer().Encode("Love is", false);
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), result.ids.begin(), result.ids.end());
  const std::string expected =
      server_->tokenizer().Decode(all)->substr(server_->tokenizer().Decode(prompt)->size());
  EXPECT_EQ(result.text, expected);
}

TEST_F(TextServiceTest, StopStringEndsTheStreamJustBeforeIt) {
  // The greedy continuation of this prompt is known (see the HF reference); stop in its middle.
  v1::GenerateRequest request;
  request.set_text("The meaning of life is");
  request.set_max_tokens(32);
  const GenerateResult full = Generate(server_->stub(), request);
  ASSERT_TRUE(full.status.ok());
  const size_t newline = full.text.find('\n');
  ASSERT_NE(newline, std::string::npos) << full.text;
  const std::string stop = full.text.substr(newline, 4);  // "\nyou", spans pieces

  request.add_stop_strings("never appears");
  request.add_stop_strings(stop);
  const GenerateResult stopped = Generate(server_->stub(), request);
  ASSERT_TRUE(stopped.status.ok()) << stopped.status.error_message();
  EXPECT_EQ(stopped.finished.reason(), v1::FINISH_REASON_STOP_STRING);
  EXPECT_EQ(stopped.text, full.text.substr(0, newline));
  EXPECT_LT(stopped.ids.size(), full.ids.size());
  EXPECT_EQ(stopped.finished.completion_tokens(), static_cast<int32_t>(stopped.ids.size()));
  EXPECT_TRUE(KvBackToZero(server_->engine()));
}

TEST_F(TextServiceTest, PrefillWithTextThenDecodeContinuesLikeGenerate) {
  v1::GenerateRequest generate;
  generate.set_text("A computer");
  generate.set_max_tokens(6);
  const GenerateResult reference = Generate(server_->stub(), generate);
  ASSERT_TRUE(reference.status.ok());

  grpc::ClientContext prefill_context;
  v1::PrefillRequest prefill;
  prefill.set_text("A computer");
  v1::PrefillResponse prefilled;
  ASSERT_TRUE(server_->stub().Prefill(&prefill_context, prefill, &prefilled).ok());
  std::vector<int32_t> ids = {prefilled.next().token_id()};
  for (int i = 1; i < 6; ++i) {
    grpc::ClientContext context;
    v1::DecodeRequest decode;
    decode.set_sequence_id(prefilled.sequence_id());
    v1::DecodeResponse decoded;
    ASSERT_TRUE(server_->stub().Decode(&context, decode, &decoded).ok());
    ids.push_back(decoded.next().token_id());
  }
  EXPECT_EQ(ids, reference.ids);
  grpc::ClientContext release_context;
  v1::ReleaseRequest release;
  release.set_sequence_id(prefilled.sequence_id());
  v1::ReleaseResponse released;
  ASSERT_TRUE(server_->stub().Release(&release_context, release, &released).ok());
  EXPECT_TRUE(KvBackToZero(server_->engine()));
}

TEST_F(TextServiceTest, TokenizeAndDetokenizeMatchTheTokenizer) {
  const std::string text = "caf\xC3\xA9 and \xF0\x9F\x98\x80\n\t-- Someone";
  grpc::ClientContext context;
  v1::TokenizeRequest request;
  request.set_text(text);
  request.set_add_bos(true);
  v1::TokenizeResponse response;
  ASSERT_TRUE(server_->stub().Tokenize(&context, request, &response).ok());
  const std::vector<int32_t> ids(response.ids().begin(), response.ids().end());
  EXPECT_EQ(ids, *server_->tokenizer().Encode(text, /*add_bos=*/true));

  grpc::ClientContext detokenize_context;
  v1::DetokenizeRequest detokenize;
  detokenize.mutable_ids()->Add(ids.begin() + 1, ids.end());
  v1::DetokenizeResponse detokenized;
  ASSERT_TRUE(server_->stub().Detokenize(&detokenize_context, detokenize, &detokenized).ok());
  EXPECT_EQ(detokenized.text(), text);

  grpc::ClientContext bad_context;
  v1::DetokenizeRequest bad;
  bad.add_ids(-3);
  EXPECT_EQ(server_->stub().Detokenize(&bad_context, bad, &detokenized).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(TextServiceTest, EmptyTextPromptIsInvalid) {
  v1::GenerateRequest request;
  request.set_text("");
  const GenerateResult result = Generate(server_->stub(), request);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(result.status.error_message().find("empty"), std::string::npos);
}

TEST(TextWithoutTokenizerTest, TextFieldsFailWithFailedPreconditionNamingTheFix) {
  TextServer server(kSourceDir / "tests/fixtures/hf/llama_gqa");
  v1::GenerateRequest request;
  request.set_text("hello");
  const GenerateResult result = Generate(server.stub(), request);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(result.status.error_message().find("token ids"), std::string::npos);

  v1::GenerateRequest with_stop;
  with_stop.mutable_tokens()->add_ids(1);
  with_stop.add_stop_strings("x");
  EXPECT_EQ(Generate(server.stub(), with_stop).status.error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  grpc::ClientContext context;
  v1::GetModelInfoRequest info_request;
  v1::ModelInfo info;
  ASSERT_TRUE(server.stub().GetModelInfo(&context, info_request, &info).ok());
  EXPECT_FALSE(info.has_tokenizer());
}

}  // namespace
}  // namespace llm::service
