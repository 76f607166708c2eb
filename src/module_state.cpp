// SPDX-License-Identifier: MIT
// BatchNorm1d state: state_dict / load_state_dict and their safetensors files.
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "bn1d/module.hpp"
#include "format.hpp"
#include "safetensors_format.hpp"
#include "validate.hpp"

namespace bn1d {
namespace {

/// A tensor offered to a module, described by what the module checks before reading any data.
struct Offered {
  std::string_view key;
  DType dtype;
  const Shape* sizes;
};

/// True for the dtype and shape of num_batches_tracked: an int64 scalar, 0-dim or of shape [1].
bool is_count(DType dtype, const Shape& sizes) {
  return dtype == DType::Int64 && (sizes.empty() || (sizes.size() == 1 && sizes[0] == 1));
}

/// The module's checks on the keys, dtypes and shapes of @p offered: missing and (with @p strict)
/// unexpected keys, wrong shapes and dtypes. Returns the error text ("" when all is well) in
/// PyTorch's words, naming at most detail::kMaxListedKeys keys per list; appends the entries the
/// module takes to @p taken (its tensors' keys and num_batches_tracked).
std::string check_offered(const BatchNorm1dOptions& options, const std::vector<Offered>& offered,
                          bool strict, std::vector<const Offered*>* taken) {
  const int64_t C = options.num_features();
  const DType dtype = options.dtype();
  std::vector<std::string_view> expected;
  if (options.affine()) expected = {"weight", "bias"};
  if (options.track_running_stats()) {
    expected.emplace_back("running_mean");
    expected.emplace_back("running_var");
  }
  const bool counts = options.track_running_stats();
  std::vector<std::string_view> missing, unexpected;
  std::vector<std::string> problems;
  for (const std::string_view key : expected) {
    const auto found = std::find_if(offered.begin(), offered.end(),
                                    [&](const Offered& o) { return o.key == key; });
    if (found == offered.end()) {
      missing.push_back(key);
    } else if (found->sizes->size() != 1 || (*found->sizes)[0] != C || found->dtype != dtype) {
      problems.push_back("size or dtype mismatch for " + std::string(key) + ": copying a " +
                         dtype_name(found->dtype) + " tensor of shape " +
                         format_shape(*found->sizes) +
                         " from the state dict, the module expects a " + dtype_name(dtype) +
                         " tensor of shape [" + std::to_string(C) + "]");
    }
  }
  for (const Offered& o : offered) {
    const bool known = (counts && o.key == "num_batches_tracked") ||
                       std::find(expected.begin(), expected.end(), o.key) != expected.end();
    if (!known) {
      unexpected.push_back(o.key);
      continue;
    }
    if (taken != nullptr) taken->push_back(&o);
    if (o.key != "num_batches_tracked") continue;
    if (!is_count(o.dtype, *o.sizes)) {
      problems.push_back(
          std::string(
              "size or dtype mismatch for num_batches_tracked: expected an int64 scalar, got a ") +
          dtype_name(o.dtype) + " tensor of shape " + format_shape(*o.sizes));
    }
  }
  std::string message;
  if (strict && !missing.empty())
    message += " Missing key(s) in state_dict: " + detail::quote_list(missing) + ".";
  if (strict && !unexpected.empty())
    message += " Unexpected key(s) in state_dict: " + detail::quote_list(unexpected) + ".";
  for (const std::string& p : problems) message += " " + p + ".";
  return message;
}

[[noreturn]] void fail_loading(const std::string& message) {
  throw Error("Error(s) in loading state_dict for BatchNorm1d:" + message);
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
  // 1. Validate everything.
  std::vector<Offered> offered;
  offered.reserve(state.size());
  for (const auto& [key, value] : state) offered.push_back({key, value.dtype(), &value.sizes()});
  std::string message = check_offered(options_, offered, strict, nullptr);
  // Any count in [0, INT64_MAX] is accepted; the training step refuses to count past INT64_MAX.
  int64_t count = 0;
  const Tensor* nbt = options_.track_running_stats() ? state.find("num_batches_tracked") : nullptr;
  if (nbt != nullptr && is_count(nbt->dtype(), nbt->sizes()) &&
      (count = *nbt->data<int64_t>()) < 0) {
    message += " num_batches_tracked: expected a count >= 0, got " + std::to_string(count) + ".";
  }
  if (!message.empty()) fail_loading(message);

  // 2. Commit: copy in place so that views of the module's tensors stay valid.
  std::vector<std::pair<std::string, Tensor*>> tensors;
  if (options_.affine()) tensors = {{"weight", &weight_}, {"bias", &bias_}};
  if (options_.track_running_stats()) {
    tensors.emplace_back("running_mean", &running_mean_);
    tensors.emplace_back("running_var", &running_var_);
  }
  for (const auto& [key, dst] : tensors) {
    if (const Tensor* src = state.find(key)) detail::assign_channel_tensor(*dst, *src);
  }
  if (options_.track_running_stats()) num_batches_tracked_ = count;
}

void BatchNorm1d::save(const std::string& path) const { save_safetensors(path, state_dict()); }

void BatchNorm1d::load(const std::string& path, const std::string& prefix) {
  check_not_moved_from();
  // The header first: the module's checks on keys, dtypes and shapes run before any tensor is
  // read, so a file claiming huge or unexpected tensors costs no more than its header.
  detail::SafetensorsFile file(path);
  const std::vector<detail::TensorEntry>& entries = file.header().entries;
  std::vector<Offered> offered;
  std::vector<const detail::TensorEntry*> sources;
  for (const detail::TensorEntry& entry : entries) {
    if (!entry.key.starts_with(prefix)) continue;
    offered.push_back(
        {std::string_view(entry.key).substr(prefix.size()), entry.dtype, &entry.shape});
    sources.push_back(&entry);
  }
  std::vector<const Offered*> taken;
  const std::string message = check_offered(options_, offered, /*strict=*/true, &taken);
  if (!message.empty()) fail_loading(message);
  // Then only the tensors the module takes (at most 5 of C elements each).
  StateDict stripped;
  for (const Offered* o : taken) {
    stripped.insert(std::string(o->key),
                    file.read(*sources[static_cast<std::size_t>(o - offered.data())]));
  }
  load_state_dict(stripped, /*strict=*/true);
}

}  // namespace bn1d
