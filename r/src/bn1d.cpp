// SPDX-License-Identifier: MIT
// The Rcpp layer of the bn1d R package: converts R values to bn1d tensors, calls bn1d's C++
// API, converts the results back and turns every bn1d::Error into an R error with its message.
// No batch-norm math happens here.
//
// Layout: R arrays are column-major. An R array of dim c(N, C, L) is handed to bn1d zero-copy as
// a tensor of sizes {N, C, L} and strides {1, N, N*C} (elements), so that element [n, c, l] is
// the same on both sides; outputs are written by bn1d straight into R arrays through views with
// the same strides. Tensors coming from bn1d (row-major) are copied into R arrays through such
// views by Tensor::copy_from, which handles any strides.
//
// dtype: R numerics are double. A "float64" module computes on the R memory directly; a "float32"
// module gets float32 copies of its inputs (rounded once, as torch's x.float() does) and returns
// its float32 results widened to double (exactly).
#include <Rcpp.h>

#include <bn1d/bn1d.hpp>

#include <cmath>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace {

// Error translation: bn1d::Error becomes an R error carrying what() and no call, so that R users
// see exactly the C++ message ("expected 2D or 3D input (got 4D input)").
#define BN1D_TRY try {
#define BN1D_CATCH                                           \
  }                                                          \
  catch (const bn1d::Error& e) {                             \
    throw Rcpp::exception(e.what(), /*include_call=*/false); \
  }

// One module plus, for float32 modules, the float32 copy of the last forward input: the module
// keeps a view of its input for backward(), so that memory must outlive the next backward().
// (For float64 modules the input is R memory; it is kept alive by the external pointer's
// "protected" slot, see cpp_forward.)
struct Module {
  explicit Module(const bn1d::BatchNorm1dOptions& options) : module(options) {}
  bn1d::BatchNorm1d module;
  bn1d::Tensor input_f32;
};

using ModulePtr = Rcpp::XPtr<Module>;

Module& get(SEXP xp) {
  ModulePtr ptr(xp);
  if (ptr.get() == nullptr) {
    throw bn1d::Error(
        "this nn_batch_norm1d is no longer valid (restored by readRDS() or "
        "unserialize()); use $save() and $load() to keep modules");
  }
  return *ptr;
}

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

// A named R list as a StateDict: "num_batches_tracked" entries (the key itself, or a key
// ending in ".num_batches_tracked") become int64 scalars, every other entry @p dtype. With
// @p module, the keys that module does not have are unexpected: their values are never read
// (an empty placeholder stands for them; load_state_dict only reports or ignores them).
bn1d::StateDict to_state_dict(const Rcpp::List& x, bn1d::DType dtype,
                              const bn1d::BatchNorm1dOptions* module = nullptr) {
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

}  // namespace

// ---- module ---------------------------------------------------------------------------------

// [[Rcpp::export]]
SEXP cpp_new(double num_features, double eps, SEXP momentum, bool affine, bool track_running_stats,
             std::string dtype) {
  BN1D_TRY
  if (!std::isfinite(num_features) || std::trunc(num_features) != num_features ||
      std::fabs(num_features) > 9.0e15) {
    throw bn1d::Error("num_features: expected a whole number, got " + std::to_string(num_features));
  }
  std::optional<double> m;
  if (!Rf_isNull(momentum)) {
    if (!Rf_isNumeric(momentum) || Rf_xlength(momentum) != 1) {
      throw bn1d::Error("momentum: expected a single number or NULL");
    }
    m = Rf_asReal(momentum);
  }
  bn1d::BatchNorm1dOptions options(static_cast<int64_t>(num_features));
  options.eps(eps)
      .momentum(m)
      .affine(affine)
      .track_running_stats(track_running_stats)
      .dtype(parse_dtype(dtype));
  return ModulePtr(new Module(options), true);
  BN1D_CATCH
}

// Normalizes @p input (an R double vector with dims). Returns a new R array of the same dims.
// [[Rcpp::export]]
SEXP cpp_forward(SEXP xp, SEXP input) {
  BN1D_TRY
  Module& m = get(xp);
  if (TYPEOF(input) != REALSXP) throw bn1d::Error("input: expected a double array");
  Rcpp::NumericVector out;
  if (m.module.options().dtype() == bn1d::DType::Float64) {
    out = new_r_array(r_sizes(input));
    const bn1d::Tensor x = view_of(input);
    const bn1d::Tensor target = writable_view_of(out);
    bn1d::Tensor y = target;  // reused by bn1d: same sizes and strides as the dense input
    m.module.forward(x, y);
    if (y.raw_data() != target.raw_data()) target.copy_from(y);
    // The module keeps a view of the input for backward(): keep the R vector alive (and, through
    // its reference count, copied rather than modified in place by later R assignments).
    R_SetExternalPtrProtected(xp, input);
    m.input_f32 = bn1d::Tensor();
  } else {
    bn1d::Tensor x;
    bn1d::Tensor owner = to_f32(input, x);
    out = to_r(m.module.forward(x));  // widened exactly
    m.input_f32 = owner;
    R_SetExternalPtrProtected(xp, R_NilValue);
  }
  if (Rf_xlength(out) == Rf_xlength(input)) {
    SEXP dimnames = Rf_getAttrib(input, R_DimNamesSymbol);
    if (!Rf_isNull(dimnames)) Rf_setAttrib(out, R_DimNamesSymbol, dimnames);
  }
  return out;
  BN1D_CATCH
}

// Gradients of the last forward for @p grad_output: list(input, weight, bias), NULL entries for
// gradients that do not exist (weight and bias without affine).
// [[Rcpp::export]]
SEXP cpp_backward(SEXP xp, SEXP grad_output) {
  BN1D_TRY
  Module& m = get(xp);
  if (TYPEOF(grad_output) != REALSXP) throw bn1d::Error("grad_output: expected a double array");
  Rcpp::NumericVector gx;
  bn1d::BatchNorm1d::Gradients grads;
  if (m.module.options().dtype() == bn1d::DType::Float64) {
    gx = new_r_array(r_sizes(grad_output));
    const bn1d::Tensor target = writable_view_of(gx);
    grads.input = target;
    m.module.backward(view_of(grad_output), grads);
    if (grads.input.raw_data() != target.raw_data()) target.copy_from(grads.input);
  } else {
    bn1d::Tensor dy;
    const bn1d::Tensor dy_owner = to_f32(grad_output, dy);
    m.module.backward(dy, grads);
    gx = to_r(grads.input);  // widened exactly
  }
  SEXP dimnames = Rf_getAttrib(grad_output, R_DimNamesSymbol);
  if (!Rf_isNull(dimnames)) Rf_setAttrib(gx, R_DimNamesSymbol, dimnames);
  return Rcpp::List::create(Rcpp::Named("input") = gx, Rcpp::Named("weight") = to_r(grads.weight),
                            Rcpp::Named("bias") = to_r(grads.bias));
  BN1D_CATCH
}

// [[Rcpp::export]]
void cpp_train(SEXP xp, bool mode) {
  BN1D_TRY
  get(xp).module.train(mode);
  BN1D_CATCH
}

// [[Rcpp::export]]
bool cpp_is_training(SEXP xp) {
  BN1D_TRY
  return get(xp).module.is_training();
  BN1D_CATCH
}

// One of "weight", "bias", "running_mean", "running_var" (copied; NULL when the module has none),
// or "num_batches_tracked".
// [[Rcpp::export]]
SEXP cpp_get(SEXP xp, std::string name) {
  BN1D_TRY
  const bn1d::BatchNorm1d& m = get(xp).module;
  if (name == "weight") return to_r(m.weight());
  if (name == "bias") return to_r(m.bias());
  if (name == "running_mean") return to_r(m.running_mean());
  if (name == "running_var") return to_r(m.running_var());
  if (name == "num_batches_tracked") {
    return Rf_ScalarReal(static_cast<double>(m.num_batches_tracked()));
  }
  throw bn1d::Error("unknown tensor \"" + name + "\"");
  BN1D_CATCH
}

// [[Rcpp::export]]
Rcpp::List cpp_options(SEXP xp) {
  BN1D_TRY
  const bn1d::BatchNorm1dOptions& o = get(xp).module.options();
  Rcpp::RObject momentum;  // NULL for a cumulative moving average
  if (o.momentum()) momentum = Rcpp::wrap(*o.momentum());
  return Rcpp::List::create(Rcpp::Named("num_features") = static_cast<double>(o.num_features()),
                            Rcpp::Named("eps") = o.eps(), Rcpp::Named("momentum") = momentum,
                            Rcpp::Named("affine") = o.affine(),
                            Rcpp::Named("track_running_stats") = o.track_running_stats(),
                            Rcpp::Named("dtype") = std::string(bn1d::dtype_name(o.dtype())));
  BN1D_CATCH
}

// [[Rcpp::export]]
std::string cpp_repr(SEXP xp) {
  BN1D_TRY
  std::ostringstream os;
  os << get(xp).module;
  return os.str();
  BN1D_CATCH
}

// [[Rcpp::export]]
void cpp_reset_parameters(SEXP xp) {
  BN1D_TRY
  get(xp).module.reset_parameters();
  BN1D_CATCH
}

// [[Rcpp::export]]
void cpp_reset_running_stats(SEXP xp) {
  BN1D_TRY
  get(xp).module.reset_running_stats();
  BN1D_CATCH
}

// [[Rcpp::export]]
Rcpp::List cpp_state_dict(SEXP xp) {
  BN1D_TRY
  return from_state_dict(get(xp).module.state_dict());
  BN1D_CATCH
}

// [[Rcpp::export]]
void cpp_load_state_dict(SEXP xp, Rcpp::List state, bool strict) {
  BN1D_TRY
  Module& m = get(xp);
  const bn1d::BatchNorm1dOptions& options = m.module.options();
  m.module.load_state_dict(to_state_dict(state, options.dtype(), &options), strict);
  BN1D_CATCH
}

// [[Rcpp::export]]
void cpp_save(SEXP xp, std::string path) {
  BN1D_TRY
  get(xp).module.save(path);
  BN1D_CATCH
}

// [[Rcpp::export]]
void cpp_load(SEXP xp, std::string path, std::string prefix) {
  BN1D_TRY
  get(xp).module.load(path, prefix);
  BN1D_CATCH
}

// ---- safetensors files ----------------------------------------------------------------------

// The tensors of a safetensors file whose keys start with @p prefix, as a named list of R arrays
// (dims as in the file, values as double), with the file's metadata as attribute "metadata".
// [[Rcpp::export]]
Rcpp::List cpp_read_safetensors(std::string path, std::string prefix) {
  BN1D_TRY
  bn1d::Metadata metadata;
  // The tensors, each released as soon as it is in R: the peak is the R result plus the
  // largest tensor as stored in the file.
  std::vector<bn1d::StateDict::Item> items;
  {
    const bn1d::StateDict state = bn1d::load_safetensors(path, prefix, &metadata);
    items.assign(state.begin(), state.end());
  }
  Rcpp::List out(items.size());
  Rcpp::CharacterVector names(items.size());
  for (std::size_t k = 0; k < items.size(); ++k) {
    out[static_cast<R_xlen_t>(k)] = to_r(items[k].second);
    names[static_cast<R_xlen_t>(k)] = items[k].first;
    items[k].second = bn1d::Tensor();
  }
  out.attr("names") = names;
  Rcpp::CharacterVector meta(metadata.size());
  Rcpp::CharacterVector meta_names(metadata.size());
  R_xlen_t i = 0;
  for (const auto& [key, value] : metadata) {
    meta[i] = value;
    meta_names[i] = key;
    ++i;
  }
  meta.attr("names") = meta_names;
  out.attr("metadata") = meta;
  return out;
  BN1D_CATCH
}

// Writes a named list of R numeric arrays as a safetensors file: entries named
// "num_batches_tracked" (or ending in ".num_batches_tracked") as int64 scalars, the others as
// @p dtype tensors with their dims.
// [[Rcpp::export]]
void cpp_write_safetensors(Rcpp::List tensors, std::string path, std::string dtype,
                           Rcpp::CharacterVector metadata) {
  BN1D_TRY
  bn1d::Metadata meta;
  if (metadata.size() > 0) {
    SEXP names = Rf_getAttrib(metadata, R_NamesSymbol);
    if (Rf_isNull(names)) throw bn1d::Error("metadata: expected a named character vector");
    for (R_xlen_t i = 0; i < metadata.size(); ++i) {
      meta[CHAR(STRING_ELT(names, i))] = Rcpp::as<std::string>(metadata[i]);
    }
  }
  bn1d::save_safetensors(path, to_state_dict(tensors, parse_dtype(dtype)), meta);
  BN1D_CATCH
}
