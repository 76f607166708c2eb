// SPDX-License-Identifier: MIT
/// @file dnnl_runner.cpp
/// @brief oneDNN's side of the benchmark (compiled only when find_package(dnnl) succeeds).
///
/// Memory descriptors describe the caller's buffers without a copy, in the layout for which
/// oneDNN 2.6 has its fastest implementation (see bench/README.md):
///   (N, C)               → {N, C, 1, 1} nhwc  (plain nc runs the slower ncsp_bnorm)
///   (N, C, L) contiguous → {N, C, L, 1} nchw  (plain ncw runs the reference bnorm_ref)
///   (N, L, C) memory     → {N, C, L, 1} nhwc  (plain nwc runs the reference bnorm_ref)
/// Primitives are created once; every call reuses the same dst/diff memory objects. A bf16/f16
/// src/dst goes with f32 scale, shift, mean and variance (oneDNN's only choice in 2.6).
/// oneDNN keeps no running statistics: eval uses the last training call's mean and variance.
/// With Relu::Fused every primitive gets fuse_norm_relu: training then writes a workspace (the
/// ReLU's mask) that backward reads; inference needs none.
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>

#include "runner.hpp"

namespace bench {
namespace {

using dnnl::memory;
using tag = memory::format_tag;

class DnnlRunner final : public Runner {
 public:
  DnnlRunner(const Problem& p, Relu relu)
      : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_), fused_relu_(relu == Relu::Fused) {
    const memory::dims dims{p.n, p.c, p.l, 1};
    const tag layout = (!p.three_d || p.channels_last) ? tag::nhwc : tag::nchw;
    layout_ = std::string(layout == tag::nhwc ? "nhwc" : "nchw") + " {" + std::to_string(p.n) +
              "," + std::to_string(p.c) + "," + std::to_string(p.l) + ",1}";
    const memory::desc data(dims, data_type(p.dtype), layout);
    const auto eps = static_cast<float>(p.eps);
    using flags = dnnl::normalization_flags;
    const flags affine = flags::use_scale | flags::use_shift |
                         (relu == Relu::Fused ? flags::fuse_norm_relu : flags::none);

    const dnnl::batch_normalization_forward::primitive_desc train_pd(
        {dnnl::prop_kind::forward_training, data, eps, affine}, engine_);
    const dnnl::batch_normalization_forward::primitive_desc eval_pd(
        {dnnl::prop_kind::forward_inference, data, eps, affine | flags::use_global_stats}, engine_);
    const dnnl::batch_normalization_backward::primitive_desc backward_pd(
        {dnnl::prop_kind::backward, data, data, eps, affine}, engine_, train_pd);
    train_ = dnnl::batch_normalization_forward(train_pd);
    eval_ = dnnl::batch_normalization_forward(eval_pd);
    backward_ = dnnl::batch_normalization_backward(backward_pd);
    impls_ = std::string(train_pd.impl_info_str()) + " / " + backward_pd.impl_info_str();

    const memory::desc channels({p.c}, memory::data_type::f32, tag::a);
    src_ = memory(data, engine_, p.x);
    diff_dst_ = memory(data, engine_, p.dy);
    dst_ = memory(data, engine_);
    diff_src_ = memory(data, engine_);
    mean_ = memory(train_pd.mean_desc(), engine_);
    variance_ = memory(train_pd.variance_desc(), engine_);
    scale_ = memory(channels, engine_);
    shift_ = memory(channels, engine_);
    diff_scale_ = memory(channels, engine_);
    diff_shift_ = memory(channels, engine_);
    if (fused_relu_) workspace_ = memory(train_pd.workspace_desc(), engine_);
    auto* scale = static_cast<float*>(scale_.get_data_handle());
    auto* shift = static_cast<float*>(shift_.get_data_handle());
    for (int64_t c = 0; c < p.c; ++c) {
      scale[c] = static_cast<float>(affine_weight(c));
      shift[c] = static_cast<float>(affine_bias(c));
    }
    out_strides_ = p.strides();
  }

  static memory::data_type data_type(bn1d::DType dtype) {
    switch (dtype) {
      case bn1d::DType::BFloat16:
        return memory::data_type::bf16;
      case bn1d::DType::Float16:
        return memory::data_type::f16;
      default:
        return memory::data_type::f32;
    }
  }

  // Arguments of both forward primitives (statistics are outputs in training, inputs in eval).
  std::unordered_map<int, dnnl::memory> forward_args() const {
    return {{DNNL_ARG_SRC, src_},           {DNNL_ARG_DST, dst_},     {DNNL_ARG_MEAN, mean_},
            {DNNL_ARG_VARIANCE, variance_}, {DNNL_ARG_SCALE, scale_}, {DNNL_ARG_SHIFT, shift_}};
  }

  void forward_train() override {
    auto args = forward_args();
    if (fused_relu_) args.emplace(DNNL_ARG_WORKSPACE, workspace_);
    train_.execute(stream_, args);
    stream_.wait();
  }
  void forward_eval() override {
    eval_.execute(stream_, forward_args());
    stream_.wait();
  }
  void backward() override {
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, src_},
                                               {DNNL_ARG_DIFF_DST, diff_dst_},
                                               {DNNL_ARG_MEAN, mean_},
                                               {DNNL_ARG_VARIANCE, variance_},
                                               {DNNL_ARG_SCALE, scale_},
                                               {DNNL_ARG_SHIFT, shift_},
                                               {DNNL_ARG_DIFF_SRC, diff_src_},
                                               {DNNL_ARG_DIFF_SCALE, diff_scale_},
                                               {DNNL_ARG_DIFF_SHIFT, diff_shift_}};
    if (fused_relu_) args.emplace(DNNL_ARG_WORKSPACE, workspace_);
    backward_.execute(stream_, args);
    stream_.wait();
  }
  View output() const override { return {dst_.get_data_handle(), out_strides_}; }
  View grad_input() const override { return {diff_src_.get_data_handle(), out_strides_}; }
  std::string note() const override { return layout_ + ": " + impls_; }

 private:
  dnnl::engine engine_;
  dnnl::stream stream_;
  bool fused_relu_;
  dnnl::batch_normalization_forward train_, eval_;
  dnnl::batch_normalization_backward backward_;
  memory src_, diff_dst_, dst_, diff_src_, mean_, variance_, scale_, shift_, diff_scale_,
      diff_shift_, workspace_;
  std::array<int64_t, 3> out_strides_{};
  std::string layout_, impls_;
};

}  // namespace

std::unique_ptr<Runner> make_dnnl_runner(const Problem& p, std::string& why, Relu relu) {
  if (p.dtype == bn1d::DType::Float64) return nullptr;  // oneDNN has no f64 batch normalization
  if (relu == Relu::Separate || relu == Relu::SeparateInPlace) {
    why = "not run: the separate ReLU rows time bn1d and libtorch only";
    return nullptr;
  }
  try {
    return std::make_unique<DnnlRunner>(p, relu);
  } catch (const dnnl::error& e) {  // e.g. f16 on a CPU without AVX512-FP16
    why = std::string("not run: no ") + bn1d::dtype_name(p.dtype) +
          " batch normalization on this CPU (" + e.what() + ")";
    return nullptr;
  }
}

std::string dnnl_description() {
  const dnnl_version_t* v = dnnl_version();
  return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
         std::to_string(v->patch) +
         (v->cpu_runtime == DNNL_RUNTIME_OMP ? " (OpenMP runtime)" : " (non-OpenMP runtime)");
}

}  // namespace bench
