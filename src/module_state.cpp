// SPDX-License-Identifier: MIT
// BatchNorm1d state: state_dict / load_state_dict and their safetensors files.
#include <string>
#include <vector>

#include "bn1d/module.hpp"
#include "format.hpp"
#include "validate.hpp"

namespace bn1d {
namespace {

std::string join_quoted(const std::vector<std::string>& keys) {
  std::string s;
  for (const std::string& k : keys) s += (s.empty() ? "\"" : ", \"") + k + "\"";
  return s;
}

}  // namespace

StateDict BatchNorm1d::state_dict() const {
  check_not_moved_from();
  StateDict state;
  if (options_.affine()) {
    state.insert("weight", weight_.clone());
    state.insert("bias", bias_.clone());
  }
  if (options_.track_running_stats()) {
    state.insert("running_mean", running_mean_.clone());
    state.insert("running_var", running_var_.clone());
    Tensor count = Tensor::empty({}, DType::Int64);
    *count.data<int64_t>() = num_batches_tracked_;
    state.insert("num_batches_tracked", count);
  }
  return state;
}

void BatchNorm1d::load_state_dict(const StateDict& state, bool strict) {
  check_not_moved_from();
  const int64_t C = options_.num_features();
  const DType dtype = options_.dtype();
  std::vector<std::pair<std::string, Tensor*>> tensors;
  if (options_.affine()) tensors = {{"weight", &weight_}, {"bias", &bias_}};
  if (options_.track_running_stats()) {
    tensors.emplace_back("running_mean", &running_mean_);
    tensors.emplace_back("running_var", &running_var_);
  }

  // 1. Validate everything.
  std::vector<std::string> missing, unexpected, problems;
  for (const auto& [key, dst] : tensors) {
    const Tensor* src = state.find(key);
    if (src == nullptr) {
      missing.push_back(key);
    } else if (src->dim() != 1 || src->sizes()[0] != C || src->dtype() != dtype) {
      problems.push_back("size or dtype mismatch for " + key + ": copying a " +
                         dtype_name(src->dtype()) + " tensor of shape " +
                         format_shape(src->sizes()) +
                         " from the state dict, the module expects a " + dtype_name(dtype) +
                         " tensor of shape [" + std::to_string(C) + "]");
    }
  }
  int64_t count = 0;
  const Tensor* nbt = options_.track_running_stats() ? state.find("num_batches_tracked") : nullptr;
  if (nbt != nullptr) {
    if (nbt->dtype() != DType::Int64 || nbt->numel() != 1 || nbt->dim() > 1) {
      problems.push_back(
          std::string(
              "size or dtype mismatch for num_batches_tracked: expected an int64 scalar, got a ") +
          dtype_name(nbt->dtype()) + " tensor of shape " + format_shape(nbt->sizes()));
    } else if ((count = *nbt->data<int64_t>()) < 0) {
      problems.push_back("num_batches_tracked: expected a count >= 0, got " +
                         std::to_string(count));
    }
  }
  for (const auto& [key, value] : state) {
    bool known = key == "num_batches_tracked" && options_.track_running_stats();
    for (const auto& t : tensors) known = known || t.first == key;
    if (!known) unexpected.push_back(key);
  }
  std::string message;
  if (strict && !missing.empty())
    message += " Missing key(s) in state_dict: " + join_quoted(missing) + ".";
  if (strict && !unexpected.empty())
    message += " Unexpected key(s) in state_dict: " + join_quoted(unexpected) + ".";
  for (const std::string& p : problems) message += " " + p + ".";
  if (!message.empty()) throw Error("Error(s) in loading state_dict for BatchNorm1d:" + message);

  // 2. Commit: copy in place so that views of the module's tensors stay valid.
  for (const auto& [key, dst] : tensors) {
    if (const Tensor* src = state.find(key)) detail::assign_channel_tensor(*dst, *src);
  }
  if (options_.track_running_stats()) num_batches_tracked_ = count;
}

void BatchNorm1d::save(const std::string& path) const { save_safetensors(path, state_dict()); }

void BatchNorm1d::load(const std::string& path, const std::string& prefix) {
  check_not_moved_from();
  StateDict stripped;
  for (const auto& [key, value] : load_safetensors(path, prefix)) {
    stripped.insert(key.substr(prefix.size()), value);
  }
  load_state_dict(stripped, /*strict=*/true);
}

}  // namespace bn1d
