// The current CUDA device's compute capability and SM count, read once per process (the device
// that is current at the first call). All zeros when the device does not answer; the failed
// query's error is cleared so that it does not surface at the caller's next error check.
#pragma once

namespace llm::cuda {

struct DeviceInfo {
  int major = 0;
  int minor = 0;
  int num_sms = 0;
};

const DeviceInfo& CurrentDeviceInfo();

}  // namespace llm::cuda
