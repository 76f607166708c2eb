// An independent float64 model of torch.nn.BatchNorm1d written for the tests: naive loops over
// logical (N, C, L) values, no code shared with the library. Backward uses the textbook form
//   dx = w·invstd/n · (n·dy − Σdy − x̂·Σ(dy·x̂)).
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

namespace bn1d::test {

struct ReferenceBatchNorm {
  int64_t C;
  double eps = 1e-5;
  std::optional<double> momentum = 0.1;
  bool affine = true, track = true, training = true;
  bool float32_buffers = false;  ///< running statistics are stored (rounded) as float32
  std::vector<double> weight, bias, running_mean, running_var;
  int64_t num_batches_tracked = 0;
  // Saved by forward.
  std::vector<double> x_hat, invstd;
  bool batch_stats = false;
  int64_t N = 0, L = 0;

  ReferenceBatchNorm(int64_t channels, double eps_, std::optional<double> momentum_, bool affine_,
                     bool track_)
      : C(channels),
        eps(eps_),
        momentum(momentum_),
        affine(affine_),
        track(track_),
        weight(channels, 1.0),
        bias(channels, 0.0),
        running_mean(channels, 0.0),
        running_var(channels, 1.0) {}

  /// @p x: logical row-major (N, C, L) values.
  std::vector<double> forward(const std::vector<double>& x, int64_t N_, int64_t L_) {
    N = N_;
    L = L_;
    const double n = static_cast<double>(N * L);
    batch_stats = training || !track;
    std::vector<double> mean(C), var(C);
    invstd.assign(C, 0.0);
    for (int64_t c = 0; c < C; ++c) {
      double s = 0;
      for (int64_t i = 0; i < N; ++i)
        for (int64_t l = 0; l < L; ++l) s += x[(i * C + c) * L + l];
      const double mu = s / n;
      double q = 0;
      for (int64_t i = 0; i < N; ++i)
        for (int64_t l = 0; l < L; ++l)
          q += (x[(i * C + c) * L + l] - mu) * (x[(i * C + c) * L + l] - mu);
      mean[c] = batch_stats ? mu : running_mean[c];
      var[c] = batch_stats ? q / n : running_var[c];
      invstd[c] = (var[c] + eps == 0) ? 0.0 : 1.0 / std::sqrt(var[c] + eps);
      if (training && track) {
        const double m = momentum ? *momentum : 1.0 / static_cast<double>(num_batches_tracked + 1);
        running_mean[c] = (1 - m) * running_mean[c] + m * mu;
        running_var[c] = (1 - m) * running_var[c] + m * q / (n - 1);
        if (float32_buffers) {
          running_mean[c] = static_cast<float>(running_mean[c]);
          running_var[c] = static_cast<float>(running_var[c]);
        }
      }
    }
    if (training && track) ++num_batches_tracked;
    std::vector<double> y(x.size());
    x_hat.assign(x.size(), 0.0);
    for (int64_t i = 0; i < N; ++i)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t l = 0; l < L; ++l) {
          const int64_t k = (i * C + c) * L + l;
          x_hat[k] = (x[k] - mean[c]) * invstd[c];
          y[k] = x_hat[k] * weight[c] + bias[c];
        }
    return y;
  }

  struct Grads {
    std::vector<double> input, weight, bias;
  };

  Grads backward(const std::vector<double>& dy) const {
    const double n = static_cast<double>(N * L);
    Grads g{std::vector<double>(dy.size()), std::vector<double>(C), std::vector<double>(C)};
    for (int64_t c = 0; c < C; ++c) {
      double sdy = 0, sdyxh = 0;
      for (int64_t i = 0; i < N; ++i)
        for (int64_t l = 0; l < L; ++l) {
          const int64_t k = (i * C + c) * L + l;
          sdy += dy[k];
          sdyxh += dy[k] * x_hat[k];
        }
      g.weight[c] = sdyxh;
      g.bias[c] = sdy;
      for (int64_t i = 0; i < N; ++i)
        for (int64_t l = 0; l < L; ++l) {
          const int64_t k = (i * C + c) * L + l;
          g.input[k] = batch_stats
                           ? weight[c] * invstd[c] / n * (n * dy[k] - sdy - x_hat[k] * sdyxh)
                           : weight[c] * invstd[c] * dy[k];
        }
    }
    return g;
  }
};

}  // namespace bn1d::test
