// SPDX-License-Identifier: MIT
// Formatting for messages and printouts (internal: not installed): shapes and numbers look as
// they do in PyTorch.
#pragma once

#include <string>

#include "bn1d/tensor.hpp"

namespace bn1d {

/// Formats a shape as PyTorch prints a size list: `[20, 100]`.
std::string format_shape(const Shape& shape);

/// Formats @p value as Python's repr(float) does: shortest round-trip digits, scientific
/// notation below 1e-4 or from 1e16 (`1e-05`, `0.1`, `1.0`).
std::string python_float_repr(double value);

}  // namespace bn1d
