// ServingObserver on a prometheus-cpp registry: every llm_* serving metric of docs/METRICS.md
// except the process gauges (process_collector.h), which are sampled at scrape time.
//
// All families are created in the constructor, and the label sets that are known in advance (step
// phases, sequence states, memory components) are added at once, so a fresh server exports every
// series at zero and dashboards and alerts see them before the first request.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/metrics/serving_observer.h"

namespace llm::metrics {

// Labels of the llm_model_info gauge. Keep them low-cardinality: they are fixed for a process.
struct ModelInfo {
  std::string model;           // checkpoint name, e.g. the model directory's base name
  std::string architecture;    // e.g. "LlamaForCausalLM"
  std::string backend;         // "cpu" or "cuda"
  std::string dtype;           // compute dtype, e.g. "bf16"
  std::string server_version;  // the project's version string
};

class ServingMetrics final : public ServingObserver {
 public:
  explicit ServingMetrics(std::shared_ptr<prometheus::Registry> registry);
  ServingMetrics(const ServingMetrics&) = delete;
  ServingMetrics& operator=(const ServingMetrics&) = delete;

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  // Sets llm_model_info{...} = 1. Call once after the model is loaded; a second call replaces it.
  void SetModelInfo(const ModelInfo& info);

  void OnStep(StepPhase phase, double seconds, int64_t batch_tokens,
              int64_t batch_sequences) override;
  void OnQueued(double seconds) override;
  void OnFirstToken(double seconds) override;
  void OnToken(double seconds_since_previous) override;
  void OnPromptTokens(int64_t count) override;
  void OnGeneratedTokens(int64_t count) override;
  void OnRequestDone(std::string_view rpc, absl::StatusCode code, double seconds) override;
  void OnRejections(RejectionReason reason, int64_t count) override;
  void OnPreemptions(int64_t count) override;
  void OnSequencesExpired(int64_t count) override;
  void OnPrefixCacheLookups(int64_t query_tokens, int64_t hit_tokens) override;
  void OnKvBlocksEvicted(int64_t count) override;
  void OnEngineState(const EngineStateSample& sample) override;

 private:
  struct PhaseSeries {
    prometheus::Histogram* duration = nullptr;
    prometheus::Histogram* batch_tokens = nullptr;
    prometheus::Histogram* batch_sequences = nullptr;
  };
  PhaseSeries& Phase(StepPhase phase);

  std::shared_ptr<prometheus::Registry> registry_;

  prometheus::Family<prometheus::Histogram>& step_duration_;
  prometheus::Family<prometheus::Histogram>& step_batch_tokens_;
  prometheus::Family<prometheus::Histogram>& step_batch_sequences_;
  PhaseSeries prefill_;
  PhaseSeries decode_;
  PhaseSeries mixed_;

  prometheus::Histogram& queue_time_;
  prometheus::Histogram& time_to_first_token_;
  prometheus::Histogram& inter_token_latency_;
  prometheus::Family<prometheus::Histogram>& request_duration_;

  prometheus::Counter& prompt_tokens_;
  prometheus::Counter& generation_tokens_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& rejections_;
  prometheus::Counter& preemptions_;
  prometheus::Counter& expirations_;
  prometheus::Counter& prefix_cache_query_tokens_;
  prometheus::Counter& prefix_cache_hit_tokens_;
  prometheus::Counter& kv_blocks_evicted_;

  prometheus::Family<prometheus::Gauge>& sequences_;
  prometheus::Gauge& sequences_running_;
  prometheus::Gauge& sequences_waiting_;
  prometheus::Gauge& sequences_idle_;
  prometheus::Family<prometheus::Gauge>& kv_blocks_;
  prometheus::Gauge& kv_blocks_used_;
  prometheus::Gauge& kv_blocks_free_;
  prometheus::Gauge& kv_capacity_blocks_;
  prometheus::Gauge& kv_cached_blocks_;
  prometheus::Gauge& kv_used_bytes_;
  prometheus::Gauge& kv_capacity_bytes_;
  prometheus::Gauge& kv_usage_ratio_;
  prometheus::Gauge& kv_block_size_tokens_;
  prometheus::Gauge& device_capacity_bytes_;
  prometheus::Gauge& device_used_bytes_;
  prometheus::Gauge& backend_allocated_bytes_;
  prometheus::Family<prometheus::Gauge>& backend_memory_;
  prometheus::Gauge& weights_bytes_;
  prometheus::Gauge& kv_pool_bytes_;
  prometheus::Gauge& workspace_bytes_;
  prometheus::Family<prometheus::Gauge>& model_info_;
  prometheus::Gauge* model_info_series_ = nullptr;
};

}  // namespace llm::metrics
