// The safetensors file format: header parsing (a pure function over bytes, so it can be fuzzed) and
// a read-only memory map of one file whose tensors are views into the map.
//
// Layout: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
// data_offsets}} (plus an ignored "__metadata__"), then the data section; data_offsets are [begin,
// end) relative to the start of the data section. Only F32, F16 and BF16 tensors are accepted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/dtype.h"

namespace llm {

struct SafetensorsEntry {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t data_begin = 0;  // byte offsets relative to the data section, [begin, end)
  uint64_t data_end = 0;
};

struct SafetensorsHeader {
  uint64_t data_section_offset = 0;  // 8 + header length: where tensor bytes start in the file
  std::map<std::string, SafetensorsEntry, std::less<>> tensors;
};

// Parses and validates the header of a whole safetensors file held in [bytes, bytes + size). Fails,
// naming `file_name` and the offending tensor or field, on a truncated file, a header length past
// the end, malformed JSON, an unsupported dtype, a bad shape, data offsets out of range,
// overlapping, misaligned for the dtype, or not matching shape * dtype size.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(const uint8_t* bytes, size_t size,
                                                         std::string_view file_name);

// One safetensors file, memory-mapped read-only for the lifetime of the object.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  // NotFound naming the tensor and the file when absent.
  absl::StatusOr<HostTensor> Tensor(std::string_view name) const;
  // Sum of the data bytes of all tensors.
  size_t stored_bytes() const;

 private:
  SafetensorsFile(std::filesystem::path path, const uint8_t* mapping, size_t size,
                  SafetensorsHeader header);

  std::filesystem::path path_;
  const uint8_t* mapping_ = nullptr;  // nullptr for an empty file (nothing to map)
  size_t size_ = 0;
  SafetensorsHeader header_;
};

}  // namespace llm
