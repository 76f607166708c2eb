// SPDX-License-Identifier: MIT
// The Rcpp layer of bn1d_read_safetensors() and bn1d_write_safetensors(): any safetensors file
// <-> a named list of R arrays, through bn1d's reader and writer.
#include <Rcpp.h>

#include <bn1d/bn1d.hpp>

#include <string>
#include <vector>

#include "r_tensor.hpp"

using namespace bn1d_r;

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
