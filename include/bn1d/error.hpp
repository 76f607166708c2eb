// SPDX-License-Identifier: MIT
/// @file error.hpp
/// @brief The exception types bn1d throws: Error for bad arguments, bad state and bad files, and
/// its subclass IoError for files that cannot be opened, read or written.
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

/// Thrown when a file cannot be opened, read or written (a missing file, a directory without
/// write permission, a read that ends early). A file that is read but malformed is an Error, not
/// an IoError. what() names the file. A subclass of Error: `catch (const Error&)` catches it too.
class IoError : public Error {
 public:
  /// Creates an I/O error carrying @p message as what() and the errno value @p error_code (0 when
  /// no system call failed, e.g. a file that ends early or a FIFO refused).
  explicit IoError(const std::string& message, int error_code = 0)
      : Error(message), error_code_(error_code) {}

  /// The errno value of the failure (ENOENT, EACCES, EISDIR, ...), or 0 when there is none.
  int error_code() const noexcept { return error_code_; }

 private:
  int error_code_;
};

}  // namespace bn1d
