// SPDX-License-Identifier: MIT
// The demo's model, shared by its single-process and data-parallel (--distributed) runs: plain
// float32 Linear/ReLU/cross-entropy loops around an optional normalization layer per hidden layer,
//
//   Linear(D→H) → [Norm(H)] → ReLU → (Linear(H→H) → [Norm(H)] → ReLU) × (depth − 1) → Linear(H→K)
//
// where Norm is bn1d::BatchNorm1d or bn1d::SyncBatchNorm1d, used through bn1d's public API.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <optional>
#include <stdexcept>
#include <vector>

#include "bn1d/bn1d.hpp"
#include "digits.hpp"

namespace demo {

// One Linear layer. Weights are stored (in, out), PyTorch's (out, in) transposed, so that the
// forward and weight-gradient loops run over contiguous outputs and vectorize.
struct Linear {
  int in = 0, out = 0;
  std::vector<float> w, b;  // (in, out), (out)

  // PyTorch's default initialization: weight and bias ~ U(±1/√in).
  Linear(int fan_in, int fan_out, Rng& rng) : in(fan_in), out(fan_out) {
    const float bound = 1.0f / std::sqrt(static_cast<float>(in));
    for (int i = 0; i < in * out; i++) w.push_back(rng.uniform(-bound, bound));
    for (int o = 0; o < out; o++) b.push_back(rng.uniform(-bound, bound));
  }

  // y (N, out) = x (N, in) · w + b
  void forward(float* y, const float* x, int N) const {
    for (int n = 0; n < N; n++) {
      float* yn = y + n * out;
      std::copy_n(b.data(), out, yn);
      for (int c = 0; c < in; c++) {
        const float xc = x[n * in + c];
        const float* wc = w.data() + c * out;
        for (int o = 0; o < out; o++) yn[o] += xc * wc[o];
      }
    }
  }

  // dw = xᵀ · dy, db = Σₙ dy, and dx = dy · wᵀ unless dx is null (the first layer's input).
  void backward(float* dx, float* dw, float* db, const float* dy, const float* x, int N) const {
    std::fill_n(dw, in * out, 0.0f), std::fill_n(db, out, 0.0f);
    for (int n = 0; n < N; n++) {
      const float* dyn = dy + n * out;
      for (int o = 0; o < out; o++) db[o] += dyn[o];
      for (int c = 0; c < in; c++) {
        const float xc = x[n * in + c];
        float* dwc = dw + c * out;
        for (int o = 0; o < out; o++) dwc[o] += xc * dyn[o];
      }
      if (!dx) continue;
      for (int c = 0; c < in; c++) {
        const float* wc = w.data() + c * out;
        float s = 0.0f;
        for (int o = 0; o < out; o++) s += dyn[o] * wc[o];
        dx[n * in + c] = s;
      }
    }
  }
};

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

inline bn1d::Tensor view(std::vector<float>& v, int rows, int cols) {
  return bn1d::Tensor::from_blob(v.data(), {rows, cols}, bn1d::DType::Float32);
}

template <class Norm>
struct MLP {
  using Clock = std::chrono::steady_clock;
  std::vector<Linear> fc;                 // depth hidden layers, then the output layer
  std::vector<std::optional<Norm>> norm;  // one per hidden layer, engaged with BatchNorm
  // Gradients of every parameter, one buffer (so data-parallel training sums them in one
  // collective): per Linear [dw | db], then per Norm [dweight | dbias].
  std::vector<float> grad;
  std::vector<size_t> fc_grad, norm_grad;  // offsets into grad
  // Per hidden layer: Linear output h, normalized z (= h without Norm), ReLU output a (N, H).
  std::vector<std::vector<float>> h, z, a;
  std::vector<float> logits, dlogits, da, dz, dh;
  bn1d::BatchNormGradients g;   // views of dh and of grad: Norm writes its gradients in place
  Clock::duration norm_time{};  // in Norm forward/backward during train_step
  Clock::duration step_time{};  // in train_step

  // Copies the layers; norm_args... construct each Norm after its width.
  template <class... NormArgs>
  MLP(const std::vector<Linear>& layers, bool with_norm, NormArgs&&... norm_args) : fc(layers) {
    const size_t depth = fc.size() - 1;
    for (size_t l = 0; l < depth; l++) {
      norm.emplace_back();
      if (with_norm) norm.back().emplace(fc[l].out, norm_args...);
    }
    for (const Linear& f : fc)
      fc_grad.push_back(grad.size()), grad.resize(grad.size() + f.w.size() + f.b.size());
    for (size_t l = 0; l < depth; l++) {
      norm_grad.push_back(grad.size());
      if (norm[l]) grad.resize(grad.size() + 2 * fc[l].out);
    }
    h.resize(depth), z.resize(depth), a.resize(depth);
  }
  int classes() const { return fc.back().out; }

  // Logits (N, K) of x (N, D); Norm uses batch or running statistics by its mode.
  const float* forward(const float* x, int N) {
    for (size_t l = 0; l + 1 < fc.size(); l++) {
      const int H = fc[l].out;
      h[l].resize(N * H), z[l].resize(N * H), a[l].resize(N * H);
      fc[l].forward(h[l].data(), l ? a[l - 1].data() : x, N);
      if (norm[l]) {  // Norm keeps a view of h[l] for backward(): h[l] must not change until then
        bn1d::Tensor out = view(z[l], N, H);
        const auto t0 = Clock::now();
        norm[l]->forward(view(h[l], N, H), out);
        if (norm[l]->is_training()) norm_time += Clock::now() - t0;
        if (N && out.data<float>() != z[l].data())
          throw std::logic_error("forward did not reuse z");
      } else {
        z[l] = h[l];
      }
      for (int i = 0; i < N * H; i++) a[l][i] = z[l][i] > 0.0f ? z[l][i] : 0.0f;
    }
    logits.resize(N * classes());
    fc.back().forward(logits.data(), a.back().data(), N);
    return logits.data();
  }

  // One SGD step on the N rows x (N, D) of a batch of N_total rows (N < N_total when the batch
  // is split over data-parallel ranks). sum_gradients, when given, sums the gradient buffer over
  // the ranks before the update. Returns the sum of the N rows' losses.
  float train_step(const float* x, const int* y, int N, int N_total, float lr,
                   const std::function<void(std::vector<float>&)>& sum_gradients = nullptr) {
    const auto t0 = Clock::now();
    forward(x, N);
    dlogits.resize(N * classes());
    const float loss = cross_entropy(dlogits.data(), logits.data(), y, N, N_total, classes());
    const float* dy = dlogits.data();
    for (size_t l = fc.size(); l-- > 0;) {
      const Linear& f = fc[l];
      float* dx = l ? (da.resize(N * f.in), da.data()) : nullptr;
      f.backward(dx, &grad[fc_grad[l]], &grad[fc_grad[l]] + f.w.size(), dy, l ? a[l - 1].data() : x,
                 N);
      if (!l) break;
      dy = backward_norm_relu(l - 1, N);
    }
    if (sum_gradients) sum_gradients(grad);
    sgd(lr);
    step_time += Clock::now() - t0;
    return loss;
  }

  // Hidden layer l: from da (the gradient of its ReLU output) to the gradient of its Linear output.
  const float* backward_norm_relu(size_t l, int N) {
    const int H = fc[l].out;
    dz.resize(N * H);
    for (int i = 0; i < N * H; i++) dz[i] = z[l][i] > 0.0f ? da[i] : 0.0f;
    if (!norm[l]) return dz.data();
    dh.resize(N * H);
    float* dweight = &grad[norm_grad[l]];
    g.input = view(dh, N, H);
    g.weight = bn1d::Tensor::from_blob(dweight, {H}, bn1d::DType::Float32);
    g.bias = bn1d::Tensor::from_blob(dweight + H, {H}, bn1d::DType::Float32);
    const auto t0 = Clock::now();
    norm[l]->backward(view(dz, N, H), g);
    norm_time += Clock::now() - t0;
    if (N && (g.input.data<float>() != dh.data() || g.weight.data<float>() != dweight))
      throw std::logic_error("backward did not reuse the gradient buffers");
    return dh.data();
  }

  void sgd(float lr) {
    auto step = [lr](float* p, const float* dp, size_t count) {
      for (size_t i = 0; i < count; i++) p[i] -= lr * dp[i];
    };
    for (size_t l = 0; l < fc.size(); l++) {
      step(fc[l].w.data(), &grad[fc_grad[l]], fc[l].w.size());
      step(fc[l].b.data(), &grad[fc_grad[l]] + fc[l].w.size(), fc[l].b.size());
    }
    for (size_t l = 0; l < norm.size(); l++) {
      if (!norm[l]) continue;
      step(norm[l]->weight().template data<float>(), &grad[norm_grad[l]], fc[l].out);
      step(norm[l]->bias().template data<float>(), &grad[norm_grad[l]] + fc[l].out, fc[l].out);
    }
  }

  // Eval-mode (running statistics) accuracy on x (N, D), labels y.
  float accuracy(const float* x, const int* y, int N) {
    for (auto& n : norm)
      if (n) n->eval();
    const float* l = forward(x, N);
    for (auto& n : norm)
      if (n) n->train();
    const int K = classes();
    int correct = 0;
    for (int n = 0; n < N; n++)
      correct += static_cast<int>(std::max_element(l + n * K, l + n * K + K) - (l + n * K)) == y[n];
    return static_cast<float>(correct) / N;
  }
};

}  // namespace demo
