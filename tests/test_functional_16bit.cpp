// bfloat16/float16 edges: the functional API against the float64 oracle, float16 overflow to ±inf,
// inf/NaN inputs confined to their channel, refused dtype combinations (an Error naming the dtypes
// that changes nothing), 1 vs 2 OpenMP threads bit for bit, and state files of 16-bit modules.
#include <gtest/gtest.h>
#include <omp.h>

#include <bn1d/bn1d.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "format.hpp"
#include "oracle_16bit.hpp"
#include "test_util.hpp"

namespace bn1d::test {
namespace {

/// A {C} tensor of @p dtype holding @p v rounded once.
Tensor channel_tensor(const std::vector<double>& v, DType dtype) {
  return make_tensor(v, {static_cast<int64_t>(v.size())}, dtype);
}

/// The raw bytes of a tensor's storage span (a contiguous tensor), for bitwise comparisons.
std::vector<unsigned char> bytes_of(const Tensor& t) {
  const auto* p = static_cast<const unsigned char*>(t.raw_data());
  return {p, p + t.numel() * static_cast<int64_t>(element_size(t.dtype()))};
}

/// Everything a module holds, bit for bit.
std::vector<std::vector<unsigned char>> module_bits(const BatchNorm1d& m) {
  const int64_t count = m.num_batches_tracked();
  std::vector<unsigned char> count_bytes(sizeof count);
  std::memcpy(count_bytes.data(), &count, sizeof count);
  return {bytes_of(m.weight()), bytes_of(m.bias()), bytes_of(m.running_mean()),
          bytes_of(m.running_var()), count_bytes};
}

TEST(Functional16, BatchNormTrainAndEvalMatchTheOracle) {
  const Shape sizes = {13, 7, 29};
  for (const Config& k : kConfigs) {
    SCOPED_TRACE(config_name(k));
    Params64 p{uniform(7, 0.5, 2.0, k.param, 1), uniform(7, -1, 1, k.param, 2),
               uniform(7, -0.5, 0.5, k.param, 3), uniform(7, 0.5, 3.0, k.param, 4)};
    const std::vector<double> x = round_to(values(randn(sizes, DType::Float64, 5)), k.input);
    const Tensor w = channel_tensor(p.weight, k.param), b = channel_tensor(p.bias, k.param);
    const Tensor rm = channel_tensor(p.running_mean, k.param);
    const Tensor rv = channel_tensor(p.running_var, k.param);
    const Tensor input = make_tensor(x, sizes, k.input);
    const Tensor eval_y = batch_norm(input, rm, rv, w, b, false, 0.5, 1e-3);
    EXPECT_TRUE(
        within_1ulp(values(eval_y), oracle_forward(x, sizes, p, false, 0.5, 1e-3).y, k.input));
    const Forward64 f = oracle_forward(x, sizes, p, true, 0.5, 1e-3);
    const Tensor train_y = batch_norm(input, rm, rv, w, b, true, 0.5, 1e-3);
    ASSERT_EQ(train_y.dtype(), k.input);
    EXPECT_TRUE(within_1ulp(values(train_y), f.y, k.input));
    EXPECT_TRUE(channel_close(rm, f.running_mean));
    EXPECT_TRUE(channel_close(rv, f.running_var));
  }
}

TEST(Functional16, Float16OutputsPastTheRangeRoundToInfinity) {
  // x normalizes to values up to ±1.46; a weight of 1e5 (mixed) or 65504 (pure, float16's largest)
  // carries y past 65504. IEEE rounding: |y| ≥ 65520 gives ±inf, below it a finite value.
  const Shape sizes = {6, 3};
  const std::vector<double> x = {-2, 9, 1, -1, 8, 1, 0, 7, 1, 1, 6, 1, 2, 5, 1, 3, 4, 1};
  for (DType param : {DType::Float32, DType::Float16}) {
    SCOPED_TRACE(dtype_name(param));
    BatchNorm1d m(BatchNorm1dOptions(3).dtype(param));
    Params64 p{assign(m.weight(), {param == DType::Float16 ? 65504.0 : 1e5, -65504.0, 1.0}),
               assign(m.bias(), {0.0, -100.0, 0.0}), values(m.running_mean()),
               values(m.running_var())};
    const Tensor y = m(make_tensor(x, sizes, DType::Float16));
    const std::vector<double> want = oracle_forward(x, sizes, p, true, 0.1, 1e-5).y;
    const std::vector<double> got = values(y);
    int infinities = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      if (std::fabs(want[i]) >= 65520 * (1 + 1e-9)) {
        EXPECT_EQ(got[i], std::copysign(INFINITY, want[i])) << i;
        ++infinities;
      } else if (std::fabs(want[i]) < 65520 * (1 - 1e-9)) {
        EXPECT_TRUE(std::isfinite(got[i])) << i << ": " << got[i];
      }
    }
    EXPECT_GE(infinities, 4);  // both signs, in channels 0 and 1
    EXPECT_TRUE(within_1ulp(got, want, DType::Float16));
    // The running statistics are those of the finite inputs, untouched by the overflow.
    EXPECT_TRUE(std::isfinite(values(m.running_var())[1]));
  }
}

TEST(Functional16, InfAndNanInputsStayInTheirChannel) {
  const Shape sizes = {16, 4, 8};
  for (const Config& k : kConfigs) {
    SCOPED_TRACE(config_name(k));
    std::vector<double> x = round_to(values(randn(sizes, DType::Float64, 61)), k.input);
    x[(3 * 4 + 1) * 8 + 5] = INFINITY;  // channel 1
    x[(9 * 4 + 2) * 8 + 0] = NAN;       // channel 2
    BatchNorm1d m(BatchNorm1dOptions(4).dtype(k.param));
    const Params64 p{values(m.weight()), values(m.bias()), values(m.running_mean()),
                     values(m.running_var())};
    const Tensor y = m(make_tensor(x, sizes, k.input));
    const std::vector<double> dy = round_to(values(randn(sizes, DType::Float64, 62)), k.input);
    const BatchNorm1d::Gradients g = m.backward(make_tensor(dy, sizes, k.input));
    const Forward64 f = oracle_forward(x, sizes, p, true, 0.1, 1e-5);
    const Backward64 want = oracle_backward(x, dy, sizes, p, f, true);
    const std::vector<double> got_y = values(y), got_dx = values(g.input);
    for (int64_t c : {0, 3}) {
      for (int64_t n = 0; n < 16; ++n)
        for (int64_t l = 0; l < 8; ++l) {
          const std::size_t i = static_cast<std::size_t>((n * 4 + c) * 8 + l);
          EXPECT_TRUE(within_1ulp({got_y[i]}, {f.y[i]}, k.input)) << "y " << i;
          EXPECT_TRUE(within_1ulp({got_dx[i]}, {want.dx[i]}, k.input)) << "dx " << i;
        }
      EXPECT_TRUE(std::isfinite(values(m.running_mean())[c]));
      EXPECT_TRUE(std::isfinite(values(m.running_var())[c]));
      EXPECT_TRUE(std::isfinite(values(g.weight)[c]));
    }
    EXPECT_TRUE(std::isnan(values(m.running_var())[2]));
  }
}

TEST(Functional16, ModuleRefusesOtherInputDtypesNamingBothAndChangesNothing) {
  const struct {
    DType module, input;
  } bad[] = {{DType::BFloat16, DType::Float64}, {DType::BFloat16, DType::Float32},
             {DType::BFloat16, DType::Float16}, {DType::Float16, DType::BFloat16},
             {DType::Float16, DType::Float32},  {DType::Float32, DType::Float64}};
  for (const auto& combo : bad) {
    SCOPED_TRACE(std::string(dtype_name(combo.module)) + " module, " + dtype_name(combo.input));
    BatchNorm1d m(BatchNorm1dOptions(3).dtype(combo.module));
    m(randn({5, 3}, combo.module == DType::Float32 ? DType::BFloat16 : combo.module, 71));
    const auto before = module_bits(m);
    const Tensor x = randn({5, 3}, combo.input, 72);
    EXPECT_TRUE(throws_error([&] { m(x); }, dtype_name(combo.module)));
    EXPECT_TRUE(throws_error([&] { m(x); }, dtype_name(combo.input)));
    EXPECT_EQ(module_bits(m), before);
  }
  // A mixed module whose buffer was replaced by a 16-bit tensor: parameters must agree.
  BatchNorm1d m(BatchNorm1dOptions(3));
  m(randn({5, 3}, DType::BFloat16, 73));
  m.running_var() = Tensor::ones({3}, DType::BFloat16);
  const auto before = module_bits(m);
  EXPECT_TRUE(throws_error([&] { m(randn({5, 3}, DType::BFloat16, 74)); }, "bfloat16"));
  EXPECT_TRUE(throws_error([&] { m(randn({5, 3}, DType::BFloat16, 74)); }, "float32"));
  EXPECT_EQ(module_bits(m), before);
}

TEST(Functional16, FunctionalRefusesMismatchedParameterDtypesAndChangesNothing) {
  const Tensor x32 = randn({6, 3}), x16 = randn({6, 3}, DType::BFloat16, 81);
  const Tensor w16 = Tensor::ones({3}, DType::BFloat16);
  // A bfloat16 weight goes with a bfloat16 input only.
  EXPECT_TRUE(throws_error([&] { batch_norm(x32, {}, {}, w16, {}, true); },
                           "weight: expected a float32 tensor of shape [3] (one value per channel, "
                           "for a float32 input), got a bfloat16 tensor"));
  // float16 parameters do not go with a bfloat16 input.
  EXPECT_TRUE(
      throws_error([&] { batch_norm(x16, {}, {}, Tensor::ones({3}, DType::Float16), {}, true); },
                   "weight: expected a bfloat16, float32 or float64 tensor"));
  // Each fits the input alone, but parameters and buffers must share one dtype.
  Tensor rm = Tensor::zeros({3}, DType::Float32), rv = Tensor::ones({3}, DType::Float64);
  EXPECT_TRUE(throws_error([&] { batch_norm(x16, rm, rv, {}, {}, true); }, "float64"));
  EXPECT_TRUE(throws_error([&] { batch_norm(x16, rm, rv, {}, {}, true); }, "float32"));
  EXPECT_EQ(values(rm), std::vector<double>(3, 0.0));
  EXPECT_EQ(values(rv), std::vector<double>(3, 1.0));
  EXPECT_TRUE(
      throws_error([&] { batch_norm(x16, {}, {}, w16, Tensor::zeros({3}, DType::Float32), true); },
                   "bias: expected the dtype of weight (bfloat16), got float32"));
}

TEST(Functional16, OneOrTwoThreadCountsGiveIdenticalBits) {
  const Shape shapes[] = {{4096, 64}, {32, 48, 700}};
  const int saved = omp_get_max_threads();
  for (const Config& k : kConfigs)
    for (const Shape& sizes : shapes) {
      SCOPED_TRACE(config_name(k) + " " + format_shape(sizes));
      const Tensor x = randn(sizes, k.input, 91), dy = randn(sizes, k.input, 92);
      std::vector<std::vector<unsigned char>> first;
      for (int threads : {1, 2}) {
        omp_set_num_threads(threads);
        BatchNorm1d m(BatchNorm1dOptions(sizes[1]).dtype(k.param));
        const Tensor y = m(x);
        const BatchNorm1d::Gradients g = m.backward(dy);
        m.eval();
        const Tensor y_eval = m(x);
        const std::vector<std::vector<unsigned char>> got = {
            bytes_of(y),      bytes_of(g.input),          bytes_of(g.weight),
            bytes_of(g.bias), bytes_of(m.running_mean()), bytes_of(m.running_var()),
            bytes_of(y_eval)};
        if (first.empty()) first = got;
        for (std::size_t i = 0; i < got.size(); ++i)
          EXPECT_TRUE(got[i] == first[i]) << "threads " << threads << " result " << i;
      }
    }
  omp_set_num_threads(saved);
}

TEST(Functional16, PureModuleStateRoundTripsBitwise) {
  for (DType dtype : {DType::BFloat16, DType::Float16}) {
    SCOPED_TRACE(dtype_name(dtype));
    BatchNorm1d src(BatchNorm1dOptions(5).dtype(dtype).momentum(std::nullopt));
    src.weight().copy_from(randn({5}, dtype, 101));
    for (int i = 0; i < 3; ++i) src(randn({8, 5, 3}, dtype, 102 + i));
    for (const auto& [key, t] : src.state_dict())
      EXPECT_EQ(t.dtype(), key == "num_batches_tracked" ? DType::Int64 : dtype) << key;
    const std::string path = (std::filesystem::path(::testing::TempDir()) /
                              (std::string("pure_") + dtype_name(dtype) + ".safetensors"))
                                 .string();
    src.save(path);
    BatchNorm1d dst(BatchNorm1dOptions(5).dtype(dtype).momentum(std::nullopt));
    dst.load(path);
    EXPECT_EQ(module_bits(dst), module_bits(src));
    BatchNorm1d copy(BatchNorm1dOptions(5).dtype(dtype).momentum(std::nullopt));
    copy.load_state_dict(src.state_dict());
    EXPECT_EQ(module_bits(copy), module_bits(src));
    // The same keys in float32 do not load into it: one dtype per module.
    BatchNorm1d f32(BatchNorm1dOptions(5));
    const auto before = module_bits(f32);
    EXPECT_TRUE(throws_error([&] { f32.load(path); }, "size or dtype mismatch for weight"));
    EXPECT_EQ(module_bits(f32), before);
  }
}

TEST(Functional16, MixedModuleStateStaysFloat32) {
  BatchNorm1d m(BatchNorm1dOptions(4));
  for (int i = 0; i < 3; ++i) m(randn({8, 4}, i == 1 ? DType::Float16 : DType::BFloat16, 111 + i));
  for (const auto& [key, t] : m.state_dict())
    EXPECT_EQ(t.dtype(), key == "num_batches_tracked" ? DType::Int64 : DType::Float32) << key;
  EXPECT_EQ(m.num_batches_tracked(), 3);
  const std::string path =
      (std::filesystem::path(::testing::TempDir()) / "mixed.safetensors").string();
  m.save(path);
  BatchNorm1d back(BatchNorm1dOptions(4));
  back.load(path);
  EXPECT_EQ(module_bits(back), module_bits(m));
}

}  // namespace
}  // namespace bn1d::test
