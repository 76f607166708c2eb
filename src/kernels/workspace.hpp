// SPDX-License-Identifier: MIT
// The kernels' scratch: one workspace per calling thread, with named buffers that grow when a
// call needs more and are kept between calls, so that repeated calls allocate nothing.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace bn1d::kernels {

/// Values of T starting on a cache line (64 bytes), grown (never shrunk) on demand: vector loads
/// and stores of them never split a line, and no line is shared with data another thread writes.
template <class T>
class AlignedBuffer {
 public:
  /// At least n values; where the buffer did not grow, they hold what the last caller left.
  T* get(std::size_t n) {
    constexpr std::size_t kLine = 64 / sizeof(T);
    if (storage_.size() < n + kLine) storage_.resize(n + kLine);
    const auto at = reinterpret_cast<std::uintptr_t>(storage_.data());
    return storage_.data() + (64 - at % 64) % 64 / sizeof(T);
  }
  T* get(int64_t n) { return get(static_cast<std::size_t>(n)); }

 private:
  std::vector<T> storage_;
};

/// Scratch of the walks of virtual channels (virtual_cols.cpp).
struct VirtualColsScratch {
  /// Per virtual channel: the cols kernels' two results (mean and M2, or Σ dy and
  /// Σ dy · (x − mean)) before they are folded into channels.
  AlignedBuffer<double> virtual_first, virtual_second;
  /// Per channel: the same two results for the rows a Cycles plan leaves over.
  AlignedBuffer<double> rest_first, rest_second;
  /// Per virtual channel: the mean and the coefficients of an op, each channel's value repeated
  /// over its virtual channels.
  AlignedBuffer<double> expanded_mean;
  std::array<AlignedBuffer<double>, 5> expanded_coefficients;  // a, b, k, act scale, shift
  /// Per virtual channel: the gradient sums' gate tests (gate_interval.hpp): keep, flip; max.
  std::array<AlignedBuffer<uint64_t>, 2> expanded_gate_masks;
  AlignedBuffer<double> expanded_gate_max;
};

/// Everything the kernels keep per calling thread.
struct KernelWorkspace {
  /// The reductions' per-partition results (simd_schedule.cpp, over_partitions): two rows of C
  /// values per slot.
  AlignedBuffer<double> partition_results;
  /// The elementwise kernels' parameter blocks (elementwise_params.hpp), one per dtype, each
  /// rewritten only where a value changed since this thread's last call in that dtype.
  AlignedBuffer<float> params_f32;
  AlignedBuffer<double> params_f64;
  /// The gradient sums' gate tests with an activation (gate_interval.hpp): keep and flip, max.
  AlignedBuffer<uint64_t> gate_masks;
  AlignedBuffer<double> gate_max;
  VirtualColsScratch virtual_cols;
};

/// The calling thread's workspace.
inline KernelWorkspace& thread_workspace() {
  thread_local KernelWorkspace workspace;
  return workspace;
}

}  // namespace bn1d::kernels
