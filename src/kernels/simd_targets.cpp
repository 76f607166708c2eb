// SPDX-License-Identifier: MIT
// Which SIMD target the kernels run on: the best one this CPU supports, or one forced by name
// (force_target, or BN1D_SIMD_TARGET before the first kernel call). A target is forced through
// Highway's own dispatch: hwy::DisableTargets removes every target better than it from
// hwy::SupportedTargets(), and the next HWY_DYNAMIC_DISPATCH chooses the best one left.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "bn1d/error.hpp"
#include "hwy/targets.h"
#include "kernels/simd.hpp"
#include "kernels/simd_units.hpp"

namespace bn1d::kernels::simd {
namespace {

// The compiled targets this CPU supports, best first, read once before any forcing.
const std::vector<int64_t>& all_targets() {
  static const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  return targets;
}

}  // namespace

void apply_environment_once() {
  static const bool applied = [] {
    all_targets();
    if (const char* name = std::getenv("BN1D_SIMD_TARGET"); name != nullptr && *name != '\0') {
      force_target(name);
    }
    return true;
  }();
  (void)applied;
}

std::vector<std::string> targets() {
  std::vector<std::string> names;
  for (int64_t t : all_targets()) names.emplace_back(hwy::TargetName(t));
  return names;
}

std::string active_target() {
  apply_environment_once();
  return hwy::TargetName(units::target_id());
}

void force_target(const std::string& name) {
  if (name.empty()) {
    hwy::DisableTargets(0);  // every supported target again: the best one is chosen
    return;
  }
  std::string available;
  for (int64_t t : all_targets()) {
    if (name == hwy::TargetName(t)) {
      // Better targets have lower bits: disabling all bits below t leaves t the best one.
      hwy::DisableTargets(t - 1);
      return;
    }
    available += (available.empty() ? "" : ", ") + std::string(hwy::TargetName(t));
  }
  throw Error("SIMD target \"" + name +
              "\" (BN1D_SIMD_TARGET) is not compiled in or not supported by this CPU; available: " +
              available);
}

}  // namespace bn1d::kernels::simd
