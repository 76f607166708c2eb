// SPDX-License-Identifier: MIT
/// @file variants_bench.cpp
/// @brief bn1d_variants_bench: the masked and ghost (virtual-batch) BatchNorm1d rows.
///
///   bn1d_variants_bench [--threads T] [--filter SUBSTR]
///
/// Masked rows: BatchNorm1d with lengths (70% of the positions valid) against the unmasked
/// BatchNorm1d on the same (64, 256, 1024) float32 tensor, contiguous and channels-last; the
/// masked time should follow the valid fraction. Ghost rows: GhostBatchNorm1d (virtual batch
/// size 128) on (16384, 64) and (16384, 512) float32 against, when built with libtorch, the loop
/// `torch.cat([bn(c) for c in x.chunk(k)])` in libtorch, and against one plain BatchNorm1d call on
/// the whole batch (what the chunking costs). Timing: measure.hpp's time_interleaved, the
/// policy bn1d_bench prints; train, eval and backward as bn1d_bench's rows. See
/// bench/variants_and_sync.md.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <bn1d/bn1d.hpp>

#include "cli.hpp"
#include "ghost_loop.hpp"
#include "measure.hpp"
#include "runner.hpp"

namespace bench {
namespace {

using bn1d::DType;
using bn1d::Tensor;

using Options = ThreadsAndFilter;

Options parse_args(int argc, char** argv) {
  return parse_threads_and_filter(argc, argv, "bn1d_variants_bench");
}

/// Milliseconds with 3–4 significant digits in a field of 9.
std::string ms(double seconds) {
  const double v = seconds * 1e3;
  char buf[32];
  std::snprintf(buf, sizeof buf, v < 1 ? "%9.4f" : v < 100 ? "%9.3f" : "%9.1f", v);
  return buf;
}

/// Sets a float32 module's weight and bias to the benchmark's affine values (runner.hpp).
void set_affine(Tensor& weight, Tensor& bias) {
  for (int64_t c = 0; c < weight.numel(); ++c) {
    weight.data<float>()[c] = static_cast<float>(affine_weight(c));
    bias.data<float>()[c] = static_cast<float>(affine_bias(c));
  }
}

/// Lengths of @p N samples spread evenly from 40% to 100% of @p L: 70% valid on average.
std::vector<int64_t> spread_lengths(int64_t N, int64_t L) {
  std::vector<int64_t> lengths;
  for (int64_t n = 0; n < N; ++n) {
    const double fraction = 0.4 + 0.6 * static_cast<double>(n) / static_cast<double>(N - 1);
    lengths.push_back(static_cast<int64_t>(std::lround(fraction * static_cast<double>(L))));
  }
  return lengths;
}

/// Times the three ops of @p a and @p b, each op's pair interleaved, and prints a row per op:
/// both times and b/a. A backward differentiates a training forward run just before its timing.
struct OpCalls {
  std::function<void()> train, eval, backward;
};
void time_ops(const char* label, const OpCalls& a, const OpCalls& b, const std::string& note) {
  const char* names[] = {"train", "eval", "backward"};
  for (int op = 0; op < 3; ++op) {
    const auto pick = [op](const OpCalls& c) {
      return op == 0 ? c.train : op == 1 ? c.eval : c.backward;
    };
    if (op == 2) {
      a.train();
      b.train();
    }
    const std::vector<Timing> t = time_interleaved({pick(a), pick(b)});
    std::printf("%-24s %-8s %4d %s %s %7.2fx  %s\n", label, names[op],
                std::min(t[0].runs, t[1].runs), ms(t[0].seconds).c_str(), ms(t[1].seconds).c_str(),
                t[1].seconds / t[0].seconds, note.c_str());
    std::fflush(stdout);
  }
}

/// Masked (lengths, 70% valid) against unmasked BatchNorm1d on one (N, C, L) tensor.
void masked_rows(int64_t N, int64_t C, int64_t L, bool channels_last) {
  const bn1d::Shape sizes{N, C, L};
  const bn1d::Shape strides = channels_last ? bn1d::Shape{L * C, 1, C} : bn1d::Shape{C * L, L, 1};
  const Tensor x_mem = bn1d::randn({N * C * L}, DType::Float32, 1);
  const Tensor dy_mem = bn1d::randn({N * C * L}, DType::Float32, 2);
  const Tensor out_mem = Tensor::empty({N * C * L}), out2_mem = Tensor::empty({N * C * L});
  const Tensor gx_mem = Tensor::empty({N * C * L}), gx2_mem = Tensor::empty({N * C * L});
  const auto view = [&](const Tensor& mem) {
    return Tensor::from_blob(mem.raw_data(), sizes, strides, DType::Float32);
  };
  const Tensor x = view(x_mem), dy = view(dy_mem);
  Tensor y_masked = view(out_mem), y_plain = view(out2_mem);
  bn1d::BatchNormGradients g_masked{view(gx_mem), Tensor(), Tensor()};
  bn1d::BatchNormGradients g_plain{view(gx2_mem), Tensor(), Tensor()};
  const std::vector<int64_t> lengths = spread_lengths(N, L);
  const bn1d::ValidPositions valid = bn1d::ValidPositions::from_lengths(lengths);
  bn1d::BatchNorm1d masked(C), plain(C);
  set_affine(masked.weight(), masked.bias());
  set_affine(plain.weight(), plain.bias());

  const OpCalls p{[&] { plain.train().forward(x, y_plain); },
                  [&] { plain.eval().forward(x, y_plain); }, [&] { plain.backward(dy, g_plain); }};
  const OpCalls m{[&] { masked.train().forward(x, y_masked, valid); },
                  [&] { masked.eval().forward(x, y_masked, valid); },
                  [&] { masked.backward(dy, g_masked); }};
  char label[64], note[64];
  std::snprintf(label, sizeof label, "(%lld,%lld,%lld) f32 %s", static_cast<long long>(N),
                static_cast<long long>(C), static_cast<long long>(L),
                channels_last ? "NLC" : "NCL");
  std::snprintf(note, sizeof note, "valid %.3f",
                static_cast<double>(valid.count()) / static_cast<double>(N * L));
  time_ops(label, p, m, note);
}

/// bn1d's GhostBatchNorm1d with caller-owned output and gradient buffers.
class Bn1dGhost final : public GhostRunner {
 public:
  explicit Bn1dGhost(const GhostProblem& p)
      : module_(bn1d::BatchNorm1dOptions(p.c).momentum(p.momentum).eps(p.eps),
                p.virtual_batch_size),
        x_(Tensor::from_blob(p.x, {p.n, p.c}, DType::Float32)),
        dy_(Tensor::from_blob(p.dy, {p.n, p.c}, DType::Float32)),
        out_(Tensor::empty({p.n, p.c})) {
    set_affine(module_.weight(), module_.bias());
  }
  void forward_train() override { module_.train().forward(x_, out_); }
  void forward_eval() override { module_.eval().forward(x_, out_); }
  void backward() override { module_.backward(dy_, grads_); }
  const float* output() const override { return out_.data<float>(); }

 private:
  bn1d::GhostBatchNorm1d module_;
  Tensor x_, dy_, out_;
  bn1d::BatchNormGradients grads_;
};

OpCalls calls_of(GhostRunner& r) {
  return {[&r] { r.forward_train(); }, [&r] { r.forward_eval(); }, [&r] { r.backward(); }};
}

/// GhostBatchNorm1d against the libtorch chunk loop and one plain BatchNorm1d call.
void ghost_rows(int64_t N, int64_t C, int64_t vbs) {
  const Tensor x = bn1d::randn({N, C}, DType::Float32, 3),
               dy = bn1d::randn({N, C}, DType::Float32, 4);
  GhostProblem p{N, C, vbs, 0.01, 1e-5, x.data<float>(), dy.data<float>()};
  char label[64];
  std::snprintf(label, sizeof label, "(%lld,%lld) f32 vbs %lld", static_cast<long long>(N),
                static_cast<long long>(C), static_cast<long long>(vbs));
  Bn1dGhost ghost(p);
#if BN1D_HAVE_TORCH
  const std::unique_ptr<GhostRunner> loop = make_torch_ghost_loop(p);
  // Sanity check: the first training forward of both, element by element.
  ghost.forward_train();
  loop->forward_train();
  double worst = 0;
  for (int64_t i = 0; i < N * C; ++i)
    worst = std::max(worst, std::fabs(static_cast<double>(ghost.output()[i]) - loop->output()[i]));
  if (!(worst <= 1e-4)) std::printf("WARNING: %s: max |torch loop - bn1d| = %g\n", label, worst);
  time_ops(label, calls_of(ghost), calls_of(*loop), "vs libtorch chunk loop");
#endif
  // One plain BatchNorm1d over the whole batch: the price of normalizing per chunk.
  bn1d::BatchNorm1d plain(bn1d::BatchNorm1dOptions(C).momentum(0.01));
  Tensor y = Tensor::empty({N, C});
  bn1d::BatchNormGradients g;
  const OpCalls whole{[&] { plain.train().forward(x, y); }, [&] { plain.eval().forward(x, y); },
                      [&] { plain.backward(dy, g); }};
  time_ops(label, calls_of(ghost), whole, "vs one BatchNorm1d call, whole batch");
}

}  // namespace
}  // namespace bench

int main(int argc, char** argv) {
  using namespace bench;
  const Options o = parse_args(argc, argv);
  prepare_process(o.threads);
#if BN1D_HAVE_TORCH
  std::printf("peer: %s\n", torch_description().c_str());
#endif
  std::printf(
      "bn1d_variants_bench: %d thread(s), %d cores; median of interleaved runs "
      "(measure.hpp, as bn1d_bench)\n\n",
      o.threads, omp_get_num_procs());
  const auto wanted = [&o](const char* label) {
    return std::string(label).find(o.filter) != std::string::npos;
  };
  std::printf("Masked BatchNorm1d (lengths) vs unmasked on the same tensor; x = masked/unmasked\n");
  std::printf("%-24s %-8s %4s %9s %9s %8s\n", "shape dtype layout", "op", "runs", "unmasked",
              "masked", "x");
  if (wanted("masked NCL")) masked_rows(64, 256, 1024, false);
  if (wanted("masked NLC")) masked_rows(64, 256, 1024, true);
  std::printf("\nGhostBatchNorm1d vs a peer (ms); x = peer/bn1d (>1: bn1d faster)\n");
  std::printf("%-24s %-8s %4s %9s %9s %8s\n", "shape dtype vbs", "op", "runs", "bn1d", "peer", "x");
  if (wanted("ghost 64")) ghost_rows(16384, 64, 128);
  if (wanted("ghost 512")) ghost_rows(16384, 512, 128);
}
