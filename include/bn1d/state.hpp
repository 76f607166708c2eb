// SPDX-License-Identifier: MIT
/// @file state.hpp
/// @brief State dicts (ordered name → tensor maps) and their safetensors files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bn1d/tensor.hpp"

namespace bn1d {

/// An ordered map from names to tensors, like torch's OrderedDict state_dict.
/// Keys keep their insertion order; inserting an existing key replaces its tensor in place.
class StateDict {
 public:
  using Item = std::pair<std::string, Tensor>;

  /// Adds @p key or replaces its tensor (keeping its position).
  void insert(const std::string& key, Tensor value);
  /// The tensor stored under @p key, or nullptr.
  const Tensor* find(const std::string& key) const noexcept;
  /// The tensor stored under @p key; throws Error naming the key if absent.
  const Tensor& at(const std::string& key) const;
  /// True when @p key is present.
  bool contains(const std::string& key) const noexcept { return find(key) != nullptr; }
  /// Keys in insertion order.
  std::vector<std::string> keys() const;
  /// Number of entries.
  std::size_t size() const noexcept { return items_.size(); }
  /// True when there are no entries.
  bool empty() const noexcept { return items_.empty(); }
  /// Iteration over (key, tensor) pairs in insertion order.
  std::vector<Item>::const_iterator begin() const noexcept { return items_.begin(); }
  std::vector<Item>::const_iterator end() const noexcept { return items_.end(); }

 private:
  std::vector<Item> items_;
  std::unordered_map<std::string, std::size_t> index_;  // key → position in items_
};

/// Free-form string metadata of a safetensors file (its "__metadata__" object).
using Metadata = std::map<std::string, std::string>;

/// Serializes @p state in the safetensors format (https://github.com/huggingface/safetensors):
/// 8-byte little-endian header length, a JSON header padded with spaces to a multiple of 8,
/// then the tensors' little-endian bytes in dict order. dtypes are written as F32, F64, I64, BF16,
/// F16.
std::vector<std::uint8_t> to_safetensors(const StateDict& state, const Metadata& metadata = {});

/// @name Reading untrusted files
/// Every reader below treats its input as hostile and keeps these promises:
///
/// - **Bounds.** A header is at most 16 MiB (16,777,216 bytes; the reference reader allows
///   100 MB) and holds at most 65,536 entries (tensors plus "__metadata__" pairs); a shape has at
///   most 64 dimensions and the JSON nests at most 3 levels. Larger headers are an Error, raised
///   before the header is read.
/// - **Memory.** Every size in the header is checked against the real size of the buffer or file
///   before anything is allocated. Reading a header costs at most about 4 bytes of memory per
///   header byte (measured: ~56 MiB peak for the largest header, 65,536 tensors in 16 MiB); the
///   tensors returned add their data and about 1.5 KiB each at most (rank 64). BatchNorm1d::load
///   checks keys, dtypes and shapes against the module from the header alone and reads only the
///   (at most 5) tensors it takes.
/// - **Time.** Linear in the header's size, then in the bytes of the tensors read.
/// - **Strict JSON.** The header is one JSON object starting at its first byte, valid UTF-8, with
///   no control byte (NUL included) anywhere, followed only by JSON whitespace (the writer pads
///   with spaces). Duplicate keys and duplicate fields are errors.
/// - **Messages.** Errors name what was expected and what was found. Text taken from the file
///   or the caller (keys, dtypes, JSON excerpts, paths) is quoted as valid UTF-8: control bytes
///   and bytes of no valid UTF-8 sequence appear as `\xNN`, `"` and `\` as `\"` and `\\`; a
///   quoted key or excerpt is cut after 256 bytes and a list of keys after 20 (", ... and K
///   more"), so that a message stays a few KiB at most.
/// - **No change on error.** A failed call leaves @p metadata (and the module) unchanged.
///
/// BatchNorm1d::load_state_dict and load accept any num_batches_tracked in [0, INT64_MAX] (an
/// int64 scalar, 0-dim or of shape [1]); a negative count is an Error. Training past INT64_MAX
/// batches is refused by the training step, not by loading.
/// @{

/// Parses a whole safetensors file held in memory. Every tensor is copied into owning storage.
/// Throws Error (never crashes, never allocates more than the bytes given, plus the bounded
/// bookkeeping above) on: a buffer shorter than its header length, a header over 16 MiB or over
/// 65,536 entries, invalid or non-object JSON, control bytes or trailing bytes other than
/// whitespace, nesting deeper than the format allows, duplicate keys, a dtype other than
/// F32/F64/I64, negative or overflowing shapes, data_offsets that are reversed, out of range,
/// overlapping, leave holes or disagree with shape × dtype size. @p metadata, if given, is
/// replaced by "__metadata__" (empty when the file has none) on success and left unchanged on
/// error.
StateDict parse_safetensors(std::span<const std::uint8_t> bytes, Metadata* metadata = nullptr);

/// Reads the tensors of a safetensors file whose keys start with @p prefix (all when empty),
/// validating the whole header as parse_safetensors does but reading only the selected data.
/// The returned keys keep their full names. Throws IoError when the file cannot be opened or read
/// or is not a regular file (a FIFO or a device is refused without waiting on it), Error naming
/// the file when it is malformed.
StateDict load_safetensors(const std::string& path, const std::string& prefix = "",
                           Metadata* metadata = nullptr);
/// @}

/// Writes @p state to @p path as safetensors (see to_safetensors), through a temporary file in
/// the target's directory renamed over it, so that a failed write never leaves a partial file.
/// A symbolic link at @p path is followed (through chains of links, to a target that need not
/// exist yet) and stays a link: its final target is replaced, keeping its permissions. Throws
/// IoError naming @p path on I/O failure, and when the target exists but is not a regular file
/// (a directory, a FIFO, a device, a socket), which is left as it is.
void save_safetensors(const std::string& path, const StateDict& state,
                      const Metadata& metadata = {});

}  // namespace bn1d
