// gRPC callback handlers for llm.v1.LlmService.
//
// gRPC's callback API owns reactors through their own lifecycle: a reactor is allocated per call
// and deletes itself in OnDone(), after which gRPC never touches it. That is the one place this
// project uses `delete this`; it is the pattern the API prescribes.
#include "server/service/llm_service.h"

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/service/proto_conversion.h"
#include "server/text/text_stream.h"

namespace llm::service {
namespace {

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  // No deadline is reported as the far future; keep absl arithmetic away from overflow.
  if (deadline >= std::chrono::system_clock::now() + std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

grpc::Status NoTokenizer() {
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                      "this model has no tokenizer.model, so text fields cannot be used; send token "
                      "ids instead (GetModelInfo.has_tokenizer tells)");
}

grpc::Status Unavailable() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "the model is still loading (or the server is draining); retry shortly");
}

// Counts a call from its reactor's construction to OnDone (the reactor's destruction), so that a
// drain can wait for every reply to be handed to gRPC (LlmServiceImpl::WaitForCalls).
class LiveCall {
 public:
  explicit LiveCall(std::atomic<int>* live) : live_(live) { live_->fetch_add(1); }
  ~LiveCall() { live_->fetch_sub(1); }
  LiveCall(const LiveCall&) = delete;
  LiveCall& operator=(const LiveCall&) = delete;

 private:
  std::atomic<int>* live_;
};

// A unary call whose cancellation reaches the engine.
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  UnaryCall(engine::Engine* engine, const grpc::CallbackServerContext& context,
            std::atomic<int>* live)
      : engine_(engine), live_(live) {
    control_.deadline = DeadlineOf(context);
  }
  const engine::RequestControl& control() const { return control_; }

  void OnCancel() override {
    control_.cancellation->cancelled.store(true);
    if (engine_ != nullptr) engine_->Wake();
  }
  void OnDone() override { delete this; }

 private:
  engine::Engine* engine_;
  engine::RequestControl control_;
  LiveCall live_;
};

// A Generate stream. The engine pushes tokens from its thread; at most one write is in flight, the
// rest wait in `queue_`, so the engine never blocks on a slow client.
class GenerateCall final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerateCall(engine::Engine* engine, const grpc::CallbackServerContext& context,
               std::atomic<int>* live)
      : engine_(engine), live_(live) {
    control_.deadline = DeadlineOf(context);
  }
  const engine::RequestControl& control() const { return control_; }

  void Push(v1::GenerateResponse message) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (broken_) return;
    queue_.push_back(std::move(message));
    Advance(lock);
  }
  void Complete(grpc::Status status) {
    std::unique_lock<std::mutex> lock(mutex_);
    final_status_ = std::move(status);
    Advance(lock);
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mutex_);
    writing_ = false;
    if (!ok) {
      // The client is gone: stop writing and let the engine free the sequence at its next step.
      broken_ = true;
      queue_.clear();
      control_.cancellation->cancelled.store(true);
      if (engine_ != nullptr) engine_->Wake();
    }
    Advance(lock);
  }
  void OnCancel() override {
    control_.cancellation->cancelled.store(true);
    if (engine_ != nullptr) engine_->Wake();
  }
  void OnDone() override { delete this; }

 private:
  // Starts the next write or the Finish. The gRPC calls happen after unlocking: Finish may lead to
  // OnDone on another thread, which destroys this object and its mutex.
  void Advance(std::unique_lock<std::mutex>& lock) {
    if (writing_ || finished_) return;
    if (!queue_.empty()) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      lock.unlock();
      StartWrite(&current_);
      return;
    }
    if (final_status_.has_value()) {
      finished_ = true;
      grpc::Status status = *final_status_;
      lock.unlock();
      Finish(status);
    }
  }

  engine::Engine* engine_;
  engine::RequestControl control_;
  std::mutex mutex_;
  std::deque<v1::GenerateResponse> queue_;
  v1::GenerateResponse current_;
  bool writing_ = false;
  bool broken_ = false;
  bool finished_ = false;
  std::optional<grpc::Status> final_status_;
  LiveCall live_;
};

// Tokenize/Detokenize: finishes `call` at once (and returns false) while the model loads or when
// the model has no tokenizer.
bool ReadyForTokenizer(engine::Engine* engine, const Tokenizer* tokenizer, UnaryCall* call) {
  if (engine == nullptr) {
    call->Finish(Unavailable());
    return false;
  }
  if (tokenizer == nullptr) {
    call->Finish(NoTokenizer());
    return false;
  }
  return true;
}

// The engine's answer to a Prefill or Decode step: the response's fields, or the step's error.
template <typename Response>
auto StepReply(UnaryCall* call, Response* response) {
  return [call, response](absl::StatusOr<engine::StepOutput> output) {
    if (!output.ok()) return call->Finish(ToGrpcStatus(output.status()));
    response->set_sequence_id(output->sequence_id);
    response->set_length(output->length);
    ToProto(output->token, response->mutable_next());
    call->Finish(grpc::Status::OK);
  };
}

}  // namespace

void LlmServiceImpl::AttachEngine(engine::Engine* engine, std::string model_path,
                                  const Tokenizer* tokenizer) {
  tokenizer_ = tokenizer;
  if (engine != nullptr) {
    model_info_ = BuildModelInfo(*engine, model_path);
    model_info_.set_has_tokenizer(tokenizer != nullptr);
  }
  engine_.store(engine, std::memory_order_release);
}

void LlmServiceImpl::WaitForCalls(absl::Time deadline) const {
  while (live_calls_.load() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
}

absl::StatusOr<std::vector<int32_t>> LlmServiceImpl::TokenizePrompt(const std::string& text) const {
  if (tokenizer_ == nullptr) return absl::FailedPreconditionError(NoTokenizer().error_message());
  if (text.empty()) {
    return absl::InvalidArgumentError("the prompt text is empty; send at least one character");
  }
  auto ids = tokenizer_->Encode(text, /*add_bos=*/false);
  if (!ids.ok()) return ids.status();
  if (model_info_.bos_token_id() >= 0) ids->insert(ids->begin(), model_info_.bos_token_id());
  return ids;
}

absl::StatusOr<std::vector<int32_t>> LlmServiceImpl::TokenizeText(const std::string& text,
                                                                  bool continuing) const {
  if (!continuing) return TokenizePrompt(text);
  // Continuing a sequence: no BOS in the middle of it.
  if (tokenizer_ == nullptr) return absl::FailedPreconditionError(NoTokenizer().error_message());
  return tokenizer_->Encode(text, /*add_bos=*/false);
}

grpc::ServerUnaryReactor* LlmServiceImpl::Prefill(grpc::CallbackServerContext* context,
                                                  const v1::PrefillRequest* request,
                                                  v1::PrefillResponse* response) {
  engine::Engine* engine = engine_.load(std::memory_order_acquire);
  auto* call = new UnaryCall(engine, *context, &live_calls_);
  if (engine == nullptr) {
    call->Finish(Unavailable());
    return call;
  }
  absl::StatusOr<engine::PrefillWork> work =
      PrefillWorkFromProto(*request, [this](const std::string& text, bool continuing) {
        return TokenizeText(text, continuing);
      });
  if (!work.ok()) {
    call->Finish(ToGrpcStatus(work.status()));
    return call;
  }
  work->control = call->control();
  work->done = StepReply(call, response);
  engine->SubmitPrefill(*std::move(work));
  return call;
}

grpc::ServerUnaryReactor* LlmServiceImpl::Decode(grpc::CallbackServerContext* context,
                                                 const v1::DecodeRequest* request,
                                                 v1::DecodeResponse* response) {
  engine::Engine* engine = engine_.load(std::memory_order_acquire);
  auto* call = new UnaryCall(engine, *context, &live_calls_);
  if (engine == nullptr) {
    call->Finish(Unavailable());
    return call;
  }
  engine::DecodeWork work = DecodeWorkFromProto(*request);
  work.control = call->control();
  work.done = StepReply(call, response);
  engine->SubmitDecode(std::move(work));
  return call;
}

grpc::ServerWriteReactor<v1::GenerateResponse>* LlmServiceImpl::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  engine::Engine* engine = engine_.load(std::memory_order_acquire);
  auto* call = new GenerateCall(engine, *context, &live_calls_);
  if (engine == nullptr) {
    call->Complete(Unavailable());
    return call;
  }
  absl::StatusOr<engine::GenerateWork> converted = GenerateWorkFromProto(
      *request,
      [this](const std::string& text, bool continuing) { return TokenizeText(text, continuing); },
      engine->options().default_max_tokens);
  if (!converted.ok()) {
    call->Complete(ToGrpcStatus(converted.status()));
    return call;
  }
  engine::GenerateWork work = *std::move(converted);
  std::vector<std::string> stop_strings(request->stop_strings().begin(),
                                        request->stop_strings().end());
  if (!stop_strings.empty() && tokenizer_ == nullptr) {
    call->Complete(NoTokenizer());
    return call;
  }
  work.control = call->control();

  // Text state of the stream; touched only by the engine's completion thread (on_token, then done).
  struct TextState {
    std::optional<TextStream> stream;
    bool stopped = false;  // a stop string ended the stream; the engine is being told to stop
    int32_t streamed_tokens = 0;
  };
  auto text = std::make_shared<TextState>();
  if (tokenizer_ != nullptr) text->stream.emplace(*tokenizer_, work.tokens, std::move(stop_strings));
  auto cancellation = work.control.cancellation;

  work.on_token = [call, text, cancellation, engine](const SampledToken& token, int32_t index) {
    if (text->stopped) return;  // the engine may run one more step before it sees the stop
    v1::GenerateResponse message;
    ToProto(token, message.mutable_token());
    message.set_index(index);
    ++text->streamed_tokens;
    if (text->stream.has_value()) {
      absl::StatusOr<TextStream::Delta> delta = text->stream->Push(token.token);
      if (delta.ok()) {
        message.mutable_token()->set_text(std::move(delta->text));
        if (delta->stopped) {
          text->stopped = true;
          cancellation->cancelled.store(true);
          engine->Wake();
        }
      }
    }
    call->Push(std::move(message));
  };
  work.done = [call, text](absl::StatusOr<engine::GenerateSummary> summary) {
    // A stop string ends the stream normally even though the engine saw it as a cancellation.
    if (!summary.ok() && !text->stopped) return call->Complete(ToGrpcStatus(summary.status()));
    v1::GenerateResponse message;
    v1::GenerateFinished* finished = message.mutable_finished();
    if (text->stopped) {
      finished->set_reason(v1::FINISH_REASON_STOP_STRING);
      finished->set_prompt_tokens(summary.ok() ? summary->prompt_tokens : 0);
      finished->set_completion_tokens(text->streamed_tokens);
    } else {
      finished->set_reason(ToProto(summary->reason));
      finished->set_prompt_tokens(summary->prompt_tokens);
      finished->set_completion_tokens(summary->completion_tokens);
      if (text->stream.has_value()) message.set_text(text->stream->Finish());
    }
    message.set_index(finished->completion_tokens());
    call->Push(std::move(message));
    call->Complete(grpc::Status::OK);
  };
  engine->SubmitGenerate(std::move(work));
  return call;
}

grpc::ServerUnaryReactor* LlmServiceImpl::Release(grpc::CallbackServerContext* context,
                                                  const v1::ReleaseRequest* request,
                                                  v1::ReleaseResponse* response) {
  engine::Engine* engine = engine_.load(std::memory_order_acquire);
  auto* call = new UnaryCall(engine, *context, &live_calls_);
  if (engine == nullptr) {
    call->Finish(Unavailable());
    return call;
  }
  engine->SubmitRelease(request->sequence_id(), [call, response](absl::StatusOr<int32_t> tokens) {
    if (!tokens.ok()) return call->Finish(ToGrpcStatus(tokens.status()));
    response->set_released_tokens(*tokens);
    call->Finish(grpc::Status::OK);
  });
  return call;
}

grpc::ServerUnaryReactor* LlmServiceImpl::GetModelInfo(grpc::CallbackServerContext* context,
                                                       const v1::GetModelInfoRequest* /*request*/,
                                                       v1::ModelInfo* response) {
  engine::Engine* engine = engine_.load(std::memory_order_acquire);
  auto* call = new UnaryCall(engine, *context, &live_calls_);
  if (engine == nullptr) {
    call->Finish(Unavailable());
    return call;
  }
  *response = model_info_;
  call->Finish(grpc::Status::OK);
  return call;
}

grpc::ServerUnaryReactor* LlmServiceImpl::Tokenize(grpc::CallbackServerContext* context,
                                                   const v1::TokenizeRequest* request,
                                                   v1::TokenizeResponse* response) {
  engine::Engine* engine = engine_.load(std::memory_order_acquire);
  auto* call = new UnaryCall(engine, *context, &live_calls_);
  if (!ReadyForTokenizer(engine, tokenizer_, call)) return call;
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(request->text(), false);
  if (!ids.ok()) {
    call->Finish(ToGrpcStatus(ids.status()));
    return call;
  }
  if (request->add_bos() && model_info_.bos_token_id() >= 0) {
    response->add_ids(model_info_.bos_token_id());
  }
  response->mutable_ids()->Add(ids->begin(), ids->end());
  call->Finish(grpc::Status::OK);
  return call;
}

grpc::ServerUnaryReactor* LlmServiceImpl::Detokenize(grpc::CallbackServerContext* context,
                                                     const v1::DetokenizeRequest* request,
                                                     v1::DetokenizeResponse* response) {
  engine::Engine* engine = engine_.load(std::memory_order_acquire);
  auto* call = new UnaryCall(engine, *context, &live_calls_);
  if (!ReadyForTokenizer(engine, tokenizer_, call)) return call;
  const std::vector<int32_t> ids(request->ids().begin(), request->ids().end());
  absl::StatusOr<std::string> text = tokenizer_->Decode(ids);
  if (!text.ok()) {
    call->Finish(ToGrpcStatus(text.status()));
    return call;
  }
  response->set_text(*std::move(text));
  call->Finish(grpc::Status::OK);
  return call;
}

}  // namespace llm::service
