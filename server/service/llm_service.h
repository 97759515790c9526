// The llm.v1.LlmService implementation: thin gRPC callback handlers that convert, validate through
// the engine and enqueue. They never run the model; replies come back on the engine thread.
#pragma once

#include <atomic>
#include <string>

#include "absl/time/time.h"

#include "llm/v1/llm.grpc.pb.h"
#include "server/engine/engine.h"
#include "server/text/tokenizer.h"

namespace llm::service {

class LlmServiceImpl final : public v1::LlmService::CallbackService {
 public:
  LlmServiceImpl() = default;

  // Until an engine is attached (model loading) every RPC answers UNAVAILABLE. The engine (and the
  // tokenizer, when the checkpoint has one; nullptr otherwise) must stay alive until the gRPC server
  // has shut down.
  void AttachEngine(engine::Engine* engine, std::string model_path,
                    const Tokenizer* tokenizer = nullptr);
  // Returns once no call is in flight (every reactor has seen OnDone) or at `deadline`.
  void WaitForCalls(absl::Time deadline) const;

  grpc::ServerUnaryReactor* Prefill(grpc::CallbackServerContext* context,
                                    const v1::PrefillRequest* request,
                                    v1::PrefillResponse* response) override;
  grpc::ServerUnaryReactor* Decode(grpc::CallbackServerContext* context,
                                   const v1::DecodeRequest* request,
                                   v1::DecodeResponse* response) override;
  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* context,
                                    const v1::ReleaseRequest* request,
                                    v1::ReleaseResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;

 private:
  // Token ids of a text prompt: BOS (when the model has one) then the tokenizer's ids. Errors when
  // the model has no tokenizer or the text is empty.
  absl::StatusOr<std::vector<int32_t>> TokenizePrompt(const std::string& text) const;
  // A request's text: TokenizePrompt for a new sequence, the bare ids (no BOS) for one it extends.
  absl::StatusOr<std::vector<int32_t>> TokenizeText(const std::string& text, bool continuing) const;

  std::atomic<engine::Engine*> engine_{nullptr};
  std::atomic<int> live_calls_{0};  // reactors between construction and OnDone
  // Written once before the engine pointer is published.
  v1::ModelInfo model_info_;
  const Tokenizer* tokenizer_ = nullptr;
};

}  // namespace llm::service
