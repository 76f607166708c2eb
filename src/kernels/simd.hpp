// SPDX-License-Identifier: MIT
// SIMD kernels (Highway, runtime dispatch). Each op has two layouts, named by the axis with unit
// stride, the one the kernels vectorize along:
//   Layout::UnitStrideL: every (n, c) row of L values is contiguous (sL == 1), e.g. a contiguous
//         (N, C, L) tensor. Its kernels are the "rows" kernels (simd_rows-inl.h).
//   Layout::UnitStrideC: the C channels of every (n, l) are contiguous (sC == 1), e.g. a
//         contiguous (N, C) tensor or a channels-last (N, L, C) buffer viewed as (N, C, L). Its
//         kernels are the "cols" kernels (simd_cols-inl.h): row r = n·L + l holds x[n, :, l].
// Statistics are accumulated in float64 over fixed blocks (two passes while a block is in
// cache, or one pass of values shifted by the block's first one: docs/math.md) merged with Chan's
// formula in a fixed order, so results do not depend on the thread count. Outputs may have any
// strides the chosen layout allows (see layout_applies).
#pragma once

#include <string>
#include <vector>

#include "kernels/activation.hpp"
#include "kernels/view.hpp"

namespace bn1d::kernels::simd {

/// The axis with unit stride, along which the kernels vectorize.
enum class Layout { UnitStrideL, UnitStrideC };

/// Whether @p layout applies to an input. UnitStrideL: unit stride along L and rows long enough
/// to vectorize. UnitStrideC: unit stride along C.
bool layout_applies(Layout layout, const View3& v);
/// Whether @p layout applies to an output. UnitStrideL: unit stride along L. UnitStrideC: unit
/// stride along C (written row by row) or along L (written through a transposition tile).
bool layout_applies(Layout layout, const Out3& o);

/// See reference.hpp for the meaning of each op; @p layout must apply to every view. With an
/// activation the elementwise passes form its input as activation.hpp says.
void channel_stats(Layout layout, double* mean, double* m2, const View3& x);
void normalize(Layout layout, const Out3& y, const View3& x, const double* mean,
               const double* scale, const double* shift, const Act& act = {});
void backward_sums(Layout layout, double* sum_dy, double* sum_dy_xmu, const View3& dy,
                   const View3& x, const double* mean, const Act& act = {});
void backward_input(Layout layout, const Out3& dx, const View3& dy, const View3& x,
                    const double* mean, const double* a, const double* b, const double* k,
                    const Act& act = {});

/// invstd[c] = 1 / sqrt(v[c] / divisor + eps), or 0 where that sum is 0: the same bits as
/// reference::invstd (IEEE division and square root are correctly rounded in every lane).
void invstd(double* invstd, const double* v, double divisor, double eps, int64_t C);

/// Per-channel kernels on {C} float64 arrays, with the reference's bits (reference.hpp):
/// out[c] = in[c] (contiguous float32 or float64) as float64.
void to_f64(double* out, const void* in, DType dtype, int64_t C);
/// out[c] (contiguous float32 or float64) = v[c], rounded once.
void from_f64(void* out, DType dtype, const double* v, int64_t C);
/// out[c] = a[c] · b[c].
void multiply(double* out, const double* a, const double* b, int64_t C);
/// The running statistics' momentum update, in place: reference::running_update.
void running_update(double* rmean, double* rvar, const double* mean, const double* m2,
                    double momentum, double unbias, int64_t C);
/// The coefficients a, b, k of backward_input: reference::backward_coefficients.
void backward_coefficients(double* a, double* b, double* k, const double* w, const double* invstd,
                           const double* sum_dy, const double* sum_dy_xmu, double n, int64_t C);
/// Chan's merge of one partition's statistics: reference::merge_slot.
void merge_slot(double* mean, double* m2, const double* part_mean, const double* part_m2, double wb,
                double wab, bool first, int64_t C);
/// Sums of one partition added: reference::add_slot.
void add_slot(double* a, double* b, const double* part_a, const double* part_b, bool first,
              int64_t C);
/// The first c with v[c] + eps < 0 or NaN, or C when there is none.
int64_t first_negative_sum(const double* v, double eps, int64_t C);
/// kernels::gate_tests (gate_interval.hpp), float32 channels a vector at a time (simd_gate.cpp).
bool gate_tests(DType dtype, Activation kind, const double* mean, const double* scale,
                const double* shift, int64_t C, uint64_t* keep, uint64_t* flip, double* max);
/// Sets act.gate_* to the gate tests of its C channels (gate_tests, inputs of @p dtype), in the
/// calling thread's workspace until that thread's next call; nothing to do without an activation
/// or when act has its tests already. The gradient sums take them from act, or find them per
/// call: a caller that makes several calls with one mean and act (runs of a masked batch,
/// virtual channels) finds them once. False, act unchanged, when a channel has none.
bool with_gate_tests(Act& act, DType dtype, int64_t C, const double* mean);

/// The kernels over the valid positions of an (N, C, L) view with unit stride along L (dy and
/// the output too), for masks with holes: @p valid holds N·L values of the view's compute type
/// (masked_valid_dtype), nonzero where valid. Statistics and sums run over the valid values
/// (@p count of them, > 0, per channel); outputs are written whole, 0 at the invalid positions.
/// The elementwise ones return false, writing nothing, when a parameter is not finite in the
/// compute type, and the sums with an activation when a channel has no gate test
/// (with_gate_tests): the caller then takes another path.
DType masked_valid_dtype(DType dtype);
void masked_channel_stats(double* mean, double* m2, const View3& x, const void* valid,
                          int64_t count);
bool masked_normalize(const Out3& y, const View3& x, const void* valid, const double* mean,
                      const double* scale, const double* shift, const Act& act = {});
[[nodiscard]] bool masked_backward_sums(double* sum_dy, double* sum_dy_xmu, const View3& dy,
                                        const View3& x, const void* valid, const double* mean,
                                        const Act& act = {});
bool masked_backward_input(const Out3& dx, const View3& dy, const View3& x, const void* valid,
                           const double* mean, const double* a, const double* b, const double* k,
                           const Act& act = {});

/// Zeros at out[0 … len − 1] (elements of @p dtype), written past the caches with @p stream;
/// streamed runs are followed by one flush_streams() before the data is used.
void zero_run(void* out, DType dtype, int64_t len, bool stream);
/// Orders the streamed stores made so far before later stores and loads.
void flush_streams();
/// Whether the kernels stream the output of a call whose input has @p bytes.
bool streams_output(int64_t bytes);

/// While alive, the calling thread's kernels choose whether to stream their outputs past the
/// caches as if each call's input had @p bytes (at least): the calls on the blocks of one larger
/// batch (route_groups.cpp) then write as a call on the whole batch would.
class BatchBytes {
 public:
  explicit BatchBytes(int64_t bytes) noexcept;
  ~BatchBytes();
  BatchBytes(const BatchBytes&) = delete;
  BatchBytes& operator=(const BatchBytes&) = delete;

 private:
  int64_t previous_;
};

/// Names of the compiled targets this CPU supports, best first (e.g. "AVX3", "AVX2", "SSE4").
std::vector<std::string> targets();
/// The target the kernels dispatch to now.
std::string active_target();
/// Forces the kernels onto target @p name (one of targets()); "" restores the best one. The
/// environment variable BN1D_SIMD_TARGET is applied the same way before the first kernel call.
/// Throws Error for a name that is not in targets().
void force_target(const std::string& name);

}  // namespace bn1d::kernels::simd
