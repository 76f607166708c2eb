// SPDX-License-Identifier: MIT
// R values <-> bn1d tensors and state dicts for the Rcpp layer of the bn1d R package.
//
// Layout: R arrays are column-major. An R array of dim c(N, C, L) is handed to bn1d zero-copy as
// a tensor of sizes {N, C, L} and strides {1, N, N*C} (elements), so that element [n, c, l] is
// the same on both sides; outputs are written by bn1d straight into R arrays through views with
// the same strides. Tensors coming from bn1d (row-major) are copied into R arrays through such
// views by Tensor::copy_from, which handles any strides.
#pragma once

#include <Rcpp.h>

#include <bn1d/bn1d.hpp>

#include <string>

// Error translation: bn1d::Error becomes an R error carrying what() and no call, so that R users
// see exactly the C++ message ("expected 2D or 3D input (got 4D input)").
#define BN1D_TRY try {
#define BN1D_CATCH                                           \
  }                                                          \
  catch (const bn1d::Error& e) {                             \
    throw Rcpp::exception(e.what(), /*include_call=*/false); \
  }

namespace bn1d_r {

// "float64" or "float32" as a DType; an Error naming dtype otherwise.
bn1d::DType parse_dtype(const std::string& name);
// Sizes of an R vector: its dim attribute, or {length} when it has none.
bn1d::Shape r_sizes(SEXP x);
// Column-major strides (in elements) of an R array with these sizes.
bn1d::Shape column_major_strides(const bn1d::Shape& sizes);
// A zero-copy, read-only float64 view of the R double vector x, with its dims.
bn1d::Tensor view_of(SEXP x);
// A zero-copy float64 view of x that bn1d writes into: only for an R array just allocated.
bn1d::Tensor writable_view_of(SEXP x);
// A new R double array of the given sizes (a plain vector for 0 or 1 dimensions).
Rcpp::NumericVector new_r_array(const bn1d::Shape& sizes);
// Any bn1d tensor as an R double array of its sizes (NULL for an undefined tensor).
Rcpp::RObject to_r(const bn1d::Tensor& t);
// Float32 copy of the R double vector x (the owning flat tensor); view: its column-major view.
bn1d::Tensor to_f32(SEXP x, bn1d::Tensor& view);
// A named R list as a StateDict (num_batches_tracked entries int64, the others dtype); with
// module, the keys that module does not have are unexpected and their values never read.
bn1d::StateDict to_state_dict(const Rcpp::List& x, bn1d::DType dtype,
                              const bn1d::BatchNorm1dOptions* module = nullptr);
// A StateDict as a named R list of arrays.
Rcpp::List from_state_dict(const bn1d::StateDict& state);

}  // namespace bn1d_r
