// SPDX-License-Identifier: MIT
// The one shape every kernel sees: a 3-D strided (N, C, L) view of float32 or float64 data.
#pragma once

#include <cstdint>

#include "bn1d/tensor.hpp"

namespace bn1d::kernels {

/// Element (n, c, l) lives at data + n·sN + c·sC + l·sL (in elements). A 2-D (N, C) input is
/// viewed with L = 1.
struct View3 {
  const void* data = nullptr;
  DType dtype = DType::Float32;
  int64_t N = 0, C = 0, L = 0;
  int64_t sN = 0, sC = 0, sL = 0;

  int64_t count() const { return N * L; }  ///< values per channel
};

/// An output: element (n, c, l) is written at data + n·sN + c·sC + l·sL (in elements), in the
/// dtype of the input view it is computed from.
struct Out3 {
  void* data = nullptr;
  int64_t sN = 0, sC = 0, sL = 0;
};

}  // namespace bn1d::kernels
