// Forwards engine step callbacks to a ServingObserver.
#include "server/metrics/engine_step_observer.h"

namespace llm::metrics {

StepPhase ClassifyStep(const engine::StepStats& step) {
  if (step.decode_tokens == 0) return StepPhase::kPrefill;
  if (step.prefill_tokens == 0) return StepPhase::kDecode;
  return StepPhase::kMixed;
}

void EngineStepObserver::OnStep(const engine::StepStats& step) {
  // Failed steps are still timed: a slow failure is worth seeing on the step histogram.
  observer_.OnStep(ClassifyStep(step), absl::ToDoubleSeconds(step.duration),
                   static_cast<int64_t>(step.prefill_tokens) + step.decode_tokens,
                   step.num_sequences);
}

void EngineStepObserver::OnAdmitted(absl::Duration queue_time) {
  observer_.OnQueued(absl::ToDoubleSeconds(queue_time));
}

}  // namespace llm::metrics
