// Masked BatchNorm1d (ValidPositions: lengths or an (N, L) mask) against the plain module run on
// the packed valid values, gathered by hand into a (count, C) batch: outputs and input gradients
// at the valid positions (0 at the padding), running statistics, num_batches_tracked and
// parameter gradients; train, eval and infer; every option; errors that change nothing; the
// functional forms; bitwise identical results across thread counts.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <bn1d/bn1d.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace bn1d::test {
namespace {

/// The valid positions of an (N, C, L) batch as the test sees them (a row-major (N, L) 0/1 mask)
/// and the ValidPositions built from the same description.
struct Valid {
  int64_t N = 0, L = 0;
  std::vector<uint8_t> mask;
  ValidPositions positions;
  int64_t count() const { return std::count(mask.begin(), mask.end(), uint8_t{1}); }
};

Valid from_lengths(const std::vector<int64_t>& lengths, int64_t L) {
  Valid v{static_cast<int64_t>(lengths.size()), L, {}, ValidPositions::from_lengths(lengths)};
  v.mask.assign(static_cast<std::size_t>(v.N * L), 0);
  for (int64_t n = 0; n < v.N; ++n)
    for (int64_t l = 0; l < lengths[n]; ++l) v.mask[n * L + l] = 1;
  return v;
}

Valid from_mask(const std::vector<uint8_t>& mask, int64_t N, int64_t L) {
  return {N, L, mask, ValidPositions::from_mask(std::span<const uint8_t>(mask), N, L)};
}

/// An (N, L) mask with holes: a seeded pattern with about 2/3 valid, one row all valid and one
/// row (if N > 2) all padding.
std::vector<uint8_t> holes(int64_t N, int64_t L, uint64_t seed) {
  const std::vector<double> r = values(randn({N, L}, DType::Float64, seed));
  std::vector<uint8_t> mask(r.size());
  for (std::size_t i = 0; i < r.size(); ++i) mask[i] = r[i] > -0.43 ? 1 : 0;
  for (int64_t l = 0; l < L; ++l) {
    mask[l] = 1;
    if (N > 2) mask[2 * L + l] = 0;
  }
  return mask;
}

/// The valid values of logical (N, C, L) values @p x, packed as a row-major (count, C) batch in
/// (n, l) order.
std::vector<double> pack(const std::vector<double>& x, int64_t C, const Valid& v) {
  std::vector<double> packed;
  for (int64_t n = 0; n < v.N; ++n)
    for (int64_t l = 0; l < v.L; ++l)
      if (v.mask[n * v.L + l])
        for (int64_t c = 0; c < C; ++c) packed.push_back(x[(n * C + c) * v.L + l]);
  return packed;
}

/// The inverse of pack(): (N, C, L) values, the packed rows at the valid positions, 0 elsewhere.
std::vector<double> unpack(const std::vector<double>& packed, int64_t C, const Valid& v) {
  std::vector<double> x(static_cast<std::size_t>(v.N * C * v.L), 0.0);
  std::size_t k = 0;
  for (int64_t n = 0; n < v.N; ++n)
    for (int64_t l = 0; l < v.L; ++l)
      if (v.mask[n * v.L + l])
        for (int64_t c = 0; c < C; ++c) x[(n * C + c) * v.L + l] = packed[k++];
  return x;
}

/// Random logical values with a per-channel offset and scale, exact in @p dtype.
std::vector<double> input_values(const Shape& sizes, DType dtype, uint64_t seed) {
  std::vector<double> v = values(randn(sizes, DType::Float64, seed));
  const int64_t C = sizes[1], L = sizes[2];
  for (std::size_t i = 0; i < v.size(); ++i) {
    const auto c = static_cast<double>((static_cast<int64_t>(i) / L) % C);
    v[i] = v[i] * (0.5 + 0.25 * c) + 2.0 - c;
  }
  return round_to(v, dtype);
}

/// @p got against @p want: float32/float64 within all_close's bound, 16-bit values within one
/// ulp of @p want (both sides round once from float64 statistics summed in different orders).
::testing::AssertionResult close_as(const std::vector<double>& got, const std::vector<double>& want,
                                    DType dtype) {
  if (dtype != DType::BFloat16 && dtype != DType::Float16) return all_close(got, want, dtype);
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "sizes differ";
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= ulp16(std::fabs(want[i]), dtype)))
      return ::testing::AssertionFailure()
             << "element " << i << ": got " << got[i] << ", want " << want[i];
  return ::testing::AssertionSuccess();
}

/// A masked result @p got ((N, C, L)) against the plain result on the packed values @p want
/// ((count, C)): close at the valid positions, exactly 0 at the padding.
void expect_masked(const Tensor& got, const Tensor& want, const Valid& v, const std::string& what) {
  ASSERT_TRUE(got.defined()) << what;
  const int64_t C = got.size(1);
  ASSERT_EQ(got.sizes(), (Shape{v.N, C, v.L})) << what;
  EXPECT_EQ(got.dtype(), want.dtype()) << what;
  const std::vector<double> g = values(got);
  EXPECT_TRUE(close_as(g, unpack(values(want), C, v), got.dtype())) << what;
  for (int64_t n = 0; n < v.N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t l = 0; l < v.L; ++l)
        if (!v.mask[n * v.L + l]) {
          ASSERT_EQ(g[(n * C + c) * v.L + l], 0.0)
              << what << ": pad (" << n << ", " << c << ", " << l << ")";
        }
}

/// Gives both modules the same non-trivial weight, bias and running statistics.
void set_state(BatchNorm1d& m, BatchNorm1d& ref, uint64_t seed) {
  const int64_t C = m.options().num_features();
  for (Tensor* t : {&m.weight(), &m.bias(), &m.running_mean(), &m.running_var()}) {
    if (!t->defined()) continue;
    const std::vector<double> r = values(randn({C}, DType::Float64, seed++));
    for (int64_t c = 0; c < C; ++c) {
      const double v = t == &m.weight()        ? 1.0 + 0.25 * r[c]
                       : t == &m.running_var() ? 1.5 + r[c] * r[c]
                                               : r[c];
      store_as(t->raw_data(), c, v, t->dtype());
    }
  }
  ref.load_state_dict(m.state_dict());
}

/// Everything observable about a module, to check that a failed call changed nothing.
std::vector<double> snapshot(const BatchNorm1d& m) {
  std::vector<double> s{static_cast<double>(m.num_batches_tracked())};
  for (const auto& [key, t] : m.state_dict())
    for (double v : values(t)) s.push_back(v);
  return s;
}

/// Two training steps, an eval step and infer() of a masked module against the plain module on
/// the packed values; outputs, gradients, running statistics and num_batches_tracked.
void run_against_packed(const BatchNorm1dOptions& options, DType input, Layout layout,
                        const Valid& v, int64_t C, uint64_t seed) {
  SCOPED_TRACE(std::string(dtype_name(input)) + " input, " + dtype_name(options.dtype()) +
               " module, " + layout_name(layout) + ", count " + std::to_string(v.count()));
  BatchNorm1d m(options), ref(options);
  set_state(m, ref, seed);
  const Shape sizes{v.N, C, v.L};
  for (int step = 0; step < 3; ++step) {
    const bool training = step < 2;
    m.train(training);
    ref.train(training);
    const std::string tag = (training ? "train step " : "eval step ") + std::to_string(step);
    const std::vector<double> x = input_values(sizes, input, seed + 10 + step);
    const std::vector<double> dy = input_values(sizes, input, seed + 20 + step);
    std::shared_ptr<std::vector<char>> kx, kdy;
    const Tensor xs = make_strided(x, sizes, input, layout, kx);
    const Tensor dys = make_strided(dy, sizes, input, layout, kdy);
    const Tensor xp = make_tensor(pack(x, C, v), {v.count(), C}, input);
    const Tensor dyp = make_tensor(pack(dy, C, v), {v.count(), C}, input);

    expect_masked(m.forward(xs, v.positions), ref.forward(xp), v, tag + " output");
    const BatchNorm1d::Gradients g = m.backward(dys), want = ref.backward(dyp);
    expect_masked(g.input, want.input, v, tag + " grad_input");
    if (options.affine()) {
      EXPECT_TRUE(all_close(g.weight, values(want.weight))) << tag << " grad_weight";
      EXPECT_TRUE(all_close(g.bias, values(want.bias))) << tag << " grad_bias";
    } else {
      EXPECT_FALSE(g.weight.defined());
    }
    if (options.track_running_stats()) {
      EXPECT_TRUE(all_close(m.running_mean(), values(ref.running_mean()))) << tag;
      EXPECT_TRUE(all_close(m.running_var(), values(ref.running_var()))) << tag;
    }
    EXPECT_EQ(m.num_batches_tracked(), ref.num_batches_tracked()) << tag;
    expect_masked(m.infer(xs, v.positions), ref.infer(xp), v, tag + " infer");
  }
}

/// The masks of the sweep for an (N, L) batch: lengths including 0 and L, and a mask with holes.
std::vector<Valid> sweep_masks(int64_t N, int64_t L, uint64_t seed) {
  std::vector<int64_t> lengths;
  for (int64_t n = 0; n < N; ++n) lengths.push_back(n == 0 ? L : n == 1 ? 0 : (n * 7) % (L + 1));
  return {from_lengths(lengths, L), from_mask(holes(N, L, seed), N, L)};
}

TEST(Masked, EqualsPackedBatchEveryDtypeAndLayout) {
  struct Config {
    DType input, param;
  };
  for (Config k : {Config{DType::Float32, DType::Float32}, Config{DType::Float64, DType::Float64},
                   Config{DType::BFloat16, DType::Float32}})
    for (Layout layout : {Layout::Contiguous, Layout::ChannelsLast})
      for (const Valid& v : sweep_masks(6, 37, 5))
        run_against_packed(BatchNorm1dOptions(11).dtype(k.param).momentum(0.3), k.input, layout, v,
                           11, 100);
}

TEST(Masked, EqualsPackedBatchEveryOption) {
  const BatchNorm1dOptions options[] = {
      BatchNorm1dOptions(16).momentum(std::nullopt),
      BatchNorm1dOptions(16).track_running_stats(false),
      BatchNorm1dOptions(16).affine(false).eps(1e-3),
  };
  for (const BatchNorm1dOptions& o : options)
    for (const Valid& v : sweep_masks(5, 9, 7))
      for (Layout layout : {Layout::Contiguous, Layout::ChannelsLast})
        run_against_packed(o, DType::Float32, layout, v, 16, 200);
}

TEST(Masked, FullLengthsEqualUnmaskedForward) {
  // Every position valid: the masked module is the plain module on the whole batch.
  const Valid v = from_lengths({8, 8, 8}, 8);
  BatchNorm1d m(5), ref(5);
  const Tensor x = randn({3, 5, 8}, DType::Float32, 3);
  EXPECT_TRUE(all_close(m.forward(x, v.positions), values(ref.forward(x))));
  EXPECT_TRUE(all_close(m.running_var(), values(ref.running_var())));
}

TEST(Masked, ValidPositionsDescribeTheirRuns) {
  const ValidPositions p = ValidPositions::from_lengths(std::vector<int64_t>{3, 0, 5});
  EXPECT_TRUE(p.from_lengths());
  EXPECT_EQ(p.batch_size(), 3);
  EXPECT_EQ(p.count(), 8);
  EXPECT_EQ(p.max_length(), 5);
  ASSERT_EQ(p.runs().size(), 2u);
  EXPECT_EQ(p.runs()[1].n, 2);
  EXPECT_EQ(p.runs()[1].length, 5);
  const std::unique_ptr<bool[]> mask(
      new bool[8]{true, false, true, true, false, false, false, true});
  const ValidPositions q = ValidPositions::from_mask(std::span<const bool>(mask.get(), 8), 2, 4);
  EXPECT_FALSE(q.from_lengths());
  EXPECT_EQ(q.length(), 4);
  EXPECT_EQ(q.count(), 4);
  ASSERT_EQ(q.runs().size(), 3u);  // (0, 0, 1), (0, 2, 2), (1, 3, 1)
  EXPECT_EQ(q.runs()[1].start, 2);
  EXPECT_EQ(q.runs()[1].length, 2);
  EXPECT_EQ(q.runs()[2].n, 1);
  EXPECT_EQ(q.runs()[2].start, 3);
}

TEST(Masked, BitwiseIdenticalAcrossThreadCounts) {
  // 24 x 32 x 301 values (about 60% valid): several of the kernels' 2^16-value grains, so that a
  // second thread takes part.
  const int saved = omp_get_max_threads();
  for (Layout layout : {Layout::Contiguous, Layout::ChannelsLast})
    for (const Valid& v : sweep_masks(24, 301, 9)) {
      SCOPED_TRACE(layout_name(layout));
      const Shape sizes{v.N, 32, v.L};
      std::shared_ptr<std::vector<char>> kx, kdy;
      const Tensor x =
          make_strided(input_values(sizes, DType::Float32, 1), sizes, DType::Float32, layout, kx);
      const Tensor dy =
          make_strided(input_values(sizes, DType::Float32, 2), sizes, DType::Float32, layout, kdy);
      std::vector<std::vector<double>> first;
      for (int threads : {1, 2}) {
        omp_set_num_threads(threads);
        BatchNorm1d m(32);
        const Tensor y = m.forward(x, v.positions);
        const BatchNorm1d::Gradients g = m.backward(dy);
        const std::vector<std::vector<double>> got = {
            values(y),       values(m.running_mean()), values(m.running_var()),
            values(g.input), values(g.weight),         values(g.bias)};
        if (first.empty()) first = got;
        for (std::size_t i = 0; i < got.size(); ++i)
          EXPECT_EQ(got[i], first[i]) << "threads " << threads << " result " << i;
      }
    }
  omp_set_num_threads(saved);
}

/// Runs @p call on a trained module and an output buffer, expecting an Error mentioning @p word,
/// and checks that neither the module nor the buffer changed.
template <class Call>
void expect_error_changes_nothing(const Call& call, const std::string& word) {
  BatchNorm1d m(3);
  m.forward(randn({4, 3, 6}, DType::Float32, 1), from_lengths({6, 2, 3, 1}, 6).positions);
  const std::vector<double> before = snapshot(m);
  Tensor out = Tensor::full({4, 3, 6}, 7.0);
  EXPECT_TRUE(throws_error([&] { call(m, out); }, word));
  EXPECT_EQ(snapshot(m), before) << word;
  EXPECT_EQ(values(out), std::vector<double>(72, 7.0)) << word;
}

TEST(Masked, BadPositionsAreErrorsThatChangeNothing) {
  EXPECT_TRUE(throws_error(
      [] {
        ValidPositions::from_lengths(std::vector<int64_t>{3, -1});
      },
      "lengths"));
  const std::vector<uint8_t> mask(12, 1);
  EXPECT_TRUE(throws_error([&] { ValidPositions::from_mask(mask, 4, 4); }, "mask"));
  EXPECT_TRUE(throws_error([&] { ValidPositions::from_mask(mask, -3, -4); }, "mask"));
  const Tensor x = randn({4, 3, 6}, DType::Float32, 2);
  // One length per sample: 3 or 5 lengths for N = 4.
  expect_error_changes_nothing(
      [&](BatchNorm1d& m, Tensor& out) {
        m.forward(x, out, from_lengths({6, 6, 6}, 6).positions);
      },
      "lengths");
  expect_error_changes_nothing(
      [&](BatchNorm1d& m, Tensor& out) {
        m.forward(x, out, from_lengths({6, 6, 6, 6, 6}, 6).positions);
      },
      "lengths");
  // A length above L.
  expect_error_changes_nothing(
      [&](BatchNorm1d& m, Tensor& out) {
        m.forward(x, out, from_lengths({6, 7, 1, 1}, 7).positions);
      },
      "lengths");
  // A mask of the wrong L or N.
  expect_error_changes_nothing(
      [&](BatchNorm1d& m, Tensor& out) {
        m.forward(x, out, from_mask(std::vector<uint8_t>(20, 1), 4, 5).positions);
      },
      "mask");
  expect_error_changes_nothing(
      [&](BatchNorm1d& m, Tensor& out) {
        m.forward(x, out, from_mask(std::vector<uint8_t>(30, 1), 5, 6).positions);
      },
      "mask");
  // A 2-D input.
  expect_error_changes_nothing(
      [&](BatchNorm1d& m, Tensor& out) {
        m.forward(randn({4, 3}), out, from_lengths({1, 1, 1, 1}, 1).positions);
      },
      "lengths");
}

TEST(Masked, TooFewValidValuesInTrainingAreErrorsThatChangeNothing) {
  const Tensor x = randn({4, 3, 6}, DType::Float32, 3);
  // No valid value at all: no statistics.
  expect_error_changes_nothing(
      [&](BatchNorm1d& m, Tensor& out) {
        m.forward(x, out, from_lengths({0, 0, 0, 0}, 6).positions);
      },
      "expected at least one valid position");
  // One valid value per channel: PyTorch's error for a (1, C) batch.
  expect_error_changes_nothing(
      [&](BatchNorm1d& m, Tensor& out) {
        m.forward(x, out, from_lengths({0, 1, 0, 0}, 6).positions);
      },
      "more than 1 value per channel");
  // In eval mode with running statistics the same batches are normalized.
  BatchNorm1d m(3);
  m.eval();
  const Valid one = from_lengths({0, 1, 0, 0}, 6);
  BatchNorm1d ref(3);
  ref.eval();
  const Tensor xp = make_tensor(pack(values(x), 3, one), {1, 3}, DType::Float32);
  expect_masked(m.forward(x, one.positions), ref.forward(xp), one, "eval, one value");
  const Tensor none = m.forward(x, from_lengths({0, 0, 0, 0}, 6).positions);
  EXPECT_EQ(values(none), std::vector<double>(72, 0.0));
}

TEST(Masked, FunctionalFormsEqualPackedBatch) {
  const Valid v = from_mask(holes(5, 13, 4), 5, 13);
  const int64_t C = 7;
  const std::vector<double> xv = input_values({5, C, 13}, DType::Float64, 11);
  const std::vector<double> dyv = input_values({5, C, 13}, DType::Float64, 12);
  const Tensor x = make_tensor(xv, {5, C, 13}, DType::Float64);
  const Tensor dy = make_tensor(dyv, {5, C, 13}, DType::Float64);
  const Tensor xp = make_tensor(pack(xv, C, v), {v.count(), C}, DType::Float64);
  const Tensor dyp = make_tensor(pack(dyv, C, v), {v.count(), C}, DType::Float64);
  const Tensor w = randn({C}, DType::Float64, 13), b = randn({C}, DType::Float64, 14);

  const BatchStats s = batch_stats(x, v.positions), sp = batch_stats(xp);
  EXPECT_EQ(s.count, v.count());
  EXPECT_TRUE(all_close(s.mean, values(sp.mean)));
  EXPECT_TRUE(all_close(s.m2, values(sp.m2)));

  const Normalization norm = normalization_from_batch(s, 1e-5);
  expect_masked(batch_norm_apply(x, norm, w, b, v.positions), batch_norm_apply(xp, norm, w, b), v,
                "batch_norm_apply");
  const GradStats gs = backward_stats(dy, x, norm, v.positions),
                  gsp = backward_stats(dyp, xp, norm);
  EXPECT_EQ(gs.count, v.count());
  EXPECT_TRUE(all_close(gs.sum_dy, values(gsp.sum_dy)));
  EXPECT_TRUE(all_close(gs.sum_dy_xmu, values(gsp.sum_dy_xmu)));
  expect_masked(batch_norm_backward_input(dy, x, norm, w, gs, true, v.positions),
                batch_norm_backward_input(dyp, xp, norm, w, gsp, true), v, "backward_input");
  const BatchNormGradients g = batch_norm_backward(dy, x, norm, w, true, true, v.positions);
  const BatchNormGradients gp = batch_norm_backward(dyp, xp, norm, w, true, true);
  expect_masked(g.input, gp.input, v, "batch_norm_backward");
  EXPECT_TRUE(all_close(g.weight, values(gp.weight)));
  EXPECT_TRUE(all_close(g.bias, values(gp.bias)));

  // batch_norm(): training updates the running statistics; eval uses them.
  for (bool training : {true, false}) {
    const Tensor rm = Tensor::full({C}, 0.5, DType::Float64),
                 rv = Tensor::full({C}, 2.0, DType::Float64);
    const Tensor rmp = rm.clone(), rvp = rv.clone();
    expect_masked(batch_norm(x, rm, rv, w, b, training, 0.2, 1e-4, v.positions),
                  batch_norm(xp, rmp, rvp, w, b, training, 0.2, 1e-4), v, "batch_norm");
    EXPECT_TRUE(all_close(rm, values(rmp)));
    EXPECT_TRUE(all_close(rv, values(rvp)));
  }
  const Valid none = from_lengths({0, 0, 0, 0, 0}, 13);
  EXPECT_TRUE(throws_error(
      [&] { batch_norm(x, Tensor(), Tensor(), w, b, true, 0.1, 1e-5, none.positions); },
      "expected at least one valid position"));
  EXPECT_TRUE(throws_error([&] { batch_stats(x, from_lengths({1, 2}, 13).positions); }, "lengths"));
}

}  // namespace
}  // namespace bn1d::test
