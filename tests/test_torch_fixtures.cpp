// SPDX-License-Identifier: MIT
// Compares BatchNorm1d with recorded runs of torch.nn.BatchNorm1d (PyTorch 1.13).
//
// The fixtures in tests/fixtures/ are made by tests/reference/generate.py (see the README there):
// three training steps, a training backward, an eval step and an eval backward, and the final
// state dict under the prefix "bn." of a whole-model file.
//
// Tolerances (err = |ours − torch|, element i of a tensor e recorded from torch):
//  * float64: err ≤ 1e-12 · max(|e_i|, 1). Both sides compute in double; the differences are a
//    few ulps (≈ 1e-15) from a different association of the same sums.
//  * float32: err ≤ K · 2⁻²³ · scale, K = kFloat32Ulps. The scale depends on how torch's float32
//    CPU kernels round:
//     - outputs: torch computes y = x·α + β per element in float32, with α = invstd·w and
//       β = b − mean·α themselves rounded to float32. Its rounding error is therefore a few ulps
//       of |x·α| + |β|, not of |y|: for a channel with a large offset, x·α and β are large and
//       cancel. The scale is max(|x_i·α_c| + |β_c|, 1) with α, β evaluated in double from the
//       recorded inputs (and the file's running statistics in eval mode).
//     - input gradients: torch forms dx = (dy − mean(dy) − (x − mean)·k)·invstd·w in float32,
//       whose terms are bounded by the largest magnitudes in the tensor; the scale is
//       max(max_j |e_j|, 1) over the whole tensor.
//     - weight/bias gradients are sums over the N·L values of a channel; the scale is
//       max(max_j |e_j|, 1) over the tensor.
//     - running_mean / running_var: torch updates them in double and rounds once per step
//       (three steps): the scale is max(|e_i|, 1).
//    In every case the library accumulates in double, so K bounds torch's float32 rounding.
//    Measured (torch 1.13.0a0 fixtures): at most 2.1 ulps for outputs (up to 15.6 ulps of |y|
//    on the N = 2 fixture, hence the α/β scale), 4.4 ulps for input gradients, 1.7 ulps for
//    parameter gradients and running statistics; float64 differences at most 6e-15 relative.
//    Run with BN1D_FIXTURE_REPORT=1 to print each comparison's error as a fraction of its bound.
//  * num_batches_tracked: exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "bn1d/bn1d.hpp"
#include "format.hpp"

namespace {

using bn1d::BatchNorm1d;
using bn1d::BatchNorm1dOptions;
using bn1d::DType;
using bn1d::Metadata;
using bn1d::StateDict;
using bn1d::Tensor;

// All fixtures tests/reference/generate.py writes (a missing file is a failure, not a skip).
const char* const kFixtures[] = {
    "f32_2d_default",
    "f32_3d_channels_last",
    "f64_3d",
    "f64_2d_cumulative",
    "f32_3d_no_affine",
    "f32_2d_no_running_stats",
    "f64_3d_eps1e-3_momentum0.5",
    "f32_3d_wide",
    "f64_3d_no_affine_no_running_stats",
    "f32_2d_cumulative_pair",
};

constexpr double kFloat64Rel = 1e-12;
constexpr double kFloat32Ulps = 8.0;
constexpr double kFloat32Eps = 1.0 / (1 << 23);  // 2^-23, one float32 ulp at 1

std::string fixture_path(const std::string& name) {
  return std::string(BN1D_FIXTURE_DIR) + "/" + name + ".safetensors";
}

// Values of a Float32/Float64/Int64 tensor in row-major order, read through its strides.
std::vector<double> values(const Tensor& t) {
  std::vector<double> out;
  out.reserve(static_cast<std::size_t>(t.numel()));
  if (t.numel() == 0) return out;
  const int64_t dims = t.dim();
  std::vector<int64_t> index(static_cast<std::size_t>(dims), 0);
  for (int64_t n = 0; n < t.numel(); ++n) {
    int64_t offset = 0;
    for (int64_t d = 0; d < dims; ++d) offset += index[d] * t.strides()[d];
    switch (t.dtype()) {
      case DType::Float32:
        out.push_back(t.data<float>()[offset]);
        break;
      case DType::Float64:
        out.push_back(t.data<double>()[offset]);
        break;
      case DType::Int64:
        out.push_back(static_cast<double>(t.data<int64_t>()[offset]));
        break;
      case DType::BFloat16:
        out.push_back(bn1d::to_double(t.data<bn1d::BFloat16>()[offset]));
        break;
      case DType::Float16:
        out.push_back(bn1d::to_double(t.data<bn1d::Float16>()[offset]));
        break;
    }
    for (int64_t d = dims - 1; d >= 0; --d) {
      if (++index[d] < t.sizes()[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

const std::string& meta(const Metadata& m, const std::string& key) {
  auto it = m.find(key);
  if (it == m.end()) throw std::runtime_error("fixture metadata lacks " + key);
  return it->second;
}

bool meta_bool(const Metadata& m, const std::string& key) {
  const std::string& v = meta(m, key);
  if (v == "true") return true;
  if (v == "false") return false;
  throw std::runtime_error("fixture metadata " + key + " is not true/false: " + v);
}

BatchNorm1dOptions options_from(const Metadata& m) {
  BatchNorm1dOptions o(std::stoll(meta(m, "num_features")));
  o.eps(std::stod(meta(m, "eps")));
  const std::string& momentum = meta(m, "momentum");
  o.momentum(momentum == "None" ? std::nullopt : std::optional<double>(std::stod(momentum)));
  o.affine(meta_bool(m, "affine"));
  o.track_running_stats(meta_bool(m, "track_running_stats"));
  const std::string& dtype = meta(m, "dtype");
  if (dtype == "float32") {
    o.dtype(DType::Float32);
  } else if (dtype == "float64") {
    o.dtype(DType::Float64);
  } else {
    throw std::runtime_error("fixture dtype " + dtype);
  }
  return o;
}

// Per-element scale of an output: max(|x_i·α_c| + |β_c|, 1), α = invstd·w, β = b − mean·α,
// in double. With batch statistics the mean and biased variance are those of @p input.
std::vector<double> output_scale(const Tensor& input, const Tensor& weight, const Tensor& bias,
                                 const std::optional<std::pair<Tensor, Tensor>>& running,
                                 double eps) {
  const std::vector<double> x = values(input);
  const int64_t n = input.size(0), c = input.size(1), l = input.dim() == 3 ? input.size(2) : 1;
  std::vector<double> mean(c, 0.0), var(c, 0.0);
  if (running) {
    mean = values(running->first);
    var = values(running->second);
  } else {
    for (int64_t ch = 0; ch < c; ++ch) {
      double s = 0;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < l; ++j) s += x[(i * c + ch) * l + j];
      mean[ch] = s / static_cast<double>(n * l);
      double q = 0;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < l; ++j) q += std::pow(x[(i * c + ch) * l + j] - mean[ch], 2);
      var[ch] = q / static_cast<double>(n * l);
    }
  }
  const std::vector<double> w = weight.defined() ? values(weight) : std::vector<double>(c, 1.0);
  const std::vector<double> b = bias.defined() ? values(bias) : std::vector<double>(c, 0.0);
  std::vector<double> scale(x.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch) {
      const double alpha = w[ch] / std::sqrt(var[ch] + eps);
      const double beta = b[ch] - mean[ch] * alpha;
      for (int64_t j = 0; j < l; ++j) {
        const std::size_t k = static_cast<std::size_t>((i * c + ch) * l + j);
        scale[k] = std::max(std::abs(x[k] * alpha) + std::abs(beta), 1.0);
      }
    }
  return scale;
}

enum class Scale { Element, TensorMax };

// Largest observed error as a fraction of the allowed error, per comparison (reported with
// BN1D_FIXTURE_REPORT=1 in the environment, to document how much margin the bounds leave).
bool report_enabled() {
  const char* v = std::getenv("BN1D_FIXTURE_REPORT");
  return v != nullptr && std::string(v) == "1";
}

// Compares @p actual with the recorded @p expected under the tolerances described at the top.
// @p custom_scale, if non-empty, gives the float32 scale of each element.
void expect_close(const std::string& what, const Tensor& actual, const Tensor& expected, Scale mode,
                  const std::vector<double>& custom_scale = {}) {
  ASSERT_TRUE(actual.defined()) << what << ": undefined";
  ASSERT_EQ(actual.dtype(), expected.dtype()) << what;
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const std::vector<double> a = values(actual), e = values(expected);
  double tensor_max = 1.0;
  for (double v : e) tensor_max = std::max(tensor_max, std::abs(v));
  const bool f64 = expected.dtype() == DType::Float64;
  double worst = 0.0;  // max err / allowed
  std::size_t worst_i = 0, failures = 0;
  for (std::size_t i = 0; i < e.size(); ++i) {
    double allowed;
    if (f64) {
      allowed = kFloat64Rel * std::max(std::abs(e[i]), 1.0);
    } else {
      const double scale = !custom_scale.empty()    ? custom_scale[i]
                           : mode == Scale::Element ? std::max(std::abs(e[i]), 1.0)
                                                    : tensor_max;
      allowed = kFloat32Ulps * kFloat32Eps * scale;
    }
    const double err = std::abs(a[i] - e[i]);
    const double ratio = std::isnan(err) ? INFINITY : err / allowed;
    if (!(ratio <= 1.0)) ++failures;
    if (!(ratio <= worst)) {
      worst = ratio;
      worst_i = i;
    }
  }
  if (report_enabled()) {
    std::cout << "  " << what << ": max err = " << worst << " of allowed ("
              << (f64 ? "1e-12 rel" : "8 float32 ulps") << ")\n";
  }
  EXPECT_EQ(failures, 0u) << what << ": " << failures << " of " << e.size()
                          << " elements outside tolerance; worst at flat index " << worst_i
                          << ": ours " << a[worst_i] << ", torch " << e[worst_i] << ", |diff| "
                          << std::abs(a[worst_i] - e[worst_i]) << " = " << worst
                          << " x the allowed error";
}

class TorchFixture : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    path_ = fixture_path(GetParam());
    ASSERT_TRUE(std::filesystem::exists(path_)) << path_;
    file_ = bn1d::load_safetensors(path_, "", &meta_);
    opts_ = options_from(meta_);
    if (report_enabled()) std::cout << GetParam() << ":\n";
  }

  const Tensor& at(const std::string& key) const { return file_.at(key); }

  // The input as torch saw it: for input_layout "channels_last", a (N, C, L) view with strides
  // (L·C, 1, C) of an (N, L, C) buffer holding the same values; otherwise @p x itself.
  // The buffer lives as long as the fixture (backward() reads the saved input).
  Tensor as_torch_layout(const Tensor& x) {
    if (meta(meta_, "input_layout") != "channels_last") return x;
    const int64_t n = x.size(0), c = x.size(1), l = x.size(2);
    Tensor nlc = Tensor::empty({n, l, c}, x.dtype());
    Tensor view = Tensor::from_blob(nlc.raw_data(), {n, c, l}, {l * c, 1, c}, x.dtype());
    view.copy_from(x);
    keep_.push_back(nlc);
    EXPECT_FALSE(view.is_contiguous());
    return view;
  }
  bool has(const std::string& key) const { return file_.contains(key); }

  std::string path_;
  StateDict file_;
  Metadata meta_;
  BatchNorm1dOptions opts_{1};
  std::vector<Tensor> keep_;
};

// Replays the script: init parameters, three training steps, training backward, state, eval.
TEST_P(TorchFixture, MatchesTorchTrainingAndEval) {
  BatchNorm1d m(opts_);
  ASSERT_EQ(m.weight().defined(), opts_.affine());
  ASSERT_EQ(m.running_mean().defined(), opts_.track_running_stats());
  if (opts_.affine()) {
    m.weight().copy_from(at("init.weight"));
    m.bias().copy_from(at("init.bias"));
  }
  const int steps = std::stoi(meta(meta_, "train_steps"));
  ASSERT_GE(steps, 1);

  // Training forwards. Each input is checked against the shape recorded in the metadata.
  for (int k = 0; k < steps; ++k) {
    const std::string key = "train.input." + std::to_string(k);
    const Tensor& x = at(key);
    ASSERT_EQ(bn1d::format_shape(x.sizes()), meta(meta_, "shape")) << key;
    Tensor y = m.forward(as_torch_layout(x));
    expect_close("train.output." + std::to_string(k), y, at("train.output." + std::to_string(k)),
                 Scale::Element, output_scale(x, m.weight(), m.bias(), std::nullopt, opts_.eps()));
  }

  // Training backward, right after the last forward (as the script did).
  BatchNorm1d::Gradients g = m.backward(at("train.grad_output"));
  expect_close("train.grad_input", g.input, at("train.grad_input"), Scale::TensorMax);
  if (opts_.affine()) {
    expect_close("train.grad_weight", g.weight, at("train.grad_weight"), Scale::TensorMax);
    expect_close("train.grad_bias", g.bias, at("train.grad_bias"), Scale::TensorMax);
  } else {
    EXPECT_FALSE(g.weight.defined());
    EXPECT_FALSE(g.bias.defined());
  }

  // State after training: the same keys as torch's state_dict, in the same order, same values.
  if (opts_.track_running_stats()) {
    expect_close("running_mean", m.running_mean(), at("bn.running_mean"), Scale::Element);
    expect_close("running_var", m.running_var(), at("bn.running_var"), Scale::Element);
    const Tensor& nbt = at("bn.num_batches_tracked");
    ASSERT_EQ(nbt.dtype(), DType::Int64);
    ASSERT_EQ(nbt.dim(), 0);
    EXPECT_EQ(m.num_batches_tracked(), nbt.data<int64_t>()[0]);
  } else {
    EXPECT_EQ(m.num_batches_tracked(), 0);
  }
  const StateDict state = m.state_dict();
  std::vector<std::string> torch_keys;
  for (const auto& [key, value] : file_)
    if (key.rfind("bn.", 0) == 0) torch_keys.push_back(key.substr(3));
  EXPECT_EQ(state.keys(), torch_keys);
  for (const auto& [key, value] : state) {
    if (!has("bn." + key)) continue;
    if (value.dtype() == DType::Int64) {
      EXPECT_EQ(values(value), values(at("bn." + key))) << key;
    } else {
      expect_close("state_dict " + key, value, at("bn." + key), Scale::Element);
    }
  }

  // Eval forward and backward.
  m.eval();
  const Tensor& xe = at("eval.input");
  std::optional<std::pair<Tensor, Tensor>> running;
  if (opts_.track_running_stats()) running.emplace(at("bn.running_mean"), at("bn.running_var"));
  Tensor ye = m.forward(as_torch_layout(xe));
  expect_close("eval.output", ye, at("eval.output"), Scale::Element,
               output_scale(xe, m.weight(), m.bias(), running, opts_.eps()));
  g = m.backward(at("eval.grad_output"));
  expect_close("eval.grad_input", g.input, at("eval.grad_input"), Scale::TensorMax);
  if (opts_.affine()) {
    expect_close("eval.grad_weight", g.weight, at("eval.grad_weight"), Scale::TensorMax);
    expect_close("eval.grad_bias", g.bias, at("eval.grad_bias"), Scale::TensorMax);
  } else {
    EXPECT_FALSE(g.weight.defined());
    EXPECT_FALSE(g.bias.defined());
  }
  // Eval mode never changes the running statistics or the batch count.
  if (opts_.track_running_stats()) {
    EXPECT_EQ(m.num_batches_tracked(), at("bn.num_batches_tracked").data<int64_t>()[0]);
  }
}

// Loads the "bn." layer of the whole-model file into a fresh module: the eval output must match
// torch's. Loading the whole file without a prefix must fail (unexpected keys) and change nothing.
TEST_P(TorchFixture, LoadsLayerOfWholeModelFile) {
  BatchNorm1d m(opts_);
  m.load(path_, "bn.");
  const StateDict state = m.state_dict();
  for (const auto& [key, value] : state) {
    ASSERT_TRUE(has("bn." + key)) << key;
    EXPECT_EQ(values(value), values(at("bn." + key))) << key << " must load exactly";
  }
  if (opts_.track_running_stats()) {
    EXPECT_EQ(m.num_batches_tracked(), at("bn.num_batches_tracked").data<int64_t>()[0]);
  }

  m.eval();
  const Tensor& xe = at("eval.input");
  std::optional<std::pair<Tensor, Tensor>> running;
  if (opts_.track_running_stats()) running.emplace(at("bn.running_mean"), at("bn.running_var"));
  expect_close("loaded eval.output", m.forward(xe), at("eval.output"), Scale::Element,
               output_scale(xe, m.weight(), m.bias(), running, opts_.eps()));

  EXPECT_THROW(m.load(path_), bn1d::Error);
  const StateDict after = m.state_dict();
  ASSERT_EQ(after.keys(), state.keys());
  for (const auto& [key, value] : after)
    EXPECT_EQ(values(value), values(state.at(key))) << key << " changed by a failed load";
  EXPECT_FALSE(m.is_training());
}

// Every fixture the script writes is listed above, and every listed fixture exists.
TEST(TorchFixtureFiles, ListMatchesDirectory) {
  std::set<std::string> listed(std::begin(kFixtures), std::end(kFixtures));
  std::set<std::string> present;
  for (const auto& entry : std::filesystem::directory_iterator(BN1D_FIXTURE_DIR))
    if (entry.path().extension() == ".safetensors") present.insert(entry.path().stem().string());
  EXPECT_EQ(listed, present);
}

std::string param_name(const ::testing::TestParamInfo<const char*>& info) {
  std::string s = info.param;
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s;
}

INSTANTIATE_TEST_SUITE_P(TorchFixtures, TorchFixture, ::testing::ValuesIn(kFixtures), param_name);

}  // namespace
