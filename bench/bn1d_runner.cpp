// SPDX-License-Identifier: MIT
/// @file bn1d_runner.cpp
/// @brief bn1d's side of the benchmark: a BatchNorm1d module with caller-owned output buffers.
#include <bn1d/module.hpp>

#include <cstddef>
#include <vector>

#include "runner.hpp"

namespace bench {
namespace {

class Bn1dRunner final : public Runner {
 public:
  explicit Bn1dRunner(const Problem& p)
      : module_(
            bn1d::BatchNorm1dOptions(p.c).eps(p.eps).momentum(p.momentum).dtype(p.param_dtype())) {
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

  void forward_train() override { module_.train().forward(input_, output_); }
  void forward_eval() override { module_.eval().forward(input_, output_); }
  void backward() override { module_.backward(grad_output_, grads_); }
  View output() const override { return {output_.raw_data(), out_strides_}; }

 private:
  bn1d::BatchNorm1d module_;
  bn1d::Tensor input_, grad_output_, output_;
  bn1d::BatchNorm1d::Gradients grads_;
  bn1d::Tensor out_storage_, grad_storage_;
  std::array<int64_t, 3> out_strides_{};
};

}  // namespace

std::unique_ptr<Runner> make_bn1d_runner(const Problem& p) {
  return std::make_unique<Bn1dRunner>(p);
}

}  // namespace bench
