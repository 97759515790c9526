// Who may call llm.v1.LlmService and how much: API-key authentication, per-client limits on
// requests in flight and on sequences held, request size limits (prompt tokens, Generate
// max_tokens), and, with keys on, sequence ownership (a key may only Decode/extend/Release the
// sequences it created). A client is an API key, or without keys the peer's address (host only).
//
// GuardedLlmService wraps LlmServiceImpl: each handler checks the call against the AccessGuard and
// either fails it at once (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED,
// INVALID_ARGUMENT) or hands it to the inner service unchanged. A server interceptor, created by
// the guard for every LlmService call, learns when the call is over (it is destroyed then) and
// gives the client's slot back; it also sees Prefill replies (new sequence ids) and Release
// outcomes. Health and reflection are not guarded: they reveal the serving state and the public
// schema only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "absl/time/time.h"
#include "grpcpp/support/server_interceptor.h"
#include "llm/v1/llm.grpc.pb.h"
#include "server/service/api_keys.h"
#include "server/service/llm_service.h"

namespace llm::service {

struct AccessPolicy {
  ApiKeySet api_keys;             // empty: no authentication
  int32_t max_prompt_tokens = 0;  // Prefill/Generate prompt tokens; 0 = the model's limit only
  int32_t max_tokens_limit = 0;   // Generate max_tokens; 0 = the model's limit only
  int32_t max_requests_per_client =
      0;  // Prefill/Decode/Generate in flight per client; 0 = no limit
  // Sequences a client holds (created by Prefill, not yet released, expired or reported missing);
  // a Prefill that would create one more fails RESOURCE_EXHAUSTED. 0 = no limit.
  int32_t max_sequences_per_client = 0;
  // Ownership records of sequences nobody touched for this long are dropped (the engine has
  // expired those sequences by then); set it to the engine's sequence TTL or more.
  absl::Duration ownership_ttl = absl::Minutes(15);
};

class AccessGuard {
 public:
  explicit AccessGuard(AccessPolicy policy);
  ~AccessGuard();

  const AccessPolicy& policy() const { return policy_; }
  bool authenticating() const { return !policy_.api_keys.empty(); }

  // One factory per server; the guard must outlive the gRPC server.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeInterceptorFactory();

  // What the handlers call. `takes_slot`: the call counts against max_requests_per_client.
  // `sequence_id`: the existing sequence the call touches (ownership check), if any.
  // `creates_sequence`: a Prefill of a new sequence (max_sequences_per_client).
  grpc::Status Admit(grpc::CallbackServerContext* context, bool takes_slot,
                     std::optional<uint64_t> sequence_id = std::nullopt,
                     bool creates_sequence = false);

  // Requests in flight of one client identity (tests and logs).
  int32_t InFlight(const std::string& client) const;
  size_t owned_sequences() const;
  int32_t HeldSequences(const std::string& client) const;

  class CallInterceptor;

 private:
  friend class CallInterceptor;
  struct Owner {
    std::string client;
    absl::Time last_used;
  };

  // Identity of the caller, or the status that refuses it.
  grpc::Status Identify(const grpc::CallbackServerContext& context, std::string* client) const;
  void RegisterCall(const grpc::ServerContextBase* context, CallInterceptor* call);
  void UnregisterCall(const grpc::ServerContextBase* context, CallInterceptor* call);
  void ReleaseSlot(const std::string& client);
  void RecordOwner(uint64_t sequence_id, const std::string& client);
  void ForgetOwner(uint64_t sequence_id);
  // Drops ownership records idle for longer than ownership_ttl, at most every 30 s.
  void SweepOwnersLocked(absl::Time now);

  const AccessPolicy policy_;
  mutable std::mutex mutex_;
  std::unordered_map<const grpc::ServerContextBase*, CallInterceptor*> calls_;
  std::unordered_map<std::string, int32_t> in_flight_;
  std::unordered_map<uint64_t, Owner> owners_;
  std::unordered_map<std::string, int32_t> held_;  // owners_ entries per client
  absl::Time next_owner_sweep_ = absl::InfinitePast();
};

class GuardedLlmService final : public v1::LlmService::CallbackService {
 public:
  // Neither is owned; both must outlive the gRPC server.
  GuardedLlmService(LlmServiceImpl* inner, AccessGuard* guard) : inner_(inner), guard_(guard) {}

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
  LlmServiceImpl* inner_;
  AccessGuard* guard_;
};

}  // namespace llm::service
