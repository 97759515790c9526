// Picks the compute backend for --backend=auto|cpu|cuda.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace llm::service {

struct BackendChoice {
  std::unique_ptr<Backend> backend;
  std::string reason;  // one log line: what was picked and why
};

// "cpu": the CPU backend with `cpu_threads` threads (0 = all cores). "cuda": the CUDA backend or an
// error saying why it is unavailable. "auto": CUDA when it loads, else CPU, saying why in `reason`.
absl::StatusOr<BackendChoice> SelectBackend(std::string_view requested, int cpu_threads);

}  // namespace llm::service
