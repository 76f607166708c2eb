// SPDX-License-Identifier: MIT
// Scalar reference kernels (see reference.hpp). Channels are independent, so they are split
// across OpenMP threads; each channel is reduced serially, so results never depend on the
// thread count.
#include "kernels/reference.hpp"

#include <cmath>

#include "kernels/element.hpp"

namespace bn1d::kernels::reference {
namespace {

// Below this many elements a call runs on one thread: forking costs more than it saves.
constexpr int64_t kMinElementsPerThread = 1 << 15;

template <class T>
double at(const View3& v, int64_t n, int64_t c, int64_t l) {
  return widen(static_cast<const T*>(v.data)[n * v.sN + c * v.sC + l * v.sL]);
}

int thread_count(const View3& x) {
  const int64_t work = x.N * x.C * x.L / kMinElementsPerThread;
  return static_cast<int>(work < 1 ? 1 : (work > 1024 ? 1024 : work));
}

template <class T>
void channel_stats_t(double* mean, double* m2, const View3& x) {
  const int64_t N = x.N, C = x.C, L = x.L;
  const double n_inv = 1.0 / static_cast<double>(N * L);
#pragma omp parallel for schedule(static) num_threads(thread_count(x))
  for (int64_t c = 0; c < C; ++c) {
    // Sum of x − K with K the channel's first value: a constant channel then has exactly the
    // mean K (and M2 = 0), whatever its magnitude.
    const double K = N * L > 0 ? at<T>(x, 0, c, 0) : 0.0;
    double sum = 0.0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t l = 0; l < L; ++l) sum += at<T>(x, n, c, l) - K;
    const double mu = K + sum * n_inv;
    double sq = 0.0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t l = 0; l < L; ++l) {
        const double d = at<T>(x, n, c, l) - mu;
        sq += d * d;
      }
    mean[c] = mu;
    m2[c] = sq;
  }
}

template <class T>
T& out_at(const Out3& o, int64_t n, int64_t c, int64_t l) {
  return static_cast<T*>(o.data)[n * o.sN + c * o.sC + l * o.sL];
}

template <class T>
void normalize_t(const Out3& y, const View3& x, const double* mean, const double* scale,
                 const double* shift, const Act& act) {
  const int64_t N = x.N, C = x.C, L = x.L;
#pragma omp parallel for schedule(static) num_threads(thread_count(x))
  for (int64_t c = 0; c < C; ++c) {
    const auto channel = ActChannel<T>::of(mean[c], scale[c], shift[c], act.slope);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t l = 0; l < L; ++l) {
        const double v = at<T>(x, n, c, l);
        // Without an activation, float64 rounded once; with one, z formed as every kernel forms
        // it (activation.hpp).
        out_at<T>(y, n, c, l) =
            act.enabled()
                ? narrow<T>(act_value<T>(act.kind, channel.input(static_cast<ActCompute<T>>(v)),
                                         channel.slope))
                : narrow<T>((v - mean[c]) * scale[c] + shift[c]);
      }
  }
}

// dy at (n, c, l), gated by the activation's derivative at z (recomputed from x) when enabled.
template <class T>
double gated_dy(const View3& dy, const View3& x, const double* mean, const Act& act, int64_t n,
                int64_t c, int64_t l) {
  const double g = at<T>(dy, n, c, l);
  if (!act.enabled()) return g;
  using CT = ActCompute<T>;
  const auto channel = ActChannel<T>::of(mean[c], act.scale[c], act.shift[c], act.slope);
  const CT z = channel.input(static_cast<CT>(at<T>(x, n, c, l)));
  return act_gate<T>(act.kind, z, static_cast<CT>(g), channel.slope);
}

template <class T>
void backward_sums_t(double* sum_dy, double* sum_dy_xmu, const View3& dy, const View3& x,
                     const double* mean, const Act& act) {
  const int64_t N = x.N, C = x.C, L = x.L;
#pragma omp parallel for schedule(static) num_threads(thread_count(x))
  for (int64_t c = 0; c < C; ++c) {
    double s = 0.0, sx = 0.0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t l = 0; l < L; ++l) {
        const double g = gated_dy<T>(dy, x, mean, act, n, c, l);
        s += g;
        sx += g * (at<T>(x, n, c, l) - mean[c]);
      }
    sum_dy[c] = s;
    sum_dy_xmu[c] = sx;
  }
}

template <class T>
void backward_input_t(const Out3& dx, const View3& dy, const View3& x, const double* mean,
                      const double* a, const double* b, const double* k, const Act& act) {
  const int64_t N = x.N, C = x.C, L = x.L;
#pragma omp parallel for schedule(static) num_threads(thread_count(x))
  for (int64_t c = 0; c < C; ++c)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t l = 0; l < L; ++l)
        out_at<T>(dx, n, c, l) = narrow<T>(a[c] * gated_dy<T>(dy, x, mean, act, n, c, l) +
                                           b[c] * (at<T>(x, n, c, l) - mean[c]) + k[c]);
}

}  // namespace

void channel_stats(double* mean, double* m2, const View3& x) {
  with_storage(x.dtype, [&]<class T>() { channel_stats_t<T>(mean, m2, x); });
}

void normalize(const Out3& y, const View3& x, const double* mean, const double* scale,
               const double* shift, const Act& act) {
  with_storage(x.dtype, [&]<class T>() { normalize_t<T>(y, x, mean, scale, shift, act); });
}

void backward_sums(double* sum_dy, double* sum_dy_xmu, const View3& dy, const View3& x,
                   const double* mean, const Act& act) {
  with_storage(x.dtype,
               [&]<class T>() { backward_sums_t<T>(sum_dy, sum_dy_xmu, dy, x, mean, act); });
}

void backward_input(const Out3& dx, const View3& dy, const View3& x, const double* mean,
                    const double* a, const double* b, const double* k, const Act& act) {
  with_storage(x.dtype, [&]<class T>() { backward_input_t<T>(dx, dy, x, mean, a, b, k, act); });
}

void invstd(double* invstd, const double* v, double divisor, double eps, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const double var = v[c] / divisor + eps;
    invstd[c] = var == 0.0 ? 0.0 : 1.0 / std::sqrt(var);
  }
}

void running_update(double* rmean, double* rvar, const double* mean, const double* m2,
                    double momentum, double unbias, int64_t C) {
  const double keep = 1.0 - momentum;
  for (int64_t c = 0; c < C; ++c) {
    rmean[c] = keep * rmean[c] + momentum * mean[c];
    rvar[c] = keep * rvar[c] + momentum * (m2[c] * unbias);
  }
}

void backward_coefficients(double* a, double* b, double* k, const double* w, const double* invstd,
                           const double* sum_dy, const double* sum_dy_xmu, double n, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const double g = w != nullptr ? w[c] * invstd[c] : invstd[c];
    a[c] = g;
    b[c] = k[c] = 0.0;
    if (sum_dy != nullptr) {
      k[c] = -g * sum_dy[c] / n;
      b[c] = -g * invstd[c] * invstd[c] * sum_dy_xmu[c] / n;
    }
  }
}

void merge_slot(double* mean, double* m2, const double* part_mean, const double* part_m2, double wb,
                double wab, bool first, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const double old_mean = first ? 0.0 : mean[c], old_m2 = first ? 0.0 : m2[c];
    const double delta = part_mean[c] - old_mean;
    mean[c] = old_mean + delta * wb;
    m2[c] = old_m2 + (part_m2[c] + delta * delta * wab);
  }
}

void add_slot(double* a, double* b, const double* part_a, const double* part_b, bool first,
              int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    a[c] = (first ? 0.0 : a[c]) + part_a[c];
    b[c] = (first ? 0.0 : b[c]) + part_b[c];
  }
}

}  // namespace bn1d::kernels::reference
