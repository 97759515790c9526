// The CPU backend: every op of kernels/backend.h in fp32 over host memory, multi-threaded. It is
// the numerical reference for the CUDA backend and the fallback where no GPU exists.
#pragma once

#include <memory>

#include "kernels/backend.h"

namespace llm {

// num_threads: threads for the element-wise, norm, RoPE, attention and sampling ops (0 = hardware
// concurrency). GEMMs run on OpenBLAS's own threads.
std::unique_ptr<Backend> CreateCpuBackend(int num_threads);

}  // namespace llm
