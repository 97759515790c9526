// The engine: one thread that owns the model, the KV cache manager and every sequence.
//
// gRPC handlers call the Submit* functions, which validate on the caller's thread and enqueue; the
// engine thread admits work (scheduler.h), runs one Transformer::Forward per step over all running
// sequences (continuous batching with chunked prefill), and completes requests through their
// callbacks. Nothing outside the engine thread touches the model or the KV cache. The callbacks
// collected during a loop iteration run on a second thread, the completion thread, in order, so
// that delivering a step's tokens (64 gRPC writes at batch 64) overlaps the next step instead of
// delaying it.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kvcache/kv_cache_manager.h"
#include "server/engine/engine_options.h"
#include "server/engine/engine_stats.h"
#include "server/engine/request_validation.h"
#include "server/engine/requests.h"
#include "server/engine/scheduler.h"
#include "server/model/transformer.h"

namespace llm::engine {

class Engine {
 public:
  // Takes the model; sizes the KV manager from its kv_layout().
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::unique_ptr<Transformer> model,
                                                        const EngineOptions& options);
  ~Engine();  // Shutdown(zero grace) when still running.

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Runs one small forward step on the calling thread (before Start) so that the first request does
  // not pay for lazy initialisation, and checks that the model works at all.
  absl::Status Warmup();
  // Starts the engine thread. `observer` (may be null) must outlive the engine.
  void Start(EngineObserver* observer = nullptr);
  // Stops accepting work (new submissions fail UNAVAILABLE), lets admitted and queued requests
  // finish for up to `grace`, then fails what is left with UNAVAILABLE, frees every sequence and
  // joins.
  void Shutdown(absl::Duration grace);

  // Each completes exactly once through its callback: at once on invalid input or while shutting
  // down, else on the engine thread.
  void SubmitPrefill(PrefillWork work);
  void SubmitDecode(DecodeWork work);
  void SubmitGenerate(GenerateWork work);
  void SubmitRelease(SequenceId id, ReleaseDone done);
  // Tells the engine thread that a request was cancelled so that it frees its blocks now.
  void Wake();

  // How many iterations' callbacks may wait for the completion thread before the engine thread
  // waits for it: the engine runs at most this many steps (plus the one in flight) ahead of what
  // its callbacks have seen, e.g. of a cancellation set inside on_token.
  static constexpr size_t kMaxPendingCompletionBatches = 2;

  // The stats as of the end of the engine's latest loop iteration; a request's callback runs after
  // the stats that include it are published.
  EngineStats stats() const;
  // False once Shutdown has begun.
  bool accepting() const;
  const ModelConfig& config() const { return config_; }
  const Transformer& model() const { return *model_; }
  const EngineOptions& options() const { return options_; }
  const kvcache::KvLayout& kv_layout() const { return kv_layout_; }
  const std::string& backend_name() const { return backend_name_; }
  DType compute_dtype() const { return compute_dtype_; }

  // The limits Submit* validate requests against (request_validation.h).
  const RequestLimits& request_limits() const { return limits_; }

 private:
  struct GenerateState;
  struct ActiveRequest;
  struct Sequence;
  struct WaitingEntry;
  struct ReleaseCommand {
    SequenceId id;
    ReleaseDone done;
  };
  using Command = std::variant<PrefillWork, DecodeWork, GenerateWork, ReleaseCommand>;

  Engine(std::unique_ptr<Transformer> model, std::unique_ptr<kvcache::KvCacheManager> kv,
         const EngineOptions& options);

  // Moves the command into the inbox; false (command untouched) when shutting down.
  bool Enqueue(Command& command);
  void Loop();
  void HandleCommand(Command command);
  void HandlePrefill(PrefillWork work);
  void HandleDecode(DecodeWork work);
  void HandleGenerate(GenerateWork work);
  void HandleRelease(ReleaseCommand command);
  void Enwait(std::unique_ptr<WaitingEntry> entry);
  void ExpireWork(absl::Time now);
  void AdmitWaiting(absl::Time now);
  void RunStep();
  // Preempts the latest-admitted running requests until the planned chunks' blocks fit; returns the
  // plan (empty when nothing can run).
  std::vector<ScheduledChunk> PlanStepWithinKv();
  // Takes a running request off its sequence and puts it back at the head of the queue: a request
  // that made its sequence frees it and will recompute its whole history (prompt + tokens so far);
  // one that extends an existing sequence rolls it back to where the request started.
  void Preempt(Sequence& sequence);
  void FinishSampled(Sequence& sequence, const SampledToken& token);
  // Fails the sequence's request and rolls the sequence back (or frees it when the request made
  // it).
  void AbortRequest(Sequence& sequence, absl::Status status);
  void FreeSequence(SequenceId id);
  void AbortEverything(const absl::Status& status);
  void PublishStats();
  // Request callbacks are collected during an iteration and run after its stats are published, so
  // a client that hears back sees stats that already include its request, and no callback runs
  // while the engine's state is half-updated. RunCompletions hands them to the completion thread
  // (or runs them itself when that thread is not running: before Start, after Shutdown's join).
  void Defer(absl::AnyInvocable<void()> completion);
  void RunCompletions();
  absl::Time NextWakeup(absl::Time now) const;
  bool HasWork() const { return !running_.empty() || !waiting_.empty(); }
  int32_t BlocksNeeded(const WaitingEntry& entry) const;
  void FailActive(ActiveRequest& request, absl::Status status);
  void FailWaiting(WaitingEntry& entry, absl::Status status);

  const ModelConfig config_;
  const EngineOptions options_;
  const RequestLimits limits_;
  const kvcache::KvLayout kv_layout_;
  const std::string backend_name_;
  const DType compute_dtype_;
  Scheduler scheduler_;

  // --- owned by the engine thread (or the caller before Start / after join) ---
  std::unique_ptr<Transformer> model_;
  std::unique_ptr<kvcache::KvCacheManager> kv_;
  std::map<SequenceId, std::unique_ptr<Sequence>> sequences_;
  std::vector<SequenceId> running_;  // admission order
  std::deque<std::unique_ptr<WaitingEntry>> waiting_;
  SequenceId next_sequence_id_ = 1;
  EngineObserver* observer_ = nullptr;
  EngineStats counters_;  // token/step counters accumulated by the engine thread
  std::vector<absl::AnyInvocable<void()>> completions_;  // this iteration's, not yet handed over

  // --- shared with submitters ---
  mutable std::mutex mutex_;
  std::condition_variable wakeup_;
  std::deque<Command> inbox_;
  bool accepting_ = true;
  bool stop_requested_ = false;
  absl::Time drain_deadline_ = absl::InfiniteFuture();
  EngineStats published_stats_;
  std::thread thread_;

  // --- the completion thread: runs handed-over batches of callbacks in order ---
  void CompletionLoop();
  std::mutex completion_mutex_;
  std::condition_variable completion_ready_;
  std::condition_variable completion_taken_;  // a batch left the queue
  std::deque<std::vector<absl::AnyInvocable<void()>>> completion_batches_;
  bool completion_stop_ = false;
  std::thread completion_thread_;
};

}  // namespace llm::engine
