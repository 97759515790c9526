// Future-returning wrappers around the engine's callback API, for tests.
#pragma once

#include <chrono>
#include <cstdlib>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "server/engine/engine.h"

namespace llm::engine::testing {

inline std::future<absl::StatusOr<StepOutput>> AsyncPrefill(
    Engine& engine, std::vector<int32_t> tokens, std::optional<SequenceId> extend = std::nullopt,
    RequestControl control = {}, SamplingParams sampling = {}) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<StepOutput>>>();
  PrefillWork work;
  work.tokens = std::move(tokens);
  work.sequence_id = extend;
  work.sampling = sampling;
  work.control = std::move(control);
  work.done = [promise](absl::StatusOr<StepOutput> output) { promise->set_value(std::move(output)); };
  engine.SubmitPrefill(std::move(work));
  return promise->get_future();
}

inline std::future<absl::StatusOr<StepOutput>> AsyncDecode(
    Engine& engine, SequenceId id, std::optional<int32_t> token = std::nullopt,
    RequestControl control = {}) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<StepOutput>>>();
  DecodeWork work;
  work.sequence_id = id;
  work.token = token;
  work.control = std::move(control);
  work.done = [promise](absl::StatusOr<StepOutput> output) { promise->set_value(std::move(output)); };
  engine.SubmitDecode(std::move(work));
  return promise->get_future();
}

struct GenerateOutcome {
  std::vector<int32_t> tokens;
  absl::StatusOr<GenerateSummary> summary;
};

// `on_token_hook` (optional) runs on the engine thread after each token is recorded.
inline std::future<GenerateOutcome> AsyncGenerate(
    Engine& engine, std::vector<int32_t> prompt, int32_t max_tokens, RequestControl control = {},
    std::vector<int32_t> stop_token_ids = {}, bool ignore_eos = false,
    std::function<void(int32_t index)> on_token_hook = nullptr) {
  struct State {
    std::promise<GenerateOutcome> promise;
    std::vector<int32_t> tokens;
  };
  auto state = std::make_shared<State>();
  GenerateWork work;
  work.tokens = std::move(prompt);
  work.max_tokens = max_tokens;
  work.stop_token_ids = std::move(stop_token_ids);
  work.ignore_eos = ignore_eos;
  work.control = std::move(control);
  work.on_token = [state, on_token_hook](const SampledToken& token, int32_t index) {
    state->tokens.push_back(token.token);
    if (on_token_hook) on_token_hook(index);
  };
  work.done = [state](absl::StatusOr<GenerateSummary> summary) {
    state->promise.set_value(GenerateOutcome{state->tokens, std::move(summary)});
  };
  auto future = state->promise.get_future();
  engine.SubmitGenerate(std::move(work));
  return future;
}

inline std::future<absl::StatusOr<int32_t>> AsyncRelease(Engine& engine, SequenceId id) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<int32_t>>>();
  engine.SubmitRelease(id, [promise](absl::StatusOr<int32_t> released) {
    promise->set_value(std::move(released));
  });
  return promise->get_future();
}

// Waits for a future with a generous bound so that a bug fails the test instead of hanging it.
template <typename T>
T Await(std::future<T> future) {
  if (future.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    ADD_FAILURE() << "timed out waiting for the engine";
    std::abort();
  }
  return future.get();
}

// Polls `condition` until it holds or `timeout` passes; for effects that only time produces (TTL).
template <typename Condition>
bool Eventually(Condition condition, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return condition();
}

}  // namespace llm::engine::testing
