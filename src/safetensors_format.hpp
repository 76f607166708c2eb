// SPDX-License-Identifier: MIT
/// @file safetensors_format.hpp
/// @brief Internal (not installed): the safetensors header reader, a file reader that validates
/// the header before reading any tensor, and quoting of untrusted text for messages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bn1d/state.hpp"
#include "bn1d/tensor.hpp"

namespace bn1d::detail {

/// Bounds on a header, documented in state.hpp ("Bounds").
inline constexpr std::uint64_t kMaxHeaderBytes = std::uint64_t{16} << 20;  ///< 16 MiB
inline constexpr std::size_t kMaxHeaderEntries = 65'536;  ///< tensors + __metadata__ pairs
/// Quoted texts longer than this many bytes are cut in messages.
inline constexpr std::size_t kMaxQuotedBytes = 256;
/// Lists of keys in messages name at most this many, then "and K more".
inline constexpr std::size_t kMaxListedKeys = 20;

/// @p text in double quotes for a message, always valid UTF-8 whatever @p text holds: valid
/// UTF-8 is kept, `"` and `\` are escaped as `\"` and `\\`, control characters and bytes that are
/// not part of valid UTF-8 are written as `\xNN`. Texts longer than @p max_bytes are cut there
/// (at a character boundary), followed by `... (N bytes)` after the closing quote.
std::string quote(std::string_view text, std::size_t max_bytes = kMaxQuotedBytes);

/// `"a", "b", "c"` (each as quote() writes it), naming at most @p max_items and then
/// `, ... and K more`.
std::string quote_list(const std::vector<std::string_view>& items,
                       std::size_t max_items = kMaxListedKeys);

/// Rejects names that cannot round-trip through C strings (a NUL byte).
void check_name(const std::string& name);

/// The safetensors code of @p dtype: F32, F64, I64, BF16 or F16.
std::string_view dtype_code(DType dtype);

/// One tensor of a validated header.
struct TensorEntry {
  std::string key;
  DType dtype;
  Shape shape;
  std::uint64_t begin;  ///< data offsets relative to the data section
  std::uint64_t end;
};

/// A validated header: tensors in header order, and "__metadata__".
struct Header {
  std::vector<TensorEntry> entries;
  Metadata metadata;
};

/// Validates the 8-byte header length of a file of @p total bytes that starts with @p head (its
/// first min(total, 9) bytes: the length and the header's first byte) and returns it: at most
/// kMaxHeaderBytes and within the file. A file that is too short, has an absurd length and no
/// '{' after it, or starts like a zip archive or a pickle (what torch.save writes) is an Error
/// saying "not a safetensors file", naming the format recognised.
std::uint64_t header_length(const char* head, std::uint64_t total);

/// Parses and validates the JSON @p text of a header followed by @p data_size bytes of data:
/// JSON syntax (no control bytes, nothing but JSON whitespace after the object), the structure,
/// kMaxHeaderEntries, dtypes, shapes, and data offsets that tile [0, @p data_size) exactly.
Header parse_header(std::string_view text, std::uint64_t data_size);

/// An open safetensors file whose header has been read and validated; tensors are read one by one
/// on request, so that a caller can check the header before reading any data. Errors from the
/// constructor name the file: IoError when it cannot be opened or read or is not a regular file,
/// Error when it is malformed.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  /// The validated header.
  const Header& header() const noexcept { return header_; }
  Header& header() noexcept { return header_; }
  /// Reads the tensor of @p entry (one of header().entries) into new owning storage.
  Tensor read(const TensorEntry& entry) const;

 private:
  /// Reads @p count bytes at @p offset into @p into; throws IoError if the file ends early.
  void read_at(char* into, std::uint64_t offset, std::uint64_t count) const;

  std::string path_;
  int fd_ = -1;
  std::uint64_t data_start_ = 0;  ///< file offset of the data section
  Header header_;
};

}  // namespace bn1d::detail
