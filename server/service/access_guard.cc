// AccessGuard and GuardedLlmService: authentication, per-client limits, sequence ownership.
#include "server/service/access_guard.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/support/byte_buffer.h"

namespace llm::service {
namespace {

constexpr absl::string_view kServicePrefix = "/llm.v1.LlmService/";

enum class Method { kPrefill, kDecode, kGenerate, kRelease, kOther };

Method MethodOf(const char* name) {
  absl::string_view method = name == nullptr ? "" : name;
  if (method == "/llm.v1.LlmService/Prefill") return Method::kPrefill;
  if (method == "/llm.v1.LlmService/Decode") return Method::kDecode;
  if (method == "/llm.v1.LlmService/Generate") return Method::kGenerate;
  if (method == "/llm.v1.LlmService/Release") return Method::kRelease;
  return Method::kOther;
}

// "ipv4:10.0.0.7:53422" -> "ipv4:10.0.0.7", "ipv6:[::1]:53422" -> "ipv6:[::1]": one client host,
// whatever connection or port it uses.
std::string PeerHost(const std::string& peer) {
  if (!absl::StartsWith(peer, "ipv4:") && !absl::StartsWith(peer, "ipv6:")) return peer;
  const size_t colon = peer.rfind(':');
  return colon > 5 ? peer.substr(0, colon) : peer;
}

// A Generate refused before it started.
class RejectedStream final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  explicit RejectedStream(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

grpc::ServerUnaryReactor* Reject(grpc::CallbackServerContext* context, const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

grpc::Status PromptTooLong(int prompt_tokens, int32_t limit) {
  return grpc::Status(
      grpc::StatusCode::INVALID_ARGUMENT,
      absl::StrCat("the prompt has ", prompt_tokens, " tokens; this server accepts at most ", limit,
                   " per request (--max_prompt_tokens); send it in several "
                   "Prefill calls or shorten it"));
}

}  // namespace

// Lives exactly as long as one LlmService call: gRPC destroys it when the call is over, which is
// when the call's slot goes back to its client.
class AccessGuard::CallInterceptor final : public grpc::experimental::Interceptor {
 public:
  CallInterceptor(AccessGuard* guard, grpc::experimental::ServerRpcInfo* info)
      : guard_(guard), context_(info->server_context()), method_(MethodOf(info->method())) {
    guard_->RegisterCall(context_, this);
  }
  ~CallInterceptor() override {
    guard_->UnregisterCall(context_, this);
    std::string client;
    {
      std::lock_guard<std::mutex> lock(guard_->mutex_);
      if (!holds_slot_) return;
      client = client_;
    }
    guard_->ReleaseSlot(client);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE) &&
        method_ == Method::kPrefill) {
      NoteCreatedSequence(methods);
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const bool ok = methods->GetSendStatus().ok();
      const bool not_found = methods->GetSendStatus().error_code() == grpc::StatusCode::NOT_FOUND;
      std::string client;
      std::optional<uint64_t> created, touched;
      {
        std::lock_guard<std::mutex> lock(guard_->mutex_);
        client = client_;
        created = created_sequence_;
        touched = touched_sequence_;
      }
      if (ok && created.has_value()) guard_->RecordOwner(*created, client);
      // Released, or gone from the engine (expired after its TTL): no longer held by anyone.
      if (touched.has_value() && ((ok && method_ == Method::kRelease) || not_found)) {
        guard_->ForgetOwner(*touched);
      }
    }
    methods->Proceed();
  }

 private:
  friend class AccessGuard;

  void NoteCreatedSequence(grpc::experimental::InterceptorBatchMethods* methods) {
    {
      std::lock_guard<std::mutex> lock(guard_->mutex_);
      if (!creates_sequence_) return;
    }
    std::optional<uint64_t> sequence_id;
    if (const void* message = methods->GetSendMessage(); message != nullptr) {
      sequence_id = static_cast<const v1::PrefillResponse*>(message)->sequence_id();
    } else if (grpc::ByteBuffer* serialized = methods->GetSerializedSendMessage();
               serialized != nullptr) {
      std::vector<grpc::Slice> slices;
      if (!serialized->Dump(&slices).ok()) return;
      std::string bytes;
      for (const grpc::Slice& slice : slices) {
        bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
      }
      v1::PrefillResponse response;
      if (!response.ParseFromString(bytes)) return;
      sequence_id = response.sequence_id();
    }
    if (!sequence_id.has_value()) return;  // no message to read: the sequence stays unowned
    std::lock_guard<std::mutex> lock(guard_->mutex_);
    created_sequence_ = sequence_id;
  }

  AccessGuard* const guard_;
  const grpc::ServerContextBase* const context_;
  const Method method_;
  // Written by AccessGuard::Admit (under the guard's mutex).
  std::string client_;
  bool holds_slot_ = false;
  bool creates_sequence_ = false;
  std::optional<uint64_t> created_sequence_;
  std::optional<uint64_t> touched_sequence_;
};

namespace {

class InterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit InterceptorFactory(AccessGuard* guard) : guard_(guard) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    if (info->method() == nullptr || !absl::StartsWith(info->method(), kServicePrefix)) {
      return nullptr;
    }
    return new AccessGuard::CallInterceptor(guard_, info);
  }

 private:
  AccessGuard* guard_;
};

}  // namespace

AccessGuard::AccessGuard(AccessPolicy policy) : policy_(std::move(policy)) {}
AccessGuard::~AccessGuard() = default;

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
AccessGuard::MakeInterceptorFactory() {
  return std::make_unique<InterceptorFactory>(this);
}

grpc::Status AccessGuard::Identify(const grpc::CallbackServerContext& context,
                                   std::string* client) const {
  if (!authenticating()) {
    *client = PeerHost(context.peer());
    return grpc::Status::OK;
  }
  const std::optional<std::string> presented = PresentedApiKey(context.client_metadata());
  if (!presented.has_value()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "this server requires an API key: send the metadata "
                        "`authorization: Bearer <key>` or `x-api-key: <key>` "
                        "(llm-client/llm-bench --api_key)");
  }
  const int index = policy_.api_keys.Match(*presented);
  if (index < 0) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the API key is not valid (use a key listed in the server's "
                        "--api_keys_file or $LLM_API_KEYS, sent as `authorization: Bearer <key>`)");
  }
  *client = absl::StrCat("api-key-", index);
  return grpc::Status::OK;
}

grpc::Status AccessGuard::Admit(grpc::CallbackServerContext* context, bool takes_slot,
                                std::optional<uint64_t> sequence_id, bool creates_sequence) {
  std::string client;
  if (grpc::Status status = Identify(*context, &client); !status.ok()) return status;
  const absl::Time now = absl::Now();
  std::lock_guard<std::mutex> lock(mutex_);
  auto call = calls_.find(context);
  CallInterceptor* interceptor = call == calls_.end() ? nullptr : call->second;
  if (sequence_id.has_value()) {
    auto owner = owners_.find(*sequence_id);
    if (owner != owners_.end()) {
      if (authenticating() && owner->second.client != client) {
        return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                            absl::StrCat("sequence ", *sequence_id,
                                         " was created with another API key; only that key may "
                                         "use or release it"));
      }
      owner->second.last_used = now;
    }
  }
  if (creates_sequence && policy_.max_sequences_per_client > 0) {
    SweepOwnersLocked(now);
    auto held = held_.find(client);
    if (held != held_.end() && held->second >= policy_.max_sequences_per_client) {
      return grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat("client ", client, " holds ", held->second,
                       " sequences, the most this server allows per client "
                       "(--max_sequences_per_client); Release one, or use Generate"));
    }
  }
  if (takes_slot && policy_.max_requests_per_client > 0) {
    int32_t& in_flight = in_flight_[client];
    if (in_flight >= policy_.max_requests_per_client) {
      return grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat("client ", client, " already has ", in_flight,
                       " requests in flight, the most this server allows per client "
                       "(--max_requests_per_client); wait for one to finish"));
    }
    // Without its interceptor the slot could never be given back; then the call is not counted.
    if (interceptor != nullptr) ++in_flight;
  }
  if (interceptor != nullptr) {
    interceptor->client_ = client;
    interceptor->holds_slot_ = takes_slot && policy_.max_requests_per_client > 0;
    interceptor->creates_sequence_ = creates_sequence;
    interceptor->touched_sequence_ = sequence_id;
  }
  return grpc::Status::OK;
}

int32_t AccessGuard::InFlight(const std::string& client) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = in_flight_.find(client);
  return it == in_flight_.end() ? 0 : it->second;
}

size_t AccessGuard::owned_sequences() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return owners_.size();
}

void AccessGuard::RegisterCall(const grpc::ServerContextBase* context, CallInterceptor* call) {
  std::lock_guard<std::mutex> lock(mutex_);
  // A context may be reused by gRPC for a later call before the previous call's interceptor is
  // gone; the newest call wins and the old interceptor only removes its own entry.
  calls_[context] = call;
}

void AccessGuard::UnregisterCall(const grpc::ServerContextBase* context, CallInterceptor* call) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = calls_.find(context);
  if (it != calls_.end() && it->second == call) calls_.erase(it);
}

void AccessGuard::ReleaseSlot(const std::string& client) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = in_flight_.find(client);
  if (it == in_flight_.end()) return;
  if (--it->second <= 0) in_flight_.erase(it);
}

int32_t AccessGuard::HeldSequences(const std::string& client) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = held_.find(client);
  return it == held_.end() ? 0 : it->second;
}

void AccessGuard::RecordOwner(uint64_t sequence_id, const std::string& client) {
  const absl::Time now = absl::Now();
  std::lock_guard<std::mutex> lock(mutex_);
  auto [it, inserted] = owners_.try_emplace(sequence_id, Owner{client, now});
  if (inserted) {
    ++held_[client];
  } else {
    it->second.last_used = now;
  }
  SweepOwnersLocked(now);
}

void AccessGuard::ForgetOwner(uint64_t sequence_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = owners_.find(sequence_id);
  if (it == owners_.end()) return;
  if (--held_[it->second.client] <= 0) held_.erase(it->second.client);
  owners_.erase(it);
}

void AccessGuard::SweepOwnersLocked(absl::Time now) {
  if (now < next_owner_sweep_) return;
  // The engine frees sequences idle for its TTL without telling anyone; forget them as well.
  next_owner_sweep_ = now + absl::Seconds(30);
  for (auto it = owners_.begin(); it != owners_.end();) {
    if (now - it->second.last_used <= policy_.ownership_ttl) {
      ++it;
      continue;
    }
    if (--held_[it->second.client] <= 0) held_.erase(it->second.client);
    it = owners_.erase(it);
  }
}

grpc::ServerUnaryReactor* GuardedLlmService::Prefill(grpc::CallbackServerContext* context,
                                                     const v1::PrefillRequest* request,
                                                     v1::PrefillResponse* response) {
  std::optional<uint64_t> extends;
  if (request->has_sequence_id()) extends = request->sequence_id();
  if (grpc::Status status = guard_->Admit(context, /*takes_slot=*/true, extends,
                                          /*creates_sequence=*/!extends.has_value());
      !status.ok()) {
    return Reject(context, status);
  }
  const int32_t limit = guard_->policy().max_prompt_tokens;
  if (limit > 0 && request->tokens().ids_size() > limit) {
    return Reject(context, PromptTooLong(request->tokens().ids_size(), limit));
  }
  return inner_->Prefill(context, request, response);
}

grpc::ServerUnaryReactor* GuardedLlmService::Decode(grpc::CallbackServerContext* context,
                                                    const v1::DecodeRequest* request,
                                                    v1::DecodeResponse* response) {
  if (grpc::Status status = guard_->Admit(context, /*takes_slot=*/true, request->sequence_id());
      !status.ok()) {
    return Reject(context, status);
  }
  return inner_->Decode(context, request, response);
}

grpc::ServerWriteReactor<v1::GenerateResponse>* GuardedLlmService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  if (grpc::Status status = guard_->Admit(context, /*takes_slot=*/true); !status.ok()) {
    return new RejectedStream(status);
  }
  const AccessPolicy& policy = guard_->policy();
  if (policy.max_prompt_tokens > 0 && request->tokens().ids_size() > policy.max_prompt_tokens) {
    return new RejectedStream(
        PromptTooLong(request->tokens().ids_size(), policy.max_prompt_tokens));
  }
  if (policy.max_tokens_limit > 0 && request->max_tokens() > policy.max_tokens_limit) {
    return new RejectedStream(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("max_tokens ", request->max_tokens(), " is above this server's limit of ",
                     policy.max_tokens_limit, " (--max_tokens_limit); ask for fewer tokens")));
  }
  return inner_->Generate(context, request);
}

grpc::ServerUnaryReactor* GuardedLlmService::Release(grpc::CallbackServerContext* context,
                                                     const v1::ReleaseRequest* request,
                                                     v1::ReleaseResponse* response) {
  if (grpc::Status status = guard_->Admit(context, /*takes_slot=*/false, request->sequence_id());
      !status.ok()) {
    return Reject(context, status);
  }
  return inner_->Release(context, request, response);
}

grpc::ServerUnaryReactor* GuardedLlmService::GetModelInfo(grpc::CallbackServerContext* context,
                                                          const v1::GetModelInfoRequest* request,
                                                          v1::ModelInfo* response) {
  if (grpc::Status status = guard_->Admit(context, /*takes_slot=*/false); !status.ok()) {
    return Reject(context, status);
  }
  return inner_->GetModelInfo(context, request, response);
}

grpc::ServerUnaryReactor* GuardedLlmService::Tokenize(grpc::CallbackServerContext* context,
                                                      const v1::TokenizeRequest* request,
                                                      v1::TokenizeResponse* response) {
  if (grpc::Status status = guard_->Admit(context, /*takes_slot=*/false); !status.ok()) {
    return Reject(context, status);
  }
  return inner_->Tokenize(context, request, response);
}

grpc::ServerUnaryReactor* GuardedLlmService::Detokenize(grpc::CallbackServerContext* context,
                                                        const v1::DetokenizeRequest* request,
                                                        v1::DetokenizeResponse* response) {
  if (grpc::Status status = guard_->Admit(context, /*takes_slot=*/false); !status.ok()) {
    return Reject(context, status);
  }
  return inner_->Detokenize(context, request, response);
}

}  // namespace llm::service
