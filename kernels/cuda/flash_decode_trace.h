// Flash decode's phase trace (flash_decode.cuh, kPhaseTrace), host side: the number of stamps a
// block writes and, for a plugin built with LLM_CUDA_DECODE_PHASE_TRACE, where the production
// kernels write them. Per block (linear index) kFlashDecodePhases values: %globaltimer (ns) at
// entry, metadata loaded, first tile landed, K/V loop done, the warps' (m, l, O) in shared memory,
// the block's rows merged, the cluster's first barrier passed (cluster merge only), end; then the
// SM. Phases a launch does not pass stay as they were (zero in a cleared buffer).
#pragma once

namespace llm::cuda {

inline constexpr int kFlashDecodePhases = 9;

// Points the production kernels' trace at `buffer` ([block][kFlashDecodePhases]; null: off) in
// both head-dim instantiations; false in a build without LLM_CUDA_DECODE_PHASE_TRACE.
bool SetFlashDecodePhaseTrace(unsigned long long* buffer);
bool SetFlashDecodePhaseTraceHeadDim64(unsigned long long* buffer);
bool SetFlashDecodePhaseTraceHeadDim128(unsigned long long* buffer);

}  // namespace llm::cuda
