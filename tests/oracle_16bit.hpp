// The float64 oracle of the bfloat16/float16 tests: batch norm forward, running-statistics update
// and backward computed in float64 from the exact 16-bit inputs, and the "within 1 ulp of the
// oracle rounded once" check of a 16-bit result.
#pragma once

#include <gtest/gtest.h>

#include <bn1d/bn1d.hpp>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace bn1d::test {

/// A 16-bit configuration: input (and output) dtype, parameter dtype.
struct Config {
  DType input, param;
};
/// Mixed (float32/float64 parameters) and pure (16-bit parameters), for both 16-bit dtypes.
inline constexpr Config kConfigs[] = {
    {DType::BFloat16, DType::Float32},  {DType::BFloat16, DType::Float64},
    {DType::Float16, DType::Float32},   {DType::Float16, DType::Float64},
    {DType::BFloat16, DType::BFloat16}, {DType::Float16, DType::Float16}};

inline std::string config_name(const Config& k) {
  return std::string(dtype_name(k.input)) + " input, " + dtype_name(k.param) + " module";
}

/// What the oracle needs of a module: its parameters and running statistics as float64.
struct Params64 {
  std::vector<double> weight, bias, running_mean, running_var;
};

/// The oracle's forward: output, the mean and invstd it normalized with, and the running
/// statistics after the call (unchanged unless it updated them).
struct Forward64 {
  std::vector<double> y, mean, invstd, running_mean, running_var;
};

/// The oracle's backward. scale_* are Σ|term| of each gradient sum, the magnitude a float32
/// bound is relative to when the sum cancels.
struct Backward64 {
  std::vector<double> dx, dw, db, scale_dw, scale_db;
};

/// (N, C, L) of an (N, C) or (N, C, L) shape.
inline void dims(const Shape& sizes, int64_t& N, int64_t& C, int64_t& L) {
  N = sizes[0];
  C = sizes[1];
  L = sizes.size() == 3 ? sizes[2] : 1;
}

/// Batch norm of @p x (logical row-major values of shape @p sizes) in float64: with batch
/// statistics (biased variance; running statistics updated with the unbiased one and
/// @p momentum) or, without @p batch_stats, with p's running statistics.
inline Forward64 oracle_forward(const std::vector<double>& x, const Shape& sizes, const Params64& p,
                                bool batch_stats, double momentum, double eps) {
  int64_t N, C, L;
  dims(sizes, N, C, L);
  const double n = static_cast<double>(N * L);
  Forward64 f{std::vector<double>(x.size()), std::vector<double>(C), std::vector<double>(C),
              p.running_mean, p.running_var};
  for (int64_t c = 0; c < C; ++c) {
    double sum = 0, m2 = 0;
    for (int64_t i = 0; i < N * L; ++i) sum += x[((i / L) * C + c) * L + i % L];
    const double mean = sum / n;
    for (int64_t i = 0; i < N * L; ++i) {
      const double d = x[((i / L) * C + c) * L + i % L] - mean;
      m2 += d * d;
    }
    const double var = batch_stats ? m2 / n : p.running_var[c];
    f.mean[c] = batch_stats ? mean : p.running_mean[c];
    f.invstd[c] = 1.0 / std::sqrt(var + eps);
    if (batch_stats && !p.running_mean.empty()) {
      f.running_mean[c] = (1 - momentum) * p.running_mean[c] + momentum * mean;
      f.running_var[c] = (1 - momentum) * p.running_var[c] + momentum * m2 / (n - 1);
    }
    const double w = p.weight.empty() ? 1.0 : p.weight[c], b = p.bias.empty() ? 0.0 : p.bias[c];
    for (int64_t i = 0; i < N * L; ++i) {
      const std::size_t at = static_cast<std::size_t>(((i / L) * C + c) * L + i % L);
      f.y[at] = (x[at] - f.mean[c]) * f.invstd[c] * w + b;
    }
  }
  return f;
}

/// Gradients of the forward @p f of @p x for the output gradient @p dy (logical values).
inline Backward64 oracle_backward(const std::vector<double>& x, const std::vector<double>& dy,
                                  const Shape& sizes, const Params64& p, const Forward64& f,
                                  bool batch_stats) {
  int64_t N, C, L;
  dims(sizes, N, C, L);
  const double n = static_cast<double>(N * L);
  Backward64 g{std::vector<double>(x.size()), std::vector<double>(C), std::vector<double>(C),
               std::vector<double>(C), std::vector<double>(C)};
  for (int64_t c = 0; c < C; ++c) {
    double sum_dy = 0, sum_dy_xmu = 0;
    for (int64_t i = 0; i < N * L; ++i) {
      const std::size_t at = static_cast<std::size_t>(((i / L) * C + c) * L + i % L);
      sum_dy += dy[at];
      sum_dy_xmu += dy[at] * (x[at] - f.mean[c]);
      g.scale_db[c] += std::fabs(dy[at]);
      g.scale_dw[c] += std::fabs(dy[at] * (x[at] - f.mean[c]) * f.invstd[c]);
    }
    g.dw[c] = sum_dy_xmu * f.invstd[c];
    g.db[c] = sum_dy;
    const double k = (p.weight.empty() ? 1.0 : p.weight[c]) * f.invstd[c];
    for (int64_t i = 0; i < N * L; ++i) {
      const std::size_t at = static_cast<std::size_t>(((i / L) * C + c) * L + i % L);
      g.dx[at] = batch_stats
                     ? k * (dy[at] - sum_dy / n -
                            (x[at] - f.mean[c]) * f.invstd[c] * f.invstd[c] * sum_dy_xmu / n)
                     : k * dy[at];
    }
  }
  return g;
}

/// The bits of @p v (a bfloat16/float16 value) as an integer that orders like the values, so that
/// neighbouring 16-bit values differ by 1 (±0 both map to 0; ±inf sit next to ±max).
inline int32_t ordered_bits(double v, DType dtype) {
  const uint16_t bits = dtype == DType::BFloat16 ? to_bfloat16(v).bits : to_float16(v).bits;
  const int32_t magnitude = bits & 0x7fff;
  return (bits & 0x8000) != 0 ? -magnitude : magnitude;
}

/// Success when each of @p got (16-bit values of @p dtype) is within 1 ulp of @p want rounded once
/// to @p dtype: equal to it or one of its two neighbours. NaN must match NaN.
inline ::testing::AssertionResult within_1ulp(const std::vector<double>& got,
                                              const std::vector<double>& want, DType dtype) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " vs " << want.size();
  }
  for (std::size_t i = 0; i < got.size(); ++i) {
    const bool nan_ok = std::isnan(got[i]) && std::isnan(want[i]);
    if (!nan_ok && (std::isnan(got[i]) || std::isnan(want[i]) ||
                    std::abs(ordered_bits(got[i], dtype) - ordered_bits(want[i], dtype)) > 1)) {
      return ::testing::AssertionFailure()
             << "element " << i << ": got " << got[i] << ", want " << want[i] << " (rounds to "
             << round_to({want[i]}, dtype)[0] << ") in " << dtype_name(dtype);
    }
  }
  return ::testing::AssertionSuccess();
}

/// Checks a {C} result of dtype @p dtype: within 1 ulp of @p want for a 16-bit dtype, within
/// the suite's float32/float64 bound (relative to max(max|want|, @p scale)) otherwise.
inline ::testing::AssertionResult channel_close(const Tensor& got, const std::vector<double>& want,
                                                double scale = 0.0) {
  if (!got.defined()) return ::testing::AssertionFailure() << "tensor is undefined";
  if (got.dtype() == DType::BFloat16 || got.dtype() == DType::Float16) {
    return within_1ulp(values(got), want, got.dtype());
  }
  return all_close(values(got), want, got.dtype(), scale);
}

/// Uniform values in [lo, hi) from @p seed, rounded to @p dtype.
inline std::vector<double> uniform(std::size_t count, double lo, double hi, DType dtype,
                                   uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(count);
  for (double& x : v) x = dist(gen);
  return round_to(v, dtype);
}

/// Writes @p v into the {C} tensor @p t (rounded once to its dtype) and returns the values it
/// now holds.
inline std::vector<double> assign(Tensor& t, const std::vector<double>& v) {
  for (std::size_t c = 0; c < v.size(); ++c)
    store_as(t.raw_data(), static_cast<int64_t>(c) * t.strides()[0], v[c], t.dtype());
  return values(t);
}

}  // namespace bn1d::test
