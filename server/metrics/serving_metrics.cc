// ServingObserver on a prometheus-cpp registry. Names and meanings: docs/METRICS.md.
#include "server/metrics/serving_metrics.h"

#include <utility>

#include "server/metrics/histogram_buckets.h"

namespace llm::metrics {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Labels;

prometheus::Family<prometheus::Histogram>& HistogramFamily(prometheus::Registry& registry,
                                                           const std::string& name,
                                                           const std::string& help) {
  return BuildHistogram().Name(name).Help(help).Register(registry);
}

prometheus::Family<prometheus::Counter>& CounterFamily(prometheus::Registry& registry,
                                                       const std::string& name,
                                                       const std::string& help) {
  return BuildCounter().Name(name).Help(help).Register(registry);
}

prometheus::Family<prometheus::Gauge>& GaugeFamily(prometheus::Registry& registry,
                                                   const std::string& name,
                                                   const std::string& help) {
  return BuildGauge().Name(name).Help(help).Register(registry);
}

double AsDouble(size_t bytes) { return static_cast<double>(bytes); }

}  // namespace

std::string_view StepPhaseLabel(StepPhase phase) {
  switch (phase) {
    case StepPhase::kPrefill:
      return "prefill";
    case StepPhase::kDecode:
      return "decode";
    case StepPhase::kMixed:
      return "mixed";
  }
  return "unknown";
}

std::string_view RejectionReasonLabel(RejectionReason reason) {
  switch (reason) {
    case RejectionReason::kKvCacheFull:
      return "kv_cache_full";
    case RejectionReason::kQueueFull:
      return "queue_full";
    case RejectionReason::kInvalidArgument:
      return "invalid_argument";
    case RejectionReason::kUnknownSequence:
      return "unknown_sequence";
  }
  return "unknown";
}

ServingMetrics::ServingMetrics(std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)),
      step_duration_(HistogramFamily(*registry_, "llm_engine_step_duration_seconds",
                                     "Wall time of one engine step (batch forward and sampling), "
                                     "by the kind of work in the batch.")),
      step_batch_tokens_(HistogramFamily(*registry_, "llm_engine_step_batch_tokens",
                                         "Query tokens in the batch of one engine step.")),
      step_batch_sequences_(HistogramFamily(*registry_, "llm_engine_step_batch_sequences",
                                            "Sequences in the batch of one engine step.")),
      queue_time_(HistogramFamily(*registry_, "llm_request_queue_time_seconds",
                                  "Time from a request's arrival at the engine to its first "
                                  "scheduled step.")
                      .Add({}, RequestLatencyBucketsSeconds())),
      time_to_first_token_(HistogramFamily(*registry_, "llm_time_to_first_token_seconds",
                                           "Time from a request's arrival to its first output "
                                           "token (Prefill reply or first Generate token).")
                               .Add({}, RequestLatencyBucketsSeconds())),
      inter_token_latency_(HistogramFamily(*registry_, "llm_inter_token_latency_seconds",
                                           "Time between consecutive output tokens of one "
                                           "sequence.")
                               .Add({}, InterTokenLatencyBucketsSeconds())),
      request_duration_(HistogramFamily(*registry_, "llm_request_duration_seconds",
                                        "End-to-end RPC latency as the server handler saw it, by "
                                        "RPC.")),
      prompt_tokens_(CounterFamily(*registry_, "llm_prompt_tokens_total",
                                   "Prompt tokens run through the model (Prefill and "
                                   "Generate prompts).")
                         .Add({})),
      generation_tokens_(CounterFamily(*registry_, "llm_generation_tokens_total",
                                       "Tokens sampled and returned to clients.")
                             .Add({})),
      requests_(CounterFamily(*registry_, "llm_requests_total",
                              "Finished RPCs by method and gRPC status code.")),
      rejections_(CounterFamily(*registry_, "llm_request_rejections_total",
                                "Requests turned away, by reason.")),
      preemptions_(CounterFamily(*registry_, "llm_sequence_preemptions_total",
                                 "Running sequences whose KV blocks were taken back to make room; "
                                 "they are recomputed later.")
                       .Add({})),
      expirations_(CounterFamily(*registry_, "llm_sequence_expirations_total",
                                 "Idle sequences released after their time-to-live.")
                       .Add({})),
      prefix_cache_query_tokens_(CounterFamily(*registry_, "llm_prefix_cache_query_tokens_total",
                                               "Prompt tokens looked up in the prefix cache (new "
                                               "sequences and extensions of live ones).")
                                     .Add({})),
      prefix_cache_hit_tokens_(CounterFamily(*registry_, "llm_prefix_cache_hit_tokens_total",
                                             "Looked-up prompt tokens whose K/V came from cached "
                                             "blocks instead of the model.")
                                   .Add({})),
      kv_blocks_evicted_(CounterFamily(*registry_, "llm_kv_cache_evicted_blocks_total",
                                       "Cached KV blocks reused for other contents.")
                             .Add({})),
      sequences_(GaugeFamily(*registry_, "llm_sequences",
                             "Sequences held by the engine, by state: running (in the current "
                             "batch), waiting (queued for prefill), idle (prefilled, awaiting the "
                             "client's next Decode).")),
      sequences_running_(sequences_.Add({{"state", "running"}})),
      sequences_waiting_(sequences_.Add({{"state", "waiting"}})),
      sequences_idle_(sequences_.Add({{"state", "idle"}})),
      kv_blocks_(GaugeFamily(*registry_, "llm_kv_cache_blocks",
                             "KV cache blocks by state (used: held by sequences; free).")),
      kv_blocks_used_(kv_blocks_.Add({{"state", "used"}})),
      kv_blocks_free_(kv_blocks_.Add({{"state", "free"}})),
      kv_capacity_blocks_(
          GaugeFamily(*registry_, "llm_kv_cache_capacity_blocks", "KV cache blocks in the pool.")
              .Add({})),
      kv_cached_blocks_(GaugeFamily(*registry_, "llm_kv_cache_cached_blocks",
                                    "KV blocks findable by prefix hash (reusable by a new sequence "
                                    "with the same prompt prefix), held by sequences or not.")
                            .Add({})),
      kv_used_bytes_(GaugeFamily(*registry_, "llm_kv_cache_used_bytes",
                                 "Bytes of the KV pool held by sequences (used blocks times block "
                                 "bytes).")
                         .Add({})),
      kv_capacity_bytes_(
          GaugeFamily(*registry_, "llm_kv_cache_capacity_bytes", "Bytes of the whole KV pool.")
              .Add({})),
      kv_usage_ratio_(GaugeFamily(*registry_, "llm_kv_cache_usage_ratio",
                                  "Used KV blocks over all KV blocks, 0 to 1.")
                          .Add({})),
      kv_block_size_tokens_(
          GaugeFamily(*registry_, "llm_kv_cache_block_size_tokens", "Token slots per KV block.")
              .Add({})),
      device_capacity_bytes_(GaugeFamily(*registry_, "llm_device_memory_capacity_bytes",
                                         "Total memory of the compute device (0 on the CPU "
                                         "backend).")
                                 .Add({})),
      device_used_bytes_(GaugeFamily(*registry_, "llm_device_memory_used_bytes",
                                     "Device memory in use by all processes, as the driver "
                                     "reports it (0 on the CPU backend).")
                             .Add({})),
      backend_allocated_bytes_(GaugeFamily(*registry_, "llm_backend_allocated_bytes",
                                           "Memory this process's compute backend has allocated "
                                           "(device memory on CUDA, host memory on CPU).")
                                   .Add({})),
      backend_memory_(GaugeFamily(*registry_, "llm_backend_memory_bytes",
                                  "Backend memory by owner: model weights, KV cache pool, step "
                                  "workspace.")),
      weights_bytes_(backend_memory_.Add({{"component", "weights"}})),
      kv_pool_bytes_(backend_memory_.Add({{"component", "kv_cache"}})),
      workspace_bytes_(backend_memory_.Add({{"component", "workspace"}})),
      model_info_(GaugeFamily(*registry_, "llm_model_info",
                              "Always 1; the labels describe the served model and backend.")) {
  prefill_ = {&step_duration_.Add({{"phase", "prefill"}}, StepDurationBucketsSeconds()),
              &step_batch_tokens_.Add({{"phase", "prefill"}}, BatchTokenBuckets()),
              &step_batch_sequences_.Add({{"phase", "prefill"}}, BatchSequenceBuckets())};
  decode_ = {&step_duration_.Add({{"phase", "decode"}}, StepDurationBucketsSeconds()),
             &step_batch_tokens_.Add({{"phase", "decode"}}, BatchTokenBuckets()),
             &step_batch_sequences_.Add({{"phase", "decode"}}, BatchSequenceBuckets())};
  mixed_ = {&step_duration_.Add({{"phase", "mixed"}}, StepDurationBucketsSeconds()),
            &step_batch_tokens_.Add({{"phase", "mixed"}}, BatchTokenBuckets()),
            &step_batch_sequences_.Add({{"phase", "mixed"}}, BatchSequenceBuckets())};
}

ServingMetrics::PhaseSeries& ServingMetrics::Phase(StepPhase phase) {
  switch (phase) {
    case StepPhase::kPrefill:
      return prefill_;
    case StepPhase::kDecode:
      return decode_;
    case StepPhase::kMixed:
      break;
  }
  return mixed_;
}

void ServingMetrics::SetModelInfo(const ModelInfo& info) {
  if (model_info_series_ != nullptr) model_info_.Remove(model_info_series_);
  model_info_series_ = &model_info_.Add({{"model", info.model},
                                         {"architecture", info.architecture},
                                         {"backend", info.backend},
                                         {"dtype", info.dtype},
                                         {"server_version", info.server_version}});
  model_info_series_->Set(1);
}

void ServingMetrics::OnStep(StepPhase phase, double seconds, int64_t batch_tokens,
                            int64_t batch_sequences) {
  PhaseSeries& series = Phase(phase);
  series.duration->Observe(seconds);
  series.batch_tokens->Observe(static_cast<double>(batch_tokens));
  series.batch_sequences->Observe(static_cast<double>(batch_sequences));
}

void ServingMetrics::OnQueued(double seconds) { queue_time_.Observe(seconds); }

void ServingMetrics::OnFirstToken(double seconds) { time_to_first_token_.Observe(seconds); }

void ServingMetrics::OnToken(double seconds_since_previous) {
  inter_token_latency_.Observe(seconds_since_previous);
}

void ServingMetrics::OnPromptTokens(int64_t count) {
  if (count > 0) prompt_tokens_.Increment(static_cast<double>(count));
}

void ServingMetrics::OnGeneratedTokens(int64_t count) {
  if (count > 0) generation_tokens_.Increment(static_cast<double>(count));
}

void ServingMetrics::OnRequestDone(std::string_view rpc, absl::StatusCode code, double seconds) {
  const std::string method(rpc);
  requests_.Add({{"rpc", method}, {"code", absl::StatusCodeToString(code)}}).Increment();
  request_duration_.Add({{"rpc", method}}, RequestLatencyBucketsSeconds()).Observe(seconds);
}

void ServingMetrics::OnRejections(RejectionReason reason, int64_t count) {
  if (count <= 0) return;
  rejections_.Add({{"reason", std::string(RejectionReasonLabel(reason))}})
      .Increment(static_cast<double>(count));
}

void ServingMetrics::OnPreemptions(int64_t count) {
  if (count > 0) preemptions_.Increment(static_cast<double>(count));
}

void ServingMetrics::OnSequencesExpired(int64_t count) {
  if (count > 0) expirations_.Increment(static_cast<double>(count));
}

void ServingMetrics::OnPrefixCacheLookups(int64_t query_tokens, int64_t hit_tokens) {
  if (query_tokens > 0) prefix_cache_query_tokens_.Increment(static_cast<double>(query_tokens));
  if (hit_tokens > 0) prefix_cache_hit_tokens_.Increment(static_cast<double>(hit_tokens));
}

void ServingMetrics::OnKvBlocksEvicted(int64_t count) {
  if (count > 0) kv_blocks_evicted_.Increment(static_cast<double>(count));
}

void ServingMetrics::OnEngineState(const EngineStateSample& sample) {
  sequences_running_.Set(static_cast<double>(sample.sequences.running));
  sequences_waiting_.Set(static_cast<double>(sample.sequences.waiting));
  sequences_idle_.Set(static_cast<double>(sample.sequences.idle));

  const KvCacheSample& kv = sample.kv_cache;
  kv_blocks_used_.Set(static_cast<double>(kv.used_blocks));
  kv_blocks_free_.Set(static_cast<double>(kv.free_blocks));
  kv_capacity_blocks_.Set(static_cast<double>(kv.total_blocks));
  kv_cached_blocks_.Set(static_cast<double>(kv.cached_blocks));
  kv_used_bytes_.Set(static_cast<double>(kv.used_blocks) * AsDouble(kv.block_bytes));
  kv_capacity_bytes_.Set(static_cast<double>(kv.total_blocks) * AsDouble(kv.block_bytes));
  kv_usage_ratio_.Set(kv.total_blocks > 0 ? static_cast<double>(kv.used_blocks) /
                                                static_cast<double>(kv.total_blocks)
                                          : 0.0);
  kv_block_size_tokens_.Set(static_cast<double>(kv.block_size_tokens));

  const MemorySample& memory = sample.memory;
  device_capacity_bytes_.Set(AsDouble(memory.device_total_bytes));
  device_used_bytes_.Set(AsDouble(memory.device_used_bytes));
  backend_allocated_bytes_.Set(AsDouble(memory.backend_allocated_bytes));
  weights_bytes_.Set(AsDouble(memory.weight_bytes));
  kv_pool_bytes_.Set(AsDouble(memory.kv_cache_bytes));
  workspace_bytes_.Set(AsDouble(memory.workspace_bytes));
}

}  // namespace llm::metrics
