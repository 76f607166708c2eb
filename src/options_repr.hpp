// SPDX-License-Identifier: MIT
// The options part of a module's text form, shared by BatchNorm1d, SyncBatchNorm1d and
// GhostBatchNorm1d.
#pragma once

#include <ostream>

#include "bn1d/module.hpp"

namespace bn1d::detail {

/// Writes "(C, eps=…, momentum=…, affine=…, track_running_stats=…)", numbers as PyTorch prints
/// them, and the activation (write_activation) before the ")"; returns @p os.
std::ostream& write_options(std::ostream& os, const BatchNorm1dOptions& o);

/// Writes ", activation=relu" or ", activation=leaky_relu, negative_slope=…", nothing without an
/// activation (the torch-like text form stays as it was); returns @p os.
std::ostream& write_activation(std::ostream& os, const BatchNorm1dOptions& o);

}  // namespace bn1d::detail
