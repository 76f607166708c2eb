// SPDX-License-Identifier: MIT
// The Highway translation unit of the backward input-gradient kernels of both layouts (the masked
// one is in simd.cpp): compiled once per target (foreach_target), it defines each target's entry
// points and the HWY_EXPORT tables and units:: wrappers that dispatch to the active target
// (simd_units.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/simd_backward_input.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// clang-format off
#include <cstdint>
// clang-format on
#include "hwy/highway.h"
#include "kernels/elementwise_params.hpp"
#include "kernels/simd-inl.h"
#include "kernels/simd_cols-inl.h"
#include "kernels/simd_dispatch-inl.h"
#include "kernels/simd_rows-inl.h"
#include "kernels/view.hpp"

HWY_BEFORE_NAMESPACE();
namespace bn1d::kernels::HWY_NAMESPACE {

// P holds the per-channel parameters in the input's compute type (ComputeOf), laid out as `block`
// says (elementwise_params.hpp); act: the fused activation.
void BackwardInputRows(const Out3& dx, const View3& dy, const View3& x, const void* P,
                       const ParamBlock& block, const Act& act, int64_t i0, int64_t i1,
                       bool stream) {
  with_storage_act(x.dtype, act.kind, [&]<class T, Activation A>() {
    backward_input_rows<T, A>(dx, dy, x, static_cast<const ComputeOf<T>*>(P), block, act.slope, i0,
                              i1, stream);
  });
}
void BackwardInputCols(const Out3& dx, const View3& dy, const View3& x, const void* P,
                       const ParamBlock& block, const Act& act, int64_t u0, int64_t u1,
                       bool stream) {
  with_storage_act(x.dtype, act.kind, [&]<class T, Activation A>() {
    backward_input_cols<T, A>(dx, dy, x, static_cast<const ComputeOf<T>*>(P), block, act.slope, u0,
                              u1, stream);
  });
}

}  // namespace bn1d::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "kernels/simd_units.hpp"

namespace bn1d::kernels::simd {

HWY_EXPORT(BackwardInputRows);
HWY_EXPORT(BackwardInputCols);

namespace units {

void backward_input_rows(const Out3& dx, const View3& dy, const View3& x, const void* P,
                         const ParamBlock& block, const Act& act, int64_t i0, int64_t i1,
                         bool stream) {
  HWY_DYNAMIC_DISPATCH(BackwardInputRows)(dx, dy, x, P, block, act, i0, i1, stream);
}
void backward_input_cols(const Out3& dx, const View3& dy, const View3& x, const void* P,
                         const ParamBlock& block, const Act& act, int64_t u0, int64_t u1,
                         bool stream) {
  HWY_DYNAMIC_DISPATCH(BackwardInputCols)(dx, dy, x, P, block, act, u0, u1, stream);
}

}  // namespace units
}  // namespace bn1d::kernels::simd
#endif  // HWY_ONCE
