// SPDX-License-Identifier: MIT
// R values <-> bn1d tensors and state dicts (see r_tensor.hpp).
#include "r_tensor.hpp"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace bn1d_r {

bn1d::DType parse_dtype(const std::string& name) {
  if (name == "float64") return bn1d::DType::Float64;
  if (name == "float32") return bn1d::DType::Float32;
  throw bn1d::Error("dtype: expected \"float64\" or \"float32\", got \"" + name + "\"");
}

// ---- R array <-> bn1d::Tensor -----------------------------------------------------------

// Sizes of an R vector: its dim attribute, or {length} when it has none.
bn1d::Shape r_sizes(SEXP x) {
  SEXP dim = Rf_getAttrib(x, R_DimSymbol);
  bn1d::Shape sizes;
  if (Rf_isNull(dim)) {
    sizes.push_back(static_cast<int64_t>(Rf_xlength(x)));
  } else {
    for (R_xlen_t i = 0; i < Rf_xlength(dim); ++i) sizes.push_back(INTEGER(dim)[i]);
  }
  return sizes;
}

// Column-major strides (in elements) of an R array with these sizes.
bn1d::Shape column_major_strides(const bn1d::Shape& sizes) {
  bn1d::Shape strides(sizes.size());
  int64_t stride = 1;
  for (std::size_t d = 0; d < sizes.size(); ++d) {
    strides[d] = stride;
    stride *= sizes[d];
  }
  return strides;
}

// A zero-copy, read-only float64 view of the R double vector @p x, with its dims: R values are
// shared, bn1d only reads them.
bn1d::Tensor view_of(SEXP x) {
  const bn1d::Shape sizes = r_sizes(x);
  return bn1d::Tensor::from_blob(REAL_RO(x), sizes, column_major_strides(sizes),
                                 bn1d::DType::Float64);
}

// A zero-copy float64 view of @p x that bn1d writes into: only for an R array this code has just
// allocated (a result).
bn1d::Tensor writable_view_of(SEXP x) {
  const bn1d::Shape sizes = r_sizes(x);
  return bn1d::Tensor::from_blob(REAL(x), sizes, column_major_strides(sizes), bn1d::DType::Float64);
}

// A new R double array of the given sizes (a plain vector for 0 or 1 dimensions).
Rcpp::NumericVector new_r_array(const bn1d::Shape& sizes) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  Rcpp::NumericVector out(static_cast<R_xlen_t>(n));
  if (sizes.size() >= 2) {
    Rcpp::IntegerVector dim(sizes.size());
    for (std::size_t d = 0; d < sizes.size(); ++d) {
      if (sizes[d] > INT32_MAX) throw bn1d::Error("tensor dimension too large for an R array");
      dim[d] = static_cast<int>(sizes[d]);
    }
    out.attr("dim") = dim;
  }
  return out;
}

namespace {

// One element as a double: exact for every type here (int64 up to 2^53).
double as_double(double v) { return v; }
double as_double(float v) { return v; }
double as_double(int64_t v) { return static_cast<double>(v); }
double as_double(bn1d::BFloat16 v) { return bn1d::to_double(v); }
double as_double(bn1d::Float16 v) { return bn1d::to_double(v); }

// The values of @p t (any strides) as doubles into @p dst, column-major (element [i, j, ...] of
// the tensor at the R array's [i, j, ...]): straight into the R vector, no intermediate tensor.
template <class T>
void widen_column_major(const bn1d::Tensor& t, double* dst) {
  const T* src = static_cast<const T*>(t.raw_data());
  const bn1d::Shape& sizes = t.sizes();
  const bn1d::Shape& strides = t.strides();
  const bn1d::Shape to = column_major_strides(sizes);
  std::vector<int64_t> index(sizes.size(), 0);
  int64_t from_offset = 0, to_offset = 0;
  for (int64_t i = 0, n = t.numel(); i < n; ++i) {
    dst[to_offset] = as_double(src[from_offset]);
    for (std::size_t d = sizes.size(); d-- > 0;) {  // next index, last dimension fastest
      if (++index[d] < sizes[d]) {
        from_offset += strides[d];
        to_offset += to[d];
        break;
      }
      from_offset -= strides[d] * (sizes[d] - 1);
      to_offset -= to[d] * (sizes[d] - 1);
      index[d] = 0;
    }
  }
}

}  // namespace

// Any bn1d tensor (float32, float64, int64, bfloat16 or float16, any strides) as an R double
// array of its sizes, element [i, j, ...] equal to the tensor's; 0-d and 1-d tensors become plain
// vectors; NULL for an undefined tensor. Written straight into the R vector (all but float64
// widened exactly, int64 up to 2^53). (An RObject, so that the result stays protected while
// others allocate.)
Rcpp::RObject to_r(const bn1d::Tensor& t) {
  if (!t.defined()) return Rcpp::RObject(R_NilValue);
  Rcpp::NumericVector out = new_r_array(t.sizes());
  if (t.numel() == 0) return out;
  switch (t.dtype()) {
    case bn1d::DType::Float64:
      widen_column_major<double>(t, REAL(out));
      break;
    case bn1d::DType::Float32:
      widen_column_major<float>(t, REAL(out));
      break;
    case bn1d::DType::Int64:
      widen_column_major<int64_t>(t, REAL(out));
      break;
    case bn1d::DType::BFloat16:
      widen_column_major<bn1d::BFloat16>(t, REAL(out));
      break;
    case bn1d::DType::Float16:
      widen_column_major<bn1d::Float16>(t, REAL(out));
      break;
  }
  return out;
}

// Float32 copy of the R double vector @p x, laid out column-major like @p x. Returns the owning
// flat tensor; @p view receives the (sizes, column-major strides) view of it.
bn1d::Tensor to_f32(SEXP x, bn1d::Tensor& view) {
  const bn1d::Shape sizes = r_sizes(x);
  const R_xlen_t n = Rf_xlength(x);
  bn1d::Tensor owner = bn1d::Tensor::empty({static_cast<int64_t>(n)}, bn1d::DType::Float32);
  float* dst = owner.data<float>();
  const double* src = REAL(x);
  for (R_xlen_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
  view = bn1d::Tensor::from_blob(owner.raw_data(), sizes, column_major_strides(sizes),
                                 bn1d::DType::Float32);
  return owner;
}

namespace {

// An R value of a state dict as a contiguous tensor of @p dtype (its dims, or 1-d).
bn1d::Tensor state_value(SEXP x, const std::string& key, bn1d::DType dtype) {
  if (Rf_isFactor(x)) {  // integer codes, not values
    throw bn1d::Error(key + ": expected a numeric vector, got a factor (use as.numeric(" +
                      "as.character(x)) for its labels' values)");
  }
  if (TYPEOF(x) != REALSXP && TYPEOF(x) != INTSXP && TYPEOF(x) != LGLSXP) {
    throw bn1d::Error(key + ": expected a numeric vector, got an R " +
                      std::string(Rf_type2char(TYPEOF(x))));
  }
  Rcpp::NumericVector values = Rcpp::as<Rcpp::NumericVector>(x);  // keeps dims
  const bn1d::Shape sizes = r_sizes(values);
  const bn1d::Tensor f64 = view_of(values).clone();  // row-major copy
  if (dtype == bn1d::DType::Float64) return f64;
  bn1d::Tensor out = bn1d::Tensor::empty(sizes, dtype);
  const double* src = f64.data<double>();
  if (dtype == bn1d::DType::Float32) {
    float* dst = out.data<float>();
    for (int64_t i = 0; i < f64.numel(); ++i) dst[i] = static_cast<float>(src[i]);
  } else {
    int64_t* dst = out.data<int64_t>();
    for (int64_t i = 0; i < f64.numel(); ++i) {
      if (!std::isfinite(src[i]) || std::trunc(src[i]) != src[i] || std::fabs(src[i]) > 9.0e15) {
        throw bn1d::Error(key + ": expected whole numbers, got " + std::to_string(src[i]));
      }
      dst[i] = static_cast<int64_t>(src[i]);
    }
  }
  return out;
}

}  // namespace

// A named R list as a StateDict: "num_batches_tracked" entries (the key itself, or a key
// ending in ".num_batches_tracked") become int64 scalars, every other entry @p dtype. With
// @p module, the keys that module does not have are unexpected: their values are never read
// (an empty placeholder stands for them; load_state_dict only reports or ignores them).
bn1d::StateDict to_state_dict(const Rcpp::List& x, bn1d::DType dtype,
                              const bn1d::BatchNorm1dOptions* module) {
  bn1d::StateDict state;
  if (x.size() == 0) return state;
  SEXP names = Rf_getAttrib(x, R_NamesSymbol);
  if (Rf_isNull(names)) throw bn1d::Error("state_dict: expected a named list");
  const std::string suffix = ".num_batches_tracked";
  for (R_xlen_t i = 0; i < x.size(); ++i) {
    const std::string key = CHAR(STRING_ELT(names, i));
    if (key.empty()) throw bn1d::Error("state_dict: every element must be named");
    if (module != nullptr) {
      const bool known =
          ((key == "weight" || key == "bias") && module->affine()) ||
          ((key == "running_mean" || key == "running_var" || key == "num_batches_tracked") &&
           module->track_running_stats());
      if (!known) {
        state.insert(key, bn1d::Tensor::empty({0}, bn1d::DType::Int64));
        continue;
      }
    }
    const bool count = key == "num_batches_tracked" ||
                       (key.size() > suffix.size() &&
                        key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0);
    bn1d::Tensor t = state_value(x[i], key, count ? bn1d::DType::Int64 : dtype);
    if (count && t.numel() == 1) {  // an int64 scalar, as torch stores it
      bn1d::Tensor scalar = bn1d::Tensor::empty({}, bn1d::DType::Int64);
      *scalar.data<int64_t>() = *t.data<int64_t>();
      t = scalar;
    }
    state.insert(key, t);
  }
  return state;
}

Rcpp::List from_state_dict(const bn1d::StateDict& state) {
  Rcpp::List out(state.size());
  Rcpp::CharacterVector names(state.size());
  R_xlen_t i = 0;
  for (const auto& [key, value] : state) {
    out[i] = to_r(value);
    names[i] = key;
    ++i;
  }
  out.attr("names") = names;
  return out;
}

}  // namespace bn1d_r
