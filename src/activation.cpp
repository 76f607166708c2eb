// SPDX-License-Identifier: MIT
// Names of the fused activations (bn1d/activation.hpp).
#include "bn1d/activation.hpp"

namespace bn1d {

std::string activation_name(Activation kind) {
  switch (kind) {
    case Activation::ReLU:
      return "relu";
    case Activation::LeakyReLU:
      return "leaky_relu";
    default:
      return "none";
  }
}

}  // namespace bn1d
