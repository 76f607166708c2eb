// SPDX-License-Identifier: MIT
// The Rcpp layer of the bn1d R package's modules (nn_batch_norm1d, nn_ghost_batch_norm1d):
// converts R values to bn1d tensors (r_tensor.hpp), calls bn1d's C++ API, converts the results
// back and turns every bn1d::Error into an R error with its message. No batch-norm math here.
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
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "r_tensor.hpp"

using namespace bn1d_r;

namespace {

// One module (a BatchNorm1d or a GhostBatchNorm1d: every call below works on either through
// std::visit) plus, for float32 modules, the float32 copy of the last forward input: the module
// keeps a view of its input for backward(), so that memory must outlive the next backward().
// (For float64 modules the input is R memory; it is kept alive by the external pointer's
// "protected" slot, see cpp_forward.)
struct Module {
  template <class M, class... Args>
  explicit Module(std::in_place_type_t<M> type, Args&&... args)
      : module(type, std::forward<Args>(args)...) {}
  std::variant<bn1d::BatchNorm1d, bn1d::GhostBatchNorm1d> module;
  bn1d::Tensor input_f32;

  // f(module) on whichever module this holds.
  template <class F>
  decltype(auto) visit(F&& f) {
    return std::visit(std::forward<F>(f), module);
  }
  template <class F>
  decltype(auto) visit(F&& f) const {
    return std::visit(std::forward<F>(f), module);
  }
  const bn1d::BatchNorm1dOptions& options() const {
    return visit([](const auto& m) -> const bn1d::BatchNorm1dOptions& { return m.options(); });
  }
};

using ModulePtr = Rcpp::XPtr<Module>;

Module& get(SEXP xp) {
  ModulePtr ptr(xp);
  if (ptr.get() == nullptr) {
    throw bn1d::Error(
        "this module is no longer valid (restored by readRDS() or "
        "unserialize()); use $save() and $load() to keep modules");
  }
  return *ptr;
}

// Checks a whole-number argument and returns it as an int64.
int64_t whole_number(double value, const char* name) {
  if (!std::isfinite(value) || std::trunc(value) != value || std::fabs(value) > 9.0e15) {
    throw bn1d::Error(std::string(name) + ": expected a whole number, got " +
                      std::to_string(value));
  }
  return static_cast<int64_t>(value);
}

// The fused activation named @p name ("none", "relu" or "leaky_relu"; checked in R).
bn1d::Activation parse_activation(const std::string& name) {
  if (name == "none") return bn1d::Activation::None;
  if (name == "relu") return bn1d::Activation::ReLU;
  if (name == "leaky_relu") return bn1d::Activation::LeakyReLU;
  throw bn1d::Error("activation: expected NULL, \"relu\" or \"leaky_relu\", got \"" + name + "\"");
}

bn1d::BatchNorm1dOptions module_options(double num_features, double eps, SEXP momentum, bool affine,
                                        bool track_running_stats, const std::string& dtype,
                                        const std::string& activation = "none",
                                        double negative_slope = 0.01) {
  std::optional<double> m;
  if (!Rf_isNull(momentum)) {
    if (!Rf_isNumeric(momentum) || Rf_xlength(momentum) != 1) {
      throw bn1d::Error("momentum: expected a single number or NULL");
    }
    m = Rf_asReal(momentum);
  }
  bn1d::BatchNorm1dOptions options(whole_number(num_features, "num_features"));
  options.eps(eps)
      .momentum(m)
      .affine(affine)
      .track_running_stats(track_running_stats)
      .dtype(parse_dtype(dtype))
      .activation(parse_activation(activation))
      .negative_slope(negative_slope);
  return options;
}

// The valid positions given by @p lengths (NULL or a double vector of whole numbers ≥ 0, checked
// in R) or @p mask (NULL or a logical N x L matrix without NA, checked in R); none for two NULLs.
// R's column-major mask is transposed into bn1d's row-major (N, L) one.
std::optional<bn1d::ValidPositions> valid_positions(SEXP lengths, SEXP mask) {
  if (!Rf_isNull(lengths)) {
    if (TYPEOF(lengths) != REALSXP) throw bn1d::Error("lengths: expected a double vector");
    std::vector<int64_t> values(static_cast<std::size_t>(Rf_xlength(lengths)));
    for (std::size_t n = 0; n < values.size(); ++n) {
      values[n] = whole_number(REAL(lengths)[n], "lengths");
    }
    return bn1d::ValidPositions::from_lengths(values);
  }
  if (Rf_isNull(mask)) return std::nullopt;
  const bn1d::Shape sizes = r_sizes(mask);
  if (TYPEOF(mask) != LGLSXP || sizes.size() != 2) {
    throw bn1d::Error("mask: expected a logical N x L matrix");
  }
  const int64_t N = sizes[0], L = sizes[1];
  std::vector<uint8_t> row_major(static_cast<std::size_t>(N * L));
  const int* values = LOGICAL(mask);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t l = 0; l < L; ++l) {
      const int v = values[n + l * N];
      if (v == NA_LOGICAL) throw bn1d::Error("mask: expected TRUE or FALSE values, got NA");
      row_major[static_cast<std::size_t>(n * L + l)] = v != 0;
    }
  }
  return bn1d::ValidPositions::from_mask(row_major, N, L);
}

// The module's forward(input, output) or, with @p valid, its masked forward (BatchNorm1d only).
void run_forward(Module& m, const bn1d::Tensor& input, bn1d::Tensor& output,
                 const std::optional<bn1d::ValidPositions>& valid) {
  m.visit([&](auto& module) {
    if constexpr (std::is_same_v<std::decay_t<decltype(module)>, bn1d::BatchNorm1d>) {
      if (valid) return module.forward(input, output, *valid);
    } else if (valid) {
      throw bn1d::Error("lengths, mask: not supported by nn_ghost_batch_norm1d");
    }
    module.forward(input, output);
  });
}

}  // namespace

// [[Rcpp::export]]
SEXP cpp_new(double num_features, double eps, SEXP momentum, bool affine, bool track_running_stats,
             std::string dtype, std::string activation, double negative_slope) {
  BN1D_TRY
  const bn1d::BatchNorm1dOptions options = module_options(
      num_features, eps, momentum, affine, track_running_stats, dtype, activation, negative_slope);
  return ModulePtr(new Module(std::in_place_type<bn1d::BatchNorm1d>, options), true);
  BN1D_CATCH
}

// A GhostBatchNorm1d; @p split is "chunk" or "fixed".
// [[Rcpp::export]]
SEXP cpp_new_ghost(double num_features, double virtual_batch_size, std::string split, double eps,
                   SEXP momentum, bool affine, bool track_running_stats, std::string dtype) {
  BN1D_TRY
  const bn1d::BatchNorm1dOptions options =
      module_options(num_features, eps, momentum, affine, track_running_stats, dtype);
  const int64_t size = whole_number(virtual_batch_size, "virtual_batch_size");
  if (size < 1) {
    throw bn1d::Error("virtual_batch_size: expected a whole number >= 1, got " +
                      std::to_string(size));
  }
  bn1d::GhostSplit how;
  if (split == "chunk") {
    how = bn1d::GhostSplit::Chunk;
  } else if (split == "fixed") {
    how = bn1d::GhostSplit::Fixed;
  } else {
    throw bn1d::Error("split: expected \"chunk\" or \"fixed\", got \"" + split + "\"");
  }
  return ModulePtr(new Module(std::in_place_type<bn1d::GhostBatchNorm1d>, options, size, how),
                   true);
  BN1D_CATCH
}

// Normalizes @p input (an R double vector with dims), over the valid positions given by
// @p lengths or @p mask when one is not NULL. Returns a new R array of the same dims.
// [[Rcpp::export]]
SEXP cpp_forward(SEXP xp, SEXP input, SEXP lengths, SEXP mask) {
  BN1D_TRY
  Module& m = get(xp);
  if (TYPEOF(input) != REALSXP) throw bn1d::Error("input: expected a double array");
  const std::optional<bn1d::ValidPositions> valid = valid_positions(lengths, mask);
  Rcpp::NumericVector out;
  if (m.options().dtype() == bn1d::DType::Float64) {
    out = new_r_array(r_sizes(input));
    const bn1d::Tensor x = view_of(input);
    const bn1d::Tensor target = writable_view_of(out);
    bn1d::Tensor y = target;  // reused by bn1d: same sizes and strides as the dense input
    run_forward(m, x, y, valid);
    if (y.raw_data() != target.raw_data()) target.copy_from(y);
    // The module keeps a view of the input for backward(): keep the R vector alive (and, through
    // its reference count, copied rather than modified in place by later R assignments).
    R_SetExternalPtrProtected(xp, input);
    m.input_f32 = bn1d::Tensor();
  } else {
    bn1d::Tensor x;
    bn1d::Tensor owner = to_f32(input, x);
    bn1d::Tensor y;  // allocated by bn1d
    run_forward(m, x, y, valid);
    out = to_r(y);  // widened exactly
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
  bn1d::BatchNormGradients grads;
  if (m.options().dtype() == bn1d::DType::Float64) {
    gx = new_r_array(r_sizes(grad_output));
    const bn1d::Tensor target = writable_view_of(gx);
    grads.input = target;
    m.visit([&](auto& module) { module.backward(view_of(grad_output), grads); });
    if (grads.input.raw_data() != target.raw_data()) target.copy_from(grads.input);
  } else {
    bn1d::Tensor dy;
    const bn1d::Tensor dy_owner = to_f32(grad_output, dy);
    m.visit([&](auto& module) { module.backward(dy, grads); });
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
  get(xp).visit([&](auto& module) { module.train(mode); });
  BN1D_CATCH
}

// [[Rcpp::export]]
bool cpp_is_training(SEXP xp) {
  BN1D_TRY
  return get(xp).visit([](const auto& module) { return module.is_training(); });
  BN1D_CATCH
}

// One of "weight", "bias", "running_mean", "running_var" (copied; NULL when the module has none),
// or "num_batches_tracked".
// [[Rcpp::export]]
SEXP cpp_get(SEXP xp, std::string name) {
  BN1D_TRY
  return get(xp).visit([&](const auto& m) -> SEXP {
    if (name == "weight") return to_r(m.weight());
    if (name == "bias") return to_r(m.bias());
    if (name == "running_mean") return to_r(m.running_mean());
    if (name == "running_var") return to_r(m.running_var());
    if (name == "num_batches_tracked") {
      return Rf_ScalarReal(static_cast<double>(m.num_batches_tracked()));
    }
    throw bn1d::Error("unknown tensor \"" + name + "\"");
  });
  BN1D_CATCH
}

// The options; a ghost module's also hold virtual_batch_size and split.
// [[Rcpp::export]]
Rcpp::List cpp_options(SEXP xp) {
  BN1D_TRY
  const Module& m = get(xp);
  const bn1d::BatchNorm1dOptions& o = m.options();
  Rcpp::RObject momentum;  // NULL for a cumulative moving average
  if (o.momentum()) momentum = Rcpp::wrap(*o.momentum());
  Rcpp::List out =
      Rcpp::List::create(Rcpp::Named("num_features") = static_cast<double>(o.num_features()),
                         Rcpp::Named("eps") = o.eps(), Rcpp::Named("momentum") = momentum,
                         Rcpp::Named("affine") = o.affine(),
                         Rcpp::Named("track_running_stats") = o.track_running_stats(),
                         Rcpp::Named("dtype") = std::string(bn1d::dtype_name(o.dtype())));
  Rcpp::RObject activation;  // NULL without an activation
  if (o.activation() != bn1d::Activation::None) {
    activation = Rcpp::wrap(bn1d::activation_name(o.activation()));
  }
  out["activation"] = activation;
  out["negative_slope"] = o.negative_slope();
  if (const auto* ghost = std::get_if<bn1d::GhostBatchNorm1d>(&m.module)) {
    out["virtual_batch_size"] = static_cast<double>(ghost->virtual_batch_size());
    out["split"] = std::string(bn1d::ghost_split_name(ghost->split()));
  }
  return out;
  BN1D_CATCH
}

// [[Rcpp::export]]
std::string cpp_repr(SEXP xp) {
  BN1D_TRY
  std::ostringstream os;
  get(xp).visit([&](const auto& module) { os << module; });
  return os.str();
  BN1D_CATCH
}

// [[Rcpp::export]]
void cpp_reset_parameters(SEXP xp) {
  BN1D_TRY
  get(xp).visit([](auto& module) { module.reset_parameters(); });
  BN1D_CATCH
}

// [[Rcpp::export]]
void cpp_reset_running_stats(SEXP xp) {
  BN1D_TRY
  get(xp).visit([](auto& module) { module.reset_running_stats(); });
  BN1D_CATCH
}

// [[Rcpp::export]]
Rcpp::List cpp_state_dict(SEXP xp) {
  BN1D_TRY
  return from_state_dict(get(xp).visit([](const auto& module) { return module.state_dict(); }));
  BN1D_CATCH
}

// [[Rcpp::export]]
void cpp_load_state_dict(SEXP xp, Rcpp::List state, bool strict) {
  BN1D_TRY
  Module& m = get(xp);
  const bn1d::BatchNorm1dOptions& options = m.options();
  const bn1d::StateDict values = to_state_dict(state, options.dtype(), &options);
  m.visit([&](auto& module) { module.load_state_dict(values, strict); });
  BN1D_CATCH
}

// [[Rcpp::export]]
void cpp_save(SEXP xp, std::string path) {
  BN1D_TRY
  get(xp).visit([&](const auto& module) { module.save(path); });
  BN1D_CATCH
}

// [[Rcpp::export]]
void cpp_load(SEXP xp, std::string path, std::string prefix) {
  BN1D_TRY
  get(xp).visit([&](auto& module) { module.load(path, prefix); });
  BN1D_CATCH
}
