// Forwards the engine's per-step callbacks (engine::EngineObserver) to a ServingObserver.
//
// The engine reports each forward step with its prefill and decode token counts; this classifies
// the step as prefill, decode or mixed and hands over the wall time and batch size, and forwards
// each admitted request's queue time.
#pragma once

#include "server/engine/engine_stats.h"
#include "server/metrics/serving_observer.h"

namespace llm::metrics {

// kPrefill when the step ran only prefill tokens, kDecode when only decode tokens, else kMixed.
StepPhase ClassifyStep(const engine::StepStats& step);

class EngineStepObserver final : public engine::EngineObserver {
 public:
  // `observer` must outlive this object.
  explicit EngineStepObserver(ServingObserver& observer) : observer_(observer) {}

  void OnStep(const engine::StepStats& step) override;
  void OnAdmitted(absl::Duration queue_time) override;

 private:
  ServingObserver& observer_;
};

}  // namespace llm::metrics
