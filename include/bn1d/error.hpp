// SPDX-License-Identifier: MIT
/// @file error.hpp
/// @brief The one exception type bn1d throws for bad arguments, bad state and bad files.
#pragma once

#include <stdexcept>
#include <string>

namespace bn1d {

/// Thrown for every invalid argument, inconsistent module state or malformed state file.
///
/// what() names the offending argument, what was expected and what was given. A call that
/// throws leaves every object it was given unchanged (strong exception guarantee).
class Error : public std::invalid_argument {
 public:
  /// Creates an error carrying @p message as what().
  explicit Error(const std::string& message) : std::invalid_argument(message) {}
};

}  // namespace bn1d
