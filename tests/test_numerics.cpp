// Numerical stress (float32 against a float64 reference on the same float32 inputs): offset data
// where the naive E[x²] − E[x]² fails, constant channels at huge magnitudes, huge and tiny values,
// NaN/inf confined to their channel, and reductions past float32's 2^24 counting limit.
#include <gtest/gtest.h>

#include <bn1d/bn1d.hpp>
#include <cmath>
#include <limits>
#include <random>

#include "format.hpp"
#include "kernels/blocking.hpp"
#include "reference_model.hpp"
#include "test_util.hpp"

namespace bn1d::test {
namespace {

constexpr int64_t kN = 499, kL = 16;  // a count that is not a power of two
// Contiguous takes the SIMD rows kernel, channels-last the SIMD cols kernel, sliced the reference.
constexpr Layout kLayouts[] = {Layout::Contiguous, Layout::ChannelsLast, Layout::Sliced};

// A float32 (kN, C, kL) tensor of @p x in @p layout (memory kept alive by @p keep).
Tensor input(const std::vector<double>& x, int64_t C, Layout layout,
             std::shared_ptr<std::vector<char>>& keep) {
  return make_strided(x, {kN, C, kL}, DType::Float32, layout, keep);
}

// (kN, C, kL) float32-representable values: channel c = means[c] + stds[c] · N(0, 1).
std::vector<double> channels(const std::vector<double>& means, const std::vector<double>& stds,
                             uint64_t seed) {
  const auto C = static_cast<int64_t>(means.size());
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal;
  std::vector<double> x(static_cast<std::size_t>(kN * C * kL));
  for (int64_t n = 0; n < kN; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t l = 0; l < kL; ++l) x[(n * C + c) * kL + l] = means[c] + stds[c] * normal(gen);
  return round_to(x, DType::Float32);
}

// Training-mode output of bn1d (float32) and of the float64 reference, for the same inputs.
std::pair<std::vector<double>, std::vector<double>> normalize_both(const std::vector<double>& x,
                                                                   int64_t C, Layout layout,
                                                                   double eps = 1e-5) {
  BatchNorm1d m(BatchNorm1dOptions(C).eps(eps));
  ReferenceBatchNorm ref(C, eps, 0.1, true, true);
  std::shared_ptr<std::vector<char>> keep;
  return {values(m(input(x, C, layout, keep))), ref.forward(x, kN, kL)};
}

// What a naive kernel does: float32 accumulators and var = E[x²] − E[x]².
std::vector<double> naive_normalize(const std::vector<double>& x, int64_t C, double eps) {
  std::vector<double> y(x.size());
  for (int64_t c = 0; c < C; ++c) {
    float s = 0, sq = 0;
    for (int64_t n = 0; n < kN; ++n)
      for (int64_t l = 0; l < kL; ++l) {
        const auto v = static_cast<float>(x[(n * C + c) * kL + l]);
        s += v;
        sq += v * v;
      }
    const float mean = s / (kN * kL), var = std::max(sq / (kN * kL) - mean * mean, 0.0f);
    for (int64_t n = 0; n < kN; ++n)
      for (int64_t l = 0; l < kL; ++l) {
        const int64_t i = (n * C + c) * kL + l;
        y[i] = (static_cast<float>(x[i]) - mean) / std::sqrt(var + static_cast<float>(eps));
      }
  }
  return y;
}

double max_error(const std::vector<double>& got, const std::vector<double>& want) {
  double e = 0;
  for (std::size_t i = 0; i < got.size(); ++i) e = std::max(e, std::fabs(got[i] - want[i]));
  return e;
}

// Per-channel mean 1e4 or 1e6 with std 1e-3 … 1: bn1d stays within the suite's float32 bound
// (8 half-ulps of the largest output, rel_tolerance in test_util.hpp) where the naive formula is
// off by orders of magnitude on the same data.
TEST(Numerics, OffsetDataNormalizesAccuratelyWhereTheNaiveFormulaFails) {
  for (double offset : {1e4, 1e6}) {
    const std::vector<double> means(4, offset), stds{1e-3, 1e-2, 1e-1, 1.0};
    const std::vector<double> x = channels(means, stds, 1);
    std::vector<double> want;
    for (Layout layout : kLayouts) {
      const auto [got, ref] = normalize_both(x, 4, layout);
      EXPECT_TRUE(all_close(got, ref, DType::Float32))
          << "offset " << offset << " " << layout_name(layout);
      want = ref;
    }
    const double bound = rel_tolerance(DType::Float32) * max_abs(want);
    EXPECT_GT(max_error(naive_normalize(x, 4, 1e-5), want), 1000 * bound) << "offset " << offset;
  }
}

// float32 sums of a constant are exact in float64 anyway; float64 constants with full 53-bit
// mantissas (0.1, 1e30 / 3) need the blocks' shifted sums to come out exactly constant.
TEST(Numerics, ConstantChannelsNormalizeToExactlyZero) {
  for (DType dtype : {DType::Float32, DType::Float64})
    for (double eps : {1e-5, 0.0})
      for (Layout layout : kLayouts) {
        SCOPED_TRACE(std::string(dtype_name(dtype)) + " " + layout_name(layout) + " eps " +
                     python_float_repr(eps));
        const std::vector<double> means{1e7 + 0.1, 1e30 / 3, -1e30, 3e38, 0.1, 1.0},
            stds{0, 0, 0, 0, 0, 1};
        std::vector<double> x = channels(means, stds, 2);
        if (dtype == DType::Float64) {
          for (std::size_t i = 0; i < x.size(); ++i) {
            if ((i / kL) % 6 < 5) x[i] = means[(i / kL) % 6];
          }
        }
        BatchNorm1d m(BatchNorm1dOptions(6).eps(eps).dtype(dtype));
        std::shared_ptr<std::vector<char>> keep;
        const std::vector<double> y = values(m(make_strided(x, {kN, 6, kL}, dtype, layout, keep)));
        for (std::size_t i = 0; i < y.size(); ++i) {
          if ((i / kL) % 6 < 5) {
            ASSERT_EQ(y[i], 0.0) << "element " << i;
          }
        }
        for (double v : values(m.running_var())) EXPECT_TRUE(std::isfinite(v));
        const auto g = m.backward(randn({kN, 6, kL}, dtype, 3));
        for (double v : values(g.input)) ASSERT_FALSE(std::isnan(v));
      }
}

TEST(Numerics, HugeAndTinyValuesStayFiniteAndAccurate) {
  // |x| ≈ 1e30 (squares overflow float32, not float64), 1e-30, and float32 denormals (1e-40)
  // with eps = 0: every channel still normalizes to the reference's values.
  const std::vector<double> means{0, 0, 0, 5}, stds{1e30, 1e-30, 1e-40, 1};
  const std::vector<double> x = channels(means, stds, 4);
  for (Layout layout : kLayouts) {
    const auto [got, want] = normalize_both(x, 4, layout, 0.0);
    for (double v : got) ASSERT_TRUE(std::isfinite(v)) << layout_name(layout);
    EXPECT_TRUE(all_close(got, want, DType::Float32)) << layout_name(layout);
  }
}

TEST(Numerics, NaNAndInfStayInTheirChannel) {
  for (double bad :
       {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()})
    for (Layout layout : kLayouts) {
      SCOPED_TRACE(layout_name(layout));
      std::vector<double> x = channels({1, 2, 3}, {1, 1, 1}, 5);
      const std::vector<double> clean = x;
      x[(7 * 3 + 1) * kL + 2] = bad;  // one value of channel 1
      BatchNorm1d m(3), m_clean(3);
      std::shared_ptr<std::vector<char>> k1, k2;
      const std::vector<double> y = values(m(input(x, 3, layout, k1)));
      const std::vector<double> y_clean = values(m_clean(input(clean, 3, layout, k2)));
      for (std::size_t i = 0; i < y.size(); ++i) {
        if ((i / kL) % 3 == 1) {
          ASSERT_TRUE(std::isnan(y[i])) << i;
        } else {
          ASSERT_NEAR(y[i], y_clean[i], rel_tolerance(DType::Float32) * 8) << i;
        }
      }
      const std::vector<double> rv = values(m.running_var()),
                                rv_clean = values(m_clean.running_var());
      EXPECT_TRUE(std::isnan(rv[1]));
      EXPECT_EQ(rv[0], rv_clean[0]);
      EXPECT_EQ(rv[2], rv_clean[2]);
    }
}

// 2^24 + 1 values in one channel: a float32 accumulator stalls at 2^24; bn1d's mean and M2 keep
// full float64 precision, in both layouts.
TEST(Numerics, ReductionsPastTwoToTheTwentyFourKeepFullPrecision) {
  const int64_t n = (int64_t{1} << 24) + 1;
  std::vector<float> data(static_cast<std::size_t>(n), 1.0f);
  data[0] = 2.0f;
  const long double mean = 1.0L + 1.0L / n;
  const long double m2 = (2.0L - mean) * (2.0L - mean) + (n - 1) * (1.0L - mean) * (1.0L - mean);
  for (const Shape& shape : {Shape{1, 1, n}, Shape{n, 1}}) {
    const BatchStats s = batch_stats(Tensor::from_blob(data.data(), shape, DType::Float32));
    EXPECT_EQ(s.count, n);
    EXPECT_NEAR(s.mean.data<double>()[0], static_cast<double>(mean), 1e-15) << format_shape(shape);
    EXPECT_NEAR(s.m2.data<double>()[0], static_cast<double>(m2), 1e-9) << format_shape(shape);
  }
  float naive = 0;
  for (float v : data) naive += v;
  EXPECT_GT(std::fabs(naive / static_cast<float>(n) - static_cast<double>(mean)),
            1e-8);  // the stall
}

// float64 statistics, worst case for the shifted one-pass block sums of the cols kernel (each
// block sums d = x − x₀ and d², x₀ its first row, then M2 = Σd² − (Σd)²/n): std 1e-3 and, in half
// of the channels, an outlier 50 std away as the very first value, so that Σd² is ~40× M2.
// Every layout (rows kernel, cols kernel, reference) keeps M2 to 1e-12 relative against a long
// double two-pass computation. (The mean is 1 here: with means far larger than the std, every
// float64 method loses precision with the rounding of the mean itself, ~ulp(mean) / std.)
TEST(Numerics, Float64ShiftedBlockSumsKeepFullPrecisionInEveryLayout) {
  constexpr int64_t N = 1000, C = 8;
  std::mt19937_64 gen(7);
  std::normal_distribution<double> noise(0.0, 1e-3);
  std::vector<double> rows(N * C);  // (N, C) row-major
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      rows[n * C + c] = 1.0 + (n == 0 && c % 2 == 0 ? 50e-3 : noise(gen));
  std::vector<long double> mean(C, 0.0L), m2(C, 0.0L);
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t n = 0; n < N; ++n) mean[c] += rows[n * C + c];
    mean[c] /= N;
    for (int64_t n = 0; n < N; ++n)
      m2[c] += (rows[n * C + c] - mean[c]) * (rows[n * C + c] - mean[c]);
  }
  std::vector<double> cols(N * C);  // the same values, column-major (reference kernel)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) cols[c * N + n] = rows[n * C + c];
  const Tensor layouts[] = {Tensor::from_blob(rows.data(), {N, C}, DType::Float64),
                            Tensor::from_blob(cols.data(), {N, C}, {1, N}, DType::Float64),
                            Tensor::from_blob(rows.data(), {N, C, 1}, {C, 1, 1}, DType::Float64)};
  for (const Tensor& x : layouts) {
    SCOPED_TRACE(format_shape(x.sizes()) + " strides " + format_shape(x.strides()));
    const BatchStats s = batch_stats(x);
    for (int64_t c = 0; c < C; ++c) {
      const double want = static_cast<double>(m2[c]);
      EXPECT_NEAR(s.m2.data<double>()[c], want, 1e-12 * want) << "channel " << c;
      EXPECT_NEAR(s.mean.data<double>()[c], static_cast<double>(mean[c]), 1e-15);
    }
  }
}

// Float32 rows-layout blocks are reduced in one pass of values shifted by the block's first value
// (docs/math.md). With that first value an outlier the cancellation is at its worst, yet bounded
// by log2(n + 1) of float64's bits: M2 agrees with a long double model to 1e-10 (float32 needs
// 6e-8). An unshifted one-pass sum (Σx² − n·mean²) of this data (offset 1000, std 0.01) loses
// about 33 bits and fails; so does a shift by anything far from the block's values.
TEST(Numerics, Float32RowsShiftedBlocksKeepFloat64PrecisionWithOutliersFirst) {
  using kernels::kBlock;
  struct Shape {
    int64_t N, C, L;
  };
  // Long rows: blocks are pieces of kBlock values of a row. Short rows: kBlock / L whole rows.
  for (const Shape sh : {Shape{3, 4, 2 * kBlock + 100}, Shape{200, 4, 100}}) {
    const int64_t N = sh.N, C = sh.C, L = sh.L;
    SCOPED_TRACE(format_shape({N, C, L}));
    const int64_t rows_per_block = L >= kBlock ? 1 : kBlock / L;
    std::mt19937_64 gen(11);
    std::normal_distribution<double> noise(0.0, 1e-2);
    std::vector<float> x(static_cast<std::size_t>(N * C * L));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t l = 0; l < L; ++l) {
          const bool first_of_block = l % kBlock == 0 && n % rows_per_block == 0;
          x[(n * C + c) * L + l] =
              static_cast<float>(first_of_block ? 1001.0 : 1000.0 + noise(gen));
        }
    const BatchStats s = batch_stats(Tensor::from_blob(x.data(), {N, C, L}, DType::Float32));
    for (int64_t c = 0; c < C; ++c) {
      long double mean = 0.0L, m2 = 0.0L;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t l = 0; l < L; ++l) mean += x[(n * C + c) * L + l];
      mean /= static_cast<long double>(N * L);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t l = 0; l < L; ++l) {
          const long double d = x[(n * C + c) * L + l] - mean;
          m2 += d * d;
        }
      const auto want = static_cast<double>(m2);
      EXPECT_NEAR(s.m2.data<double>()[c], want, 1e-10 * want) << "channel " << c;
      EXPECT_NEAR(s.mean.data<double>()[c], static_cast<double>(mean), 1e-12) << "channel " << c;
    }
  }
}

}  // namespace
}  // namespace bn1d::test
