// SPDX-License-Identifier: MIT
/// @file test_safetensors_16bit.cpp
/// @brief 16-bit state files written by torch 1.13 (tests/fixtures/state16/, made by
/// tests/reference/generate.py): read with torch's exact values, written back bit for bit.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "bn1d/module.hpp"
#include "bn1d/state.hpp"
#include "bn1d/tensor.hpp"
#include "test_util.hpp"

namespace {

using bn1d::DType;
using bn1d::StateDict;
using bn1d::Tensor;
using bn1d::test::throws_error;

/// The bits of a contiguous 16-bit tensor.
std::vector<std::uint16_t> bits16(const Tensor& tensor) {
  std::vector<std::uint16_t> bits(static_cast<std::size_t>(tensor.numel()));
  if (!bits.empty()) std::memcpy(bits.data(), tensor.raw_data(), bits.size() * 2);
  return bits;
}

/// A 16-bit state file written by tests/reference/generate.py (torch 1.13).
std::string state16_fixture(const char* name) {
  return std::string(BN1D_FIXTURE_DIR) + "/state16/" + name + ".safetensors";
}

/// @p got equals @p want value for value (NaN where @p want has NaN, signed zeros alike).
void expect_same_values(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << i;
    } else {
      EXPECT_EQ(got[i], want[i]) << i;
      EXPECT_EQ(std::signbit(got[i]), std::signbit(want[i])) << i;
    }
  }
}

struct State16Case {
  const char* name;
  DType dtype;
  std::int64_t channels;
};

class TorchState16 : public ::testing::TestWithParam<State16Case> {};

// torch's .bfloat16() / .half() state dict, read with the exact values torch widened to float64.
TEST_P(TorchState16, ReadsTheValuesTorchWrote) {
  const State16Case c = GetParam();
  bn1d::Metadata metadata;
  const StateDict state = bn1d::load_safetensors(state16_fixture(c.name), "", &metadata);
  EXPECT_EQ(metadata.at("dtype"), bn1d::dtype_name(c.dtype));
  std::size_t checked = 0;
  for (const std::string key : {"bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"}) {
    SCOPED_TRACE(key);
    ASSERT_EQ(state.at(key).dtype(), c.dtype);
    EXPECT_EQ(state.at(key).sizes(), (bn1d::Shape{c.channels}));
    expect_same_values(bn1d::test::values(state.at(key)),
                       bn1d::test::values(state.at("expected." + key)));
    ++checked;
  }
  EXPECT_EQ(checked, 4U);
  EXPECT_EQ(state.at("bn.num_batches_tracked").dtype(), DType::Int64);
  EXPECT_EQ(bn1d::test::values(state.at("bn.num_batches_tracked")), (std::vector<double>{3}));
  // 0, -0, inf, -inf, NaN, ±max, the smallest normal and subnormal, 1/3.
  const std::vector<double> special = bn1d::test::values(state.at("special"));
  expect_same_values(special, bn1d::test::values(state.at("expected.special")));
  ASSERT_EQ(special.size(), 10U);
  EXPECT_TRUE(std::isnan(special[4]));
  const double max = c.dtype == DType::Float16 ? 65504.0 : std::ldexp(2 - std::ldexp(1.0, -7), 127);
  EXPECT_EQ(special[5], max);
  EXPECT_EQ(special[8], c.dtype == DType::Float16 ? std::ldexp(1.0, -24) : std::ldexp(1.0, -133));
  // Written back, the file's tensors are the same bytes.
  const StateDict again = bn1d::parse_safetensors(bn1d::to_safetensors(state));
  for (const auto& [key, tensor] : state) {
    if (tensor.dtype() == c.dtype) {
      EXPECT_EQ(bits16(again.at(key)), bits16(tensor)) << key;
    }
  }
}

// Until the mixed configurations exist, a 16-bit state is a dtype mismatch for a float32 or
// float64 module, which stays unchanged.
TEST_P(TorchState16, IsADtypeMismatchForAFloatModule) {
  const State16Case c = GetParam();
  for (const DType dtype : {DType::Float32, DType::Float64}) {
    bn1d::BatchNorm1d module(bn1d::BatchNorm1dOptions(c.channels).dtype(dtype));
    const std::string want = std::string("size or dtype mismatch for weight: copying a ") +
                             bn1d::dtype_name(c.dtype) + " tensor";
    EXPECT_TRUE(throws_error([&] { module.load(state16_fixture(c.name), "bn."); }, want));
    EXPECT_EQ(bn1d::test::values(module.weight()), std::vector<double>(c.channels, 1.0));
    EXPECT_EQ(module.num_batches_tracked(), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TorchState16,
                         ::testing::Values(State16Case{"bn_bfloat16", DType::BFloat16, 5},
                                           State16Case{"bn_float16", DType::Float16, 4}),
                         [](const auto& info) {
                           return std::string(bn1d::dtype_name(info.param.dtype));
                         });

}  // namespace
