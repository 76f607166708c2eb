// SPDX-License-Identifier: MIT
// The options part of a module's text form, shared by BatchNorm1d and SyncBatchNorm1d.
#pragma once

#include <ostream>

#include "bn1d/module.hpp"

namespace bn1d::detail {

/// Writes "(C, eps=…, momentum=…, affine=…, track_running_stats=…)", numbers as PyTorch prints
/// them; returns @p os.
std::ostream& write_options(std::ostream& os, const BatchNorm1dOptions& o);

}  // namespace bn1d::detail
