// SPDX-License-Identifier: MIT
/// @file runner.hpp
/// @brief What the benchmark driver measures: one problem (shape, dtype, memory layout, shared
/// input buffers) and one Runner per library that runs the three ops on it.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include <bn1d/tensor.hpp>

namespace bench {

/// One benchmark case. The logical shape is (N, C) or (N, C, L); the input buffers hold either a
/// row-major (N, C, L) array or, for channels_last, a row-major (N, L, C) array viewed as
/// (N, C, L).
struct Problem {
  int64_t n = 0, c = 0, l = 1;               ///< l == 1 for a 2-D (N, C) problem
  bool three_d = false;                      ///< (N, C, L) rather than (N, C)
  bool channels_last = false;                ///< (N, L, C) memory, three_d only
  bn1d::DType dtype = bn1d::DType::Float32;  ///< of the input and output (f32, f64, bf16, f16)
  double eps = 1e-5;
  double momentum = 0.1;
  void* x = nullptr;   ///< input, layout given by strides()
  void* dy = nullptr;  ///< gradient of the output for backward, same layout as x

  int64_t numel() const { return n * c * l; }
  /// Of the parameters and running statistics: float32 for a 16-bit input (mixed precision, as
  /// torch's BatchNorm1d(C)(x.bfloat16())), else the input's dtype.
  bn1d::DType param_dtype() const {
    return dtype == bn1d::DType::BFloat16 || dtype == bn1d::DType::Float16 ? bn1d::DType::Float32
                                                                           : dtype;
  }
  std::size_t bytes() const {
    return static_cast<std::size_t>(numel()) * bn1d::element_size(dtype);
  }
  /// Element strides of (N, C, L) in the input buffers (L's stride is unused when !three_d).
  std::array<int64_t, 3> strides() const {
    if (channels_last) return {l * c, 1, c};
    return {c * l, l, 1};
  }
};

/// Affine weight of channel @p c, the same in every library (exact in float32).
inline double affine_weight(int64_t c) { return 0.5 + static_cast<double>(c % 7) / 8.0; }
/// Affine bias of channel @p c.
inline double affine_bias(int64_t c) { return static_cast<double>(c % 5) / 4.0 - 0.5; }

/// An output of a runner: its first element and its (N, C, L) element strides.
struct View {
  const void* data = nullptr;
  std::array<int64_t, 3> strides{};
};

/// How a runner follows batch norm with a ReLU (bn1d_act_bench; bn1d_bench runs None): not at
/// all, fused into the library's batch norm, or as a separate op after it (a new output, or in
/// place on the batch norm's output); backward then gates dy by output > 0 in the fused passes
/// or in a separate pass (threshold_backward) before the batch norm's backward.
enum class Relu { None, Fused, Separate, SeparateInPlace };

/// One library's implementation of the benchmarked ops, bound to one Problem. Output buffers are
/// allocated by the constructor (or the library's first call) and reused by every later call.
class Runner {
 public:
  virtual ~Runner() = default;
  /// Training forward: batch statistics, running-statistics update where the library does it.
  virtual void forward_train() = 0;
  /// Evaluation forward with running statistics.
  virtual void forward_eval() = 0;
  /// Gradients of input, weight and bias for Problem::dy. Callers run forward_train() first.
  virtual void backward() = 0;
  /// The output of the most recent forward call.
  virtual View output() const = 0;
  /// The input gradient of the most recent backward call.
  virtual View grad_input() const = 0;
  /// Anything worth printing under the table (layout and implementation chosen), or "".
  virtual std::string note() const { return {}; }
};

/// bn1d's BatchNorm1d with forward(input, output) and backward(grad_output, grads); with
/// Relu::Fused its activation option, with Relu::SeparateInPlace the passes of relu_kernels.hpp
/// on its output; nullptr for Relu::Separate.
std::unique_ptr<Runner> make_bn1d_runner(const Problem& p, Relu relu = Relu::None);

#if BN1D_HAVE_TORCH
/// libtorch's CPU batch norm (at::native_batch_norm / native_batch_norm_backward), followed by
/// at::relu (Relu::Separate) or at::relu_ (SeparateInPlace), whose backward is
/// at::threshold_backward; nullptr for float16, which libtorch 1.13 cannot normalize on the CPU,
/// and for Relu::Fused, which libtorch has not.
std::unique_ptr<Runner> make_torch_runner(const Problem& p, Relu relu = Relu::None);
/// at::set_num_threads.
void set_torch_threads(int threads);
/// "libtorch 1.13.0 (at::get_num_threads() = N)".
std::string torch_description();
#endif

#if BN1D_HAVE_DNNL
/// oneDNN's batch_normalization primitives, with Relu::Fused the fuse_norm_relu flag (training
/// saves a workspace that backward reads); nullptr when the problem is not supported (float64,
/// a dtype whose primitives this CPU cannot create, a separate ReLU), with the reason in @p why.
std::unique_ptr<Runner> make_dnnl_runner(const Problem& p, std::string& why,
                                         Relu relu = Relu::None);
/// "oneDNN 2.6.3 (OpenMP runtime)".
std::string dnnl_description();
#endif

}  // namespace bench
