// SPDX-License-Identifier: MIT
/// @file bn1d_runner.cpp
/// @brief bn1d's side of the benchmark: a BatchNorm1d module with caller-owned output buffers,
/// followed by a ReLU fused (its activation option) or as separate passes (relu_kernels.hpp).
#include <bn1d/module.hpp>

#include <cstddef>
#include <vector>

#include "relu_kernels.hpp"
#include "runner.hpp"

namespace bench {
namespace {

class Bn1dRunner final : public Runner {
 public:
  Bn1dRunner(const Problem& p, Relu relu)
      : module_(
            bn1d::BatchNorm1dOptions(p.c)
                .eps(p.eps)
                .momentum(p.momentum)
                .dtype(p.param_dtype())
                .activation(relu == Relu::Fused ? bn1d::Activation::ReLU : bn1d::Activation::None)),
        separate_relu_(relu == Relu::SeparateInPlace),
        numel_(static_cast<std::size_t>(p.numel())) {
    const auto s = p.strides();
    bn1d::Shape sizes{p.n, p.c}, strides{s[0], s[1]};
    if (p.three_d) {
      sizes.push_back(p.l);
      strides.push_back(s[2]);
    }
    // Views of the shared buffers: channels-last memory is passed as its strided (N, C, L) view.
    input_ = bn1d::Tensor::from_blob(p.x, sizes, strides, p.dtype);
    grad_output_ = bn1d::Tensor::from_blob(p.dy, sizes, strides, p.dtype);
    // Outputs in the input's memory layout (as torch and oneDNN produce them): for channels-last
    // input bn1d then writes channels-last output instead of transposing to (N, C, L).
    // Their memory comes from bn1d's allocator, as libtorch's and oneDNN's outputs come from
    // theirs (all 64-byte aligned).
    const int64_t numel = p.n * p.c * (p.three_d ? p.l : 1);
    out_storage_ = bn1d::Tensor::empty({numel}, p.dtype);
    grad_storage_ = bn1d::Tensor::empty({numel}, p.dtype);
    output_ = bn1d::Tensor::from_blob(out_storage_.raw_data(), sizes, strides, p.dtype);
    grads_.input = bn1d::Tensor::from_blob(grad_storage_.raw_data(), sizes, strides, p.dtype);
    if (separate_relu_) {  // dy gated by the ReLU's derivative, the batch norm's grad_output
      gated_storage_ = bn1d::Tensor::empty({numel}, p.dtype);
      gated_grad_output_ =
          bn1d::Tensor::from_blob(gated_storage_.raw_data(), sizes, strides, p.dtype);
    }
    grads_.weight = bn1d::Tensor::empty({p.c}, p.param_dtype());
    grads_.bias = bn1d::Tensor::empty({p.c}, p.param_dtype());
    for (int64_t c = 0; c < p.c; ++c) {
      if (p.param_dtype() == bn1d::DType::Float32) {
        module_.weight().data<float>()[c] = static_cast<float>(affine_weight(c));
        module_.bias().data<float>()[c] = static_cast<float>(affine_bias(c));
      } else {
        module_.weight().data<double>()[c] = affine_weight(c);
        module_.bias().data<double>()[c] = affine_bias(c);
      }
    }
    out_strides_ = {s[0], s[1], p.three_d ? s[2] : 0};
  }

  // The separate passes run over the dense buffers as flat arrays: output, dy and the gated dy
  // share one layout. They are float32 only (bn1d_act_bench's cases).
  void forward_train() override {
    module_.train().forward(input_, output_);
    if (separate_relu_) relu_in_place(output_.data<float>(), numel_);
  }
  void forward_eval() override {
    module_.eval().forward(input_, output_);
    if (separate_relu_) relu_in_place(output_.data<float>(), numel_);
  }
  void backward() override {
    if (!separate_relu_) return module_.backward(grad_output_, grads_);
    relu_backward(gated_grad_output_.data<float>(), grad_output_.data<float>(),
                  output_.data<float>(), numel_);
    module_.backward(gated_grad_output_, grads_);
  }
  View output() const override { return {output_.raw_data(), out_strides_}; }
  View grad_input() const override { return {grads_.input.raw_data(), out_strides_}; }

 private:
  bn1d::BatchNorm1d module_;
  bool separate_relu_;
  std::size_t numel_;
  bn1d::Tensor input_, grad_output_, output_, gated_grad_output_;
  bn1d::BatchNorm1d::Gradients grads_;
  bn1d::Tensor out_storage_, grad_storage_, gated_storage_;
  std::array<int64_t, 3> out_strides_{};
};

}  // namespace

std::unique_ptr<Runner> make_bn1d_runner(const Problem& p, Relu relu) {
  if (relu == Relu::Separate) return nullptr;  // the separate pass runs in place
  return std::make_unique<Bn1dRunner>(p, relu);
}

}  // namespace bench
