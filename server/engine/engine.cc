// The engine thread: admission, continuous batching over Transformer::Forward, completion.
#include "server/engine/engine.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "kvcache/block_table.h"

namespace llm::engine {

// A Generate request's progress.
struct Engine::GenerateState {
  int32_t max_tokens = 0;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int32_t prompt_tokens = 0;
  int32_t generated = 0;
  // Shared with the deferred completions that deliver each token (see Defer in engine.h).
  std::shared_ptr<absl::AnyInvocable<void(const SampledToken&, int32_t)>> on_token;
  absl::AnyInvocable<void(absl::StatusOr<GenerateSummary>)> done;
};

// The request a sequence is serving: tokens to feed, and how to answer.
struct Engine::ActiveRequest {
  RequestControl control;
  std::vector<int32_t> feed;
  int32_t fed = 0;
  bool prompt_done = false;  // the first sampled token came back: later feeds are decodes
  UnaryDone unary_done;      // Prefill and Decode
  std::unique_ptr<GenerateState> generate;
};

struct Engine::Sequence {
  SequenceId id = 0;
  bool persistent = false;  // made by Prefill: lives until Release or TTL
  SamplingParams sampling;
  std::optional<int32_t> last_sampled;
  absl::Time last_active;
  bool busy = false;                // a request is waiting or running on it
  bool created_by_request = false;  // free it (not roll back) when the request fails
  int32_t length_before_request = 0;
  std::unique_ptr<ActiveRequest> active;
};

struct Engine::WaitingEntry {
  SequenceId sequence_id = 0;  // existing sequence, or 0 for a new one
  bool persistent = false;     // for a new sequence
  SamplingParams sampling;     // for a new sequence
  int64_t existing_length = 0;
  int64_t tokens_to_reserve = 0;  // beyond the existing length, at admission
  int64_t max_total_tokens = 0;   // the most KV tokens the request can ever need
  bool recompute = false;         // requeued by a preemption
  absl::Time enqueued;
  std::unique_ptr<ActiveRequest> request;
};

namespace {

// A callback bound to its argument, to run later.
template <typename Callback, typename Value>
absl::AnyInvocable<void()> Bind(Callback callback, Value value) {
  return [callback = std::move(callback), value = std::move(value)]() mutable {
    callback(std::move(value));
  };
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::unique_ptr<Transformer> model,
                                                       const EngineOptions& options) {
  if (model == nullptr) return absl::InvalidArgumentError("Engine::Create needs a model");
  if (options.max_batch_tokens < 1 || options.max_running_sequences < 1 ||
      options.max_waiting_requests < 0 || options.default_max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "engine options out of range: max_batch_tokens=%d, max_running_sequences=%d, "
        "max_waiting_requests=%d, default_max_tokens=%d; the first two and the last must be >= 1",
        options.max_batch_tokens, options.max_running_sequences, options.max_waiting_requests,
        options.default_max_tokens));
  }
  const kvcache::KvLayout& layout = model->kv_layout();
  absl::StatusOr<std::unique_ptr<kvcache::KvCacheManager>> kv = kvcache::KvCacheManager::Create(
      {.num_blocks = layout.num_blocks,
       .block_size = layout.block_size,
       .block_bytes =
           KvBlockBytes(model->config(), layout.block_size, model->backend().compute_dtype()),
       .enable_prefix_cache = options.enable_prefix_cache});
  if (!kv.ok()) return kv.status();
  return std::unique_ptr<Engine>(new Engine(std::move(model), *std::move(kv), options));
}

Engine::Engine(std::unique_ptr<Transformer> model, std::unique_ptr<kvcache::KvCacheManager> kv,
               const EngineOptions& options)
    : config_(model->config()),
      options_(options),
      limits_{.vocab_size = model->config().vocab_size,
              .max_position_embeddings = model->config().max_position_embeddings,
              .max_top_logprobs = options.max_top_logprobs},
      kv_layout_(model->kv_layout()),
      backend_name_(model->backend().name()),
      compute_dtype_(model->backend().compute_dtype()),
      scheduler_({.max_batch_tokens = options.max_batch_tokens,
                  .max_running_sequences = options.max_running_sequences}),
      model_(std::move(model)),
      kv_(std::move(kv)) {
  PublishStats();
}

Engine::~Engine() { Shutdown(absl::ZeroDuration()); }

absl::Status Engine::Warmup() {
  const SequenceId id = next_sequence_id_++;
  if (absl::Status status = kv_->CreateSequence(id); !status.ok()) return status;
  const int32_t token = config_.bos_token_id >= 0 ? config_.bos_token_id : 0;
  absl::Status status = kv_->Reserve(id, 1);
  if (status.ok()) {
    SequenceChunk chunk;
    chunk.tokens = {token};
    std::span<const int32_t> table = *kv_->block_table(id);
    chunk.block_table.assign(table.begin(), table.end());
    absl::StatusOr<std::vector<ChunkResult>> result = model_->Forward({&chunk, 1});
    if (!result.ok()) {
      status = absl::Status(result.status().code(), absl::StrCat("warm-up forward step failed: ",
                                                                 result.status().message()));
    }
  }
  (void)kv_->Free(id);
  return status;
}

void Engine::Start(EngineObserver* observer) {
  observer_ = observer;
  completion_thread_ = std::thread([this] { CompletionLoop(); });
  thread_ = std::thread([this] { Loop(); });
}

void Engine::CompletionLoop() {
  while (true) {
    std::vector<absl::AnyInvocable<void()>> batch;
    {
      std::unique_lock<std::mutex> lock(completion_mutex_);
      completion_ready_.wait(lock, [this] { return completion_stop_ || !completion_batches_.empty(); });
      if (completion_batches_.empty()) return;  // stopping, and everything handed over has run
      batch = std::move(completion_batches_.front());
      completion_batches_.pop_front();
    }
    completion_taken_.notify_one();
    for (auto& completion : batch) completion();
  }
}

void Engine::Shutdown(absl::Duration grace) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    accepting_ = false;
    stop_requested_ = true;
    drain_deadline_ = std::min(drain_deadline_, absl::Now() + grace);
  }
  wakeup_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (completion_thread_.joinable()) {  // runs what the engine thread handed over, then exits
    {
      std::lock_guard<std::mutex> lock(completion_mutex_);
      completion_stop_ = true;
    }
    completion_ready_.notify_all();
    completion_thread_.join();
  }
  // Never started, or already stopped: whatever is left is failed here.
  std::deque<Command> leftover;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    leftover.swap(inbox_);
  }
  for (Command& command : leftover) HandleCommand(std::move(command));
  AbortEverything(absl::UnavailableError("the server is shutting down; retry on another replica"));
  PublishStats();
  RunCompletions();
}

bool Engine::Enqueue(Command& command) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!accepting_) return false;
    inbox_.push_back(std::move(command));
  }
  wakeup_.notify_one();
  return true;
}

void Engine::Wake() {
  // Taking the lock orders this notification after the engine's check-then-wait, so it is not lost.
  { std::lock_guard<std::mutex> lock(mutex_); }
  wakeup_.notify_one();
}

namespace {
const absl::Status& ShuttingDown() {
  static const absl::Status* status = new absl::Status(
      absl::UnavailableError("the server is shutting down; retry on another replica"));
  return *status;
}
}  // namespace

void Engine::SubmitPrefill(PrefillWork work) {
  if (absl::Status status = ValidatePrefill(work, limits_); !status.ok()) return work.done(status);
  Command command(std::move(work));
  if (!Enqueue(command)) std::get<PrefillWork>(command).done(ShuttingDown());
}

void Engine::SubmitDecode(DecodeWork work) {
  if (absl::Status status = ValidateDecode(work, limits_); !status.ok()) return work.done(status);
  Command command(std::move(work));
  if (!Enqueue(command)) std::get<DecodeWork>(command).done(ShuttingDown());
}

void Engine::SubmitGenerate(GenerateWork work) {
  if (absl::Status status = ValidateGenerate(work, limits_); !status.ok()) {
    return work.done(status);
  }
  Command command(std::move(work));
  if (!Enqueue(command)) std::get<GenerateWork>(command).done(ShuttingDown());
}

void Engine::SubmitRelease(SequenceId id, ReleaseDone done) {
  Command command(ReleaseCommand{id, std::move(done)});
  if (!Enqueue(command)) std::get<ReleaseCommand>(command).done(ShuttingDown());
}

// --- engine thread ---

void Engine::Loop() {
  while (true) {
    std::deque<Command> commands;
    bool stopping = false;
    absl::Time drain_deadline;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      const absl::Time now = absl::Now();
      if (inbox_.empty() && running_.empty() && !(stop_requested_ && !HasWork())) {
        const absl::Duration wait = NextWakeup(now) - now;
        if (wait > absl::ZeroDuration()) {
          wakeup_.wait_for(lock, absl::ToChronoNanoseconds(wait));
        }
      }
      commands.swap(inbox_);
      stopping = stop_requested_;
      drain_deadline = drain_deadline_;
    }
    for (Command& command : commands) HandleCommand(std::move(command));
    const absl::Time now = absl::Now();
    if (stopping && (!HasWork() || now >= drain_deadline)) break;
    ExpireWork(now);
    AdmitWaiting(now);
    if (!running_.empty()) RunStep();
    PublishStats();
    RunCompletions();
  }
  AbortEverything(absl::UnavailableError(
      "the server is shutting down and the request did not finish within the grace period; retry"));
  PublishStats();
  RunCompletions();
}

void Engine::Defer(absl::AnyInvocable<void()> completion) {
  completions_.push_back(std::move(completion));
}

void Engine::RunCompletions() {
  if (completions_.empty()) return;
  std::vector<absl::AnyInvocable<void()>> completions;
  completions.swap(completions_);
  if (completion_thread_.joinable()) {
    std::unique_lock<std::mutex> lock(completion_mutex_);
    completion_taken_.wait(lock, [this] {
      return completion_batches_.size() < kMaxPendingCompletionBatches;
    });
    if (!completion_stop_) {
      completion_batches_.push_back(std::move(completions));
      completion_ready_.notify_one();
      return;
    }
  }
  for (auto& completion : completions) completion();
}

absl::Time Engine::NextWakeup(absl::Time now) const {
  // With only waiting work, poll a little: blocks may have been freed by a cancellation that has no
  // command of its own. With nothing at all, wake up for the TTL sweep.
  if (!waiting_.empty()) return now + absl::Milliseconds(5);
  return now + std::min(absl::Seconds(1), options_.sequence_ttl);
}

void Engine::HandleCommand(Command command) {
  std::visit(
      [this](auto&& item) {
        using T = std::decay_t<decltype(item)>;
        if constexpr (std::is_same_v<T, PrefillWork>) {
          HandlePrefill(std::move(item));
        } else if constexpr (std::is_same_v<T, DecodeWork>) {
          HandleDecode(std::move(item));
        } else if constexpr (std::is_same_v<T, GenerateWork>) {
          HandleGenerate(std::move(item));
        } else {
          HandleRelease(std::move(item));
        }
      },
      std::move(command));
}

namespace {
absl::Status UnknownSequence(SequenceId id) {
  return absl::NotFoundError(absl::StrFormat(
      "sequence %d is unknown: it was released, expired after its idle TTL, or never existed; "
      "start a new one with Prefill",
      id));
}
absl::Status BusySequence(SequenceId id) {
  return absl::FailedPreconditionError(absl::StrFormat(
      "sequence %d is busy with another Prefill/Decode call; wait for that call to return", id));
}
}  // namespace

void Engine::HandlePrefill(PrefillWork work) {
  auto entry = std::make_unique<WaitingEntry>();
  entry->enqueued = absl::Now();
  entry->request = std::make_unique<ActiveRequest>();
  entry->request->control = work.control;
  entry->request->feed = std::move(work.tokens);
  entry->request->unary_done = std::move(work.done);
  if (work.sequence_id.has_value()) {
    auto it = sequences_.find(*work.sequence_id);
    if (it == sequences_.end() || !it->second->persistent) {
      return Defer(Bind(std::move(entry->request->unary_done), UnknownSequence(*work.sequence_id)));
    }
    Sequence& sequence = *it->second;
    if (sequence.busy) {
      return Defer(Bind(std::move(entry->request->unary_done), BusySequence(sequence.id)));
    }
    const int64_t length = *kv_->length(sequence.id);
    const int64_t total = length + static_cast<int64_t>(entry->request->feed.size());
    if (total > config_.max_position_embeddings) {
      return Defer(Bind(
          std::move(entry->request->unary_done),
          absl::InvalidArgumentError(absl::StrFormat(
              "sequence %d holds %d tokens; %d more would pass "
              "max_position_embeddings (%d)",
              sequence.id, length, entry->request->feed.size(), config_.max_position_embeddings))));
    }
    sequence.sampling = work.sampling;
    sequence.busy = true;
    entry->sequence_id = sequence.id;
    entry->existing_length = length;
  } else {
    entry->persistent = true;
    entry->sampling = work.sampling;
  }
  entry->tokens_to_reserve = static_cast<int64_t>(entry->request->feed.size());
  entry->max_total_tokens = entry->existing_length + entry->tokens_to_reserve;
  Enwait(std::move(entry));
}

void Engine::HandleDecode(DecodeWork work) {
  auto it = sequences_.find(work.sequence_id);
  if (it == sequences_.end() || !it->second->persistent) {
    return Defer(Bind(std::move(work.done), UnknownSequence(work.sequence_id)));
  }
  Sequence& sequence = *it->second;
  if (sequence.busy) return Defer(Bind(std::move(work.done), BusySequence(sequence.id)));
  const int64_t length = *kv_->length(sequence.id);
  if (length + 1 > config_.max_position_embeddings) {
    return Defer(Bind(std::move(work.done),
                      absl::InvalidArgumentError(absl::StrFormat(
                          "sequence %d holds %d tokens, the model's max_position_embeddings; "
                          "release it and start a new one",
                          sequence.id, length))));
  }
  std::optional<int32_t> token = work.token.has_value() ? work.token : sequence.last_sampled;
  if (!token.has_value()) {
    return Defer(
        Bind(std::move(work.done),
             absl::FailedPreconditionError(absl::StrFormat(
                 "sequence %d has no sampled token to append; pass token_id", sequence.id))));
  }
  if (work.sampling.has_value()) {
    const int32_t top = sequence.sampling.num_top_logprobs;
    sequence.sampling = *work.sampling;
    sequence.sampling.num_top_logprobs = top;
  }
  if (work.num_top_logprobs.has_value()) {
    sequence.sampling.num_top_logprobs = *work.num_top_logprobs;
  }
  sequence.busy = true;
  auto entry = std::make_unique<WaitingEntry>();
  entry->enqueued = absl::Now();
  entry->sequence_id = sequence.id;
  entry->existing_length = length;
  entry->tokens_to_reserve = 1;
  entry->max_total_tokens = length + 1;
  entry->request = std::make_unique<ActiveRequest>();
  entry->request->control = work.control;
  entry->request->feed = {*token};
  entry->request->prompt_done = true;
  entry->request->unary_done = std::move(work.done);
  Enwait(std::move(entry));
}

void Engine::HandleGenerate(GenerateWork work) {
  auto entry = std::make_unique<WaitingEntry>();
  entry->enqueued = absl::Now();
  entry->persistent = false;
  entry->sampling = work.sampling;
  // Blocks grow lazily as tokens are generated (RunStep preempts when they run out); admission
  // takes the prompt plus the first generated token's slot. The last generated token is returned
  // but never fed back, so it needs no KV slot.
  const int64_t prompt_tokens = static_cast<int64_t>(work.tokens.size());
  entry->tokens_to_reserve = prompt_tokens + (work.max_tokens > 1 ? 1 : 0);
  entry->max_total_tokens = prompt_tokens + work.max_tokens - 1;
  entry->request = std::make_unique<ActiveRequest>();
  entry->request->control = work.control;
  entry->request->feed = std::move(work.tokens);
  auto generate = std::make_unique<GenerateState>();
  generate->max_tokens = work.max_tokens;
  generate->stop_token_ids = std::move(work.stop_token_ids);
  generate->ignore_eos = work.ignore_eos;
  generate->prompt_tokens = static_cast<int32_t>(entry->request->feed.size());
  generate->on_token = std::make_shared<absl::AnyInvocable<void(const SampledToken&, int32_t)>>(
      std::move(work.on_token));
  generate->done = std::move(work.done);
  entry->request->generate = std::move(generate);
  Enwait(std::move(entry));
}

void Engine::HandleRelease(ReleaseCommand command) {
  auto it = sequences_.find(command.id);
  if (it == sequences_.end() || !it->second->persistent) {
    return Defer(Bind(std::move(command.done), UnknownSequence(command.id)));
  }
  if (it->second->busy) return Defer(Bind(std::move(command.done), BusySequence(command.id)));
  const int32_t length = *kv_->length(command.id);
  FreeSequence(command.id);
  Defer(Bind(std::move(command.done), length));
}

void Engine::FailActive(ActiveRequest& request, absl::Status status) {
  if (request.generate != nullptr) {
    if (request.generate->done) Defer(Bind(std::move(request.generate->done), std::move(status)));
  } else if (request.unary_done) {
    Defer(Bind(std::move(request.unary_done), std::move(status)));
  }
}

void Engine::FailWaiting(WaitingEntry& entry, absl::Status status) {
  if (entry.sequence_id != 0) {
    auto it = sequences_.find(entry.sequence_id);
    if (it != sequences_.end()) {
      it->second->busy = false;
      it->second->last_active = absl::Now();
    }
  }
  FailActive(*entry.request, std::move(status));
}

int32_t Engine::BlocksNeeded(const WaitingEntry& entry) const {
  if (entry.sequence_id == 0) {
    // Cached prefix blocks need no allocation, but those no sequence holds are counted as free now
    // and stop being free once mapped.
    const kvcache::PrefixMatch match = kv_->MatchPrefix(entry.request->feed);
    return kvcache::BlocksForTokens(entry.tokens_to_reserve, kv_->block_size()) - match.num_blocks +
           match.unreferenced_blocks;
  }
  absl::StatusOr<int32_t> missing =
      kv_->BlocksToReserve(entry.sequence_id, entry.existing_length + entry.tokens_to_reserve);
  if (!missing.ok()) return 0;
  if (entry.request->prompt_done) return *missing;  // a Decode's one token: nothing to look up
  // A prompt extension maps the cached blocks that continue the sequence (ExtendWithPrefix).
  absl::StatusOr<kvcache::PrefixMatch> match =
      kv_->MatchExtension(entry.sequence_id, entry.request->feed);
  return *missing + (match.ok() ? match->extra_free_blocks_taken() : 0);
}

void Engine::Enwait(std::unique_ptr<WaitingEntry> entry) {
  if (static_cast<int32_t>(waiting_.size()) >= options_.max_waiting_requests) {
    ++counters_.requests_rejected_kv_total;
    return FailWaiting(*entry, absl::ResourceExhaustedError(absl::StrFormat(
                                   "the server's request queue is full (%d waiting); retry later "
                                   "with backoff",
                                   waiting_.size())));
  }
  const int64_t total_tokens = entry->max_total_tokens;
  const int32_t total_blocks = kvcache::BlocksForTokens(total_tokens, kv_->block_size());
  if (total_blocks > kv_->num_blocks()) {
    ++counters_.requests_rejected_kv_total;
    return FailWaiting(*entry,
                       absl::ResourceExhaustedError(absl::StrFormat(
                           "the request needs %d KV tokens (%d blocks) but the whole KV "
                           "cache holds %d blocks of %d tokens; shorten the prompt or "
                           "max_tokens, or start the server with a larger KV budget",
                           total_tokens, total_blocks, kv_->num_blocks(), kv_->block_size())));
  }
  waiting_.push_back(std::move(entry));
}

void Engine::ExpireWork(absl::Time now) {
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    WaitingEntry& entry = **it;
    absl::Status status;
    if (entry.request->control.is_cancelled()) {
      status = absl::CancelledError("the client cancelled the request while it was queued");
    } else if (now >= entry.request->control.deadline) {
      status = absl::DeadlineExceededError(
          "the deadline passed while the request waited for KV cache space; retry with a longer "
          "deadline or when the server is less loaded");
    } else if (now - entry.enqueued >= options_.max_queue_wait &&
               (!entry.recompute ||
                (running_.empty() && BlocksNeeded(entry) > kv_->num_free_blocks()))) {
      // A preempted request has already started (a Generate may have streamed tokens): it waits
      // for as long as running requests, which always finish, keep freeing blocks, and is not
      // failed when the blocks it waits for are free now (admission comes right after this).
      ++counters_.requests_rejected_kv_total;
      status = absl::ResourceExhaustedError(absl::StrFormat(
          "KV cache full: the request waited %s for %d free KV blocks (%d of %d free); retry "
          "later, release idle sequences, or start the server with a larger KV budget",
          absl::FormatDuration(now - entry.enqueued), BlocksNeeded(entry), kv_->num_free_blocks(),
          kv_->num_blocks()));
    }
    if (status.ok()) {
      ++it;
      continue;
    }
    std::unique_ptr<WaitingEntry> expired = std::move(*it);
    it = waiting_.erase(it);
    FailWaiting(*expired, std::move(status));
  }
  const std::vector<SequenceId> running = running_;
  for (SequenceId id : running) {
    Sequence& sequence = *sequences_.at(id);
    const RequestControl& control = sequence.active->control;
    if (control.is_cancelled()) {
      AbortRequest(sequence, absl::CancelledError("the client cancelled the request"));
    } else if (now >= control.deadline) {
      AbortRequest(sequence, absl::DeadlineExceededError(
                                 "the request's deadline passed before it finished; retry with a "
                                 "longer deadline"));
    }
  }
  std::vector<SequenceId> expired;
  for (const auto& [id, sequence] : sequences_) {
    if (sequence->persistent && !sequence->busy &&
        now - sequence->last_active >= options_.sequence_ttl) {
      expired.push_back(id);
    }
  }
  for (SequenceId id : expired) {
    FreeSequence(id);
    ++counters_.sequences_expired_total;
  }
}

void Engine::AdmitWaiting(absl::Time now) {
  if (waiting_.empty()) return;
  std::vector<WaitingRequestNeeds> needs;
  needs.reserve(waiting_.size());
  for (const auto& entry : waiting_) needs.push_back({BlocksNeeded(*entry)});
  const std::vector<bool> admit = scheduler_.PlanAdmission(
      needs, static_cast<int32_t>(running_.size()), kv_->num_free_blocks());
  std::deque<std::unique_ptr<WaitingEntry>> still_waiting;
  for (size_t i = 0; i < waiting_.size(); ++i) {
    std::unique_ptr<WaitingEntry> entry = std::move(waiting_[i]);
    if (!admit[i]) {
      still_waiting.push_back(std::move(entry));
      continue;
    }
    SequenceId id = entry->sequence_id;
    if (id == 0) {
      id = next_sequence_id_++;
      absl::StatusOr<int32_t> cached = kv_->CreateSequenceWithPrefix(id, entry->request->feed);
      absl::Status status = cached.status();
      if (status.ok()) status = kv_->Reserve(id, entry->tokens_to_reserve);
      if (status.ok()) {
        entry->request->fed = *cached;  // the cached prefix is not run again
        if (!entry->recompute) {
          counters_.prefix_cache_query_tokens_total +=
              static_cast<int64_t>(entry->request->feed.size());
          counters_.prefix_cache_hit_tokens_total += *cached;
        }
      }
      if (!status.ok()) {
        (void)kv_->Free(id);
        FailWaiting(*entry, absl::InternalError(absl::StrCat("KV bookkeeping failed at admission: ",
                                                             status.message())));
        continue;
      }
      auto sequence = std::make_unique<Sequence>();
      sequence->id = id;
      sequence->persistent = entry->persistent;
      sequence->sampling = entry->sampling;
      sequence->created_by_request = true;
      sequence->busy = true;
      sequences_[id] = std::move(sequence);
    } else {
      // A prompt extension maps the cached blocks that continue the sequence and prefills the
      // rest; a partial last block it replaces is set aside until the request ends (committed)
      // or is undone (Truncate back to existing_length restores it).
      absl::StatusOr<int32_t> cached = 0;
      if (!entry->request->prompt_done) cached = kv_->ExtendWithPrefix(id, entry->request->feed);
      absl::Status status = cached.status();
      if (status.ok()) status = kv_->Reserve(id, entry->existing_length + entry->tokens_to_reserve);
      if (!status.ok()) {
        (void)kv_->Truncate(id, static_cast<int32_t>(entry->existing_length));
        FailWaiting(*entry, absl::InternalError(absl::StrCat("KV bookkeeping failed at admission: ",
                                                             status.message())));
        continue;
      }
      entry->request->fed = *cached;
      if (!entry->recompute && !entry->request->prompt_done) {
        counters_.prefix_cache_query_tokens_total +=
            static_cast<int64_t>(entry->request->feed.size());
        counters_.prefix_cache_hit_tokens_total += *cached;
      }
    }
    Sequence& sequence = *sequences_.at(id);
    sequence.length_before_request = static_cast<int32_t>(entry->existing_length);
    sequence.active = std::move(entry->request);
    running_.push_back(id);
    if (observer_ != nullptr && !entry->recompute) observer_->OnAdmitted(now - entry->enqueued);
  }
  waiting_.swap(still_waiting);
}

std::vector<ScheduledChunk> Engine::PlanStepWithinKv() {
  while (!running_.empty()) {
    std::vector<RunnableSequence> runnable;
    runnable.reserve(running_.size());
    for (SequenceId id : running_) {
      const ActiveRequest& request = *sequences_.at(id)->active;
      runnable.push_back({.id = id,
                          .pending_tokens = static_cast<int32_t>(request.feed.size()) - request.fed,
                          .is_decode = request.prompt_done});
    }
    std::vector<ScheduledChunk> plan = scheduler_.PlanStep(runnable);
    int32_t needed = 0;
    for (const ScheduledChunk& chunk : plan) {
      needed +=
          kv_->BlocksToReserve(chunk.id, *kv_->length(chunk.id) + chunk.num_tokens).value_or(0);
    }
    if (needed <= kv_->num_free_blocks()) {
      bool reserved = true;
      for (const ScheduledChunk& chunk : plan) {
        absl::Status status = kv_->Reserve(chunk.id, *kv_->length(chunk.id) + chunk.num_tokens);
        if (!status.ok()) {  // not expected: the blocks were counted just above
          AbortRequest(*sequences_.at(chunk.id),
                       absl::InternalError(absl::StrCat("KV bookkeeping failed before a step: ",
                                                        status.message())));
          reserved = false;
          break;
        }
      }
      if (reserved) return plan;
      continue;
    }
    // Lowest priority first: the request admitted last (possibly the one that needs the block).
    Preempt(*sequences_.at(running_.back()));
  }
  return {};
}

void Engine::Preempt(Sequence& sequence) {
  std::unique_ptr<ActiveRequest> request = std::move(sequence.active);
  running_.erase(std::find(running_.begin(), running_.end(), sequence.id));
  auto entry = std::make_unique<WaitingEntry>();
  entry->enqueued = absl::Now();
  entry->recompute = true;
  if (sequence.created_by_request) {
    // Everything the sequence holds came from this request: recompute it from the tokens.
    std::vector<int32_t> history;
    if (absl::StatusOr<std::span<const int32_t>> cached = kv_->tokens(sequence.id); cached.ok()) {
      history.assign(cached->begin(), cached->end());
    }
    history.insert(history.end(), request->feed.begin() + request->fed, request->feed.end());
    const int64_t remaining = request->generate != nullptr
                                  ? request->generate->max_tokens - request->generate->generated
                                  : 1;
    request->feed = std::move(history);
    request->fed = 0;
    request->prompt_done = false;
    const int64_t feed_size = static_cast<int64_t>(request->feed.size());
    entry->persistent = sequence.persistent;
    entry->sampling = sequence.sampling;
    entry->tokens_to_reserve = feed_size + (remaining > 1 ? 1 : 0);
    entry->max_total_tokens = feed_size + std::max<int64_t>(remaining - 1, 0);
    FreeSequence(sequence.id);
  } else {
    // The request extends an older sequence: undo its part; the sequence stays busy with it.
    (void)kv_->Truncate(sequence.id, sequence.length_before_request);
    request->fed = 0;
    entry->sequence_id = sequence.id;
    entry->existing_length = sequence.length_before_request;
    entry->tokens_to_reserve = static_cast<int64_t>(request->feed.size());
    entry->max_total_tokens = entry->existing_length + entry->tokens_to_reserve;
  }
  entry->request = std::move(request);
  waiting_.push_front(std::move(entry));
  ++counters_.preemptions_total;
}

void Engine::RunStep() {
  const std::vector<ScheduledChunk> plan = PlanStepWithinKv();
  if (plan.empty()) return;

  StepStats step;
  std::vector<SequenceChunk> chunks(plan.size());
  for (size_t i = 0; i < plan.size(); ++i) {
    const Sequence& sequence = *sequences_.at(plan[i].id);
    const ActiveRequest& request = *sequence.active;
    SequenceChunk& chunk = chunks[i];
    chunk.start_position = *kv_->length(sequence.id);
    chunk.tokens.assign(request.feed.begin() + request.fed,
                        request.feed.begin() + request.fed + plan[i].num_tokens);
    const int32_t end = chunk.start_position + plan[i].num_tokens;
    std::span<const int32_t> table = *kv_->block_table(sequence.id);
    chunk.block_table.assign(table.begin(),
                             table.begin() + kvcache::BlocksForTokens(end, kv_->block_size()));
    chunk.sample = request.fed + plan[i].num_tokens == static_cast<int32_t>(request.feed.size());
    chunk.sampling = sequence.sampling;
    // The draw is indexed by the position the sampled token will take: reproducible per seed no
    // matter how the prompt was chunked or batched.
    chunk.sampling.draw_index = static_cast<uint64_t>(end);
    (request.prompt_done ? step.decode_tokens : step.prefill_tokens) += plan[i].num_tokens;
  }
  step.num_sequences = static_cast<int32_t>(chunks.size());

  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<ChunkResult>> results = model_->Forward(chunks);
  step.duration = absl::Now() - start;
  ++counters_.steps_total;
  counters_.step_seconds_total += absl::ToDoubleSeconds(step.duration);
  counters_.last_step_seconds = absl::ToDoubleSeconds(step.duration);
  if (results.ok() && results->size() != chunks.size()) {
    results = absl::InternalError(absl::StrFormat("the model returned %d results for %d chunks",
                                                  results->size(), chunks.size()));
  }
  if (!results.ok()) {
    step.ok = false;
    const absl::Status failure =
        absl::InternalError(absl::StrCat("the forward step failed: ", results.status().message()));
    for (const ScheduledChunk& scheduled : plan) {
      auto it = sequences_.find(scheduled.id);
      if (it != sequences_.end() && it->second->active != nullptr) {
        AbortRequest(*it->second, failure);
      }
    }
    if (observer_ != nullptr) observer_->OnStep(step);
    return;
  }
  counters_.prompt_tokens_total += step.prefill_tokens;
  for (size_t i = 0; i < plan.size(); ++i) {
    Sequence& sequence = *sequences_.at(plan[i].id);
    // The blocks were reserved before the step, so this only moves the length (and caches the
    // blocks the chunk completed).
    if (absl::Status status = kv_->AppendTokens(sequence.id, chunks[i].tokens); !status.ok()) {
      AbortRequest(sequence, absl::InternalError(absl::StrCat("KV bookkeeping failed after a "
                                                              "step: ",
                                                              status.message())));
      continue;
    }
    sequence.active->fed += plan[i].num_tokens;
    if (chunks[i].sample) FinishSampled(sequence, (*results)[i].sampled);
  }
  if (observer_ != nullptr) observer_->OnStep(step);
}

void Engine::FinishSampled(Sequence& sequence, const SampledToken& token) {
  ++counters_.generated_tokens_total;
  ActiveRequest& request = *sequence.active;
  request.prompt_done = true;
  if (request.generate != nullptr) {
    GenerateState& generate = *request.generate;
    ++generate.generated;
    Defer([on_token = generate.on_token, token, index = generate.generated - 1]() {
      (*on_token)(token, index);
    });
    std::optional<FinishReason> reason;
    if (std::find(generate.stop_token_ids.begin(), generate.stop_token_ids.end(), token.token) !=
        generate.stop_token_ids.end()) {
      reason = FinishReason::kStopToken;
    } else if (!generate.ignore_eos &&
               std::find(config_.eos_token_ids.begin(), config_.eos_token_ids.end(), token.token) !=
                   config_.eos_token_ids.end()) {
      reason = FinishReason::kEos;
    } else if (generate.generated >= generate.max_tokens) {
      reason = FinishReason::kLength;
    }
    if (!reason.has_value()) {
      request.feed = {token.token};
      request.fed = 0;
      return;
    }
    auto done = std::move(generate.done);
    const GenerateSummary summary{.reason = *reason,
                                  .prompt_tokens = generate.prompt_tokens,
                                  .completion_tokens = generate.generated};
    FreeSequence(sequence.id);
    Defer(Bind(std::move(done), summary));
    return;
  }
  UnaryDone done = std::move(request.unary_done);
  (void)kv_->CommitExtension(sequence.id);  // the request will not be undone now
  const StepOutput output{
      .sequence_id = sequence.id, .length = *kv_->length(sequence.id), .token = token};
  sequence.last_sampled = token.token;
  sequence.created_by_request = false;
  sequence.busy = false;
  sequence.last_active = absl::Now();
  sequence.active.reset();
  running_.erase(std::find(running_.begin(), running_.end(), sequence.id));
  Defer(Bind(std::move(done), output));
}

void Engine::AbortRequest(Sequence& sequence, absl::Status status) {
  std::unique_ptr<ActiveRequest> request = std::move(sequence.active);
  running_.erase(std::find(running_.begin(), running_.end(), sequence.id));
  if (!sequence.persistent || sequence.created_by_request) {
    FreeSequence(sequence.id);
  } else {
    // The request did not happen: the sequence keeps what it held before.
    (void)kv_->Truncate(sequence.id, sequence.length_before_request);
    sequence.busy = false;
    sequence.last_active = absl::Now();
  }
  if (request != nullptr) FailActive(*request, std::move(status));
}

void Engine::FreeSequence(SequenceId id) {
  (void)kv_->Free(id);
  auto running = std::find(running_.begin(), running_.end(), id);
  if (running != running_.end()) running_.erase(running);
  sequences_.erase(id);
}

void Engine::AbortEverything(const absl::Status& status) {
  while (!waiting_.empty()) {
    std::unique_ptr<WaitingEntry> entry = std::move(waiting_.front());
    waiting_.pop_front();
    FailWaiting(*entry, status);
  }
  while (!running_.empty()) AbortRequest(*sequences_.at(running_.front()), status);
  std::vector<SequenceId> ids;
  for (const auto& [id, sequence] : sequences_) ids.push_back(id);
  for (SequenceId id : ids) FreeSequence(id);
}

void Engine::PublishStats() {
  EngineStats stats = counters_;
  stats.running_requests = static_cast<int32_t>(running_.size());
  stats.waiting_requests = static_cast<int32_t>(waiting_.size());
  stats.idle_sequences = 0;
  for (const auto& [id, sequence] : sequences_) {
    if (sequence->persistent && !sequence->busy) ++stats.idle_sequences;
  }
  const kvcache::KvCacheUsage usage = kv_->usage();
  stats.kv_blocks_total = usage.total_blocks;
  stats.kv_blocks_used = usage.used_blocks;
  stats.kv_blocks_free = usage.free_blocks;
  stats.kv_blocks_cached = usage.cached_blocks;
  stats.kv_blocks_evicted_total = usage.evictions_total;
  stats.kv_block_bytes = usage.block_bytes;
  std::lock_guard<std::mutex> lock(mutex_);
  published_stats_ = stats;
}

bool Engine::accepting() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return accepting_;
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return published_stats_;
}

}  // namespace llm::engine
