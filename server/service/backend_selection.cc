// Backend selection. The CUDA backend is a plugin loaded at run time (kernels/cuda_plugin_loader.h),
// so llm-server starts on machines without CUDA and falls back to the CPU backend under --backend=auto.
#include "server/service/backend_selection.h"

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#if LLM_HAVE_CUDA_PLUGIN_LOADER
#include "kernels/cuda_plugin_loader.h"
#endif

namespace llm::service {
namespace {

absl::StatusOr<std::unique_ptr<Backend>> TryCudaBackend() {
#if LLM_HAVE_CUDA_PLUGIN_LOADER
  return LoadCudaBackend();
#else
  return absl::UnavailableError(
      "this llm-server was built without the CUDA backend loader; use --backend=cpu");
#endif
}

}  // namespace

absl::StatusOr<BackendChoice> SelectBackend(std::string_view requested, int cpu_threads) {
  if (requested != "auto" && requested != "cpu" && requested != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--backend=", std::string(requested), " is not one of auto, cpu, cuda"));
  }
  std::string cuda_failure;
  if (requested != "cpu") {
    absl::StatusOr<std::unique_ptr<Backend>> cuda = TryCudaBackend();
    if (cuda.ok()) return BackendChoice{*std::move(cuda), "CUDA backend loaded"};
    if (requested == "cuda") return cuda.status();
    cuda_failure = std::string(cuda.status().message());
  }
  BackendChoice choice{CreateCpuBackend(cpu_threads), ""};
  choice.reason = requested == "cpu"
                      ? "CPU backend (--backend=cpu)"
                      : absl::StrCat("CPU backend (auto: CUDA unavailable: ", cuda_failure, ")");
  return choice;
}

}  // namespace llm::service
