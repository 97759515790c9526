// Programmatic dependent launch (compute capability 9.0), device side. A kernel launched with
// cudaLaunchAttributeProgrammaticStreamSerialization may start once every block of the kernel
// before it has called LetDependentsStart (or finished); it must call WaitForPrecedingGrid before
// it touches what that kernel writes. Both are no-ops below sm_90 and without the attribute.
// Users: flash decode (lets the merge kernel start) and the merge kernel (waits for flash decode).
#pragma once

namespace llm::cuda {

__device__ __forceinline__ void LetDependentsStart() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Returns once the preceding kernel has finished and its writes are visible.
__device__ __forceinline__ void WaitForPrecedingGrid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

}  // namespace llm::cuda
