// Loads the CUDA backend plugin (libllm_cuda_backend.so) at run time with dlopen, so that a program
// (the server) links no CUDA library: it starts on machines without CUDA, and cuBLASLt's static TLS
// never lands in its start-up image (see docs/PERFORMANCE.md and kernels/cuda/README.md: that TLS
// breaks civetweb's small-stack worker threads).
//
// Search order for the plugin: options.plugin_path if set; the LLM_CUDA_PLUGIN environment
// variable; next to the running executable, then ../lib and ../kernels/cuda relative to it; finally
// the plain file name through the dynamic loader's own search (LD_LIBRARY_PATH, rpath,
// ld.so.cache). The library stays loaded for the life of the process (backends and their deleters
// live in it).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace llm {

inline constexpr char kCudaPluginFileName[] = "libllm_cuda_backend.so";

struct CudaPluginOptions {
  std::string plugin_path;  // empty: search as above
  int device = 0;
};

// NotFound when no plugin file could be loaded (the message lists every place tried and dlerror()),
// FailedPrecondition when the plugin loaded but no usable GPU is present, or its ABI differs.
absl::StatusOr<std::unique_ptr<Backend>> LoadCudaBackend(const CudaPluginOptions& options = {});

}  // namespace llm
