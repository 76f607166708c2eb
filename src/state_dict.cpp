// SPDX-License-Identifier: MIT
/// @file state_dict.cpp
/// @brief StateDict: an insertion-ordered name → tensor map.

#include <string>
#include <utility>
#include <vector>

#include "bn1d/error.hpp"
#include "bn1d/state.hpp"
#include "safetensors_format.hpp"

namespace bn1d {

void StateDict::insert(const std::string& key, Tensor value) {
  const auto [it, inserted] = index_.try_emplace(key, items_.size());
  if (!inserted) {
    items_[it->second].second = std::move(value);
    return;
  }
  try {
    items_.emplace_back(key, std::move(value));
  } catch (...) {
    index_.erase(it);
    throw;
  }
}

const Tensor* StateDict::find(const std::string& key) const noexcept {
  const auto it = index_.find(key);
  return it == index_.end() ? nullptr : &items_[it->second].second;
}

const Tensor& StateDict::at(const std::string& key) const {
  if (const Tensor* tensor = find(key)) return *tensor;
  throw Error("state dict has no key " + detail::quote(key));
}

std::vector<std::string> StateDict::keys() const {
  std::vector<std::string> result;
  result.reserve(items_.size());
  for (const Item& item : items_) result.push_back(item.first);
  return result;
}

}  // namespace bn1d
