// SPDX-License-Identifier: MIT
// The demo's model and data, shared by its single-process and data-parallel (--distributed) runs:
// the Wine CSV loader, a seeded split, plain float32 Linear/ReLU/cross-entropy loops, and an MLP
//
//   Linear(D→H) → [Norm(H)] → ReLU → Linear(H→K)
//
// whose optional normalization layer is bn1d::BatchNorm1d or bn1d::SyncBatchNorm1d.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bn1d/bn1d.hpp"

namespace demo {

constexpr int kHidden = 32;
constexpr int kBatch = 16;
constexpr int kEpochs = 30;
constexpr float kLearningRate = 0.01f;
constexpr uint64_t kSeed = 42;

// ----------------------------------------------------------------------------------------------
// Data: wine_data.csv, first line "n_samples,n_features,class names...", then rows of
// n_features values and an integer label.

struct Dataset {
  int n = 0, d = 0, k = 0;
  std::vector<float> x;  // (n, d)
  std::vector<int> y;    // (n)
};

inline Dataset load_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  auto fields = [](const std::string& line) {
    std::vector<std::string> out;
    std::stringstream ss(line);
    for (std::string f; std::getline(ss, f, ',');) out.push_back(f);
    return out;
  };
  std::string line;
  std::getline(in, line);
  std::vector<std::string> head = fields(line);
  if (head.size() < 3) throw std::runtime_error(path + ": bad header line '" + line + "'");
  Dataset ds;
  ds.n = std::stoi(head[0]);
  ds.d = std::stoi(head[1]);
  ds.k = static_cast<int>(head.size()) - 2;
  for (int i = 0; i < ds.n; i++) {
    if (!std::getline(in, line)) throw std::runtime_error(path + ": fewer rows than announced");
    std::vector<std::string> row = fields(line);
    if (static_cast<int>(row.size()) != ds.d + 1)
      throw std::runtime_error(path + ": row " + std::to_string(i + 1) + " has " +
                               std::to_string(row.size()) + " fields");
    for (int j = 0; j < ds.d; j++) ds.x.push_back(std::stof(row[j]));
    ds.y.push_back(std::stoi(row[ds.d]));
    if (ds.y.back() < 0 || ds.y.back() >= ds.k)
      throw std::runtime_error(path + ": row " + std::to_string(i + 1) + " has a bad label");
  }
  return ds;
}

// mt19937_64 is specified bit for bit by the standard; its distributions are not, so the few we
// need are written here and the demo gives the same numbers with every standard library.
struct Rng {
  std::mt19937_64 gen{kSeed};
  uint64_t below(uint64_t n) { return gen() % n; }
  float uniform(float lo, float hi) {  // 24 random bits: exact in float
    return lo + (hi - lo) * static_cast<float>(gen() >> 40) * 0x1p-24f;
  }
  void shuffle(std::vector<int>& v) {
    for (size_t i = v.size(); i > 1; i--) std::swap(v[i - 1], v[below(i)]);
  }
};

// ----------------------------------------------------------------------------------------------
// Layers as flat loops (N rows of a batch, C input channels, OC output channels).

// out (N, OC) = inp (N, C) · w (OC, C)ᵀ + b (OC)
inline void linear_forward(float* out, const float* inp, const float* w, const float* b, int N,
                           int C, int OC) {
  for (int n = 0; n < N; n++)
    for (int o = 0; o < OC; o++) {
      float s = b[o];
      for (int c = 0; c < C; c++) s += inp[n * C + c] * w[o * C + c];
      out[n * OC + o] = s;
    }
}

// dw = doutᵀ · inp, db = Σₙ dout, dinp = dout · w (skipped when dinp is null)
inline void linear_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                            const float* w, int N, int C, int OC) {
  for (int o = 0; o < OC; o++) {
    float sb = 0.0f;
    for (int n = 0; n < N; n++) sb += dout[n * OC + o];
    db[o] = sb;
    for (int c = 0; c < C; c++) {
      float s = 0.0f;
      for (int n = 0; n < N; n++) s += dout[n * OC + o] * inp[n * C + c];
      dw[o * C + c] = s;
    }
  }
  if (!dinp) return;
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++) {
      float s = 0.0f;
      for (int o = 0; o < OC; o++) s += dout[n * OC + o] * w[o * C + c];
      dinp[n * C + c] = s;
    }
}

inline void relu_forward(float* out, const float* inp, int count) {
  for (int i = 0; i < count; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

inline void relu_backward(float* dinp, const float* dout, const float* inp, int count) {
  for (int i = 0; i < count; i++) dinp[i] = inp[i] > 0.0f ? dout[i] : 0.0f;
}

// Softmax cross-entropy of the N rows of logits (N, K) against labels y, as part of a batch of
// N_total rows whose loss is the mean: returns the sum of the N rows' losses and writes
// dlogits = (p − onehot) / N_total.
inline float cross_entropy(float* dlogits, const float* logits, const int* y, int N, int N_total,
                           int K) {
  float loss = 0.0f;
  for (int n = 0; n < N; n++) {
    const float* l = logits + n * K;
    float mx = *std::max_element(l, l + K), sum = 0.0f;
    for (int k = 0; k < K; k++) sum += std::exp(l[k] - mx);
    loss += std::log(sum) + mx - l[y[n]];
    for (int k = 0; k < K; k++)
      dlogits[n * K + k] = (std::exp(l[k] - mx) / sum - (k == y[n] ? 1.0f : 0.0f)) / N_total;
  }
  return loss;
}

// ----------------------------------------------------------------------------------------------
// The model: two Linear layers and, optionally, a normalization layer between them (Norm is
// bn1d::BatchNorm1d or bn1d::SyncBatchNorm1d: both have forward, backward, train/eval, weight,
// bias).

template <class Norm>
struct MLP {
  int D, H, K;
  std::vector<float> w1, b1, w2, b2;  // parameters
  // Gradients of every parameter, one buffer (so data-parallel training sums them in one
  // collective): [dw1 (H·D) | db1 (H) | dw2 (K·H) | db2 (K) | dweight (H) | dbias (H)].
  std::vector<float> grad;
  std::optional<Norm> bn;
  bn1d::Tensor bn_out;                 // normalization output of the last forward (N, H)
  std::vector<float> h, a, logits;     // activations of the last forward
  std::vector<float> dlogits, da, dz;  // gradient buffers

  template <class... NormArgs>
  MLP(int d, int hidden, int k, bool with_bn, NormArgs&&... norm_args) : D(d), H(hidden), K(k) {
    if (with_bn) bn.emplace(hidden, std::forward<NormArgs>(norm_args)...);
  }

  // Logits (N, K) of x (N, D); the normalization uses batch or running statistics by its mode.
  const float* forward(const float* x, int N) {
    h.resize(N * H), a.resize(N * H), logits.resize(N * K);
    linear_forward(h.data(), x, w1.data(), b1.data(), N, D, H);
    const float* z = h.data();
    if (bn) {  // bn keeps a view of h for backward(): h must not change until then
      bn_out = bn->forward(bn1d::Tensor::from_blob(h.data(), {N, H}, bn1d::DType::Float32));
      z = bn_out.data<float>();
    }
    relu_forward(a.data(), z, N * H);
    linear_forward(logits.data(), a.data(), w2.data(), b2.data(), N, H, K);
    return logits.data();
  }

  // One SGD step on the N rows x (N, D) of a batch of N_total rows (N < N_total when the batch
  // is split over data-parallel ranks). sum_gradients, when given, sums the gradient buffer over
  // the ranks before the update. Returns the sum of the N rows' losses.
  float train_step(const float* x, const int* y, int N, int N_total, float lr,
                   const std::function<void(std::vector<float>&)>& sum_gradients = nullptr) {
    forward(x, N);
    dlogits.resize(N * K), da.resize(N * H), dz.resize(N * H);
    grad.resize(w1.size() + b1.size() + w2.size() + b2.size() + 2 * static_cast<size_t>(H));
    float* dw1 = grad.data();
    float* db1 = dw1 + w1.size();
    float* dw2 = db1 + b1.size();
    float* db2 = dw2 + w2.size();
    float* dweight = db2 + b2.size();
    float* dbias = dweight + H;
    float loss = cross_entropy(dlogits.data(), logits.data(), y, N, N_total, K);
    linear_backward(da.data(), dw2, db2, dlogits.data(), a.data(), w2.data(), N, H, K);
    relu_backward(dz.data(), da.data(), bn ? bn_out.data<float>() : h.data(), N * H);
    const float* dh = dz.data();
    bn1d::BatchNormGradients g;
    if (bn) {
      g = bn->backward(bn1d::Tensor::from_blob(dz.data(), {N, H}, bn1d::DType::Float32));
      dh = g.input.data<float>();
      std::memcpy(dweight, g.weight.data<float>(), sizeof(float) * H);
      std::memcpy(dbias, g.bias.data<float>(), sizeof(float) * H);
    }
    linear_backward(nullptr, dw1, db1, dh, x, w1.data(), N, D, H);
    if (sum_gradients) sum_gradients(grad);
    auto sgd = [lr](float* p, const float* dp, size_t count) {
      for (size_t i = 0; i < count; i++) p[i] -= lr * dp[i];
    };
    sgd(w1.data(), dw1, w1.size());
    sgd(b1.data(), db1, b1.size());
    sgd(w2.data(), dw2, w2.size());
    sgd(b2.data(), db2, b2.size());
    if (bn) {
      sgd(bn->weight().template data<float>(), dweight, H);
      sgd(bn->bias().template data<float>(), dbias, H);
    }
    return loss;
  }

  // Eval-mode forward of x (N, D): the fraction of rows classified correctly and the fraction
  // of hidden ReLU outputs that are non-zero.
  struct Score {
    float accuracy, active;
  };
  Score evaluate(const float* x, const int* y, int N) {
    if (bn) bn->eval();
    const float* l = forward(x, N);
    if (bn) bn->train();
    int correct = 0, active = 0;
    for (int n = 0; n < N; n++)
      correct += static_cast<int>(std::max_element(l + n * K, l + n * K + K) - (l + n * K)) == y[n];
    for (int i = 0; i < N * H; i++) active += a[i] > 0.0f;
    return {static_cast<float>(correct) / N, static_cast<float>(active) / (N * H)};
  }
};

// ----------------------------------------------------------------------------------------------
// The experiment: data split, standardized features, initial weights, batch order.

// Rows idx of ds as a contiguous (count, d) block and their labels.
inline void gather(const Dataset& ds, const int* idx, int count, std::vector<float>& x,
                   std::vector<int>& y) {
  x.resize(static_cast<size_t>(count) * ds.d), y.resize(count);
  for (int i = 0; i < count; i++) {
    std::copy_n(&ds.x[static_cast<size_t>(idx[i]) * ds.d], ds.d, &x[static_cast<size_t>(i) * ds.d]);
    y[i] = ds.y[idx[i]];
  }
}

// Scales every feature to mean 0 and variance 1 with statistics of the training rows only (the
// raw features span 0.36 to ~750: plain SGD on them mostly sees Proline).
inline void standardize(Dataset& ds, const std::vector<int>& train_idx) {
  const double n = static_cast<double>(train_idx.size());
  for (int j = 0; j < ds.d; j++) {
    double sum = 0.0, sq = 0.0;
    for (int i : train_idx) sum += ds.x[static_cast<size_t>(i) * ds.d + j];
    const double mean = sum / n;
    for (int i : train_idx) {
      const double dev = ds.x[static_cast<size_t>(i) * ds.d + j] - mean;
      sq += dev * dev;
    }
    const double inv_std = 1.0 / std::sqrt(sq / n);
    for (int i = 0; i < ds.n; i++) {
      float& v = ds.x[static_cast<size_t>(i) * ds.d + j];
      v = static_cast<float>((v - mean) * inv_std);
    }
  }
}

// Everything both runs share, derived from the CSV and kSeed alone: a stratified 70/30 split,
// features standardized with training-set statistics, PyTorch-style U(±1/√fan_in) initial
// weights, and the random generator positioned for the per-epoch shuffles.
struct Experiment {
  Dataset ds;
  Rng rng;
  std::vector<int> train_idx, test_idx;
  std::vector<float> x_train, x_test;
  std::vector<int> y_train, y_test;
  std::vector<float> w1, b1, w2, b2;
  float raw_mean_lo = 1e30f, raw_mean_hi = 0.0f;  // range of the raw feature means

  explicit Experiment(const std::string& csv_path) : ds(load_csv(csv_path)) {
    for (int k = 0; k < ds.k; k++) {
      std::vector<int> cls;
      for (int i = 0; i < ds.n; i++)
        if (ds.y[i] == k) cls.push_back(i);
      rng.shuffle(cls);
      size_t n_train = static_cast<size_t>(std::lround(0.7 * static_cast<double>(cls.size())));
      train_idx.insert(train_idx.end(), cls.begin(), cls.begin() + n_train);
      test_idx.insert(test_idx.end(), cls.begin() + n_train, cls.end());
    }
    for (int j = 0; j < ds.d; j++) {
      float s = 0.0f;
      for (int i = 0; i < ds.n; i++) s += ds.x[i * ds.d + j];
      raw_mean_lo = std::min(raw_mean_lo, s / ds.n), raw_mean_hi = std::max(raw_mean_hi, s / ds.n);
    }
    standardize(ds, train_idx);
    gather(ds, train_idx.data(), n_train(), x_train, y_train);
    gather(ds, test_idx.data(), n_test(), x_test, y_test);
    auto init = [this](std::vector<float>& v, size_t count, int fan_in) {
      float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
      for (size_t i = 0; i < count; i++) v.push_back(rng.uniform(-bound, bound));
    };
    const int D = ds.d, H = kHidden, K = ds.k;
    init(w1, static_cast<size_t>(H) * D, D);
    init(b1, H, D);
    init(w2, static_cast<size_t>(K) * H, H);
    init(b2, K, H);
  }
  int n_train() const { return static_cast<int>(train_idx.size()); }
  int n_test() const { return static_cast<int>(test_idx.size()); }

  // An MLP with the initial weights (Norm constructed from (H, norm_args...) when with_bn).
  template <class Norm, class... NormArgs>
  MLP<Norm> model(bool with_bn, NormArgs&&... norm_args) const {
    MLP<Norm> m(ds.d, kHidden, ds.k, with_bn, std::forward<NormArgs>(norm_args)...);
    m.w1 = w1, m.b1 = b1, m.w2 = w2, m.b2 = b2;
    return m;
  }
};

}  // namespace demo
