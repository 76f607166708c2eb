// SPDX-License-Identifier: MIT
// Folding an eval-mode BatchNorm1d into the adjacent Linear or Conv1d (fold.hpp): the checks,
// then the per-channel affine map of the BatchNorm1d applied to the layer's weight and bias in
// float64, each result element rounded once to the weight's dtype.
#include "bn1d/fold.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "channel_values.hpp"
#include "format.hpp"
#include "kernels/element.hpp"
#include "validate.hpp"

namespace bn1d {

namespace {

// An eval-mode BatchNorm1d as y = scale·(x − mean) + beta per channel, scale = γ/σ.
struct ChannelAffine {
  std::vector<double> scale, mean, beta;
  // β − γμ/σ: what the map adds to x·scale.
  double shift(std::size_t c) const { return beta[c] - mean[c] * scale[c]; }
};

// The bn's channel count after the checks that make it foldable.
int64_t checked_channels(const BatchNorm1d& bn) {
  const BatchNorm1dOptions& o = bn.options();
  if (bn.is_training()) {
    throw Error(
        "bn: fold needs an eval-mode BatchNorm1d (normalizing with its running statistics), got "
        "one in training mode: call eval() first");
  }
  if (!o.track_running_stats()) {
    throw Error(
        "bn: fold needs a BatchNorm1d with running statistics (track_running_stats=true), got one "
        "without: it normalizes every batch with that batch's statistics, which no weight and "
        "bias reproduce, so it cannot be folded");
  }
  if (o.activation() != Activation::None) {
    throw Error(
        "bn: fold needs a BatchNorm1d without a fused activation, got one with activation=" +
        activation_name(o.activation()) +
        ": act(bn(x)) is not affine, so no weight and bias reproduce it");
  }
  if (!bn.running_mean().defined()) throw Error("bn: use of a moved-from module");
  return o.num_features();
}

// scale, mean and beta of @p bn (checked_channels() passed); Error for a running_var + eps that
// is negative or NaN. var + eps == 0 gives scale 0, as BatchNorm1d's invstd.
ChannelAffine channel_affine(const BatchNorm1d& bn) {
  const auto C = static_cast<std::size_t>(bn.options().num_features());
  const double eps = bn.options().eps();
  const detail::ChannelValues gamma(bn.weight(), 1.0), beta(bn.bias(), 0.0);
  const detail::ChannelValues mean(bn.running_mean(), 0.0), var(bn.running_var(), 1.0);
  ChannelAffine a{std::vector<double>(C), std::vector<double>(C), std::vector<double>(C)};
  for (std::size_t c = 0; c < C; ++c) {
    const auto i = static_cast<int64_t>(c);
    const double v = var[i] + eps;
    if (!(v >= 0)) {
      throw Error(
          "bn.running_var: expected running_var + eps >= 0 in every channel, got "
          "running_var[" +
          std::to_string(c) + "] = " + python_float_repr(var[i]) + " with eps " +
          python_float_repr(eps));
    }
    a.scale[c] = v == 0 ? 0.0 : gamma[i] / std::sqrt(v);
    a.mean[c] = mean[i];
    a.beta[c] = beta[i];
  }
  return a;
}

void check_dtypes(const Tensor& weight, const Tensor& bias) {
  if (!weight.defined()) throw Error("weight: expected a defined tensor");
  detail::check_floating_dtype(weight.dtype(), "weight");
  if (bias.defined() && bias.dtype() != weight.dtype()) {
    throw Error(std::string("bias: expected the weight's dtype ") + dtype_name(weight.dtype()) +
                ", got " + dtype_name(bias.dtype()));
  }
}

// Error unless @p bias is undefined or has shape {out}; @p what names out.
void check_bias_shape(const Tensor& bias, int64_t out, const std::string& what) {
  if (!bias.defined() || (bias.dim() == 1 && bias.sizes()[0] == out)) return;
  throw Error("bias: expected shape [" + std::to_string(out) + "] (" + what + "), got shape " +
              format_shape(bias.sizes()));
}

// Offset of weight[i, j, k] (k = 0 for a 2-D weight), in elements.
struct WeightIndex {
  int64_t s0, s1, s2;
  explicit WeightIndex(const Tensor& w)
      : s0(w.strides()[0]), s1(w.strides()[1]), s2(w.dim() == 3 ? w.strides()[2] : 0) {}
  int64_t operator()(int64_t i, int64_t j, int64_t k) const { return i * s0 + j * s1 + k * s2; }
};

}  // namespace

FoldedLinear fold_into_preceding(const BatchNorm1d& bn, const Tensor& weight, const Tensor& bias) {
  const int64_t C = checked_channels(bn);
  check_dtypes(weight, bias);
  if ((weight.dim() != 2 && weight.dim() != 3) || weight.sizes()[0] != C) {
    throw Error("weight: expected a Linear weight [" + std::to_string(C) +
                ", in] or a Conv1d weight [" + std::to_string(C) +
                ", in, k] (out features = bn's num_features " + std::to_string(C) +
                "), got shape " + format_shape(weight.sizes()));
  }
  check_bias_shape(bias, C, "the layer's out features = bn's num_features");
  const ChannelAffine a = channel_affine(bn);
  const int64_t in = weight.sizes()[1], k = weight.dim() == 3 ? weight.sizes()[2] : 1;
  FoldedLinear folded{Tensor::empty(weight.sizes(), weight.dtype()),
                      Tensor::empty({C}, weight.dtype())};
  const detail::ChannelValues b(bias, 0.0), b_out(folded.bias, 0.0);
  const WeightIndex at(weight);
  kernels::with_storage(weight.dtype(), [&]<class T>() {
    const T* w = static_cast<const T*>(weight.raw_data());
    T* out = static_cast<T*>(folded.weight.raw_data());
    for (int64_t c = 0; c < C; ++c) {
      const double s = a.scale[static_cast<std::size_t>(c)];
      for (int64_t j = 0; j < in; ++j) {
        for (int64_t t = 0; t < k; ++t)
          *out++ = kernels::narrow<T>(kernels::widen(w[at(c, j, t)]) * s);
      }
    }
  });
  for (int64_t c = 0; c < C; ++c) {  // b' = γ(b − μ)/σ + β
    const auto i = static_cast<std::size_t>(c);
    b_out.set(c, (b[c] - a.mean[i]) * a.scale[i] + a.beta[i]);
  }
  return folded;
}

FoldedLinear fold_into_following(const BatchNorm1d& bn, const Tensor& weight, const Tensor& bias) {
  const int64_t C = checked_channels(bn);
  check_dtypes(weight, bias);
  const std::string expected = "expected a Linear weight [out, " + std::to_string(C) +
                               "] (in features = bn's num_features " + std::to_string(C) + ")";
  if (weight.dim() == 3) {
    throw Error(
        "weight: a Conv1d after a BatchNorm1d cannot be folded (its zero padding is not "
        "normalized): " +
        expected + ", got shape " + format_shape(weight.sizes()));
  }
  if (weight.dim() != 2 || weight.sizes()[1] != C) {
    throw Error("weight: " + expected + ", got shape " + format_shape(weight.sizes()));
  }
  const int64_t out_features = weight.sizes()[0];
  check_bias_shape(bias, out_features, "the Linear's out features");
  const ChannelAffine a = channel_affine(bn);
  FoldedLinear folded{Tensor::empty(weight.sizes(), weight.dtype()),
                      Tensor::empty({out_features}, weight.dtype())};
  const detail::ChannelValues b(bias, 0.0), b_out(folded.bias, 0.0);
  const WeightIndex at(weight);
  kernels::with_storage(weight.dtype(), [&]<class T>() {
    const T* w = static_cast<const T*>(weight.raw_data());
    T* out = static_cast<T*>(folded.weight.raw_data());
    for (int64_t o = 0; o < out_features; ++o) {
      double dot = 0;  // Σ_c W[o, c]·(β − γμ/σ)[c], in float64
      for (int64_t c = 0; c < C; ++c) {
        const auto i = static_cast<std::size_t>(c);
        const double w_oc = kernels::widen(w[at(o, c, 0)]);
        *out++ = kernels::narrow<T>(w_oc * a.scale[i]);
        dot += w_oc * a.shift(i);
      }
      b_out.set(o, b[o] + dot);
    }
  });
  return folded;
}

}  // namespace bn1d
