// SPDX-License-Identifier: MIT
#include "bn1d/combine.hpp"

namespace bn1d {

const char* describe(StepFailure failure) noexcept {
  switch (failure) {
    case StepFailure::None:
      return "no failure";
    case StepFailure::InvalidInput:
      return "it reported an invalid input (expected a 2-D or 3-D float32/float64 tensor)";
    case StepFailure::WrongChannels:
      return "input with the wrong channel count";
    case StepFailure::WrongDtype:
      return "input of the wrong dtype";
    case StepFailure::InvalidState:
      return "invalid module parameters or buffers";
    case StepFailure::NoForward:
      return "backward called before forward";
    case StepFailure::WrongGradShape:
      return "grad_output of the wrong shape";
    case StepFailure::Internal:
      break;
  }
  return "internal error";
}

}  // namespace bn1d
