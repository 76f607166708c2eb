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
/// then the tensors' little-endian bytes in dict order. dtypes are written as F32, F64, I64.
std::vector<std::uint8_t> to_safetensors(const StateDict& state, const Metadata& metadata = {});

/// Parses a whole safetensors file held in memory. Every tensor is copied into owning storage.
/// Throws Error (never crashes, never allocates more than the bytes given) on: a buffer shorter
/// than its header length, a header over 100 MB, invalid or non-object JSON, nesting deeper than
/// the format allows, duplicate keys, a dtype other than F32/F64/I64, negative or overflowing
/// shapes, data_offsets that are reversed, out of range, overlapping, leave holes or disagree
/// with shape × dtype size. @p metadata, if given, is replaced by "__metadata__" (empty when the
/// file has none) on success and left unchanged on error.
StateDict parse_safetensors(std::span<const std::uint8_t> bytes, Metadata* metadata = nullptr);

/// Writes @p state to @p path as safetensors (see to_safetensors), through a temporary file in
/// the same directory renamed over @p path, so that a failed write never leaves a partial file.
/// Throws Error on I/O failure.
void save_safetensors(const std::string& path, const StateDict& state,
                      const Metadata& metadata = {});

/// Reads the tensors of a safetensors file whose keys start with @p prefix (all when empty),
/// validating the whole header as parse_safetensors does but reading only the selected data.
/// The returned keys keep their full names. Throws Error on I/O failure or a malformed file.
StateDict load_safetensors(const std::string& path, const std::string& prefix = "",
                           Metadata* metadata = nullptr);

}  // namespace bn1d
