// SPDX-License-Identifier: MIT
// Helpers of the SyncBatchNorm1d tests (one MPI test executable, run under mpirun with 1 to 4
// ranks): the global batch, its split over ranks, comparisons and the disagreement checks.
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>
#include <algorithm>
#include <bn1d/bn1d.hpp>
#include <bn1d/dist/sync_batch_norm.hpp>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "../test_util.hpp"

namespace bn1d::dist_test {

using bn1d::BatchNorm1d;
using bn1d::BatchNorm1dOptions;
using bn1d::DType;
using bn1d::Shape;
using bn1d::SyncBatchNorm1d;
using bn1d::Tensor;

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

inline int world_size() {
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

// Values of any tensor as float64 in logical order, and their largest magnitude: the single-process
// suite's helpers (public API only).
using test::max_abs;
using test::values;

/// The bound of the README: float64 within 1e-12, float32 within 8 half-ulps, both relative to
/// @p scale (default: the expected tensor's largest magnitude).
inline void expect_close(const std::vector<double>& actual, const std::vector<double>& expected,
                         DType dtype, const std::string& what, double scale = -1.0) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  if (scale < 0) scale = max_abs(expected);
  const double rel = dtype == DType::Float64 ? 1e-12 : 8.0 * std::ldexp(1.0, -24);
  const double tol = rel * std::max(scale, 1e-300);
  double worst = 0.0;
  std::size_t at = 0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double d = std::abs(actual[i] - expected[i]);
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  EXPECT_LE(worst, tol) << what << ": element " << at << " is " << actual[at] << ", expected "
                        << expected[at] << " (rank " << world_rank() << ")";
}

/// Per-rank batch sizes and this rank's offset in the global batch.
struct Split {
  std::vector<int64_t> n;  // per rank
  int64_t offset = 0;      // of this rank
  int64_t local = 0;
  int64_t global = 0;
};

inline Split make_split(std::vector<int64_t> n) {
  Split s;
  s.n = std::move(n);
  const auto r = static_cast<std::size_t>(world_rank());
  s.offset = std::accumulate(s.n.begin(), s.n.begin() + static_cast<std::ptrdiff_t>(r), int64_t{0});
  s.local = s.n[r];
  s.global = std::accumulate(s.n.begin(), s.n.end(), int64_t{0});
  return s;
}

/// Uneven sizes 2 + 3r; with 3 ranks or more, rank 1 holds an empty batch.
inline Split uneven_split() {
  std::vector<int64_t> n;
  for (int r = 0; r < world_size(); ++r) n.push_back(world_size() >= 3 && r == 1 ? 0 : 2 + 3 * r);
  return make_split(n);
}

inline Shape shape_of(int64_t N, int64_t C, int64_t L) {
  return L > 0 ? Shape{N, C, L} : Shape{N, C};
}

/// A global batch (the same on every rank) with channel-dependent offsets and scales.
inline Tensor global_batch(int64_t N, int64_t C, int64_t L, DType dtype, uint64_t seed) {
  Tensor t = bn1d::randn(shape_of(N, C, L), dtype, seed);
  const int64_t inner = std::max<int64_t>(L, 1);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const int64_t c = (i / inner) % C;
    const double v =
        (dtype == DType::Float32 ? static_cast<double>(t.data<float>()[i]) : t.data<double>()[i]) *
            (0.5 + 0.25 * static_cast<double>(c)) +
        3.0 - static_cast<double>(c);
    if (dtype == DType::Float32) {
      t.data<float>()[i] = static_cast<float>(v);
    } else {
      t.data<double>()[i] = v;
    }
  }
  return t;
}

/// This rank's rows [offset, offset + local) of @p global, as a view.
inline Tensor local_rows(const Tensor& global, const Split& s) {
  Shape sizes = global.sizes();
  sizes[0] = s.local;
  const int64_t row = global.numel() / std::max<int64_t>(global.sizes()[0], 1);
  auto* base = static_cast<char*>(global.raw_data()) +
               static_cast<std::size_t>(s.offset * row) * bn1d::element_size(global.dtype());
  return Tensor::from_blob(base, sizes, global.dtype());
}

/// Logical values of rows [offset, offset + local) of @p global.
inline std::vector<double> local_values(const Tensor& global, const Split& s) {
  const std::vector<double> all = values(global);
  const int64_t row = global.numel() / std::max<int64_t>(global.sizes()[0], 1);
  return {all.begin() + s.offset * row, all.begin() + (s.offset + s.local) * row};
}

/// Checks that @p t holds bitwise the same values on every rank.
inline void expect_identical_on_all_ranks(const Tensor& t, const std::string& what) {
  const std::vector<double> mine = values(t);
  std::vector<double> all(mine.size() * static_cast<std::size_t>(world_size()));
  MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_DOUBLE, all.data(),
                static_cast<int>(mine.size()), MPI_DOUBLE, MPI_COMM_WORLD);
  for (int r = 0; r < world_size(); ++r) {
    EXPECT_EQ(std::memcmp(all.data() + static_cast<std::size_t>(r) * mine.size(), mine.data(),
                          mine.size() * sizeof(double)),
              0)
        << what << " differs between rank " << r << " and rank " << world_rank();
  }
}

/// Sum over ranks (and sum of magnitudes) of a {C} parameter gradient.
inline std::vector<double> allreduce_sum(const std::vector<double>& v, bool magnitudes = false) {
  std::vector<double> in = v, out(v.size());
  if (magnitudes) {
    for (double& x : in) x = std::abs(x);
  }
  MPI_Allreduce(in.data(), out.data(), static_cast<int>(in.size()), MPI_DOUBLE, MPI_SUM,
                MPI_COMM_WORLD);
  return out;
}

/// Sets weight and bias of both modules to the same non-trivial values.
inline void set_affine(BatchNorm1d& ref, SyncBatchNorm1d& sync) {
  if (!ref.options().affine()) return;
  const int64_t C = ref.options().num_features();
  for (int64_t c = 0; c < C; ++c) {
    const double w = 1.0 + 0.1 * static_cast<double>(c), b = 0.05 * static_cast<double>(c) - 0.1;
    for (Tensor* t : {&ref.weight(), &sync.weight(), &ref.bias(), &sync.bias()}) {
      const double v = (t == &ref.weight() || t == &sync.weight()) ? w : b;
      if (t->dtype() == DType::Float32) {
        t->data<float>()[c] = static_cast<float>(v);
      } else {
        t->data<double>()[c] = v;
      }
    }
  }
}

/// Runs @p steps training steps then an eval step on the synchronized module and on the
/// single-process reference, comparing outputs, gradients and running statistics; with
/// @p global_valid, masked, this rank's positions being @p local_valid.
inline void compare_with_reference(const BatchNorm1dOptions& options, int64_t L, const Split& split,
                                   int steps, uint64_t seed,
                                   const ValidPositions* global_valid = nullptr,
                                   const ValidPositions* local_valid = nullptr) {
  const DType dtype = options.dtype();
  const int64_t C = options.num_features();
  BatchNorm1d ref(options);
  SyncBatchNorm1d sync(options);
  set_affine(ref, sync);
  ASSERT_EQ(sync.world_size(), world_size());
  ASSERT_EQ(sync.rank(), world_rank());

  for (int step = 0; step <= steps; ++step) {
    const bool training = step < steps;
    ref.train(training);
    sync.train(training);
    const std::string tag = std::string(training ? "train step " : "eval step ") +
                            std::to_string(step) + " " + bn1d::dtype_name(dtype) +
                            (L > 0 ? " (N, C, L)" : " (N, C)");
    const Tensor x = global_batch(split.global, C, L, dtype, seed + static_cast<uint64_t>(step));
    const Tensor gy = bn1d::randn(x.sizes(), dtype, seed + 1000 + static_cast<uint64_t>(step));

    const Tensor y_ref = global_valid ? ref.forward(x, *global_valid) : ref.forward(x);
    const BatchNorm1d::Gradients g_ref = ref.backward(gy);
    const Tensor y = local_valid ? sync.forward(local_rows(x, split), *local_valid)
                                 : sync.forward(local_rows(x, split));
    const SyncBatchNorm1d::Gradients g = sync.backward(local_rows(gy, split));

    EXPECT_EQ(y.sizes(), shape_of(split.local, C, L)) << tag;
    expect_close(values(y), local_values(y_ref, split), dtype, tag + ": output",
                 max_abs(values(y_ref)));
    expect_close(values(g.input), local_values(g_ref.input, split), dtype, tag + ": grad_input",
                 max_abs(values(g_ref.input)));
    if (options.affine()) {
      // The data-parallel optimizer sums the local parameter gradients over ranks. The float32
      // bound scales with the magnitudes summed (each rank's part is rounded to float32 once).
      for (const auto& [mine, expected, name] :
           {std::tuple{&g.weight, &g_ref.weight, "grad_weight"},
            std::tuple{&g.bias, &g_ref.bias, "grad_bias"}}) {
        const std::vector<double> e = values(*expected);
        const std::vector<double> parts = allreduce_sum(values(*mine), /*magnitudes=*/true);
        expect_close(allreduce_sum(values(*mine)), e, dtype, tag + ": " + name,
                     std::max(max_abs(e), max_abs(parts)));
      }
    } else {
      EXPECT_FALSE(g.weight.defined());
      EXPECT_FALSE(g.bias.defined());
    }
    if (options.track_running_stats()) {
      expect_close(values(sync.running_mean()), values(ref.running_mean()), dtype,
                   tag + ": running_mean");
      expect_close(values(sync.running_var()), values(ref.running_var()), dtype,
                   tag + ": running_var");
      expect_identical_on_all_ranks(sync.running_mean(), tag + ": running_mean");
      expect_identical_on_all_ranks(sync.running_var(), tag + ": running_var");
      EXPECT_EQ(sync.num_batches_tracked(), ref.num_batches_tracked()) << tag;
    }
  }
}

template <class F>
void expect_error_everywhere(F call, int bad, const std::string& own) {
  try {
    call();
    ADD_FAILURE() << "no error on rank " << world_rank();
  } catch (const bn1d::Error& e) {
    const std::string what = e.what();
    if (world_rank() == bad) {
      EXPECT_NE(what.find(own), std::string::npos) << what;
    } else {
      EXPECT_NE(what.find("SyncBatchNorm1d: rank " + std::to_string(bad) + " failed"),
                std::string::npos)
          << what;
    }
  }
}

// ---- Every promise under disagreement: every rank throws, no rank waits ---------------------

/// The rank that differs in the disagreement tests.
inline constexpr int kOdd = 1;

/// Calls @p call, expecting bn1d::Error on every rank with a message containing @p expected.
template <class F>
void expect_same_error_everywhere(F call, const std::string& expected) {
  try {
    call();
    ADD_FAILURE() << "no error on rank " << world_rank() << " (expected: " << expected << ")";
  } catch (const bn1d::Error& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos)
        << "rank " << world_rank() << ": " << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "rank " << world_rank() << ": not a bn1d::Error: " << e.what();
  }
}

/// The running statistics and count of a module, to check that a failed call changed nothing.
struct Snapshot {
  std::vector<double> mean, var;
  int64_t tracked = 0;
  explicit Snapshot(const SyncBatchNorm1d& m)
      : mean(m.running_mean().defined() ? values(m.running_mean()) : std::vector<double>{}),
        var(m.running_var().defined() ? values(m.running_var()) : std::vector<double>{}),
        tracked(m.num_batches_tracked()) {}
  bool operator==(const Snapshot&) const = default;
};

/// A valid training step (forward + backward) on every rank, checked against a single-process
/// BatchNorm1d on the global batch: the communicator is still in step after an error.
inline void expect_valid_step(SyncBatchNorm1d& sync) {
  const int64_t C = sync.options().num_features();
  const DType dtype = sync.options().dtype();
  sync.train();
  BatchNorm1d ref(sync.options());
  ref.load_state_dict(sync.state_dict());
  const Split s = uneven_split();
  const Tensor x = global_batch(s.global, C, 0, dtype, 777);
  const Tensor gy = bn1d::randn(x.sizes(), dtype, 778);
  const Tensor y_ref = ref.forward(x);
  const Tensor gx_ref = ref.backward(gy).input;
  ASSERT_NO_THROW({
    const Tensor y = sync.forward(local_rows(x, s));
    expect_close(values(y), local_values(y_ref, s), dtype, "valid step: output",
                 max_abs(values(y_ref)));
    const Tensor gx = sync.backward(local_rows(gy, s)).input;
    expect_close(values(gx), local_values(gx_ref, s), dtype, "valid step: grad_input",
                 max_abs(values(gx_ref)));
  });
  EXPECT_EQ(sync.num_batches_tracked(), ref.num_batches_tracked());
}

/// Rank kOdd builds its module with @p odd options, the others with @p common: the first
/// forward throws "ranks disagree on <expected>" everywhere, changes nothing, and a second try
/// throws again (the collectives stay in step); a module of common options then works.
inline void expect_option_disagreement(const BatchNorm1dOptions& common,
                                       const BatchNorm1dOptions& odd, const std::string& expected) {
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  const BatchNorm1dOptions& mine = world_rank() == kOdd ? odd : common;
  SyncBatchNorm1d sync(mine);
  const Snapshot before(sync);
  const Tensor x = bn1d::randn({4, mine.num_features()}, mine.dtype(), 5);
  for (int attempt = 0; attempt < 2; ++attempt) {
    expect_same_error_everywhere([&] { (void)sync.forward(x); },
                                 "SyncBatchNorm1d: ranks disagree on " + expected);
    EXPECT_TRUE(Snapshot(sync) == before);
    sync.eval();  // eval mode with running statistics disagrees as well
  }
  EXPECT_NO_THROW((void)sync.module().infer(x));  // the module itself is intact
  SyncBatchNorm1d agreed(common);
  expect_valid_step(agreed);
}

}  // namespace bn1d::dist_test
