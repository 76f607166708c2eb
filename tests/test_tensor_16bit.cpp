// SPDX-License-Identifier: MIT
// Tensors of the 16-bit dtypes (bfloat16, float16): factories, typed access, views, copies,
// randn, all rounding once from float64.
#include <gtest/gtest.h>

#include <bn1d/bn1d.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace bn1d::test {
namespace {

constexpr DType kSixteen[] = {DType::BFloat16, DType::Float16};

std::vector<uint16_t> bits_of(const Tensor& t) {
  const Tensor dense = t.contiguous();
  std::vector<uint16_t> bits(static_cast<std::size_t>(dense.numel()));
  if (!bits.empty()) std::memcpy(bits.data(), dense.raw_data(), bits.size() * 2);
  return bits;
}

// The code of @p value rounded once to the 16-bit @p dtype.
uint16_t code(double value, DType dtype) {
  return dtype == DType::BFloat16 ? to_bfloat16(value).bits : to_float16(value).bits;
}

TEST(Tensor16, NamesAndSizes) {
  EXPECT_STREQ(dtype_name(DType::BFloat16), "bfloat16");
  EXPECT_STREQ(dtype_name(DType::Float16), "float16");
  EXPECT_EQ(element_size(DType::BFloat16), 2u);
  EXPECT_EQ(element_size(DType::Float16), 2u);
  // Appended: the existing dtypes keep their values (a SyncBatchNorm1d header carries them).
  EXPECT_EQ(static_cast<int>(DType::Float32), 0);
  EXPECT_EQ(static_cast<int>(DType::Float64), 1);
  EXPECT_EQ(static_cast<int>(DType::Int64), 2);
  EXPECT_EQ(dtype_of<BFloat16>(), DType::BFloat16);
  EXPECT_EQ(dtype_of<Float16>(), DType::Float16);
}

TEST(Tensor16, FactoriesRoundOnce) {
  // Hand-derived codes: 1 = 0x3F80 / 0x3C00, 1/3 = 0x3EAB / 0x3555, 70000 overflows float16.
  EXPECT_EQ(bits_of(Tensor::ones({3}, DType::BFloat16)), std::vector<uint16_t>(3, 0x3F80));
  EXPECT_EQ(bits_of(Tensor::ones({2, 2}, DType::Float16)), std::vector<uint16_t>(4, 0x3C00));
  EXPECT_EQ(bits_of(Tensor::zeros({2}, DType::Float16)), std::vector<uint16_t>(2, 0x0000));
  EXPECT_EQ(bits_of(Tensor::full({2}, 1.0 / 3, DType::BFloat16)), std::vector<uint16_t>(2, 0x3EAB));
  EXPECT_EQ(bits_of(Tensor::full({2}, 1.0 / 3, DType::Float16)), std::vector<uint16_t>(2, 0x3555));
  EXPECT_EQ(bits_of(Tensor::full({1}, 70000.0, DType::Float16)), std::vector<uint16_t>{0x7C00});
  EXPECT_EQ(bits_of(Tensor::full({1}, 70000.0, DType::BFloat16)), std::vector<uint16_t>{0x4789});
  // Just above the float16 tie 1 + 2^-11: one rounding gives 1 + 2^-10 (through float, 1).
  const double above_tie = 1 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  EXPECT_EQ(bits_of(Tensor::full({1}, above_tie, DType::Float16)), std::vector<uint16_t>{0x3C01});
  const Tensor empty = Tensor::full({0, 4}, 1.0, DType::BFloat16);
  EXPECT_EQ(empty.numel(), 0);
  EXPECT_EQ(empty.dtype(), DType::BFloat16);
}

TEST(Tensor16, TypedAccessChecksTheDtype) {
  const Tensor b = Tensor::ones({2}, DType::BFloat16);
  EXPECT_EQ(b.data<BFloat16>()[1].bits, 0x3F80);
  EXPECT_TRUE(throws_error([&] { (void)b.data<Float16>(); }, "requested float16 from a bfloat16"));
  EXPECT_TRUE(throws_error([&] { (void)b.data<float>(); }, "requested float32 from a bfloat16"));
  const Tensor h = Tensor::ones({2}, DType::Float16);
  EXPECT_TRUE(throws_error([&] { (void)h.data<BFloat16>(); }, "requested bfloat16 from a float16"));
}

TEST(Tensor16, ViewsCopiesAndClones) {
  for (const DType dtype : kSixteen) {
    SCOPED_TRACE(dtype_name(dtype));
    // A 3 x 2 transpose of a row-major 2 x 3 buffer of codes 1..6.
    uint16_t storage[6] = {1, 2, 3, 4, 5, 6};
    const Tensor view = Tensor::from_blob(storage, {3, 2}, {1, 3}, dtype);
    EXPECT_FALSE(view.is_contiguous());
    EXPECT_EQ(bits_of(view), (std::vector<uint16_t>{1, 4, 2, 5, 3, 6}));  // contiguous()
    const Tensor copy = view.clone();
    EXPECT_TRUE(copy.is_contiguous());
    EXPECT_EQ(copy.dtype(), dtype);
    storage[0] = 9;  // the clone owns its storage
    EXPECT_EQ(bits_of(copy)[0], 1);
    const Tensor dst = Tensor::zeros({3, 2}, dtype);
    dst.copy_from(view);
    EXPECT_EQ(bits_of(dst), (std::vector<uint16_t>{9, 4, 2, 5, 3, 6}));
    // A strided destination, and the dtype check.
    uint16_t out[6] = {};
    Tensor::from_blob(out, {3, 2}, {1, 3}, dtype).copy_from(dst);
    EXPECT_EQ(std::vector<uint16_t>(out, out + 6), (std::vector<uint16_t>{9, 2, 3, 4, 5, 6}));
    EXPECT_TRUE(throws_error(
        [&] {
          dst.copy_from(Tensor::zeros({3, 2}, DType::Float32));
        },
        std::string("expected a ") + dtype_name(dtype)));
    const uint16_t readonly[2] = {7, 8};
    EXPECT_TRUE(Tensor::from_blob(static_cast<const void*>(readonly), {2}, dtype).is_read_only());
  }
}

TEST(Tensor16, ValuesWidenExactly) {
  const uint16_t codes[3] = {0x3555, 0x7C00, 0x8001};  // 1365/4096, +inf, -2^-24
  const Tensor h = Tensor::from_blob(static_cast<const void*>(codes), {3}, DType::Float16);
  EXPECT_EQ(values(h), (std::vector<double>{1365.0 / 4096, INFINITY, -std::ldexp(1.0, -24)}));
}

TEST(Tensor16, RandnIsTheFloat64DrawRoundedOnce) {
  const Tensor wide = randn({1001}, DType::Float64, 7);
  for (const DType dtype : kSixteen) {
    SCOPED_TRACE(dtype_name(dtype));
    const Tensor narrow = randn({1001}, dtype, 7);
    ASSERT_EQ(narrow.dtype(), dtype);
    const std::vector<uint16_t> bits = bits_of(narrow);
    for (int64_t i = 0; i < 1001; ++i) ASSERT_EQ(bits[i], code(wide.data<double>()[i], dtype)) << i;
  }
  EXPECT_TRUE(throws_error([] { (void)randn({2}, DType::Int64); }, "got int64"));
}

}  // namespace
}  // namespace bn1d::test
