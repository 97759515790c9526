// libFuzzer target for ParseSafetensorsHeader, the first code that reads a checkpoint file.
//
// Each input is parsed twice:
//  1. as the whole file, byte for byte (the length prefix is fuzzed too);
//  2. "framed": the JSON text (input bytes 8 to the last '}') gets a correct length prefix and the
//     bytes after it become the data section, so mutations inside the JSON are not all rejected by
//     a length prefix that no longer matches.
// Whenever a parse succeeds, the header's promises (safetensors.h) are checked and every tensor's
// first and last byte is read from the exactly sized input buffer, so that an accepted out-of-range
// offset is an AddressSanitizer report rather than a silent pass.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "kernels/dtype.h"
#include "server/model/safetensors.h"

namespace {

// Aborts (a libFuzzer crash with the input saved) when a promise of a successful parse fails.
void Require(bool condition) {
  if (!condition) std::abort();
}

void CheckAcceptedHeader(const llm::SafetensorsHeader& header, const uint8_t* bytes, size_t size) {
  Require(header.data_section_offset >= 8 && header.data_section_offset <= size);
  const uint64_t data_section_bytes = size - header.data_section_offset;
  std::vector<const llm::SafetensorsEntry*> nonempty;
  volatile uint8_t sink = 0;
  for (const auto& [name, entry] : header.tensors) {
    Require(entry.data_begin <= entry.data_end);
    Require(entry.data_end <= data_section_bytes);
    uint64_t elements = 1;
    for (int64_t extent : entry.shape) {
      Require(extent >= 0);
      elements *= static_cast<uint64_t>(extent);  // cannot wrap: the parser refused overflow
    }
    const uint64_t element_bytes = llm::DTypeSize(entry.dtype);
    Require(entry.data_end - entry.data_begin == elements * element_bytes);
    Require((header.data_section_offset + entry.data_begin) % element_bytes == 0);
    if (entry.data_end > entry.data_begin) {
      nonempty.push_back(&entry);
      const uint8_t* data = bytes + header.data_section_offset;
      sink = sink + data[entry.data_begin] + data[entry.data_end - 1];
    }
  }
  std::sort(nonempty.begin(), nonempty.end(),
            [](const auto* a, const auto* b) { return a->data_begin < b->data_begin; });
  for (size_t i = 1; i < nonempty.size(); ++i) {
    Require(nonempty[i - 1]->data_end <= nonempty[i]->data_begin);
  }
}

void ParseAndCheck(const uint8_t* bytes, size_t size) {
  absl::StatusOr<llm::SafetensorsHeader> header =
      llm::ParseSafetensorsHeader(bytes, size, "fuzz.safetensors");
  if (header.ok()) {
    CheckAcceptedHeader(*header, bytes, size);
  } else {
    Require(!header.status().message().empty());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // libFuzzer's buffer is an exact-size heap allocation, so a read past its end is reported.
  ParseAndCheck(data, size);

  if (size <= 8) return 0;
  const uint8_t* json_begin = data + 8;
  const uint8_t* last_brace = nullptr;
  for (const uint8_t* p = data + size; p != json_begin;) {
    if (*--p == '}') {
      last_brace = p;
      break;
    }
  }
  if (last_brace == nullptr) return 0;
  const uint64_t json_bytes = static_cast<uint64_t>(last_brace + 1 - json_begin);
  // Sized at construction so that its capacity is its size: a read past the end is reported.
  std::vector<uint8_t> framed(size);
  for (int i = 0; i < 8; ++i) framed[i] = static_cast<uint8_t>(json_bytes >> (8 * i));
  std::copy(json_begin, data + size, framed.begin() + 8);
  ParseAndCheck(framed.data(), framed.size());
  return 0;
}
