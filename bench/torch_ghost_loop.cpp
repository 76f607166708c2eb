// SPDX-License-Identifier: MIT
/// @file torch_ghost_loop.cpp
/// @brief libtorch's ghost batch norm loop for bn1d_variants_bench (compiled only when
/// find_package(Torch) succeeds): the chunk loop of TabNet's GBN, written with the ops
/// torch_runner.cpp uses (at::native_batch_norm and at::native_batch_norm_backward under
/// InferenceMode, no autograd bookkeeping).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <vector>

#include "ghost_loop.hpp"
#include "runner.hpp"

namespace bench {
namespace {

class TorchGhostLoop final : public GhostRunner {
 public:
  explicit TorchGhostLoop(const GhostProblem& p) : p_(p) {
    const auto opts = at::TensorOptions().dtype(at::kFloat);
    x_ = at::from_blob(p.x, {p.n, p.c}, opts);
    dy_ = at::from_blob(p.dy, {p.n, p.c}, opts);
    weight_ = at::empty({p.c}, opts);
    bias_ = at::empty({p.c}, opts);
    for (int64_t c = 0; c < p.c; ++c) {
      weight_[c] = affine_weight(c);
      bias_[c] = affine_bias(c);
    }
    running_mean_ = at::zeros({p.c}, opts);
    running_var_ = at::ones({p.c}, opts);
    chunks_ = (p.n + p.virtual_batch_size - 1) / p.virtual_batch_size;
  }

  void forward_train() override { forward(true); }
  void forward_eval() override { forward(false); }

  void backward() override {
    c10::InferenceMode guard;
    const std::vector<at::Tensor> xs = x_.chunk(chunks_), dys = dy_.chunk(chunks_);
    std::vector<at::Tensor> dx(xs.size());
    at::Tensor dw = at::zeros({p_.c}), db = at::zeros({p_.c});
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const auto [gx, gw, gb] = at::native_batch_norm_backward(
          dys[i], xs[i], weight_, running_mean_, running_var_, save_mean_[i], save_invstd_[i],
          /*train=*/true, p_.eps, {true, true, true});
      dx[i] = gx;
      dw.add_(gw);
      db.add_(gb);
    }
    grad_input_ = at::cat(dx);
    grad_weight_ = dw;
    grad_bias_ = db;
  }

  const float* output() const override { return out_.data_ptr<float>(); }

 private:
  void forward(bool training) {
    c10::InferenceMode guard;
    const std::vector<at::Tensor> xs = x_.chunk(chunks_);
    std::vector<at::Tensor> ys(xs.size());
    save_mean_.resize(xs.size());
    save_invstd_.resize(xs.size());
    for (std::size_t i = 0; i < xs.size(); ++i) {
      std::tie(ys[i], save_mean_[i], save_invstd_[i]) = at::native_batch_norm(
          xs[i], weight_, bias_, running_mean_, running_var_, training, p_.momentum, p_.eps);
    }
    out_ = at::cat(ys);
  }

  GhostProblem p_;
  int64_t chunks_ = 1;
  at::Tensor x_, dy_, weight_, bias_, running_mean_, running_var_;
  std::vector<at::Tensor> save_mean_, save_invstd_;
  at::Tensor out_, grad_input_, grad_weight_, grad_bias_;
};

}  // namespace

std::unique_ptr<GhostRunner> make_torch_ghost_loop(const GhostProblem& p) {
  return std::make_unique<TorchGhostLoop>(p);
}

}  // namespace bench
