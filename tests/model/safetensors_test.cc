// Safetensors header parsing and the memory-mapped file: well-formed files read back exactly, and
// every kind of malformed file fails with a message naming the file and the tensor or field.
#include "server/model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/model/checkpoint_writer.h"

namespace llm {
namespace {

using ::llm::testing_files::BuildSafetensors;
using ::llm::testing_files::FreshTempDir;
using ::llm::testing_files::RawBytes;
using ::llm::testing_files::SafetensorsBytes;
using ::llm::testing_files::TensorSpec;
using ::llm::testing_files::WriteFile;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kFile[] = "crafted.safetensors";

absl::StatusOr<SafetensorsHeader> Parse(const std::string& bytes) {
  return ParseSafetensorsHeader(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                                kFile);
}

// A header with one tensor "w" and a data section of `data_bytes` bytes.
std::string OneTensor(const std::string& entry, size_t data_bytes) {
  return SafetensorsBytes("{\"w\": " + entry + "}", std::string(data_bytes, '\0'));
}

TEST(SafetensorsHeaderTest, ParsesDtypesShapesAndOffsetsAndIgnoresMetadata) {
  const std::string header =
      R"({"__metadata__": {"format": "pt"},
          "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
          "b": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]},
          "c": {"dtype": "F16", "shape": [2, 2], "data_offsets": [32, 40]},
          "scalar": {"dtype": "F32", "shape": [], "data_offsets": [40, 44]}})";
  const std::string bytes = SafetensorsBytes(header, std::string(44, '\0'));
  absl::StatusOr<SafetensorsHeader> parsed = Parse(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->data_section_offset, bytes.size() - 44);
  ASSERT_EQ(parsed->tensors.size(), 4u);
  const SafetensorsEntry& a = parsed->tensors.at("a");
  EXPECT_EQ(a.dtype, DType::kF32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.data_begin, 0u);
  EXPECT_EQ(a.data_end, 24u);
  EXPECT_EQ(parsed->tensors.at("b").dtype, DType::kBF16);
  EXPECT_EQ(parsed->tensors.at("c").dtype, DType::kF16);
  EXPECT_EQ(parsed->tensors.at("c").data_begin, 32u);
  EXPECT_TRUE(parsed->tensors.at("scalar").shape.empty());
}

TEST(SafetensorsHeaderTest, AcceptsEmptyHeaderObjectAndZeroSizedTensors) {
  absl::StatusOr<SafetensorsHeader> empty = Parse(SafetensorsBytes("{}", ""));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->tensors.empty());
  absl::StatusOr<SafetensorsHeader> zero =
      Parse(OneTensor(R"({"dtype": "F32", "shape": [0, 5], "data_offsets": [0, 0]})", 0));
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_EQ(zero->tensors.at("w").shape, (std::vector<int64_t>{0, 5}));
}

struct MalformedCase {
  std::string description;
  std::string bytes;
  std::vector<std::string> message_parts;  // besides the file name
};

class MalformedSafetensorsTest : public testing::TestWithParam<MalformedCase> {};

TEST_P(MalformedSafetensorsTest, HeaderParserFailsNamingFileAndCause) {
  const MalformedCase& c = GetParam();
  absl::StatusOr<SafetensorsHeader> parsed = Parse(c.bytes);
  ASSERT_FALSE(parsed.ok()) << c.description << " was accepted";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(parsed.status().message());
  EXPECT_THAT(message, HasSubstr(kFile));
  for (const std::string& part : c.message_parts) {
    EXPECT_THAT(message, HasSubstr(part)) << c.description;
  }
}

TEST_P(MalformedSafetensorsTest, OpeningTheFileFailsNamingItsPathAndCause) {
  const MalformedCase& c = GetParam();
  const std::filesystem::path path = FreshTempDir() / "malformed.safetensors";
  WriteFile(path, c.bytes);
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok()) << c.description << " was accepted";
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(file.status().message());
  EXPECT_THAT(message, HasSubstr(path.string()));
  for (const std::string& part : c.message_parts) {
    EXPECT_THAT(message, HasSubstr(part)) << c.description;
  }
}

std::string WithLength(uint64_t length, const std::string& rest) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  return bytes + rest;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, MalformedSafetensorsTest,
    testing::Values(
        MalformedCase{"empty file", "", {"truncated"}},
        MalformedCase{"shorter than the length prefix", std::string(5, '\x10'), {"truncated"}},
        MalformedCase{"header length past the end", WithLength(100, "{}"), {"header length 100"}},
        MalformedCase{
            "header length near 2^64", WithLength(~uint64_t{0} - 3, "{}"), {"runs past the end"}},
        MalformedCase{
            "header is not JSON", SafetensorsBytes("{\"w\": [1,", ""), {"not valid JSON"}},
        MalformedCase{"header is a JSON array", SafetensorsBytes("[1, 2]", ""), {"not an object"}},
        MalformedCase{"entry not an object", SafetensorsBytes(R"({"w": 5})", ""), {"\"w\""}},
        MalformedCase{"unsupported dtype",
                      OneTensor(R"({"dtype": "I64", "shape": [2], "data_offsets": [0, 16]})", 16),
                      {"\"w\"", "I64", "not supported"}},
        MalformedCase{"missing dtype",
                      OneTensor(R"({"shape": [2], "data_offsets": [0, 8]})", 8),
                      {"\"w\"", "dtype"}},
        MalformedCase{"negative extent",
                      OneTensor(R"({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]})", 8),
                      {"\"w\"", "shape"}},
        MalformedCase{"fractional extent",
                      OneTensor(R"({"dtype": "F32", "shape": [1.5], "data_offsets": [0, 8]})", 8),
                      {"\"w\"", "shape"}},
        // Found by fuzz/ (docs/RELIABILITY.md): printing the extent for the message recursed once
        // per level and overflowed the stack.
        MalformedCase{"extent nested a million arrays deep",
                      OneTensor(R"({"dtype": "F32", "shape": [)" + std::string(1'000'000, '[') +
                                    std::string(1'000'000, ']') + R"(], "data_offsets": [0, 4]})",
                                4),
                      {"\"w\"", "shape", "an array"}},
        MalformedCase{"element count overflows",
                      OneTensor(R"({"dtype": "F32", "shape": [4294967296, 4294967296],
                                    "data_offsets": [0, 0]})",
                                0),
                      {"\"w\"", "overflow"}},
        MalformedCase{"offsets not a pair",
                      OneTensor(R"({"dtype": "F32", "shape": [2], "data_offsets": [0]})", 8),
                      {"\"w\"", "data_offsets"}},
        MalformedCase{"offsets begin after end",
                      OneTensor(R"({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]})", 8),
                      {"\"w\"", "begin after end"}},
        MalformedCase{"offsets past the data section",
                      OneTensor(R"({"dtype": "F32", "shape": [4], "data_offsets": [0, 16]})", 8),
                      {"\"w\"", "past the end of the data section"}},
        MalformedCase{"offsets span the wrong size for the shape",
                      OneTensor(R"({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]})", 16),
                      {"\"w\"", "span 8 bytes", "needs 12"}},
        MalformedCase{"offsets span the wrong size for the dtype",
                      OneTensor(R"({"dtype": "BF16", "shape": [4], "data_offsets": [0, 16]})", 16),
                      {"\"w\"", "BF16", "needs 8"}},
        MalformedCase{
            "overlapping tensors",
            SafetensorsBytes(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                           "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                             std::string(12, '\0')),
            {"overlap", "\"a\"", "\"b\""}},
        MalformedCase{
            "misaligned F32 data",
            SafetensorsBytes(R"({"a": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]},
                                           "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}})",
                             std::string(8, '\0')),
            {"\"b\"", "aligned"}}),
    [](const testing::TestParamInfo<MalformedCase>& info) {
      std::string name;
      for (char c : info.param.description)
        name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
      return name;
    });

// Every single-byte corruption and every truncation of a valid file either fails cleanly or yields
// a header whose tensors all lie inside the buffer, aligned and disjoint: the invariants the views
// rely on. (A cheap, deterministic stand-in for fuzzing.)
TEST(SafetensorsHeaderTest, CorruptedOrTruncatedFilesNeverYieldOutOfRangeTensors) {
  const std::string valid =
      BuildSafetensors({{"a", "F32", {2, 2}, RawBytes(std::vector<float>{1, 2, 3, 4})},
                        {"b", "BF16", {3}, RawBytes(std::vector<uint16_t>{1, 2, 3})},
                        {"c", "F16", {1}, RawBytes(std::vector<uint16_t>{9})}});
  ASSERT_TRUE(Parse(valid).ok());
  auto check = [](const std::string& bytes) {
    absl::StatusOr<SafetensorsHeader> parsed = Parse(bytes);
    if (!parsed.ok()) {
      EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(kFile));
      return;
    }
    uint64_t previous_end = 0;
    std::vector<std::pair<uint64_t, uint64_t>> spans;
    for (const auto& [name, entry] : parsed->tensors) {
      ASSERT_LE(parsed->data_section_offset + entry.data_end, bytes.size()) << name;
      ASSERT_EQ((parsed->data_section_offset + entry.data_begin) % DTypeSize(entry.dtype), 0u);
      int64_t elements = 1;
      for (int64_t d : entry.shape) elements *= d;
      ASSERT_EQ(entry.data_end - entry.data_begin, elements * DTypeSize(entry.dtype)) << name;
      if (entry.data_end > entry.data_begin) spans.emplace_back(entry.data_begin, entry.data_end);
    }
    std::sort(spans.begin(), spans.end());
    for (const auto& [begin, end] : spans) {
      ASSERT_GE(begin, previous_end);
      previous_end = end;
    }
  };
  for (size_t cut = 0; cut < valid.size(); ++cut) check(valid.substr(0, cut));
  for (size_t i = 0; i < valid.size(); ++i) {
    for (const char replacement : {'\0', '1', '9', '"', ']', '}', ',', '-', '\xff'}) {
      std::string corrupted = valid;
      corrupted[i] = replacement;
      check(corrupted);
    }
  }
}

TEST(SafetensorsFileTest, TensorsAreViewsOfTheStoredBytes) {
  const std::filesystem::path directory = FreshTempDir();
  const std::vector<float> f32 = {1.5f, -2.25f, 3.0e-8f, 65504.0f, -0.0f, 7.0f};
  const std::vector<uint16_t> bf16 = {0x3f80, 0xc2f7, 0x0000, 0x7f80};  // 1, -123.5, 0, +inf
  const std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x3555, 0x0001};   // 1, -2, 0.33325..., 2^-24
  const std::filesystem::path path = directory / "model.safetensors";
  WriteFile(path, BuildSafetensors({{"x", "F32", {2, 3}, RawBytes(f32)},
                                    {"y", "BF16", {4}, RawBytes(bf16)},
                                    {"z", "F16", {2, 2}, RawBytes(f16)}}));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->stored_bytes(), 24u + 8u + 8u);

  absl::StatusOr<HostTensor> x = (*file)->Tensor("x");
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_EQ(x->dtype, DType::kF32);
  EXPECT_EQ(x->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(x->data, f32.data(), 24), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(x->data) % alignof(float), 0u);

  absl::StatusOr<HostTensor> y = (*file)->Tensor("y");
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->dtype, DType::kBF16);
  EXPECT_EQ(std::memcmp(y->data, bf16.data(), 8), 0);
  absl::StatusOr<HostTensor> z = (*file)->Tensor("z");
  ASSERT_TRUE(z.ok()) << z.status();
  EXPECT_EQ(z->dtype, DType::kF16);
  EXPECT_EQ(std::memcmp(z->data, f16.data(), 8), 0);
}

TEST(SafetensorsFileTest, UnknownTensorIsNotFoundNamingTensorAndFile) {
  const std::filesystem::path path = FreshTempDir() / "one.safetensors";
  WriteFile(path, BuildSafetensors({{"x", "F32", {1}, RawBytes(std::vector<float>{1.0f})}}));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<HostTensor> missing = (*file)->Tensor("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()),
              AllOf(HasSubstr("\"nope\""), HasSubstr("one.safetensors")));
}

TEST(SafetensorsFileTest, FileCutShortAfterHeaderFailsNamingTensor) {
  const std::filesystem::path path = FreshTempDir() / "cut.safetensors";
  std::string bytes =
      BuildSafetensors({{"first", "F32", {2}, RawBytes(std::vector<float>{1, 2})},
                        {"second", "F32", {4}, RawBytes(std::vector<float>{1, 2, 3, 4})}});
  bytes.resize(bytes.size() - 5);  // as an interrupted download leaves it
  WriteFile(path, bytes);
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(std::string(file.status().message()),
              AllOf(HasSubstr("cut.safetensors"), HasSubstr("\"second\""), HasSubstr("truncated")));
}

TEST(SafetensorsFileTest, MissingFileIsNotFoundNamingPath) {
  const std::filesystem::path path = FreshTempDir() / "absent.safetensors";
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("absent.safetensors"));
}

}  // namespace
}  // namespace llm
