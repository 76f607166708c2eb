// The SIMD kernels against the scalar float64 reference oracle, on every compiled target and
// every layout; and results that are bitwise identical for any thread count.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <bn1d/bn1d.hpp>
#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "format.hpp"
#include "kernels/reference.hpp"
#include "kernels/simd.hpp"
#include "kernels/virtual_cols.hpp"
#include "route.hpp"
#include "test_util.hpp"
#include "validate.hpp"

namespace bn1d::test {
namespace {

namespace simd = kernels::simd;
namespace reference = kernels::reference;
namespace virtual_cols = kernels::virtual_cols;

kernels::View3 view_of(const Tensor& t) { return detail::input_view(t); }

// A case runs the SIMD kernels of simd_layout directly, or (via_route) the routing that users
// get, which walks short rows and narrow channels as a wide view of virtual channels.
struct KernelCase {
  Shape shape;
  Layout layout;
  simd::Layout simd_layout;
  bool via_route = false;
};

// Shapes that reach every code path: vector bodies and scalar tails, several statistics blocks
// and row pieces (L ≥ 4096), several partitions (of several pieces, some spanning two rows, with
// a short last piece: (2, 3, 40000)), a single channel; cols partitions that split the channels
// too (few rows, C ≥ 1024): one block in two channel parts (64, 1100), two equal blocks of 50 rows
// in three channel parts each (100, 2100), channels-last blocks of 33 and 32 rows, one spanning
// two n (5, 1030, 13); backward sums over channel tiles, the last one short (1024, 2100).
const DType kFloatDtypes[] = {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16};

const KernelCase kCases[] = {
    {{3, 4, 37}, Layout::Contiguous, simd::Layout::UnitStrideL},
    {{2, 3, 5000}, Layout::Contiguous, simd::Layout::UnitStrideL},
    {{2, 3, 40000}, Layout::Contiguous, simd::Layout::UnitStrideL},
    {{300, 2, 8}, Layout::Contiguous, simd::Layout::UnitStrideL},
    {{40, 3, 300}, Layout::Contiguous, simd::Layout::UnitStrideL},
    {{9, 7}, Layout::Contiguous, simd::Layout::UnitStrideC},
    {{5000, 3}, Layout::Contiguous, simd::Layout::UnitStrideC},
    {{700, 37}, Layout::Contiguous, simd::Layout::UnitStrideC},
    {{64, 1}, Layout::Contiguous, simd::Layout::UnitStrideC},
    {{3, 21, 35}, Layout::ChannelsLast, simd::Layout::UnitStrideC},
    {{40, 9, 70}, Layout::ChannelsLast, simd::Layout::UnitStrideC},
    {{64, 1100}, Layout::Contiguous, simd::Layout::UnitStrideC},
    {{100, 2100}, Layout::Contiguous, simd::Layout::UnitStrideC},
    {{5, 1030, 13}, Layout::ChannelsLast, simd::Layout::UnitStrideC},
    {{1024, 2100}, Layout::Contiguous, simd::Layout::UnitStrideC},
};

// Shapes the routing walks as virtual channels (kernels/virtual_cols.hpp): short rows as Runs,
// L = 3 (which no SIMD layout took before), 5, 20, and 37 (Runs for the reductions only); narrow
// or odd channel counts as Cycles, with rows left over ((1000, 13): 31 groups of 32 rows and 8
// more; (2000, 1); channels-last (300, 7, 9): 42 groups of 64 rows (n, l) and 12 more) or none
// ((4096, 13) in several partitions, (200, 100) in groups of 8 rows).
const KernelCase kVirtualCases[] = {
    {{6, 5, 3}, Layout::Contiguous, simd::Layout::UnitStrideL, true},
    {{64, 100, 5}, Layout::Contiguous, simd::Layout::UnitStrideL, true},
    {{33, 9, 20}, Layout::Contiguous, simd::Layout::UnitStrideL, true},
    {{70, 9, 37}, Layout::Contiguous, simd::Layout::UnitStrideL, true},
    {{1000, 13}, Layout::Contiguous, simd::Layout::UnitStrideC, true},
    {{4096, 13}, Layout::Contiguous, simd::Layout::UnitStrideC, true},
    {{200, 100}, Layout::Contiguous, simd::Layout::UnitStrideC, true},
    {{2000, 1}, Layout::Contiguous, simd::Layout::UnitStrideC, true},
    {{300, 7, 9}, Layout::ChannelsLast, simd::Layout::UnitStrideC, true},
};

// Reductions (float64 statistics and sums) must equal the oracle's to within a few float64
// rounding errors (they sum in different orders): |simd − ref| ≤ 1e-13 · max|ref|.
// The 16-bit dtypes: 1e-11, as their statistics blocks take one pass of shifted values
// (simd_rows-inl.h block_stats), which may lose log2(n + 1) ≈ 12 bits of M2 to cancellation
// (docs/math.md).
::testing::AssertionResult near(const std::vector<double>& got, const std::vector<double>& want,
                                DType dtype = DType::Float64) {
  const bool half = dtype == DType::BFloat16 || dtype == DType::Float16;
  const double bound = (half ? 1e-11 : 1e-13) * std::max(max_abs(want), 1e-300);
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!(std::fabs(got[i] - want[i]) <= bound)) {
      return ::testing::AssertionFailure()
             << "element " << i << ": " << got[i] << " vs " << want[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// Elementwise outputs are computed in the input's dtype by the SIMD kernels (x − mean with the
// mean split in two, then fused multiply-adds) and in float64, rounded once, by the oracle:
// |simd − ref| ≤ 8 half-ulps of the dtype times terms[i], the sum of the magnitudes of the terms
// that make up element i.
// The 16-bit dtypes compute in float64 and round once, as the oracle does, so that elements
// differ by at most one unit in the last place (where the two float64 values straddle a rounding
// boundary), or by the float64 roundings of the terms where they cancel.
::testing::AssertionResult near_terms(const std::vector<double>& got,
                                      const std::vector<double>& want,
                                      const std::vector<double>& terms, DType dtype) {
  if (dtype == DType::BFloat16 || dtype == DType::Float16) {
    for (std::size_t i = 0; i < got.size(); ++i) {
      // One ulp, and a few float64 roundings of the terms where they cancel to (almost) 0.
      const double ulp = ulp16(std::max(std::fabs(got[i]), std::fabs(want[i])), dtype);
      const double slack = ulp + 4 * 0x1.0p-52 * terms[i];
      if (!(std::fabs(got[i] - want[i]) <= slack) && !(std::isnan(got[i]) && std::isnan(want[i])))
        return ::testing::AssertionFailure() << "element " << i << ": " << got[i] << " vs "
                                             << want[i] << " (more than one ulp apart)";
    }
    return ::testing::AssertionSuccess();
  }
  const double ulp = dtype == DType::Float32 ? 0x1.0p-23 : 0x1.0p-52;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!(std::fabs(got[i] - want[i]) <= 4 * ulp * terms[i])) {
      return ::testing::AssertionFailure() << "element " << i << ": " << got[i] << " vs " << want[i]
                                           << " (terms " << terms[i] << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

// A (N, C, L) view of every other n of a contiguous (2N, C, L) buffer: rows of (c, l) values
// that are contiguous within each n but further apart than C·L.
Tensor every_other_n(const Tensor& t, std::shared_ptr<std::vector<char>>& keep) {
  const Shape& s = t.sizes();
  const int64_t inner = s[1] * s[2];
  const std::size_t esize = element_size(t.dtype());
  keep = std::make_shared<std::vector<char>>(static_cast<std::size_t>(2 * s[0] * inner) * esize);
  for (int64_t n = 0; n < s[0]; ++n) {
    std::copy_n(static_cast<const char*>(t.raw_data()) + n * inner * static_cast<int64_t>(esize),
                inner * static_cast<int64_t>(esize),
                keep->data() + 2 * n * inner * static_cast<int64_t>(esize));
  }
  return Tensor::from_blob(keep->data(), s, {2 * inner, s[2], 1}, t.dtype());
}

// Per-channel coefficients of the elementwise kernels: y = (x − m)·scale + shift and
// dx = scale·dy + b·(x − m) + k.
struct Coefficients {
  std::vector<double> scale, shift, b, k;
  explicit Coefficients(std::size_t C) : scale(C), shift(C), b(C), k(C) {
    for (std::size_t c = 0; c < C; ++c) {
      scale[c] = 0.5 + static_cast<double>(c % 5);
      shift[c] = -1.0 + static_cast<double>(c % 3);
      b[c] = 0.25 * static_cast<double>(c % 4) - 0.3;
      k[c] = 0.1 * static_cast<double>(c % 7);
    }
  }
};

// Checks normalize and backward_input of case @p k (into contiguous outputs and outputs in the
// input's own layout) against the oracle, with the oracle's channel means @p mean.
void check_elementwise(const KernelCase& k, DType dtype, const Tensor& xt, const Tensor& gt,
                       const std::vector<double>& mean) {
  const kernels::View3 x = view_of(xt), dy = view_of(gt);
  const auto C = static_cast<std::size_t>(x.C);
  const auto numel = static_cast<std::size_t>(xt.numel());
  const Coefficients co(C);
  // Term magnitudes of each element: |x − m|·|s| + |shift| and |a·dy| + |b·(x − m)| + |k|.
  const std::vector<double> xs = values(xt), gs = values(gt);
  std::vector<double> y_terms(numel), dx_terms(numel);
  for (std::size_t i = 0; i < numel; ++i) {
    const std::size_t c = (i / static_cast<std::size_t>(x.L)) % C;
    const double xm = std::fabs(xs[i] - mean[c]);
    y_terms[i] = xm * std::fabs(co.scale[c]) + std::fabs(co.shift[c]);
    dx_terms[i] = std::fabs(co.scale[c] * gs[i]) + std::fabs(co.b[c]) * xm + std::fabs(co.k[c]);
  }
  std::shared_ptr<std::vector<char>> ky, kdx;
  const std::vector<double> zeros(numel, 0.0);
  const Tensor outputs[] = {Tensor::empty(k.shape, dtype),
                            make_strided(zeros, k.shape, dtype, k.layout, ky)};
  Tensor ry = Tensor::empty(k.shape, dtype);
  reference::normalize(detail::output_view(ry), x, mean.data(), co.scale.data(), co.shift.data());
  for (const Tensor& y : outputs) {
    if (k.via_route) {
      route::normalize(detail::output_view(y), x, mean.data(), co.scale.data(), co.shift.data());
    } else {
      ASSERT_TRUE(simd::layout_applies(k.simd_layout, detail::output_view(y)));
      simd::normalize(k.simd_layout, detail::output_view(y), x, mean.data(), co.scale.data(),
                      co.shift.data());
    }
    EXPECT_TRUE(near_terms(values(y), values(ry), y_terms, dtype));
  }
  Tensor rdx = Tensor::empty(k.shape, dtype);
  reference::backward_input(detail::output_view(rdx), dy, x, mean.data(), co.scale.data(),
                            co.b.data(), co.k.data());
  const Tensor grad_outputs[] = {Tensor::empty(k.shape, dtype),
                                 make_strided(zeros, k.shape, dtype, k.layout, kdx)};
  for (const Tensor& dx : grad_outputs) {
    if (k.via_route)
      route::backward_input(detail::output_view(dx), dy, x, mean.data(), co.scale.data(),
                            co.b.data(), co.k.data());
    else
      simd::backward_input(k.simd_layout, detail::output_view(dx), dy, x, mean.data(),
                           co.scale.data(), co.b.data(), co.k.data());
    EXPECT_TRUE(near_terms(values(dx), values(rdx), dx_terms, dtype));
  }
}

// Checks every op of case @p k (through route.cpp for virtual-channel cases, else the SIMD
// layout) against the oracle, on offset data.
void check_case(const KernelCase& k, DType dtype, bool sliced_n = false) {
  SCOPED_TRACE(format_shape(k.shape) + " " + layout_name(k.layout) + " " + dtype_name(dtype) +
               (sliced_n ? " (every other n)" : ""));
  std::shared_ptr<std::vector<char>> kx, kg;
  std::vector<double> xv = values(randn(k.shape, DType::Float64, 1));
  for (std::size_t i = 0; i < xv.size(); ++i) xv[i] = 3.0 + 2.0 * xv[i];  // offset data
  Tensor xt = make_strided(xv, k.shape, dtype, k.layout, kx);
  Tensor gt = make_strided(values(randn(k.shape, DType::Float64, 2)), k.shape, dtype, k.layout, kg);
  std::shared_ptr<std::vector<char>> kxs, kgs;
  if (sliced_n) xt = every_other_n(xt, kxs), gt = every_other_n(gt, kgs);
  const kernels::View3 x = view_of(xt), dy = view_of(gt);
  if (k.via_route) {  // the case must reach the virtual views, at least for the reductions
    ASSERT_TRUE(virtual_cols::plan(x, virtual_cols::Op::Reduction));
  } else {
    ASSERT_TRUE(simd::layout_applies(k.simd_layout, x));
  }
  const auto C = static_cast<std::size_t>(x.C);

  std::vector<double> mean(C), m2(C), rmean(C), rm2(C);
  if (k.via_route)
    route::channel_stats(mean.data(), m2.data(), x);
  else
    simd::channel_stats(k.simd_layout, mean.data(), m2.data(), x);
  reference::channel_stats(rmean.data(), rm2.data(), x);
  EXPECT_TRUE(near(mean, rmean, dtype));
  EXPECT_TRUE(near(m2, rm2, dtype));

  std::vector<double> s(C), sx(C), rs(C), rsx(C);
  if (k.via_route)
    route::backward_sums(s.data(), sx.data(), dy, x, rmean.data());
  else
    simd::backward_sums(k.simd_layout, s.data(), sx.data(), dy, x, rmean.data());
  reference::backward_sums(rs.data(), rsx.data(), dy, x, rmean.data());
  EXPECT_TRUE(near(s, rs, dtype));
  EXPECT_TRUE(near(sx, rsx, dtype));

  check_elementwise(k, dtype, xt, gt, rmean);
}

TEST(Kernels, EveryTargetMatchesTheReferenceOracle) {
  const std::vector<std::string> targets = simd::targets();
  ASSERT_FALSE(targets.empty());
  for (const std::string& target : targets) {
    simd::force_target(target);
    EXPECT_EQ(simd::active_target(), target);
    SCOPED_TRACE("target " + target);
    for (const KernelCase& k : kCases)
      for (DType dtype : kFloatDtypes) check_case(k, dtype);
  }
  simd::force_target("");
  EXPECT_EQ(simd::active_target(), targets.front());
  std::cout << "[ targets  ] tested:";
  for (const std::string& t : targets) std::cout << " " << t;
  std::cout << "\n";
}

// Plans only look at shapes and strides: a view claiming 2^61 + 1 channels (no memory is read)
// is too wide for virtual channels, without overflowing on the way (UBSan checks it).
TEST(Kernels, VirtualChannelPlansOfHugeViewsAreNone) {
  const int64_t C = (int64_t{1} << 61) + 1;
  kernels::View3 v;
  v.N = 4, v.C = C, v.L = 1, v.sN = C, v.sC = 1, v.sL = 1;
  for (auto op : {virtual_cols::Op::Reduction, virtual_cols::Op::Elementwise})
    EXPECT_FALSE(virtual_cols::plan(v, op));
  v.N = 4, v.C = C, v.L = 3, v.sN = 3 * C, v.sC = 3, v.sL = 1;
  EXPECT_FALSE(virtual_cols::plan(v, virtual_cols::Op::Reduction));
}

TEST(Kernels, VirtualChannelsMatchTheReferenceOracleOnEveryTarget) {
  for (const std::string& target : simd::targets()) {
    simd::force_target(target);
    SCOPED_TRACE("target " + target);
    for (const KernelCase& k : kVirtualCases) {
      for (DType dtype : kFloatDtypes) {
        check_case(k, dtype);
        // Runs keep each n's row stride: rows further apart than C·L too.
        if (k.layout == Layout::Contiguous && k.shape.size() == 3) check_case(k, dtype, true);
      }
    }
  }
  simd::force_target("");
}

// Outputs of 16 MiB or more are written with non-temporal stores (best target, float64); in
// Layout::UnitStrideC only rows that start vector-aligned are (C = 16), the others not (C = 15),
// and the backward sums of such inputs walk one row at a time across the partition's channels; (64,
// 32769) walks them in 16 channel parts, the last one ragged. Streamed cols outputs take the
// parameters with the mean's low part as a column of its own, where outputs in cache fold it
// into the constant column (elementwise_params.hpp, folds_mean_lo): (4096, 1024) float32 streams
// both normalize and the input gradient.
TEST(Kernels, StreamingStoresMatchTheReferenceOracle) {
  check_case({{4096, 1024}, Layout::Contiguous, simd::Layout::UnitStrideC}, DType::Float32);
  check_case({{1, 3, 700001}, Layout::Contiguous, simd::Layout::UnitStrideL}, DType::Float64);
  check_case({{140001, 15}, Layout::Contiguous, simd::Layout::UnitStrideC}, DType::Float64);
  check_case({{131075, 16}, Layout::Contiguous, simd::Layout::UnitStrideC}, DType::Float64);
  check_case({{64, 32769}, Layout::Contiguous, simd::Layout::UnitStrideC}, DType::Float64);
  check_case({{1, 64, 131075}, Layout::Contiguous, simd::Layout::UnitStrideL}, DType::BFloat16);
  check_case({{524291, 16}, Layout::Contiguous, simd::Layout::UnitStrideC}, DType::Float16);
}

// 16-bit outputs of at least 16 MiB (streamed where the target's 16-bit vectors fill a
// non-temporal store: AVX-512; stored normally by AVX2 and older, whose are shorter) on every
// target, against the oracle: normalize and the input gradient, both layouts.
TEST(Kernels, SixteenBitStreamingSizesOnEveryTarget) {
  const struct {
    Shape shape;
    simd::Layout layout;
    DType dtype;
  } cases[] = {{{1, 64, 131075}, simd::Layout::UnitStrideL, DType::BFloat16},
               {{524291, 16}, simd::Layout::UnitStrideC, DType::Float16}};
  for (const auto& k : cases) {
    const Tensor x = randn(k.shape, k.dtype, 1), g = randn(k.shape, k.dtype, 2);
    const auto C = static_cast<std::size_t>(k.shape[1]);
    const Coefficients co(C);
    const std::vector<double> mean(C, 0.25);
    Tensor ry = Tensor::empty(k.shape, k.dtype), rdx = Tensor::empty(k.shape, k.dtype);
    reference::normalize(detail::output_view(ry), view_of(x), mean.data(), co.scale.data(),
                         co.shift.data());
    reference::backward_input(detail::output_view(rdx), view_of(g), view_of(x), mean.data(),
                              co.scale.data(), co.b.data(), co.k.data());
    const std::vector<double> want_y = values(ry), want_dx = values(rdx);
    const std::vector<double> xs = values(x), gs = values(g);
    std::vector<double> y_terms(xs.size()), dx_terms(xs.size());
    const auto L = static_cast<std::size_t>(k.shape.size() == 3 ? k.shape[2] : 1);
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const std::size_t c = (i / L) % C;
      const double xm = std::fabs(xs[i] - mean[c]);
      y_terms[i] = xm * std::fabs(co.scale[c]) + std::fabs(co.shift[c]);
      dx_terms[i] = std::fabs(co.scale[c] * gs[i]) + std::fabs(co.b[c]) * xm + std::fabs(co.k[c]);
    }
    for (const std::string& target : simd::targets()) {
      simd::force_target(target);
      SCOPED_TRACE("target " + target + " " + format_shape(k.shape));
      Tensor y = Tensor::empty(k.shape, k.dtype), dx = Tensor::empty(k.shape, k.dtype);
      simd::normalize(k.layout, detail::output_view(y), view_of(x), mean.data(), co.scale.data(),
                      co.shift.data());
      simd::backward_input(k.layout, detail::output_view(dx), view_of(g), view_of(x), mean.data(),
                           co.scale.data(), co.b.data(), co.k.data());
      EXPECT_TRUE(near_terms(values(y), want_y, y_terms, k.dtype));
      EXPECT_TRUE(near_terms(values(dx), want_dx, dx_terms, k.dtype));
    }
  }
  simd::force_target("");
}

// The kernels keep their per-channel parameters (in the input's dtype) between calls and rewrite
// only the values whose bits changed: a scale of +0, then −0, must flip the sign of the outputs
// (x − mean) · scale + shift with x > mean and shift = −0 (+0 + −0 = +0, −0 + −0 = −0).
TEST(Kernels, ParametersThatChangeOnlyTheSignOfZeroAreRewritten) {
  const struct {
    Shape shape;
    simd::Layout layout;
  } cases[] = {{{4, 21}, simd::Layout::UnitStrideC}, {{2, 3, 20}, simd::Layout::UnitStrideL}};
  for (const auto& k : cases) {
    for (DType dtype : {DType::Float32, DType::Float64}) {
      SCOPED_TRACE(format_shape(k.shape) + " " + dtype_name(dtype));
      const Tensor x = Tensor::full(k.shape, 2.0, dtype);
      const auto C = static_cast<std::size_t>(k.shape[1]);
      const std::vector<double> mean(C, 0.0), shift(C, -0.0);
      for (const double zero : {0.0, -0.0, 0.0}) {
        const std::vector<double> scale(C, zero);
        Tensor y = Tensor::full(k.shape, 1.0, dtype);
        simd::normalize(k.layout, detail::output_view(y), view_of(x), mean.data(), scale.data(),
                        shift.data());
        for (double v : values(y)) {
          ASSERT_EQ(v, 0.0);
          ASSERT_EQ(std::signbit(v), std::signbit(zero)) << "scale " << zero;
        }
      }
    }
  }
}

// invstd = 1 / sqrt(v / divisor + eps), 0 where that sum is 0, gives the oracle's bits on every
// target, in vector bodies and the tail, in place too: zero, denormal, huge, infinite and NaN
// values, with eps = 0 (0 → 0, not inf) and a divisor that underflows v / divisor.
TEST(Kernels, InvStdMatchesTheOracleBitwiseOnEveryTarget) {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> v = {0.0, 1.0,   2.0,    3.0, 1e-320, 5e-324, 1e300, inf, nan, 0.25,
                                 7.0, 1e-30, 123.45, 4.9, 0.0,    16.0,   1e-5,  3.3, 2.2};
  const auto C = static_cast<int64_t>(v.size());  // two AVX-512 vectors and a tail of 3
  auto same = [](double a, double b) {
    return (std::isnan(a) && std::isnan(b)) ||
           std::bit_cast<uint64_t>(a) == std::bit_cast<uint64_t>(b);
  };
  for (const std::string& target : simd::targets()) {
    simd::force_target(target);
    for (double divisor : {1.0, 3.0, 1e300}) {
      for (double eps : {0.0, 1e-5}) {
        SCOPED_TRACE("target " + target + " divisor " + std::to_string(divisor) + " eps " +
                     std::to_string(eps));
        std::vector<double> want(v.size()), got(v.size()), in_place = v;
        reference::invstd(want.data(), v.data(), divisor, eps, C);
        simd::invstd(got.data(), v.data(), divisor, eps, C);
        simd::invstd(in_place.data(), in_place.data(), divisor, eps, C);
        for (std::size_t i = 0; i < v.size(); ++i) {
          EXPECT_TRUE(same(got[i], want[i])) << i << ": " << got[i] << " vs " << want[i];
          EXPECT_TRUE(same(in_place[i], want[i])) << i;
        }
        EXPECT_EQ(want[0], eps == 0.0 ? 0.0 : 1.0 / std::sqrt(eps));  // the constant-channel rule
        EXPECT_EQ(want[1], 1.0 / std::sqrt(1.0 / divisor + eps));
      }
    }
  }
  simd::force_target("");
}

// Float64 values that probe one rounding to 16 bits: ties and their neighbours (bfloat16 1 +
// 2^-8, float16 1 + 2^-11), values that a rounding through float32 would round differently,
// the largest finite values and the thresholds to ±inf (bfloat16 just below FLT_MAX, float16
// 65504 / 65520), subnormals of both and float32 ones, signed zeros and values past float32's
// range. normalize(x = 1, mean = 0, scale = v, shift = −0) computes exactly v, which each
// target's store must round as the scalar oracle (half.hpp) does, bit for bit.
TEST(Kernels, SixteenBitOutputsRoundOnceOnEveryTarget) {
  std::vector<double> probes = {0.0,
                                -0.0,
                                1.0 + 0x1.0p-8,
                                1.0 + 0x1.0p-8 + 0x1.0p-40,
                                1.0 + 0x1.0p-8 - 0x1.0p-40,
                                1.0 + 3 * 0x1.0p-8,
                                1.0 + 0x1.0p-11,
                                1.0 + 0x1.0p-11 + 0x1.0p-40,
                                -(1.0 + 3 * 0x1.0p-11),
                                1.0 + 0x1.0p-8 + 0x1.0p-30,  // float32 would make this a tie
                                1.0 + 0x1.0p-11 + 0x1.0p-30,
                                65504.0,
                                65519.99,
                                65520.0,
                                -70000.0,
                                0x1.fep127,
                                0x1.ffp127,
                                0x1.fffffep127,
                                -0x1.0p128,
                                1e300,
                                0x1.0p-24,
                                0x1.8p-25,
                                0x1.0p-25,
                                0x1.0p-133,
                                0x1.8p-134,
                                0x1.0p-149,
                                1e-300,
                                -1e-300,
                                3.14159,
                                -2.71828};
  for (int i = 0; i < 40; ++i) probes.push_back(std::ldexp(1.0 + i / 64.0, i - 20));
  const auto C = static_cast<int64_t>(probes.size());
  const std::vector<double> mean(static_cast<std::size_t>(C), 0.0),
      shift(static_cast<std::size_t>(C), -0.0);
  for (const std::string& target : simd::targets()) {
    simd::force_target(target);
    for (DType dtype : {DType::BFloat16, DType::Float16}) {
      SCOPED_TRACE("target " + target + " " + dtype_name(dtype));
      for (const auto& [shape, layout] :
           {std::pair<Shape, simd::Layout>{{4, C}, simd::Layout::UnitStrideC},
            std::pair<Shape, simd::Layout>{{2, C, 19}, simd::Layout::UnitStrideL}}) {
        const Tensor x = Tensor::ones(shape, dtype);
        Tensor y = Tensor::zeros(shape, dtype);
        simd::normalize(layout, detail::output_view(y), view_of(x), mean.data(), probes.data(),
                        shift.data());
        const Tensor yc = y.contiguous();
        const auto* bits = static_cast<const uint16_t*>(yc.raw_data());
        const int64_t L = shape.size() == 3 ? shape[2] : 1;
        for (int64_t i = 0; i < yc.numel(); ++i) {
          const double v = probes[static_cast<std::size_t>((i / L) % C)];
          const uint16_t want = dtype == DType::BFloat16 ? to_bfloat16(v).bits : to_float16(v).bits;
          ASSERT_EQ(bits[i], want) << "value " << v << " at element " << i;
        }
      }
    }
  }
  simd::force_target("");
}

// Infinite and NaN inputs (quiet, signalling, with payloads, negative) normalized with scale 1
// come out as the scalar oracle widens and rounds them, bit for bit, on every target.
TEST(Kernels, SixteenBitInfAndNaNInputsKeepTheirBits) {
  const uint16_t bf16[] = {0x7F80, 0xFF80, 0x7FC0, 0xFFC0, 0x7FC1, 0x7F81, 0x3F80, 0x8000};
  const uint16_t f16[] = {0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7E01, 0x7C01, 0x3C00, 0x8000};
  const int64_t C = 8, N = 11;
  const std::vector<double> mean(C, 0.0), scale(C, 1.0), shift(C, -0.0);
  for (const std::string& target : simd::targets()) {
    simd::force_target(target);
    for (DType dtype : {DType::BFloat16, DType::Float16}) {
      SCOPED_TRACE("target " + target + " " + dtype_name(dtype));
      const uint16_t* codes = dtype == DType::BFloat16 ? bf16 : f16;
      Tensor x = Tensor::empty({N, C}, dtype), y = Tensor::zeros({N, C}, dtype);
      auto* xb = static_cast<uint16_t*>(x.raw_data());
      for (int64_t i = 0; i < N * C; ++i) xb[i] = codes[i % C];
      simd::normalize(simd::Layout::UnitStrideC, detail::output_view(y), view_of(x), mean.data(),
                      scale.data(), shift.data());
      const auto* yb = static_cast<const uint16_t*>(y.raw_data());
      for (int64_t i = 0; i < N * C; ++i) {
        const double v =
            dtype == DType::BFloat16 ? to_double(BFloat16{xb[i]}) : to_double(Float16{xb[i]});
        const uint16_t want = dtype == DType::BFloat16 ? to_bfloat16(v).bits : to_float16(v).bits;
        ASSERT_EQ(yb[i], want) << "input bits " << xb[i] << " at element " << i;
      }
    }
  }
  simd::force_target("");
}

TEST(Kernels, UnknownTargetIsAnError) {
  EXPECT_TRUE(
      throws_error([] { simd::force_target("NOT_A_TARGET"); }, "SIMD target \"NOT_A_TARGET\""));
}

// Outputs, running statistics and gradients for 1, 2, 3 and 8 threads, bitwise, in float32 and in
// float64 (whose outputs keep the float64 statistics' last bits, which float32 rounding can hide).
TEST(Kernels, ResultsAreBitwiseIdenticalForAnyThreadCount) {
  struct Big {
    Shape shape;
    Layout layout;
  };
  // (64, 4096), (100, 3000) and (4, 2100, 16): cols partitions split along channels too.
  // (8192, 320): the cols backward sums walk one row at a time at one thread and four rows at a
  // time at two or more (float32; float64 from three threads on).
  const Big cases[] = {{{64, 32, 512}, Layout::Contiguous},
                       {{2, 3, 40000}, Layout::Contiguous},
                       {{16384, 64}, Layout::Contiguous},
                       {{64, 32, 512}, Layout::ChannelsLast},
                       {{50, 11, 301}, Layout::Sliced},
                       {{64, 4096}, Layout::Contiguous},
                       {{100, 3000}, Layout::Contiguous},
                       {{4, 2100, 16}, Layout::ChannelsLast},
                       {{8192, 320}, Layout::Contiguous},
                       // virtual channels: Cycles with rows left over, Runs of both kinds
                       {{20000, 13}, Layout::Contiguous},
                       {{5000, 100}, Layout::Contiguous},
                       {{512, 64, 7}, Layout::Contiguous},
                       {{300, 64, 40}, Layout::Contiguous}};
  const int saved = omp_get_max_threads();
  for (const Big& big : cases) {
    for (DType dtype : {DType::Float32, DType::Float64}) {
      SCOPED_TRACE(format_shape(big.shape) + " " + layout_name(big.layout) + " " +
                   dtype_name(dtype));
      std::shared_ptr<std::vector<char>> kx, kg;
      const Tensor x = make_strided(values(randn(big.shape, DType::Float64, 3)), big.shape, dtype,
                                    big.layout, kx);
      const Tensor g = make_strided(values(randn(big.shape, DType::Float64, 4)), big.shape, dtype,
                                    big.layout, kg);
      std::vector<std::vector<double>> first;
      for (int threads : {1, 2, 3, 8}) {
        omp_set_num_threads(threads);
        BatchNorm1d m(BatchNorm1dOptions(big.shape[1]).dtype(dtype));
        const Tensor y = m(x);
        const BatchNorm1d::Gradients grads = m.backward(g);
        const std::vector<std::vector<double>> got = {
            values(y),           values(m.running_mean()), values(m.running_var()),
            values(grads.input), values(grads.weight),     values(grads.bias)};
        if (first.empty()) first = got;
        for (std::size_t i = 0; i < got.size(); ++i)
          EXPECT_EQ(got[i], first[i]) << "threads " << threads << " result " << i;
      }
    }
  }
  omp_set_num_threads(saved);
}

}  // namespace
}  // namespace bn1d::test
