// SPDX-License-Identifier: MIT
/// @file act_bench.cpp
/// @brief bn1d_act_bench: BatchNorm1d followed by ReLU (training forward, eval forward,
/// backward) on four float32 shapes: bn1d's fused activation against bn1d's batch norm with a
/// separate ReLU pass, bn1d's batch norm alone, libtorch's batch norm + at::relu / at::relu_,
/// and oneDNN's batch normalization with fuse_norm_relu. See bench/README.md ("BN + ReLU").
///
///   bn1d_act_bench [--threads T] [--filter SUBSTR]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <bn1d/tensor.hpp>

#include "cli.hpp"
#include "measure.hpp"
#include "runner.hpp"

namespace bench {
namespace {

using Options = ThreadsAndFilter;

/// The shapes (#21), all float32.
struct Shape {
  int64_t n, c, l;
  bool three_d, channels_last;
  const char* label;
};
constexpr Shape kShapes[] = {{8192, 256, 1, false, false, "(8192,256) NC"},
                             {64, 64, 4096, true, false, "(64,64,4096) NCL"},
                             {32, 512, 512, true, false, "(32,512,512) NCL"},
                             {64, 256, 1024, true, true, "(64,256,1024) NLC"}};

/// The columns: bn1d fused first (every ratio is another column's time over its time).
enum Column { kFused, kUnfused, kAlone, kTorch, kTorchInPlace, kDnnl, kColumns };
constexpr const char* kNames[kColumns] = {"bn1d fused",      "bn1d + relu pass", "bn1d BN alone",
                                          "torch bn + relu", "torch bn + relu_", "oneDNN fused"};

enum class Op { Train, Eval, Backward };
constexpr Op kOps[] = {Op::Train, Op::Eval, Op::Backward};
constexpr const char* kOpNames[] = {"train", "eval", "backward"};

Options parse_args(int argc, char** argv) {
  return parse_threads_and_filter(argc, argv, "bn1d_act_bench");
}

/// Largest |a − b| over the (N, C, L) float32 elements of two views, skipping those where
/// |kink| < 1e-4 when @p kink is given (there the ReLU's gate may differ by a rounding); NaN
/// when any compared element is NaN. @p skipped counts the elements left out.
double max_abs_diff(const Problem& p, const View& a, const View& b, const View* kink,
                    int64_t& skipped) {
  const auto at = [](const View& v, int64_t n, int64_t c, int64_t l) {
    return static_cast<double>(
        static_cast<const float*>(v.data)[n * v.strides[0] + c * v.strides[1] + l * v.strides[2]]);
  };
  double worst = 0;
  skipped = 0;
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t c = 0; c < p.c; ++c)
      for (int64_t l = 0; l < p.l; ++l) {
        if (kink && std::fabs(at(*kink, n, c, l)) < 1e-4) {
          ++skipped;
          continue;
        }
        const double d = at(a, n, c, l) - at(b, n, c, l);
        if (std::isnan(d)) return d;
        worst = std::max(worst, std::fabs(d));
      }
  return worst;
}

/// Milliseconds with 3–4 significant digits in a field of 9.
std::string ms(double seconds) {
  const double v = seconds * 1e3;
  char buf[32];
  std::snprintf(buf, sizeof buf, v < 1 ? "%9.4f" : v < 100 ? "%9.3f" : "%9.1f", v);
  return buf;
}

double load_average() {
  double load = 0;
  return getloadavg(&load, 1) == 1 ? load : -1;
}

void print_header(const Options& o) {
  std::printf(
      "bn1d_act_bench: BatchNorm1d + ReLU, float32, %d thread(s), %d cores, load average "
      "%.2f\n",
      o.threads, omp_get_num_procs(), load_average());
  std::printf(
      "columns: fused = bn1d BatchNorm1dOptions(C).activation(Activation::ReLU);\n"
      "         unfused = bn1d BatchNorm1d, then ReLU in place on its output (Highway loop), and "
      "for backward dy*(y>0)\n"
      "                   into a buffer (Highway loop), then bn1d's backward;\n"
      "         bn alone = bn1d BatchNorm1d without ReLU; torch = at::native_batch_norm + "
      "at::relu (relu_: in place),\n"
      "                   backward at::threshold_backward + at::native_batch_norm_backward;\n"
      "         oneDNN = batch normalization with fuse_norm_relu (workspace from training "
      "forward)\n"
      "x COL = COL time / fused time (> 1: fused faster); timing as bn1d_bench (medians, %d "
      "interleaved rounds)\n\n",
      kRounds);
  std::printf("%-18s %-8s %4s %9s %9s %7s %9s %7s %9s %7s %9s %7s %9s %7s\n", "shape layout", "op",
              "runs", "fused_ms", "unfus_ms", "x unfus", "bn_ms", "x bn", "torch_ms", "x torch",
              "torch__ms", "x relu_", "dnnl_ms", "x dnnl");
}

/// Sanity: each column's training output and input gradient against bn1d fused's (the gradient
/// away from the ReLU's kink, found in the BN-alone output). Returns the notes.
std::vector<std::string> check(const Problem& p, const char* label,
                               std::unique_ptr<Runner> (&runners)[kColumns]) {
  std::vector<std::string> notes;
  for (auto& r : runners)
    if (r) r->forward_train();
  for (int i : {kFused, kUnfused, kTorch, kDnnl})
    if (runners[i]) runners[i]->backward();
  const View kink = runners[kAlone]->output();
  for (int i : {kUnfused, kTorch, kTorchInPlace, kDnnl}) {
    if (!runners[i]) continue;
    int64_t skipped = 0;
    const double out =
        max_abs_diff(p, runners[i]->output(), runners[kFused]->output(), nullptr, skipped);
    double grad = 0;
    if (i != kTorchInPlace)
      grad =
          max_abs_diff(p, runners[i]->grad_input(), runners[kFused]->grad_input(), &kink, skipped);
    const bool ok = out <= 1e-3 && grad <= 1e-3;
    char buf[240];
    std::snprintf(buf, sizeof buf,
                  "%s %s: max |%s - fused|: output %.1e, input gradient %.1e (%lld values with "
                  "|bn(x)| < 1e-4 skipped)",
                  label, ok ? "ok" : "WARNING", kNames[i], out, grad,
                  static_cast<long long>(skipped));
    notes.push_back(buf);
    if (!ok) std::printf("WARNING: %s\n", buf);
    if (const std::string note = runners[i]->note(); !note.empty())
      notes.push_back(std::string(label) + " " + kNames[i] + " " + note);
  }
  return notes;
}

/// Runs one shape: the sanity check, then each op's row, every column timed interleaved.
std::vector<std::string> run_shape(const Shape& s) {
  Problem p;
  p.n = s.n, p.c = s.c, p.l = s.l, p.three_d = s.three_d, p.channels_last = s.channels_last;
  const bn1d::Tensor x = bn1d::randn({p.numel()}, p.dtype, 1);
  const bn1d::Tensor dy = bn1d::randn({p.numel()}, p.dtype, 2);
  p.x = x.raw_data();
  p.dy = dy.raw_data();

  std::unique_ptr<Runner> runners[kColumns] = {make_bn1d_runner(p, Relu::Fused),
                                               make_bn1d_runner(p, Relu::SeparateInPlace),
                                               make_bn1d_runner(p)};
  std::vector<std::string> notes;
#if BN1D_HAVE_TORCH
  runners[kTorch] = make_torch_runner(p, Relu::Separate);
  runners[kTorchInPlace] = make_torch_runner(p, Relu::SeparateInPlace);
#endif
#if BN1D_HAVE_DNNL
  std::string why;
  runners[kDnnl] = make_dnnl_runner(p, why, Relu::Fused);
  if (!why.empty()) notes.push_back(std::string(s.label) + " oneDNN " + why);
#endif
  for (std::string& note : check(p, s.label, runners)) notes.push_back(std::move(note));

  for (std::size_t o = 0; o < std::size(kOps); ++o) {
    std::vector<std::function<void()>> calls;
    std::vector<int> column_of_call;
    for (int i = 0; i < kColumns; ++i) {
      Runner* r = runners[i].get();
      // relu_'s backward is relu's: the same threshold_backward (autograd's too).
      if (!r || (kOps[o] == Op::Backward && i == kTorchInPlace)) continue;
      column_of_call.push_back(i);
      if (kOps[o] == Op::Train) calls.emplace_back([r] { r->forward_train(); });
      if (kOps[o] == Op::Eval) calls.emplace_back([r] { r->forward_eval(); });
      if (kOps[o] == Op::Backward) {
        r->forward_train();  // backward differentiates the last training forward
        calls.emplace_back([r] { r->backward(); });
      }
    }
    const std::vector<Timing> t = time_interleaved(calls);
    double seconds[kColumns] = {};
    int runs = t[0].runs;
    for (std::size_t k = 0; k < t.size(); ++k) {
      seconds[column_of_call[k]] = t[k].seconds;
      runs = std::min(runs, t[k].runs);
    }
    std::printf("%-18s %-8s %4d %s", s.label, kOpNames[o], runs, ms(seconds[kFused]).c_str());
    for (int i = kUnfused; i < kColumns; ++i) {
      if (seconds[i] > 0)
        std::printf(" %s %6.2fx", ms(seconds[i]).c_str(), seconds[i] / seconds[kFused]);
      else
        std::printf(" %9s %7s", "-", "-");
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  return notes;
}

}  // namespace
}  // namespace bench

int main(int argc, char** argv) {
  using namespace bench;
  const auto start = std::chrono::steady_clock::now();
  const Options o = parse_args(argc, argv);
  prepare_process(o.threads);
  print_header(o);
  std::vector<std::string> notes;
  for (const Shape& s : kShapes) {
    if (std::string(s.label).find(o.filter) == std::string::npos) continue;
    for (std::string& note : run_shape(s)) notes.push_back(std::move(note));
  }
  std::printf("\n");
  for (const std::string& note : notes) std::printf("%s\n", note.c_str());
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("\ntotal time %.1f s, load average %.2f\n", elapsed, load_average());
}
