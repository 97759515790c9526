// llm::ConvertToFloat (kernels/dtype.h) on the element types checkpoints store, against values
// whose bit patterns are known exactly, both from memory and read back from a safetensors file.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/dtype.h"
#include "server/model/safetensors.h"
#include "tests/model/checkpoint_writer.h"

namespace llm {
namespace {

struct KnownValue {
  uint16_t bits;
  float value;
};

// IEEE binary16: sign, 5 exponent bits (bias 15), 10 mantissa bits.
const std::vector<KnownValue> kF16 = {{0x0000, 0.0f},
                                      {0x8000, -0.0f},
                                      {0x3c00, 1.0f},
                                      {0xc000, -2.0f},
                                      {0x3800, 0.5f},
                                      {0x3555, 0.333251953125f},
                                      {0x7bff, 65504.0f},
                                      {0x0400, 0x1p-14f},
                                      {0x0001, 0x1p-24f},  // min normal, min subnormal
                                      {0x03ff, 1023 * 0x1p-24f},
                                      {0x4248, 3.140625f},
                                      {0xd140, -42.0f},
                                      {0x7c00, std::numeric_limits<float>::infinity()},
                                      {0xfc00, -std::numeric_limits<float>::infinity()}};

// bfloat16: the top 16 bits of a float32.
const std::vector<KnownValue> kBF16 = {{0x0000, 0.0f},
                                       {0x8000, -0.0f},
                                       {0x3f80, 1.0f},
                                       {0xc2f7, -123.5f},
                                       {0x3f00, 0.5f},
                                       {0x4049, 3.140625f},
                                       {0x7f7f, 0x1.fep127f},
                                       {0x0080, 0x1p-126f},
                                       {0x0001, 0x1p-133f},  // max, min normal, subnormal
                                       {0x3e80, 0.25f},
                                       {0xbf81, -1.0078125f},
                                       {0x7f80, std::numeric_limits<float>::infinity()},
                                       {0xff80, -std::numeric_limits<float>::infinity()}};

void ExpectSameFloat(float actual, float expected, uint16_t bits) {
  uint32_t actual_bits, expected_bits;
  std::memcpy(&actual_bits, &actual, 4);
  std::memcpy(&expected_bits, &expected, 4);
  EXPECT_EQ(actual_bits, expected_bits)
      << std::hex << "bits 0x" << bits << ": got " << actual << ", want " << expected;
}

std::vector<uint16_t> BitsOf(const std::vector<KnownValue>& values) {
  std::vector<uint16_t> bits;
  for (const KnownValue& v : values) bits.push_back(v.bits);
  return bits;
}

TEST(DtypeConversionTest, F16BitPatternsConvertToTheirExactValues) {
  const std::vector<uint16_t> bits = BitsOf(kF16);
  std::vector<float> out(bits.size());
  ConvertToFloat(DType::kF16, bits.data(), bits.size(), out.data());
  for (size_t i = 0; i < kF16.size(); ++i) ExpectSameFloat(out[i], kF16[i].value, kF16[i].bits);
}

TEST(DtypeConversionTest, BF16BitPatternsConvertToTheirExactValues) {
  const std::vector<uint16_t> bits = BitsOf(kBF16);
  std::vector<float> out(bits.size());
  ConvertToFloat(DType::kBF16, bits.data(), bits.size(), out.data());
  for (size_t i = 0; i < kBF16.size(); ++i) ExpectSameFloat(out[i], kBF16[i].value, kBF16[i].bits);
}

TEST(DtypeConversionTest, NaNPatternsStayNaN) {
  const uint16_t f16_nan = 0x7e00, bf16_nan = 0x7fc0;
  float out = 0;
  ConvertToFloat(DType::kF16, &f16_nan, 1, &out);
  EXPECT_TRUE(std::isnan(out));
  ConvertToFloat(DType::kBF16, &bf16_nan, 1, &out);
  EXPECT_TRUE(std::isnan(out));
}

TEST(DtypeConversionTest, F32CopiesBitsUnchanged) {
  const std::vector<float> in = {1.0f, -0.0f, 0x1p-149f, 3.4028235e38f, 0.1f};
  std::vector<float> out(in.size());
  ConvertToFloat(DType::kF32, in.data(), in.size(), out.data());
  EXPECT_EQ(std::memcmp(in.data(), out.data(), in.size() * 4), 0);
}

TEST(DtypeConversionTest, EncodersRoundToNearestEvenAndInvertExactValues) {
  for (const KnownValue& v : kBF16) EXPECT_EQ(FloatToBF16(v.value), v.bits) << v.value;
  for (const KnownValue& v : kF16) EXPECT_EQ(FloatToF16(v.value), v.bits) << v.value;
  // Exactly half an ulp above 1: ties go to the even neighbour (1.0), then to 1 + 2 ulp.
  EXPECT_EQ(FloatToBF16(1.0f + 0x1p-8f), 0x3f80);
  EXPECT_EQ(FloatToBF16(1.0f + 3 * 0x1p-8f), 0x3f82);
  EXPECT_EQ(FloatToF16(1.0f + 0x1p-11f), 0x3c00);
  EXPECT_EQ(FloatToF16(1.0f + 3 * 0x1p-11f), 0x3c02);
}

TEST(DtypeConversionTest, ValuesReadFromSafetensorsConvertExactly) {
  const std::filesystem::path path = testing_files::FreshTempDir() / "dtypes.safetensors";
  const std::vector<float> f32 = {0.1f, -7.25f, 1e-30f};
  testing_files::WriteFile(
      path,
      testing_files::BuildSafetensors(
          // Widest dtype first keeps every tensor aligned, as the reference writer orders them.
          {{"f32", "F32", {3}, testing_files::RawBytes(f32)},
           {"f16",
            "F16",
            {static_cast<int64_t>(kF16.size())},
            testing_files::RawBytes(BitsOf(kF16))},
           {"bf16",
            "BF16",
            {static_cast<int64_t>(kBF16.size())},
            testing_files::RawBytes(BitsOf(kBF16))}}));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  for (const auto& [name, known] : {std::pair{"f16", &kF16}, std::pair{"bf16", &kBF16}}) {
    absl::StatusOr<HostTensor> tensor = (*file)->Tensor(name);
    ASSERT_TRUE(tensor.ok()) << tensor.status();
    std::vector<float> out(tensor->num_elements());
    ConvertToFloat(tensor->dtype, tensor->data, out.size(), out.data());
    for (size_t i = 0; i < known->size(); ++i) {
      ExpectSameFloat(out[i], (*known)[i].value, (*known)[i].bits);
    }
  }
  absl::StatusOr<HostTensor> tensor = (*file)->Tensor("f32");
  ASSERT_TRUE(tensor.ok()) << tensor.status();
  std::vector<float> out(3);
  ConvertToFloat(tensor->dtype, tensor->data, 3, out.data());
  EXPECT_EQ(out, f32);
}

}  // namespace
}  // namespace llm
