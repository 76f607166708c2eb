// SPDX-License-Identifier: MIT
// The check before bn1d updates a caller's tensor in place (internal: not installed).
#pragma once

#include <string>
#include <string_view>

#include "bn1d/error.hpp"
#include "bn1d/tensor.hpp"

namespace bn1d::detail {

/// Throws Error naming @p name when @p t is read-only (from_blob of const memory), for a tensor
/// that bn1d is about to update in place. Result buffers are not checked: a read-only one is
/// replaced (reuse_or_allocate).
inline void check_writable(const Tensor& t, std::string_view name) {
  if (t.is_read_only()) {
    throw Error(std::string(name) +
                ": expected a writable tensor, got a read-only one (from_blob of const memory), "
                "which bn1d would update in place");
  }
}

}  // namespace bn1d::detail
