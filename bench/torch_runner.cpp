// SPDX-License-Identifier: MIT
/// @file torch_runner.cpp
/// @brief libtorch's side of the benchmark (compiled only when find_package(Torch) succeeds).
///
/// libtorch 1.13 has no CPU kernel for native_batch_norm.out (it throws "Could not run
/// 'aten::native_batch_norm.out' with arguments from the 'CPU' backend"), and
/// native_batch_norm_backward.out is a composite that runs the functional op and then copies.
/// The fastest honest calls are therefore the functional at::native_batch_norm and
/// at::native_batch_norm_backward, which allocate their outputs on every call; the driver tunes
/// glibc malloc so that those allocations reuse the freed blocks (see bench.cpp). A separate
/// ReLU follows as at::relu or at::relu_, and its backward as at::threshold_backward(dy, y, 0),
/// what autograd runs for either.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/version.h>

#include "runner.hpp"

namespace bench {
namespace {

class TorchRunner final : public Runner {
 public:
  TorchRunner(const Problem& p, Relu relu) : p_(p), relu_(relu) {
    // A bfloat16 input goes with float32 parameters and statistics (mixed precision).
    const auto type = p.dtype == bn1d::DType::BFloat16  ? at::kBFloat16
                      : p.dtype == bn1d::DType::Float32 ? at::kFloat
                                                        : at::kDouble;
    const auto opts = at::TensorOptions().dtype(type);
    const auto param_opts =
        at::TensorOptions().dtype(p.param_dtype() == bn1d::DType::Float32 ? at::kFloat : type);
    const auto s = p.strides();
    std::vector<int64_t> sizes{p.n, p.c}, strides{s[0], s[1]};
    if (p.three_d) {
      sizes.push_back(p.l);
      strides.push_back(s[2]);
    }
    if (p.channels_last) {
      // Torch's CPU batch norm has a dedicated kernel for 4-D channels_last tensors; a 3-D
      // strided view would take its generic TensorIterator path. (N, C, L, 1) with strides
      // (L·C, 1, C, C) is the same memory, channels_last-contiguous.
      sizes.push_back(1);
      strides.push_back(p.c);
    }
    x_ = at::from_blob(p.x, sizes, strides, opts);
    dy_ = at::from_blob(p.dy, sizes, strides, opts);
    weight_ = at::empty({p.c}, param_opts);
    bias_ = at::empty({p.c}, param_opts);
    for (int64_t c = 0; c < p.c; ++c) {
      weight_[c] = affine_weight(c);
      bias_[c] = affine_bias(c);
    }
    running_mean_ = at::zeros({p.c}, param_opts);
    running_var_ = at::ones({p.c}, param_opts);
  }

  void forward_train() override {
    c10::InferenceMode guard;
    std::tie(out_, save_mean_, save_invstd_) = at::native_batch_norm(
        x_, weight_, bias_, running_mean_, running_var_, /*training=*/true, p_.momentum, p_.eps);
    apply_relu();
  }
  void forward_eval() override {
    c10::InferenceMode guard;
    out_ = std::get<0>(at::native_batch_norm(x_, weight_, bias_, running_mean_, running_var_,
                                             /*training=*/false, p_.momentum, p_.eps));
    apply_relu();
  }
  void backward() override {
    c10::InferenceMode guard;
    const at::Tensor dy = relu_ == Relu::None ? dy_ : at::threshold_backward(dy_, out_, 0);
    grads_ =
        at::native_batch_norm_backward(dy, x_, weight_, running_mean_, running_var_, save_mean_,
                                       save_invstd_, /*train=*/true, p_.eps, {true, true, true});
  }
  View output() const override { return view(out_); }
  View grad_input() const override { return view(std::get<0>(grads_)); }

 private:
  void apply_relu() {
    if (relu_ == Relu::Separate) out_ = at::relu(out_);
    if (relu_ == Relu::SeparateInPlace) at::relu_(out_);
  }
  View view(const at::Tensor& t) const {
    return {t.data_ptr(), {t.stride(0), t.stride(1), p_.three_d ? t.stride(2) : 1}};
  }

  Problem p_;
  Relu relu_;
  at::Tensor x_, dy_, weight_, bias_, running_mean_, running_var_;
  at::Tensor out_, save_mean_, save_invstd_;
  std::tuple<at::Tensor, at::Tensor, at::Tensor> grads_;
};

}  // namespace

std::unique_ptr<Runner> make_torch_runner(const Problem& p, Relu relu) {
  if (p.dtype == bn1d::DType::Float16) return nullptr;  // "not implemented for 'Half'"
  if (relu == Relu::Fused) return nullptr;              // no fused BN + ReLU for float32 on the CPU
  return std::make_unique<TorchRunner>(p, relu);
}

std::string torch_description() {
  return std::string("libtorch ") + TORCH_VERSION +
         " (at::get_num_threads() = " + std::to_string(at::get_num_threads()) + ")";
}

void set_torch_threads(int threads) { at::set_num_threads(threads); }

}  // namespace bench
