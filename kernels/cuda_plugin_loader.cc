#include "kernels/cuda_plugin_loader.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace llm {
namespace {

// Mirrors the plugin's extern "C" entry points (kernels/cuda/cuda_backend.h), which this file
// must not include: that header belongs to a library built only where CUDA is.
// 2: Backend graph-capture ops, 3: FusedMatmul, 4: MatmulAdd, RowRmsScale, FoldsNormGains,
// 5: RopeAppendAttention
constexpr int kExpectedAbiVersion = 5;
using AbiVersionFn = int (*)();
using CreateFn = Backend* (*)(int device, char* error, size_t error_bytes);

std::vector<std::string> Candidates(const CudaPluginOptions& options) {
  if (!options.plugin_path.empty()) return {options.plugin_path};
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("LLM_CUDA_PLUGIN"); env != nullptr && *env != '\0') {
    candidates.push_back(env);
  }
  std::error_code error;
  const std::filesystem::path executable = std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) {
    const std::filesystem::path directory = executable.parent_path();
    // Installed (bin/ + lib/), next to the binary, and the CMake build tree (tests/<dir>/ and
    // server/service/ two levels below kernels/cuda/).
    for (const auto& relative :
         {std::filesystem::path("."), std::filesystem::path("../lib"),
          std::filesystem::path("../kernels/cuda"), std::filesystem::path("../../kernels/cuda")}) {
      const std::filesystem::path candidate = directory / relative / kCudaPluginFileName;
      if (std::filesystem::exists(candidate, error))
        candidates.push_back(candidate.lexically_normal());
    }
  }
  candidates.push_back(kCudaPluginFileName);
  return candidates;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> LoadCudaBackend(const CudaPluginOptions& options) {
  std::vector<std::string> failures;
  void* handle = nullptr;
  std::string loaded;
  for (const std::string& candidate : Candidates(options)) {
    // RTLD_LOCAL keeps the plugin's CUDA symbols out of the global namespace.
    handle = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle != nullptr) {
      loaded = candidate;
      break;
    }
    const char* message = dlerror();
    failures.push_back(
        absl::StrCat(candidate, ": ", message != nullptr ? message : "unknown error"));
  }
  if (handle == nullptr) {
    return absl::NotFoundError(absl::StrCat(
        "CUDA backend plugin not found or not loadable (build with CUDA, set LLM_CUDA_PLUGIN, or "
        "put ",
        kCudaPluginFileName, " on LD_LIBRARY_PATH); tried: ", absl::StrJoin(failures, "; ")));
  }
  auto abi_version = reinterpret_cast<AbiVersionFn>(dlsym(handle, "LlmCudaPluginAbiVersion"));
  auto create = reinterpret_cast<CreateFn>(dlsym(handle, "LlmCreateCudaBackend"));
  if (abi_version == nullptr || create == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(loaded, " is not the CUDA backend plugin (entry points missing)"));
  }
  if (abi_version() != kExpectedAbiVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat(loaded, " has plugin ABI version ", abi_version(), ", this program expects ",
                     kExpectedAbiVersion, ": rebuild them together"));
  }
  char error[1024] = {};
  Backend* backend = create(options.device, error, sizeof(error));
  if (backend == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("CUDA backend plugin ", loaded, " loaded, but: ", error));
  }
  return std::unique_ptr<Backend>(backend);
}

}  // namespace llm
