// gRPC server interceptor: per-RPC counts, latencies and token timing; the replica header.
#include "server/metrics/rpc_metrics_interceptor.h"

#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>

#include "llm/v1/llm.grpc.pb.h"

namespace llm::metrics {
namespace {

using grpc::experimental::InterceptionHookPoints;
using Clock = std::chrono::steady_clock;

double SecondsBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

enum class TokenTiming { kNone, kPrefill, kDecode, kGenerate };

TokenTiming TimingFor(const std::string& rpc) {
  if (rpc == "Prefill") return TokenTiming::kPrefill;
  if (rpc == "Decode") return TokenTiming::kDecode;
  if (rpc == "Generate") return TokenTiming::kGenerate;
  return TokenTiming::kNone;
}

class RpcMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(ServingObserver& observer, const RpcMetricsOptions& options,
                        std::string rpc, bool is_llm_service)
      : observer_(observer),
        options_(options),
        rpc_(std::move(rpc)),
        timing_(is_llm_service ? TimingFor(rpc_) : TokenTiming::kNone),
        start_(Clock::now()) {}

  ~RpcMetricsInterceptor() override {
    // A call cancelled by the client (or by its deadline) may end without a status being sent.
    std::lock_guard<std::mutex> lock(mutex_);
    if (!done_) {
      observer_.OnRequestDone(rpc_, absl::StatusCode::kCancelled,
                              SecondsBetween(start_, Clock::now()));
    }
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_INITIAL_METADATA) &&
        !options_.replica_id.empty()) {
      if (auto* metadata = methods->GetSendInitialMetadata(); metadata != nullptr) {
        metadata->emplace(kReplicaHeader, options_.replica_id);
      }
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      OnMessage(methods->GetSendMessage());
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      OnStatus(methods->GetSendStatus());
    }
    methods->Proceed();
  }

 private:
  void OnMessage(const void* message) {
    const Clock::time_point now = Clock::now();
    std::lock_guard<std::mutex> lock(mutex_);
    switch (timing_) {
      case TokenTiming::kNone:
        return;
      case TokenTiming::kPrefill:
        observer_.OnFirstToken(SecondsBetween(start_, now));
        return;
      case TokenTiming::kDecode:
        observer_.OnToken(SecondsBetween(start_, now));
        return;
      case TokenTiming::kGenerate: {
        // The message is the handler's own object unless an earlier interceptor serialized it.
        const auto* response = static_cast<const v1::GenerateResponse*>(message);
        if (response == nullptr || !response->has_token()) return;
        if (last_token_) {
          observer_.OnToken(SecondsBetween(*last_token_, now));
        } else {
          observer_.OnFirstToken(SecondsBetween(start_, now));
        }
        last_token_ = now;
        return;
      }
    }
  }

  void OnStatus(const grpc::Status& status) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (done_) return;
    done_ = true;
    observer_.OnRequestDone(rpc_, static_cast<absl::StatusCode>(status.error_code()),
                            SecondsBetween(start_, Clock::now()));
  }

  ServingObserver& observer_;
  const RpcMetricsOptions& options_;
  const std::string rpc_;
  const TokenTiming timing_;
  const Clock::time_point start_;

  std::mutex mutex_;
  std::optional<Clock::time_point> last_token_;
  bool done_ = false;
};

}  // namespace

std::string RpcShortName(const char* full_method) {
  if (full_method == nullptr) return "unknown";
  const char* slash = std::strrchr(full_method, '/');
  return slash == nullptr ? std::string(full_method) : std::string(slash + 1);
}

grpc::experimental::Interceptor* RpcMetricsInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  static constexpr char kLlmServicePrefix[] = "/llm.v1.LlmService/";
  const char* method = info->method();
  const bool is_llm_service = method != nullptr && std::strncmp(method, kLlmServicePrefix,
                                                                sizeof(kLlmServicePrefix) - 1) == 0;
  // gRPC's interface hands out a raw pointer and takes ownership of it.
  return new RpcMetricsInterceptor(observer_, options_, RpcShortName(method), is_llm_service);
}

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
MakeRpcMetricsInterceptors(ServingObserver& observer, RpcMetricsOptions options) {
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<RpcMetricsInterceptorFactory>(observer, std::move(options)));
  return factories;
}

}  // namespace llm::metrics
