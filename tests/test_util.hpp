// Helpers shared by the tests: logical-order reads of strided tensors, strided test inputs, and
// tolerance checks with the bounds stated once.
#pragma once

#include <gtest/gtest.h>

#include <bn1d/bn1d.hpp>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace bn1d::test {

/// Values of any tensor as float64 (exact but for int64 beyond 2^53), in logical row-major order.
inline std::vector<double> values(const Tensor& t) {
  std::vector<double> v(static_cast<std::size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    int64_t flat = i, off = 0;
    for (int64_t d = t.dim(); d-- > 0;) {
      off += (flat % t.sizes()[d]) * t.strides()[d];
      flat /= t.sizes()[d];
    }
    switch (t.dtype()) {
      case DType::Float32:
        v[i] = t.data<float>()[off];
        break;
      case DType::Float64:
        v[i] = t.data<double>()[off];
        break;
      case DType::Int64:
        v[i] = static_cast<double>(t.data<int64_t>()[off]);
        break;
      case DType::BFloat16:
        v[i] = to_double(t.data<BFloat16>()[off]);
        break;
      case DType::Float16:
        v[i] = to_double(t.data<Float16>()[off]);
        break;
    }
  }
  return v;
}

/// Memory layouts a test input can have.
enum class Layout { Contiguous, ChannelsLast, Sliced, ColumnMajor };
inline const char* layout_name(Layout l) {
  switch (l) {
    case Layout::Contiguous:
      return "contiguous";
    case Layout::ChannelsLast:
      return "channels-last";
    case Layout::Sliced:
      return "sliced";
    case Layout::ColumnMajor:
      return "column-major";
  }
  return "?";
}

/// Stores @p v at element @p off of @p data as @p dtype (a floating one), rounded once.
inline void store_as(void* data, int64_t off, double v, DType dtype) {
  switch (dtype) {
    case DType::Float32:
      static_cast<float*>(data)[off] = static_cast<float>(v);
      break;
    case DType::BFloat16:
      static_cast<BFloat16*>(data)[off] = to_bfloat16(v);
      break;
    case DType::Float16:
      static_cast<Float16*>(data)[off] = to_float16(v);
      break;
    default:
      static_cast<double*>(data)[off] = v;
  }
}

/// A tensor of logical shape @p sizes ((N, C) or (N, C, L)) filled from @p logical (row-major
/// values), stored in @p layout. The tensor views memory kept alive by @p keep.
inline Tensor make_strided(const std::vector<double>& logical, const Shape& sizes, DType dtype,
                           Layout layout, std::shared_ptr<std::vector<char>>& keep) {
  const int64_t N = sizes[0], C = sizes[1], L = sizes.size() == 3 ? sizes[2] : 1;
  const bool is3d = sizes.size() == 3;
  Shape strides;
  int64_t elems = 0, base = 0;
  switch (layout) {
    case Layout::Contiguous:
      strides = is3d ? Shape{C * L, L, 1} : Shape{C, 1};
      elems = N * C * L;
      break;
    case Layout::ChannelsLast:  // memory (N, L, C)
      strides = is3d ? Shape{L * C, 1, C} : Shape{C, 1};
      elems = N * C * L;
      break;
    case Layout::ColumnMajor:  // memory (L, C, N): R's column-major array
      strides = is3d ? Shape{1, N, N * C} : Shape{1, N};
      elems = N * C * L;
      break;
    case Layout::Sliced:  // every other element of a buffer twice as large in each dim, offset 1
      strides = is3d ? Shape{2 * C * 2 * L * 2, 2 * L * 2, 2} : Shape{2 * C * 2, 2};
      elems = 8 * N * C * L + 2;
      base = 1;
      break;
  }
  const std::size_t esize = element_size(dtype);
  keep = std::make_shared<std::vector<char>>(static_cast<std::size_t>(elems + 1) * esize, 0);
  char* data = keep->data() + base * static_cast<int64_t>(esize);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t l = 0; l < L; ++l) {
        const double v = logical[static_cast<std::size_t>((n * C + c) * L + l)];
        const int64_t off = n * strides[0] + c * strides[1] + (is3d ? l * strides[2] : 0);
        store_as(data, off, v, dtype);
      }
  return Tensor::from_blob(data, sizes, strides, dtype);
}

/// A contiguous tensor holding @p logical (row-major).
inline Tensor make_tensor(const std::vector<double>& logical, const Shape& sizes, DType dtype) {
  Tensor t = Tensor::empty(sizes, dtype);
  for (std::size_t i = 0; i < logical.size(); ++i)
    store_as(t.raw_data(), static_cast<int64_t>(i), logical[i], dtype);
  return t;
}

/// Rows [begin, end) of a contiguous tensor, as a view of its memory.
inline Tensor rows(const Tensor& t, int64_t begin, int64_t end) {
  Shape sizes = t.sizes();
  sizes[0] = end - begin;
  return Tensor::from_blob(
      static_cast<char*>(t.raw_data()) +
          begin * t.strides()[0] * static_cast<int64_t>(element_size(t.dtype())),
      sizes, t.strides(), t.dtype());
}

/// Round each value to @p dtype and back (the exact inputs a kernel of that dtype sees).
inline std::vector<double> round_to(std::vector<double> v, DType dtype) {
  for (double& x : v) {
    if (dtype == DType::Float32) x = static_cast<float>(x);
    if (dtype == DType::BFloat16) x = to_double(to_bfloat16(x));
    if (dtype == DType::Float16) x = to_double(to_float16(x));
  }
  return v;
}

/// One unit in the last place of @p dtype (bfloat16 or float16) at magnitude @p v: the spacing
/// of its values in the binade of v (its subnormal spacing below the normal range).
inline double ulp16(double v, DType dtype) {
  const int mant = dtype == DType::BFloat16 ? 7 : 10;
  const int min_exp = dtype == DType::BFloat16 ? -126 : -14;
  const int e = v == 0 || !std::isfinite(v) ? min_exp : std::max(std::ilogb(v), min_exp);
  return std::ldexp(1.0, e - mant);
}

inline double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

/// Tolerance of the float comparisons in this suite, relative to the largest magnitude in the
/// expected tensor (max-norm relative error):
///   float64: max|got − want| ≤ 1e-12 · max|want|
///   float32: max|got − want| ≤ 8 · 2⁻²⁴ · max|want|   (8 float32 half-ulps of the largest value)
inline double rel_tolerance(DType dtype) {
  return dtype == DType::Float64 ? 1e-12 : 8.0 * 0x1.0p-24;
}

/// Asserts that @p got matches @p want within rel_tolerance(dtype), element by element. The
/// tolerance is relative to max(max|want|, @p scale): pass the magnitude of the terms that make up
/// the result as @p scale when the result itself may cancel to ~0 (gradients).
inline ::testing::AssertionResult all_close(const std::vector<double>& got,
                                            const std::vector<double>& want, DType dtype,
                                            double scale = 0.0) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " vs " << want.size();
  }
  const double bound = rel_tolerance(dtype) * std::max({max_abs(want), scale, 1e-300});
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!(std::fabs(got[i] - want[i]) <= bound)) {
      return ::testing::AssertionFailure()
             << "element " << i << ": got " << got[i] << ", want " << want[i] << " (|diff| "
             << std::fabs(got[i] - want[i]) << " > bound " << bound << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult all_close(const Tensor& got, const std::vector<double>& want,
                                            double scale = 0.0) {
  if (!got.defined()) return ::testing::AssertionFailure() << "tensor is undefined";
  return all_close(values(got), want, got.dtype(), scale);
}

/// Success if @p call throws bn1d::Error whose what() contains @p word.
template <class Call>
::testing::AssertionResult throws_error(Call&& call, std::string_view word) {
  try {
    call();
  } catch (const Error& error) {
    if (std::string_view(error.what()).find(word) != std::string_view::npos) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure()
           << "what() = \"" << error.what() << "\" lacks \"" << word << "\"";
  }
  return ::testing::AssertionFailure()
         << "no bn1d::Error thrown (expected one mentioning \"" << word << "\")";
}

}  // namespace bn1d::test
