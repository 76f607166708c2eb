// SPDX-License-Identifier: MIT
// Per-target dispatch from an entry point to the kernel instance of the storage type and the
// activation, shared by the Highway translation units (simd.cpp, simd_forward.cpp,
// simd_backward_sums.cpp, simd_backward_input.cpp).
#if defined(BN1D_KERNELS_SIMD_DISPATCH_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BN1D_KERNELS_SIMD_DISPATCH_INL_H_
#undef BN1D_KERNELS_SIMD_DISPATCH_INL_H_
#else
#define BN1D_KERNELS_SIMD_DISPATCH_INL_H_
#endif

#include "hwy/highway.h"
#include "kernels/activation.hpp"
#include "kernels/element.hpp"

HWY_BEFORE_NAMESPACE();
namespace bn1d::kernels::HWY_NAMESPACE {

// f.template operator()<T, A>() with T the storage type of x and A the activation's kind.
template <class F>
void with_storage_act(DType dtype, Activation kind, const F& f) {
  with_storage(dtype, [&]<class T>() {
    switch (kind) {
      case Activation::ReLU:
        return f.template operator()<T, Activation::ReLU>();
      case Activation::LeakyReLU:
        return f.template operator()<T, Activation::LeakyReLU>();
      default:
        return f.template operator()<T, Activation::None>();
    }
  });
}

}  // namespace bn1d::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // BN1D_KERNELS_SIMD_DISPATCH_INL_H_
