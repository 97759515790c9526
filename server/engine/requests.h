// The work items gRPC handlers hand to the engine, and the results the engine hands back.
//
// Callbacks run on the engine's completion thread, one at a time, in the order the engine produced
// them (a request's tokens in order, then its done); they must not call back into the engine's
// blocking API (they typically write to or finish a gRPC reactor, thread-safe and non-blocking).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kernels/sampling.h"

namespace llm::engine {

using SequenceId = uint64_t;

// Set by the RPC layer when the client goes away; read by the engine at each step.
struct CancellationFlag {
  std::atomic<bool> cancelled{false};
};

struct RequestControl {
  absl::Time deadline = absl::InfiniteFuture();
  std::shared_ptr<CancellationFlag> cancellation = std::make_shared<CancellationFlag>();
  bool is_cancelled() const { return cancellation->cancelled.load(std::memory_order_relaxed); }
};

// One sampled token and where the sequence stands afterwards.
struct StepOutput {
  SequenceId sequence_id = 0;
  int32_t length = 0;  // tokens cached for the sequence
  SampledToken token;
};

using UnaryDone = absl::AnyInvocable<void(absl::StatusOr<StepOutput>)>;

struct PrefillWork {
  std::vector<int32_t> tokens;
  std::optional<SequenceId> sequence_id;  // extend this sequence; unset = create one
  SamplingParams sampling;                // num_top_logprobs inside
  RequestControl control;
  UnaryDone done;
};

struct DecodeWork {
  SequenceId sequence_id = 0;
  std::optional<int32_t> token;  // unset = the last token the engine sampled for the sequence
  std::optional<SamplingParams> sampling;
  std::optional<int32_t> num_top_logprobs;
  RequestControl control;
  UnaryDone done;
};

enum class FinishReason { kLength, kStopToken, kEos };

struct GenerateSummary {
  FinishReason reason = FinishReason::kLength;
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
};

struct GenerateWork {
  std::vector<int32_t> tokens;
  SamplingParams sampling;
  int32_t max_tokens = 0;  // > 0, already defaulted by the caller
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  RequestControl control;
  // Called once per generated token, in order, with its 0-based index.
  absl::AnyInvocable<void(const SampledToken&, int32_t index)> on_token;
  // Called exactly once, after the last on_token.
  absl::AnyInvocable<void(absl::StatusOr<GenerateSummary>)> done;
};

using ReleaseDone = absl::AnyInvocable<void(absl::StatusOr<int32_t>)>;  // released tokens

}  // namespace llm::engine
