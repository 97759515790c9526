// Safetensors header validation and the read-only memory map of one file.
#include "server/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace llm {
namespace {

using nlohmann::json;

constexpr size_t kLengthPrefixBytes = 8;
// The reference implementation refuses headers above 100 MB; a larger length is a corrupt file, and
// refusing it early avoids parsing garbage.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

absl::StatusOr<DType> ParseDType(std::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  return absl::InvalidArgumentError("unsupported");
}

// The value as an error message shows it. Arrays and objects are named rather than printed, since
// json::dump recurses once per nesting level and a value nested a million deep overflowed the stack
// (docs/RELIABILITY.md); long values are cut so that a corrupt file cannot make a huge message.
std::string DescribeJsonValue(const json& value) {
  if (value.is_array()) return "an array";
  if (value.is_object()) return "an object";
  constexpr size_t kMaxChars = 64;
  std::string text = value.dump();
  if (text.size() > kMaxChars) text = absl::StrCat(text.substr(0, kMaxChars), "...");
  return text;
}

absl::Status EntryError(const std::string& file_name, const std::string& tensor,
                        const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("safetensors file ", file_name, ": tensor \"", tensor, "\": ", what));
}

absl::StatusOr<SafetensorsEntry> ParseEntry(const json& value, const std::string& tensor,
                                            uint64_t data_section_bytes,
                                            uint64_t data_section_offset,
                                            const std::string& file_name) {
  if (!value.is_object()) return EntryError(file_name, tensor, "header entry is not a JSON object");
  SafetensorsEntry entry;

  const auto dtype_it = value.find("dtype");
  if (dtype_it == value.end() || !dtype_it->is_string()) {
    return EntryError(file_name, tensor, "field \"dtype\" is missing or not a string");
  }
  const std::string dtype_name = dtype_it->get<std::string>();
  absl::StatusOr<DType> dtype = ParseDType(dtype_name);
  if (!dtype.ok()) {
    return EntryError(
        file_name, tensor,
        absl::StrCat("dtype ", dtype_name,
                     " is not supported (F32, F16 or BF16 only); convert the "
                     "checkpoint, e.g. save it with torch_dtype float32 or bfloat16"));
  }
  entry.dtype = *dtype;

  const auto shape_it = value.find("shape");
  if (shape_it == value.end() || !shape_it->is_array()) {
    return EntryError(file_name, tensor, "field \"shape\" is missing or not an array");
  }
  uint64_t num_elements = 1;
  for (const json& dim : *shape_it) {
    if (!dim.is_number_unsigned() || dim.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return EntryError(file_name, tensor,
                        absl::StrCat("field \"shape\" has ", DescribeJsonValue(dim),
                                     ", expected non-negative integers"));
    }
    const uint64_t extent = dim.get<uint64_t>();
    if (__builtin_mul_overflow(num_elements, extent, &num_elements)) {
      return EntryError(file_name, tensor, "field \"shape\" overflows 64-bit element count");
    }
    entry.shape.push_back(static_cast<int64_t>(extent));
  }

  const auto offsets_it = value.find("data_offsets");
  if (offsets_it == value.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    return EntryError(file_name, tensor,
                      "field \"data_offsets\" must be [begin, end] non-negative integers");
  }
  entry.data_begin = (*offsets_it)[0].get<uint64_t>();
  entry.data_end = (*offsets_it)[1].get<uint64_t>();
  if (entry.data_begin > entry.data_end) {
    return EntryError(file_name, tensor,
                      absl::StrCat("data_offsets [", entry.data_begin, ", ", entry.data_end,
                                   "] has begin after end"));
  }
  if (entry.data_end > data_section_bytes) {
    return EntryError(
        file_name, tensor,
        absl::StrCat("data_offsets end ", entry.data_end, " is past the end of the data section (",
                     data_section_bytes, " bytes): the file is truncated or the header is wrong"));
  }
  uint64_t expected_bytes = 0;
  if (__builtin_mul_overflow(num_elements, DTypeSize(entry.dtype), &expected_bytes) ||
      entry.data_end - entry.data_begin != expected_bytes) {
    return EntryError(file_name, tensor,
                      absl::StrCat("data_offsets [", entry.data_begin, ", ", entry.data_end,
                                   "] span ", entry.data_end - entry.data_begin,
                                   " bytes but shape [", absl::StrJoin(entry.shape, ", "), "] of ",
                                   std::string(DTypeName(entry.dtype)), " needs ", expected_bytes));
  }
  // Tensors are handed out as typed views into the map (page aligned), so the file offset must be
  // aligned for the element type; writers that follow the format's padding rule always are.
  if ((data_section_offset + entry.data_begin) % DTypeSize(entry.dtype) != 0) {
    return EntryError(file_name, tensor,
                      absl::StrCat("data at file offset ", data_section_offset + entry.data_begin,
                                   " is not aligned to its ", DTypeSize(entry.dtype),
                                   "-byte elements; rewrite the file with a padded header"));
  }
  return entry;
}

}  // namespace

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(const uint8_t* bytes, size_t size,
                                                         std::string_view file_name_view) {
  // This Abseil build's StrCat does not take std::string_view.
  const std::string file_name(file_name_view);
  if (size < kLengthPrefixBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors file ", file_name, ": truncated, ", size,
                     " bytes is shorter than the 8-byte header length prefix"));
  }
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | bytes[i];  // little-endian
  if (header_bytes > size - kLengthPrefixBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors file ", file_name, ": header length ", header_bytes,
                     " runs past the end of the file (", size,
                     " bytes); the file is truncated or not a safetensors file"));
  }
  if (header_bytes > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors file ", file_name,
                                                   ": header length ", header_bytes,
                                                   " exceeds the 100 MB limit"));
  }

  const char* header_text = reinterpret_cast<const char*>(bytes + kLengthPrefixBytes);
  json header_json;
  try {
    header_json = json::parse(header_text, header_text + header_bytes);
  } catch (const json::exception& error) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors file ", file_name, ": header is not valid JSON: ", error.what()));
  }
  if (!header_json.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors file ", file_name, ": header JSON is not an object"));
  }

  SafetensorsHeader header;
  header.data_section_offset = kLengthPrefixBytes + header_bytes;
  const uint64_t data_section_bytes = size - header.data_section_offset;
  for (const auto& [name, value] : header_json.items()) {
    if (name == "__metadata__") continue;
    absl::StatusOr<SafetensorsEntry> entry =
        ParseEntry(value, name, data_section_bytes, header.data_section_offset, file_name);
    if (!entry.ok()) return entry.status();
    header.tensors.emplace(name, *std::move(entry));
  }

  // Two tensors must never share bytes: sort by start and compare neighbours (empty tensors own no
  // bytes and cannot overlap).
  std::vector<std::pair<const std::string*, const SafetensorsEntry*>> by_offset;
  for (const auto& [name, entry] : header.tensors) {
    if (entry.data_end > entry.data_begin) by_offset.emplace_back(&name, &entry);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const auto& a, const auto& b) {
    return a.second->data_begin < b.second->data_begin;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const auto& [previous_name, previous] = by_offset[i - 1];
    const auto& [name, entry] = by_offset[i];
    if (entry->data_begin < previous->data_end) {
      return EntryError(file_name, *name,
                        absl::StrCat("data_offsets [", entry->data_begin, ", ", entry->data_end,
                                     "] overlap tensor \"", *previous_name, "\" at [",
                                     previous->data_begin, ", ", previous->data_end, "]"));
    }
  }
  return header;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(
        absl::StrCat("cannot open safetensors file ", path.string(), ": ", std::strerror(errno)));
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    const int error = errno;
    ::close(fd);
    return absl::InternalError(
        absl::StrCat("cannot stat safetensors file ", path.string(), ": ", std::strerror(error)));
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors path ", path.string(), " is not a regular file"));
  }
  const auto size = static_cast<size_t>(info.st_size);
  const uint8_t* mapping = nullptr;
  if (size > 0) {
    void* address = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (address == MAP_FAILED) {
      const int error = errno;
      ::close(fd);
      return absl::InternalError(
          absl::StrCat("cannot mmap safetensors file ", path.string(), ": ", std::strerror(error)));
    }
    mapping = static_cast<const uint8_t*>(address);
  }
  ::close(fd);  // the mapping keeps the file contents reachable

  absl::StatusOr<SafetensorsHeader> header = ParseSafetensorsHeader(mapping, size, path.string());
  if (!header.ok()) {
    if (mapping != nullptr) ::munmap(const_cast<uint8_t*>(mapping), size);
    return header.status();
  }
  return std::unique_ptr<SafetensorsFile>(
      new SafetensorsFile(path, mapping, size, *std::move(header)));
}

SafetensorsFile::SafetensorsFile(std::filesystem::path path, const uint8_t* mapping, size_t size,
                                 SafetensorsHeader header)
    : path_(std::move(path)), mapping_(mapping), size_(size), header_(std::move(header)) {}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(const_cast<uint8_t*>(mapping_), size_);
}

absl::StatusOr<HostTensor> SafetensorsFile::Tensor(std::string_view name) const {
  const auto it = header_.tensors.find(name);
  if (it == header_.tensors.end()) {
    return absl::NotFoundError(absl::StrCat("tensor \"", std::string(name),
                                            "\" is not in safetensors file ", path_.string()));
  }
  const SafetensorsEntry& entry = it->second;
  HostTensor tensor;
  tensor.dtype = entry.dtype;
  tensor.shape = entry.shape;
  tensor.data = mapping_ + header_.data_section_offset + entry.data_begin;
  return tensor;
}

size_t SafetensorsFile::stored_bytes() const {
  size_t total = 0;
  for (const auto& [name, entry] : header_.tensors) total += entry.data_end - entry.data_begin;
  return total;
}

}  // namespace llm
