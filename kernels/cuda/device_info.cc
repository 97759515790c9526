#include "kernels/cuda/device_info.h"

#include <cuda_runtime.h>

namespace llm::cuda {

const DeviceInfo& CurrentDeviceInfo() {
  static const DeviceInfo info = [] {
    DeviceInfo d;
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, device) !=
            cudaSuccess ||
        cudaDeviceGetAttribute(&d.minor, cudaDevAttrComputeCapabilityMinor, device) !=
            cudaSuccess ||
        cudaDeviceGetAttribute(&d.num_sms, cudaDevAttrMultiProcessorCount, device) !=
            cudaSuccess) {
      cudaGetLastError();
      return DeviceInfo{};
    }
    return d;
  }();
  return info;
}

}  // namespace llm::cuda
