// SPDX-License-Identifier: MIT
// SyncBatchNorm1d under MPI: every rank builds the same global batch from a shared seed, keeps
// its own slice for the synchronized module and runs a single-process BatchNorm1d on the whole
// batch as the reference. Run with any number of ranks (ctest: 1 to 4).
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

namespace {

using bn1d::BatchNorm1d;
using bn1d::BatchNorm1dOptions;
using bn1d::DType;
using bn1d::Shape;
using bn1d::SyncBatchNorm1d;
using bn1d::Tensor;

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int world_size() {
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

/// Values of a float32/float64 tensor (contiguous or not) as float64, in logical order.
std::vector<double> values(const Tensor& t) {
  const Tensor c = t.contiguous();
  std::vector<double> v(static_cast<std::size_t>(c.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) {
    v[i] =
        c.dtype() == DType::Float32 ? static_cast<double>(c.data<float>()[i]) : c.data<double>()[i];
  }
  return v;
}

double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

/// The bound of the README: float64 within 1e-12, float32 within 8 half-ulps, both relative to
/// @p scale (default: the expected tensor's largest magnitude).
void expect_close(const std::vector<double>& actual, const std::vector<double>& expected,
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

Split make_split(std::vector<int64_t> n) {
  Split s;
  s.n = std::move(n);
  const auto r = static_cast<std::size_t>(world_rank());
  s.offset = std::accumulate(s.n.begin(), s.n.begin() + static_cast<std::ptrdiff_t>(r), int64_t{0});
  s.local = s.n[r];
  s.global = std::accumulate(s.n.begin(), s.n.end(), int64_t{0});
  return s;
}

/// Uneven sizes 2 + 3r; with 3 ranks or more, rank 1 holds an empty batch.
Split uneven_split() {
  std::vector<int64_t> n;
  for (int r = 0; r < world_size(); ++r) n.push_back(world_size() >= 3 && r == 1 ? 0 : 2 + 3 * r);
  return make_split(n);
}

Shape shape_of(int64_t N, int64_t C, int64_t L) { return L > 0 ? Shape{N, C, L} : Shape{N, C}; }

/// A global batch (the same on every rank) with channel-dependent offsets and scales.
Tensor global_batch(int64_t N, int64_t C, int64_t L, DType dtype, uint64_t seed) {
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
Tensor local_rows(const Tensor& global, const Split& s) {
  Shape sizes = global.sizes();
  sizes[0] = s.local;
  const int64_t row = global.numel() / std::max<int64_t>(global.sizes()[0], 1);
  auto* base = static_cast<char*>(global.raw_data()) +
               static_cast<std::size_t>(s.offset * row) * bn1d::element_size(global.dtype());
  return Tensor::from_blob(base, sizes, global.dtype());
}

/// Logical values of rows [offset, offset + local) of @p global.
std::vector<double> local_values(const Tensor& global, const Split& s) {
  const std::vector<double> all = values(global);
  const int64_t row = global.numel() / std::max<int64_t>(global.sizes()[0], 1);
  return {all.begin() + s.offset * row, all.begin() + (s.offset + s.local) * row};
}

/// Checks that @p t holds bitwise the same values on every rank.
void expect_identical_on_all_ranks(const Tensor& t, const std::string& what) {
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
std::vector<double> allreduce_sum(const std::vector<double>& v, bool magnitudes = false) {
  std::vector<double> in = v, out(v.size());
  if (magnitudes) {
    for (double& x : in) x = std::abs(x);
  }
  MPI_Allreduce(in.data(), out.data(), static_cast<int>(in.size()), MPI_DOUBLE, MPI_SUM,
                MPI_COMM_WORLD);
  return out;
}

/// Sets weight and bias of both modules to the same non-trivial values.
void set_affine(BatchNorm1d& ref, SyncBatchNorm1d& sync) {
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
/// single-process reference, comparing outputs, gradients and running statistics.
void compare_with_reference(const BatchNorm1dOptions& options, int64_t L, const Split& split,
                            int steps, uint64_t seed) {
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

    const Tensor y_ref = ref.forward(x);
    const BatchNorm1d::Gradients g_ref = ref.backward(gy);
    const Tensor y = sync.forward(local_rows(x, split));
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

struct Case {
  DType dtype;
  int64_t L;  // 0: (N, C) input
};

class SyncVsSingle : public ::testing::TestWithParam<Case> {};

TEST_P(SyncVsSingle, UnevenBatchesMatchSingleProcess) {
  const Case p = GetParam();
  compare_with_reference(BatchNorm1dOptions(5).dtype(p.dtype), p.L, uneven_split(), 3, 11);
}

TEST_P(SyncVsSingle, CumulativeMomentum) {
  const Case p = GetParam();
  compare_with_reference(BatchNorm1dOptions(4).dtype(p.dtype).momentum(std::nullopt).eps(1e-3), p.L,
                         uneven_split(), 3, 23);
}

TEST_P(SyncVsSingle, NoAffine) {
  const Case p = GetParam();
  compare_with_reference(BatchNorm1dOptions(3).dtype(p.dtype).affine(false), p.L, uneven_split(), 2,
                         37);
}

TEST_P(SyncVsSingle, NoRunningStatsSynchronizesInEvalToo) {
  const Case p = GetParam();
  compare_with_reference(BatchNorm1dOptions(6).dtype(p.dtype).track_running_stats(false), p.L,
                         uneven_split(), 2, 41);
}

TEST_P(SyncVsSingle, SingleValuePerChannelOnOneRank) {
  const Case p = GetParam();
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  // Rank 0 holds one row ((1, C) or (1, C, 1)): one value per channel on that rank.
  std::vector<int64_t> n(static_cast<std::size_t>(world_size()), 2);
  n[0] = 1;
  compare_with_reference(BatchNorm1dOptions(4).dtype(p.dtype), p.L > 0 ? 1 : 0, make_split(n), 3,
                         53);
}

INSTANTIATE_TEST_SUITE_P(Dist, SyncVsSingle,
                         ::testing::Values(Case{DType::Float32, 0}, Case{DType::Float32, 7},
                                           Case{DType::Float64, 0}, Case{DType::Float64, 7}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(bn1d::dtype_name(info.param.dtype)) +
                                  (info.param.L > 0 ? "_NCL" : "_NC");
                         });

TEST(SyncBatchNorm1d, ChannelsLastInput) {
  // (N, L, C) memory viewed as (N, C, L): any strides work on every rank.
  const Split s = uneven_split();
  const int64_t C = 3, L = 4;
  const Tensor x = global_batch(s.global, C, L, DType::Float64, 5);
  BatchNorm1d ref(BatchNorm1dOptions(C).dtype(DType::Float64));
  SyncBatchNorm1d sync(BatchNorm1dOptions(C).dtype(DType::Float64));
  const Tensor y_ref = ref.forward(x);
  // Copy this rank's rows into channels-last memory.
  std::vector<double> mem(static_cast<std::size_t>(s.local * C * L) + 1);
  const std::vector<double> mine = local_values(x, s);
  for (int64_t n = 0; n < s.local; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t l = 0; l < L; ++l)
        mem[static_cast<std::size_t>((n * L + l) * C + c)] =
            mine[static_cast<std::size_t>((n * C + c) * L + l)];
  const Tensor xl = Tensor::from_blob(mem.data(), {s.local, C, L}, {L * C, 1, C}, DType::Float64);
  expect_close(values(sync.forward(xl)), local_values(y_ref, s), DType::Float64, "channels-last",
               max_abs(values(y_ref)));
}

TEST(SyncBatchNorm1d, AllRanksEmptyChangesNothing) {
  SyncBatchNorm1d sync(4);
  const Tensor y = sync.forward(Tensor::zeros({0, 4}));
  EXPECT_EQ(y.sizes(), (Shape{0, 4}));
  EXPECT_EQ(sync.num_batches_tracked(), 0);
  const auto g = sync.backward(Tensor::zeros({0, 4}));
  EXPECT_EQ(g.input.sizes(), (Shape{0, 4}));
  EXPECT_EQ(values(g.bias), std::vector<double>(4, 0.0));
}

TEST(SyncBatchNorm1d, GlobalSingleValueIsAnErrorOnEveryRank) {
  // Rank 0 holds one value per channel, the others none: the global count is 1.
  SyncBatchNorm1d sync(4);
  const int64_t N = world_rank() == 0 ? 1 : 0;
  try {
    (void)sync.forward(Tensor::ones({N, 4}));
    ADD_FAILURE() << "no error on rank " << world_rank();
  } catch (const bn1d::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "Expected more than 1 value per channel when training, got 1 value per channel "
              "over all ranks (input size [" +
                  std::to_string(N) + ", 4] on this rank)");
  }
  EXPECT_EQ(sync.num_batches_tracked(), 0);
  EXPECT_EQ(values(sync.running_var()), std::vector<double>(4, 1.0));
}

/// Calls @p call, expecting bn1d::Error on every rank: @p own on rank @p bad, "rank <bad>
/// failed" on the others.
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

TEST(SyncBatchNorm1d, FourDimensionalInputOnOneRankFailsEverywhere) {
  const int bad = world_size() - 1;
  SyncBatchNorm1d sync(3);
  const Tensor good = bn1d::randn({4, 3});
  const Tensor wrong = bn1d::randn({2, 3, 2, 2});
  expect_error_everywhere([&] { (void)sync.forward(world_rank() == bad ? wrong : good); }, bad,
                          "expected 2D or 3D input (got 4D input)");
  EXPECT_EQ(sync.num_batches_tracked(), 0);
  // Nothing changed; the module keeps working.
  EXPECT_NO_THROW((void)sync.forward(good));
  EXPECT_EQ(sync.num_batches_tracked(), 1);
}

TEST(SyncBatchNorm1d, WrongChannelCountOnOneRankFailsEverywhere) {
  const int bad = 0;
  SyncBatchNorm1d sync(3);
  expect_error_everywhere(
      [&] {
        (void)sync.forward(bn1d::randn({4, world_rank() == bad ? 5 : 3}));
      },
      bad, "expected input with 3 channels (num_features), got 5 channels");
  EXPECT_EQ(values(sync.running_mean()), std::vector<double>(3, 0.0));
}

TEST(SyncBatchNorm1d, WrongDtypeOnOneRankFailsEverywhere) {
  const int bad = world_size() / 2;
  SyncBatchNorm1d sync(3);
  expect_error_everywhere(
      [&] {
        (void)sync.forward(
            bn1d::randn({4, 3}, world_rank() == bad ? DType::Float64 : DType::Float32));
      },
      bad, "expected a float32 input (the module's dtype), got float64");
}

// Running statistics a training forward would update in place may not be read-only: an Error
// on every rank before anything is written; in eval mode they are only read.
TEST(SyncBatchNorm1d, ReadOnlyRunningStatsOnOneRankFailEverywhere) {
  const int bad = 0;
  SyncBatchNorm1d sync(3);
  const std::vector<float> mean(3, 0.0f);
  if (world_rank() == bad) {
    sync.running_mean() = Tensor::from_blob(mean.data(), {3}, DType::Float32);
  }
  Tensor output = Tensor::full({4, 3}, 7.0);
  expect_error_everywhere(
      [&] {
        sync.forward(bn1d::randn({4, 3}), output);
      },
      bad, "running_mean: expected a writable tensor");
  EXPECT_EQ(sync.num_batches_tracked(), 0);
  EXPECT_EQ(values(output), std::vector<double>(12, 7.0));
  sync.eval();
  EXPECT_NO_THROW((void)sync.forward(bn1d::randn({4, 3})));
}

TEST(SyncBatchNorm1d, WrongGradShapeOnOneRankFailsEverywhere) {
  const int bad = world_size() - 1;
  SyncBatchNorm1d sync(3);
  (void)sync.forward(bn1d::randn({4, 3}, DType::Float32, 3));
  expect_error_everywhere(
      [&] {
        (void)sync.backward(Tensor::ones({world_rank() == bad ? 5 : 4, 3}));
      },
      bad, "grad_output");
  EXPECT_NO_THROW((void)sync.backward(Tensor::ones({4, 3})));
}

TEST(SyncBatchNorm1d, BackwardBeforeForwardFailsEverywhere) {
  // Every rank must make the same collective calls, so no rank may have run a forward here.
  SyncBatchNorm1d sync(3);
  expect_error_everywhere(
      [&] {
        (void)sync.backward(Tensor::ones({4, 3}));
      },
      world_rank(), "SyncBatchNorm1d(3): backward called before forward");
}

TEST(SyncBatchNorm1d, ModeDisagreementFailsEverywhere) {
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  // Without running statistics eval mode synchronizes too, so the mismatch is seen.
  SyncBatchNorm1d sync(BatchNorm1dOptions(3).track_running_stats(false));
  sync.train(world_rank() != 1);
  try {
    (void)sync.forward(bn1d::randn({4, 3}));
    ADD_FAILURE() << "no error on rank " << world_rank();
  } catch (const bn1d::Error& e) {
    EXPECT_NE(std::string(e.what()).find("ranks disagree on the mode"), std::string::npos)
        << e.what();
  }
}

TEST(SyncBatchNorm1d, EvalWithRunningStatsMakesOnlyTheHeaderCollective) {
  // Every rank calls: eval forward/backward with running statistics exchange the header (so a
  // disagreement or an error is seen everywhere) and compute locally, as BatchNorm1d does.
  SyncBatchNorm1d sync(3);
  sync.eval();
  BatchNorm1d ref(3);
  ref.eval();
  const Tensor x = bn1d::randn({4, 3}, DType::Float32, 9 + static_cast<uint64_t>(world_rank()));
  EXPECT_EQ(values(sync.forward(x)), values(ref.forward(x)));
  EXPECT_EQ(values(sync.backward(Tensor::ones({4, 3})).input),
            values(ref.backward(Tensor::ones({4, 3})).input));
  // module().infer() is the collective-free way: only rank 0 calls, nothing waits for the others.
  if (world_rank() == 0) {
    EXPECT_EQ(values(sync.module().infer(x)), values(ref.infer(x)));
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// ---- Every promise under disagreement: every rank throws, no rank waits ---------------------

/// The rank that differs in the disagreement tests.
constexpr int kOdd = 1;

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
void expect_valid_step(SyncBatchNorm1d& sync) {
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
void expect_option_disagreement(const BatchNorm1dOptions& common, const BatchNorm1dOptions& odd,
                                const std::string& expected) {
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

TEST(SyncBatchNorm1dDisagreement, NumFeatures) {
  expect_option_disagreement(BatchNorm1dOptions(3), BatchNorm1dOptions(5),
                             "num_features (rank 0: 3, rank 1: 5)");
}

TEST(SyncBatchNorm1dDisagreement, NumFeaturesLarge) {
  // The per-channel records would differ by far more than the header: nothing is exchanged.
  expect_option_disagreement(BatchNorm1dOptions(2), BatchNorm1dOptions(4096),
                             "num_features (rank 0: 2, rank 1: 4096)");
}

TEST(SyncBatchNorm1dDisagreement, Dtype) {
  expect_option_disagreement(BatchNorm1dOptions(3), BatchNorm1dOptions(3).dtype(DType::Float64),
                             "the dtype (rank 0: float32, rank 1: float64)");
}

TEST(SyncBatchNorm1dDisagreement, Eps) {
  expect_option_disagreement(BatchNorm1dOptions(3), BatchNorm1dOptions(3).eps(1e-3),
                             "eps (rank 0: 1e-05, rank 1: 0.001)");
}

TEST(SyncBatchNorm1dDisagreement, Momentum) {
  expect_option_disagreement(BatchNorm1dOptions(3), BatchNorm1dOptions(3).momentum(std::nullopt),
                             "momentum (rank 0: 0.1, rank 1: None)");
  expect_option_disagreement(BatchNorm1dOptions(3), BatchNorm1dOptions(3).momentum(0.2),
                             "momentum (rank 0: 0.1, rank 1: 0.2)");
}

TEST(SyncBatchNorm1dDisagreement, Affine) {
  expect_option_disagreement(BatchNorm1dOptions(3), BatchNorm1dOptions(3).affine(false),
                             "affine (rank 0: true, rank 1: false)");
}

TEST(SyncBatchNorm1dDisagreement, TrackRunningStats) {
  expect_option_disagreement(BatchNorm1dOptions(3),
                             BatchNorm1dOptions(3).track_running_stats(false),
                             "track_running_stats (rank 0: true, rank 1: false)");
}

TEST(SyncBatchNorm1dDisagreement, TrainingVsEvalWithRunningStats) {
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  SyncBatchNorm1d sync(3);
  const Snapshot before(sync);
  const Tensor x = bn1d::randn({4, 3}, DType::Float32, 6);
  sync.train(world_rank() != kOdd);  // rank 1 evaluates, the others train
  expect_same_error_everywhere(
      [&] { (void)sync.forward(x); },
      "SyncBatchNorm1d: ranks disagree on the mode (rank 0: training, rank 1: eval with running "
      "statistics)");
  EXPECT_TRUE(Snapshot(sync) == before);
  sync.train(world_rank() == kOdd);  // and the other way round
  expect_same_error_everywhere(
      [&] { (void)sync.forward(x); },
      "SyncBatchNorm1d: ranks disagree on the mode (rank 0: eval with running statistics, rank 1: "
      "training)");
  EXPECT_TRUE(Snapshot(sync) == before);
  expect_valid_step(sync);
}

TEST(SyncBatchNorm1dDisagreement, ForwardVsBackward) {
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  SyncBatchNorm1d sync(3);
  const Tensor x = bn1d::randn({4, 3}, DType::Float32, 7 + static_cast<uint64_t>(world_rank()));
  (void)sync.forward(x);
  const Snapshot before(sync);
  // Rank 1 goes on to backward (a synchronized one), the others make another forward.
  expect_same_error_everywhere(
      [&] {
        if (world_rank() == kOdd) {
          (void)sync.backward(Tensor::ones({4, 3}));
        } else {
          (void)sync.forward(x);
        }
      },
      "SyncBatchNorm1d: ranks disagree on the call (rank 0: forward, rank 1: backward)");
  EXPECT_TRUE(Snapshot(sync) == before);
  EXPECT_NO_THROW((void)sync.backward(Tensor::ones({4, 3})));  // the first forward's backward
  expect_valid_step(sync);
}

TEST(SyncBatchNorm1dDisagreement, ExtraEvalForwardOnOneRank) {
  // Rank 1 makes an extra eval forward (with running statistics) before its backward; the
  // others go straight to backward.
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  SyncBatchNorm1d sync(3);
  const Tensor x = bn1d::randn({4, 3}, DType::Float32, 8 + static_cast<uint64_t>(world_rank()));
  (void)sync.forward(x);
  const Snapshot before(sync);
  expect_same_error_everywhere(
      [&] {
        if (world_rank() == kOdd) {
          sync.eval();
          (void)sync.forward(x);
        } else {
          (void)sync.backward(Tensor::ones({4, 3}));
        }
      },
      "SyncBatchNorm1d: ranks disagree on the call (rank 0: backward, rank 1: forward)");
  EXPECT_TRUE(Snapshot(sync) == before);
  sync.train();
  EXPECT_NO_THROW((void)sync.backward(Tensor::ones({4, 3})));  // still the training forward's
  expect_valid_step(sync);
}

TEST(SyncBatchNorm1dDisagreement, LocalVsSynchronizedBackward) {
  // Before any forward the mode decides: rank 1 (eval with running statistics) would run a local
  // backward, the others a synchronized one.
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  SyncBatchNorm1d sync(3);
  sync.train(world_rank() != kOdd);
  expect_same_error_everywhere(
      [&] {
        (void)sync.backward(Tensor::ones({4, 3}));
      },
      "SyncBatchNorm1d: ranks disagree on the backward (rank 0: synchronized, after a forward "
      "with batch statistics, rank 1: local, after a forward with running statistics)");
  expect_valid_step(sync);
}

TEST(SyncBatchNorm1dDisagreement, BackwardBeforeForwardOnOneRank) {
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  for (const bool training : {true, false}) {
    SyncBatchNorm1d sync(3);
    sync.train(training);
    const Snapshot before(sync);
    const Tensor x = bn1d::randn({4, 3}, DType::Float32, 9);
    expect_same_error_everywhere(
        [&] {
          if (world_rank() == kOdd) {
            (void)sync.backward(Tensor::ones({4, 3}));
          } else {
            (void)sync.forward(x);
          }
        },
        "SyncBatchNorm1d: ranks disagree on the call (rank 0: forward, rank 1: backward)");
    EXPECT_TRUE(Snapshot(sync) == before);
    expect_valid_step(sync);
  }
}

TEST(SyncBatchNorm1dDisagreement, InvalidInputOnOneRankInEval) {
  // Eval with running statistics computes locally, but an error on one rank is still raised on
  // every rank (it used to leave the others' next collective waiting).
  const int bad = world_size() - 1;
  SyncBatchNorm1d sync(3);
  sync.eval();
  const Snapshot before(sync);
  const Tensor good = bn1d::randn({4, 3});
  const Tensor wrong = bn1d::randn({2, 3, 2, 2});
  expect_error_everywhere([&] { (void)sync.forward(world_rank() == bad ? wrong : good); }, bad,
                          "expected 2D or 3D input (got 4D input)");
  EXPECT_TRUE(Snapshot(sync) == before);
  EXPECT_NO_THROW((void)sync.forward(good));
  // The local backward too: a wrong grad_output shape on one rank.
  expect_error_everywhere(
      [&] {
        (void)sync.backward(Tensor::ones({world_rank() == bad ? 5 : 4, 3}));
      },
      bad, "grad_output");
  EXPECT_NO_THROW((void)sync.backward(Tensor::ones({4, 3})));
  expect_valid_step(sync);
}

TEST(SyncBatchNorm1dDisagreement, InvalidInputOnOneRankInTraining) {
  const int bad = world_size() - 1;
  SyncBatchNorm1d sync(3);
  const Snapshot before(sync);
  expect_error_everywhere(
      [&] {
        (void)sync.forward(bn1d::randn({4, world_rank() == bad ? 4 : 3}));
      },
      bad, "expected input with 3 channels (num_features), got 4 channels");
  EXPECT_TRUE(Snapshot(sync) == before);
  expect_valid_step(sync);
}

TEST(SyncBatchNorm1dDisagreement, MovedFromModuleOnOneRank) {
  // Rank 1 (by mistake) calls the moved-from module while the others call theirs: every rank
  // throws instead of the others waiting. The moved-to module then works on every rank.
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  for (const bool training : {true, false}) {
    SyncBatchNorm1d sync(3);
    sync.train(training);
    std::optional<SyncBatchNorm1d> moved;
    if (world_rank() == kOdd) moved.emplace(std::move(sync));
    SyncBatchNorm1d& live = world_rank() == kOdd ? *moved : sync;
    const Tensor x = bn1d::randn({4, 3}, DType::Float32, 10);
    try {
      (void)sync.forward(x);  // the moved-from one on rank 1
      ADD_FAILURE() << "no error on rank " << world_rank();
    } catch (const bn1d::Error& e) {
      const std::string what = e.what();
      const std::string expected = world_rank() == kOdd
                                       ? "SyncBatchNorm1d: use of a moved-from module"
                                       : "SyncBatchNorm1d: rank 1 failed: it called a moved-from "
                                         "module";
      EXPECT_NE(what.find(expected), std::string::npos) << "rank " << world_rank() << ": " << what;
    }
    if (world_rank() == kOdd) {
      EXPECT_EQ(sync.comm(), MPI_COMM_NULL);
    }
    EXPECT_EQ(live.num_batches_tracked(), 0);
    expect_valid_step(live);
  }
}

TEST(SyncBatchNorm1d, StateDictCarriesTheSynchronizedCount) {
  SyncBatchNorm1d sync(3);
  for (int i = 0; i < 3; ++i) (void)sync.forward(bn1d::randn({4, 3}, DType::Float32, 100));
  const bn1d::StateDict state = sync.state_dict();
  EXPECT_EQ(*state.at("num_batches_tracked").data<int64_t>(), 3);
  EXPECT_EQ(sync.module().num_batches_tracked(), 3);  // one count, kept by the shared step
  SyncBatchNorm1d other(3);
  other.load_state_dict(state);
  EXPECT_EQ(other.num_batches_tracked(), 3);
  EXPECT_EQ(values(other.running_mean()), values(sync.running_mean()));
  other.reset_running_stats();
  EXPECT_EQ(other.num_batches_tracked(), 0);
  // Move-only: the moved-to module keeps the communicator and the state.
  SyncBatchNorm1d moved(std::move(sync));
  EXPECT_EQ(moved.num_batches_tracked(), 3);
  EXPECT_NO_THROW((void)moved.forward(bn1d::randn({4, 3})));
  EXPECT_EQ(moved.num_batches_tracked(), 4);
}

TEST(SyncBatchNorm1d, SelfCommunicatorIsALocalBatchNorm) {
  // A world of one: no collective, identical to BatchNorm1d on the local batch.
  SyncBatchNorm1d sync(BatchNorm1dOptions(3).dtype(DType::Float64), MPI_COMM_SELF);
  BatchNorm1d ref(BatchNorm1dOptions(3).dtype(DType::Float64));
  const Tensor x = bn1d::randn({5, 3, 2}, DType::Float64, 77 + static_cast<uint64_t>(world_rank()));
  expect_close(values(sync.forward(x)), values(ref.forward(x)), DType::Float64, "self");
  expect_close(values(sync.running_var()), values(ref.running_var()), DType::Float64, "self var");
}

TEST(SyncBatchNorm1dDisagreement, MovedFromModuleOnEveryRank) {
  // Any number of ranks, MPI_COMM_SELF included: a moved-from module throws, nothing waits.
  for (MPI_Comm comm : {MPI_COMM_WORLD, MPI_COMM_SELF}) {
    SyncBatchNorm1d sync(3, comm);
    SyncBatchNorm1d moved(std::move(sync));
    expect_same_error_everywhere(
        [&] {
          (void)sync.forward(bn1d::randn({4, 3}));
        },
        "SyncBatchNorm1d: use of a moved-from module");
    expect_same_error_everywhere(
        [&] {
          (void)sync.backward(Tensor::ones({4, 3}));
        },
        "SyncBatchNorm1d: use of a moved-from module");
    EXPECT_EQ(sync.comm(), MPI_COMM_NULL);
    EXPECT_NE(moved.comm(), MPI_COMM_NULL);
    EXPECT_NO_THROW((void)moved.forward(bn1d::randn({4, 3})));
    EXPECT_EQ(moved.num_batches_tracked(), 1);
  }
}

/// Prints the failures of a rank other than 0 (whose progress output is silenced).
class FailurePrinter : public ::testing::EmptyTestEventListener {
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (result.failed()) {
      std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", world_rank(),
                   result.file_name() ? result.file_name() : "?", result.line_number(),
                   result.summary());
    }
  }
};

/// Turns a hang into a failure: a test running longer than BN1D_DIST_TEST_SECONDS (default 60)
/// ends this process with status 124, naming the test; mpirun then ends the other ranks.
class HangWatchdog : public ::testing::EmptyTestEventListener {
 public:
  HangWatchdog() {
    const char* env = std::getenv("BN1D_DIST_TEST_SECONDS");
    seconds_ = env ? static_cast<unsigned>(std::strtoul(env, nullptr, 10)) : 60u;
    std::signal(SIGALRM, &HangWatchdog::on_alarm);
  }

 private:
  static void on_alarm(int) {
    // Async-signal-safe: write(2) and _exit(2) only.
    ssize_t ignored = write(2, message_, std::strlen(message_));
    (void)ignored;
    _exit(124);
  }
  void OnTestStart(const ::testing::TestInfo& info) override {
    std::snprintf(message_, sizeof message_, "[rank %d] hang: %s.%s ran past its time limit\n",
                  world_rank(), info.test_suite_name(), info.name());
    alarm(seconds_);
  }
  void OnTestEnd(const ::testing::TestInfo&) override { alarm(0); }

  unsigned seconds_ = 60;
  static inline char message_[512] = {};
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  if (world_rank() != 0) {
    // Only rank 0 prints progress; failures on other ranks still print.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter);
  }
  ::testing::UnitTest::GetInstance()->listeners().Append(new HangWatchdog);
  int result = RUN_ALL_TESTS();
  int any = 0;
  MPI_Allreduce(&result, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any;
}
