// The kernels with a fused activation against the scalar oracle (kernels/reference.hpp), on every
// compiled target, layout and dtype. Every kernel forms the activation's input z the same way, so
// outputs must equal the oracle's bit for bit; the input gradients (fused multiply-adds in the
// kernels, float64 in the oracle) to a few roundings of their terms, which a gate that disagreed
// with the output anywhere would exceed by the whole a · dy term; the gradient sums, summed in
// other orders, to float64 roundings.
#include <gtest/gtest.h>

#include <bit>
#include <bn1d/bn1d.hpp>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <tuple>

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
using kernels::Act;

struct ActCase {
  Shape shape;
  Layout layout;
  simd::Layout simd_layout;
  bool via_route = false;  // through route.cpp: short rows and narrow channels as virtual channels
};

// Vector bodies, scalar and masked tails, several partitions, (N, C), channels-last outputs
// through the transposition tile (NLC input into an NCL output), short rows.
const ActCase kActCases[] = {
    {{3, 4, 37}, Layout::Contiguous, simd::Layout::UnitStrideL},
    {{2, 3, 5000}, Layout::Contiguous, simd::Layout::UnitStrideL},
    {{40, 3, 300}, Layout::Contiguous, simd::Layout::UnitStrideL},
    {{300, 2, 8}, Layout::Contiguous, simd::Layout::UnitStrideL},
    {{700, 37}, Layout::Contiguous, simd::Layout::UnitStrideC},
    {{9, 7}, Layout::Contiguous, simd::Layout::UnitStrideC},
    {{3, 21, 35}, Layout::ChannelsLast, simd::Layout::UnitStrideC},
    {{5, 1030, 13}, Layout::ChannelsLast, simd::Layout::UnitStrideC},
    {{64, 1100}, Layout::Contiguous, simd::Layout::UnitStrideC},
    {{6, 5, 3}, Layout::Contiguous, simd::Layout::UnitStrideL, true},
    {{64, 100, 5}, Layout::Contiguous, simd::Layout::UnitStrideL, true},
    {{1000, 13}, Layout::Contiguous, simd::Layout::UnitStrideC, true},
    {{300, 7, 9}, Layout::ChannelsLast, simd::Layout::UnitStrideC, true},
};

const DType kDtypes[] = {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16};

// ReLU, LeakyReLU with the default slope and with a negative slope steeper than 1.
const Act kActs[] = {
    {Activation::ReLU, 0.0}, {Activation::LeakyReLU, 0.01}, {Activation::LeakyReLU, -3.0}};

::testing::AssertionResult bitwise(const Tensor& got, const Tensor& want) {
  const std::vector<double> g = values(got), w = values(want);
  for (std::size_t i = 0; i < g.size(); ++i) {
    if (std::bit_cast<uint64_t>(g[i]) != std::bit_cast<uint64_t>(w[i]) &&
        !(std::isnan(g[i]) && std::isnan(w[i])))
      return ::testing::AssertionFailure() << "element " << i << ": " << g[i] << " vs " << w[i];
  }
  return ::testing::AssertionSuccess();
}

// |got − want| within 4 roundings of the dtype (one ulp more for 16-bit outputs) of the sum of
// the magnitudes of the terms a · dy, b · (x − mean) and k.
::testing::AssertionResult near_gradient(const Tensor& got, const Tensor& want, const Tensor& x,
                                         const Tensor& dy, const std::vector<double>& mean,
                                         const std::vector<double>& a, const std::vector<double>& b,
                                         const std::vector<double>& k) {
  const std::vector<double> g = values(got), w = values(want), xs = values(x), gs = values(dy);
  const DType dtype = got.dtype();
  const bool half = dtype == DType::BFloat16 || dtype == DType::Float16;
  const double eps = dtype == DType::Float32 ? 0x1.0p-23 : 0x1.0p-52;
  const int64_t C = x.sizes()[1], L = x.sizes().size() == 3 ? x.sizes()[2] : 1;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const auto c = static_cast<std::size_t>((static_cast<int64_t>(i) / L) % C);
    const double terms =
        std::fabs(a[c] * gs[i]) + std::fabs(b[c] * (xs[i] - mean[c])) + std::fabs(k[c]);
    const double bound = 4 * eps * terms + (half ? ulp16(std::fabs(w[i]), dtype) : 0.0);
    if (!(std::fabs(g[i] - w[i]) <= bound) && !(std::isnan(g[i]) && std::isnan(w[i])))
      return ::testing::AssertionFailure() << "element " << i << ": " << g[i] << " vs " << w[i];
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult near_sums(const std::vector<double>& got,
                                     const std::vector<double>& want) {
  double scale = 1e-300;
  for (double v : want) scale = std::max(scale, std::fabs(v));
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= 1e-11 * scale) &&
        !(std::isnan(got[i]) && std::isnan(want[i])))
      return ::testing::AssertionFailure()
             << "channel " << i << ": " << got[i] << " vs " << want[i];
  return ::testing::AssertionSuccess();
}

// Per-channel parameters: means near the data, scales of both signs, shifts that put z's zero
// inside the data; channel 0 gets z == 0 exactly at x == mean (shift 0).
struct Params {
  std::vector<double> mean, scale, shift, a, b, k;
  explicit Params(std::size_t C) : mean(C), scale(C), shift(C), a(C), b(C), k(C) {
    for (std::size_t c = 0; c < C; ++c) {
      mean[c] = c == 0 ? 0.0 : 0.25 * static_cast<double>(c % 5);
      scale[c] = (c % 3 == 1 ? -1.0 : 1.0) * (0.5 + 0.1 * static_cast<double>(c % 7));
      shift[c] = c == 0 ? 0.0 : 0.3 * static_cast<double>(c % 4) - 0.4;
      a[c] = scale[c];
      b[c] = 0.2 - 0.05 * static_cast<double>(c % 6);
      k[c] = 0.01 * static_cast<double>(c % 9) - 0.04;
    }
  }
};

// Normal data; with @p zeros, every fifth value 0, which is channel 0's mean (there z == 0).
std::vector<double> data(const Shape& s, unsigned seed, bool zeros) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> v(static_cast<std::size_t>(s[0] * s[1] * (s.size() == 3 ? s[2] : 1)));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = zeros && i % 5 == 0 ? 0.0 : normal(rng);
  return v;
}

void check_case(const ActCase& k, DType dtype, const Act& act_kind) {
  SCOPED_TRACE(format_shape(k.shape) + " " + layout_name(k.layout) + " " + dtype_name(dtype) + " " +
               activation_name(act_kind.kind) + " slope " + std::to_string(act_kind.slope));
  std::shared_ptr<std::vector<char>> kx, kg, ky, kdx;
  std::vector<double> xv = data(k.shape, 1, true);
  xv[xv.size() / 2 + 1] = NAN;
  const Tensor xt = make_strided(xv, k.shape, dtype, k.layout, kx);
  const Tensor gt = make_strided(data(k.shape, 2, false), k.shape, dtype, k.layout, kg);
  const kernels::View3 x = detail::input_view(xt), dy = detail::input_view(gt);
  if (k.via_route)  // the case must reach the virtual views
    ASSERT_TRUE(kernels::virtual_cols::plan(x, kernels::virtual_cols::Op::Elementwise));
  else
    ASSERT_TRUE(simd::layout_applies(k.simd_layout, x));
  const Params p(static_cast<std::size_t>(x.C));
  Act act = act_kind;
  act.scale = p.scale.data();
  act.shift = p.shift.data();
  const std::vector<double> zeros(static_cast<std::size_t>(xt.numel()), 0.0);

  Tensor ry = Tensor::empty(k.shape, dtype);
  reference::normalize(detail::output_view(ry), x, p.mean.data(), p.scale.data(), p.shift.data(),
                       act);
  for (const Tensor& y :
       {Tensor::empty(k.shape, dtype), make_strided(zeros, k.shape, dtype, k.layout, ky)}) {
    if (k.via_route) {
      route::normalize(detail::output_view(y), x, p.mean.data(), p.scale.data(), p.shift.data(),
                       act);
    } else {
      ASSERT_TRUE(simd::layout_applies(k.simd_layout, detail::output_view(y)));
      simd::normalize(k.simd_layout, detail::output_view(y), x, p.mean.data(), p.scale.data(),
                      p.shift.data(), act);
    }
    EXPECT_TRUE(bitwise(y, ry)) << "normalize";
  }

  const auto C = static_cast<std::size_t>(x.C);
  std::vector<double> s(C), sx(C), rs(C), rsx(C);
  reference::backward_sums(rs.data(), rsx.data(), dy, x, p.mean.data(), act);
  if (k.via_route)
    route::backward_sums(s.data(), sx.data(), dy, x, p.mean.data(), act);
  else
    simd::backward_sums(k.simd_layout, s.data(), sx.data(), dy, x, p.mean.data(), act);
  EXPECT_TRUE(near_sums(s, rs)) << "sum_dy";
  EXPECT_TRUE(near_sums(sx, rsx)) << "sum_dy_xmu";

  Tensor rdx = Tensor::empty(k.shape, dtype);
  reference::backward_input(detail::output_view(rdx), dy, x, p.mean.data(), p.a.data(), p.b.data(),
                            p.k.data(), act);
  for (const Tensor& dx :
       {Tensor::empty(k.shape, dtype), make_strided(zeros, k.shape, dtype, k.layout, kdx)}) {
    if (k.via_route)
      route::backward_input(detail::output_view(dx), dy, x, p.mean.data(), p.a.data(), p.b.data(),
                            p.k.data(), act);
    else
      simd::backward_input(k.simd_layout, detail::output_view(dx), dy, x, p.mean.data(), p.a.data(),
                           p.b.data(), p.k.data(), act);
    EXPECT_TRUE(near_gradient(dx, rdx, xt, gt, p.mean, p.a, p.b, p.k)) << "backward_input";
  }
}

TEST(ActivationKernels, EveryTargetMatchesTheOracleBitwise) {
  for (const std::string& target : simd::targets()) {
    simd::force_target(target);
    SCOPED_TRACE("target " + target);
    for (const ActCase& k : kActCases)
      for (DType dtype : kDtypes)
        for (const Act& act : kActs) check_case(k, dtype, act);
  }
  simd::force_target("");
}

// Streamed outputs (inputs past the stream threshold, 16 MiB) take the non-temporal stores.
TEST(ActivationKernels, StreamedOutputsMatchTheOracleBitwise) {
  check_case({{4, 64, 17000}, Layout::Contiguous, simd::Layout::UnitStrideL}, DType::Float32,
             kActs[1]);
  check_case({{9000, 512}, Layout::Contiguous, simd::Layout::UnitStrideC}, DType::Float32,
             kActs[2]);
}

// The masked-lane kernels: the oracle's values at the valid positions, +0 at the padding.
TEST(ActivationKernels, MaskedKernelsMatchTheOracleBitwise) {
  const Shape s{4, 5, 70};
  const int64_t N = s[0], C = s[1], L = s[2];
  for (const std::string& target : simd::targets()) {
    simd::force_target(target);
    for (DType dtype : kDtypes) {
      for (const Act& kind : kActs) {
        SCOPED_TRACE("target " + target + " " + dtype_name(dtype) + " " +
                     activation_name(kind.kind));
        const Tensor xt = make_tensor(data(s, 3, true), s, dtype),
                     gt = make_tensor(data(s, 4, false), s, dtype);
        const kernels::View3 x = detail::input_view(xt), dy = detail::input_view(gt);
        const Params p(static_cast<std::size_t>(C));
        Act act = kind;
        act.scale = p.scale.data();
        act.shift = p.shift.data();
        // Valid where (n + l) % 3 != 0: holes in every row.
        const DType vd = simd::masked_valid_dtype(dtype);
        std::vector<double> valid_d(static_cast<std::size_t>(N * L));
        std::vector<float> valid_f(valid_d.size());
        std::vector<double> dy_valid = values(gt);
        for (int64_t n = 0; n < N; ++n)
          for (int64_t l = 0; l < L; ++l) {
            const bool v = (n + l) % 3 != 0;
            valid_d[n * L + l] = v, valid_f[n * L + l] = v;
            if (!v)
              for (int64_t c = 0; c < C; ++c) dy_valid[(n * C + c) * L + l] = 0.0;
          }
        const void* valid = vd == DType::Float32 ? static_cast<const void*>(valid_f.data())
                                                 : static_cast<const void*>(valid_d.data());
        Tensor y = Tensor::empty(s, dtype), ry = Tensor::empty(s, dtype);
        ASSERT_TRUE(simd::masked_normalize(detail::output_view(y), x, valid, p.mean.data(),
                                           p.scale.data(), p.shift.data(), act));
        reference::normalize(detail::output_view(ry), x, p.mean.data(), p.scale.data(),
                             p.shift.data(), act);
        std::vector<double> want = values(ry);
        for (std::size_t i = 0; i < want.size(); ++i)
          if (valid_d[(i / static_cast<std::size_t>(C * L)) * L + i % L] == 0) want[i] = 0.0;
        EXPECT_TRUE(bitwise(y, make_tensor(want, s, dtype))) << "masked normalize";

        // Sums: the oracle's over dy zeroed at the padding.
        const Tensor gz = make_tensor(dy_valid, s, dtype);
        std::vector<double> sm(C), sxm(C), rs(C), rsx(C);
        ASSERT_TRUE(
            simd::masked_backward_sums(sm.data(), sxm.data(), dy, x, valid, p.mean.data(), act));
        reference::backward_sums(rs.data(), rsx.data(), detail::input_view(gz), x, p.mean.data(),
                                 act);
        EXPECT_TRUE(near_sums(sm, rs));
        EXPECT_TRUE(near_sums(sxm, rsx));

        Tensor dx = Tensor::empty(s, dtype), rdx = Tensor::empty(s, dtype);
        ASSERT_TRUE(simd::masked_backward_input(detail::output_view(dx), dy, x, valid,
                                                p.mean.data(), p.a.data(), p.b.data(), p.k.data(),
                                                act));
        reference::backward_input(detail::output_view(rdx), dy, x, p.mean.data(), p.a.data(),
                                  p.b.data(), p.k.data(), act);
        want = values(rdx);
        for (std::size_t i = 0; i < want.size(); ++i)
          if (valid_d[(i / static_cast<std::size_t>(C * L)) * L + i % L] == 0) want[i] = 0.0;
        EXPECT_TRUE(near_gradient(dx, make_tensor(want, s, dtype), xt, gt, p.mean, p.a, p.b, p.k))
            << "masked backward_input";
      }
    }
  }
  simd::force_target("");
}

}  // namespace
}  // namespace bn1d::test

namespace bn1d::test {
namespace {

// Channels whose z cancels to within a few roundings of 0 at most values: means that float32
// cannot hold exactly (mean_lo matters), shift ≈ −(x0 − mean) · scale, x within a few ulps of x0.
struct NearZero {
  Shape shape;
  std::vector<double> x, dy, mean, scale, shift, ones, zeros;
  NearZero(const Shape& s, DType dtype) : shape(s) {
    const int64_t C = s[1], per = s[0] * (s.size() == 3 ? s[2] : 1);
    const auto n = static_cast<std::size_t>(C * per);
    x.resize(n), dy.resize(n);
    mean.resize(static_cast<std::size_t>(C)), scale.resize(mean.size()), shift.resize(mean.size());
    ones.assign(mean.size(), 1.0), zeros.assign(mean.size(), 0.0);
    const double ulp = dtype == DType::Float64 ? 0x1.0p-52 : 0x1.0p-23;
    const int64_t L = s.size() == 3 ? s[2] : 1;
    for (int64_t c = 0; c < C; ++c) {
      const double x0 = 1.5 + 0.25 * static_cast<double>(c % 4);
      mean[c] = 0.1 * static_cast<double>(c + 1);
      scale[c] = 0.7 + 0.013 * static_cast<double>(c);
      shift[c] = -(x0 - mean[c]) * scale[c];
      for (int64_t i = 0; i < per; ++i) {
        const std::size_t at = static_cast<std::size_t>(((i / L) * C + c) * L + i % L);
        x[at] = x0 * (1.0 + static_cast<double>(i % 9 - 4) * ulp);
        dy[at] = 1.0 + 0.001 * static_cast<double>(i % 17);
      }
    }
  }
};

// With a = 1 and b = k = 0 the input gradient is the gated dy itself: for ReLU it must be dy
// exactly where the forward's output is > 0 (or NaN) and 0 elsewhere; the sums must be those of
// that gated dy. The forward and the backward may take different paths (a strided grad_output
// goes to the scalar oracle), on every target.
TEST(ActivationKernels, GateAgreesWithTheOutputAtCancellingInputs) {
  const Act relu{Activation::ReLU, 0.0};
  for (const std::string& target : simd::targets()) {
    simd::force_target(target);
    for (DType dtype : {DType::Float32, DType::Float64}) {
      for (const ActCase& k : {ActCase{{4, 6, 300}, Layout::Contiguous, simd::Layout::UnitStrideL},
                               ActCase{{700, 21}, Layout::Contiguous, simd::Layout::UnitStrideC}}) {
        SCOPED_TRACE("target " + target + " " + dtype_name(dtype) + " " + format_shape(k.shape));
        const NearZero d(k.shape, dtype);
        const Tensor xt = make_tensor(d.x, k.shape, dtype);
        std::shared_ptr<std::vector<char>> keep;
        for (const Tensor& gt : {make_tensor(d.dy, k.shape, dtype),
                                 make_strided(d.dy, k.shape, dtype, Layout::Sliced, keep)}) {
          const kernels::View3 x = detail::input_view(xt), dy = detail::input_view(gt);
          Act act = relu;
          act.scale = d.scale.data(), act.shift = d.shift.data();
          Tensor y = Tensor::empty(k.shape, dtype), dx = Tensor::empty(k.shape, dtype);
          route::normalize(detail::output_view(y), x, d.mean.data(), d.scale.data(), d.shift.data(),
                           act);
          route::backward_input(detail::output_view(dx), dy, x, d.mean.data(), d.ones.data(),
                                d.zeros.data(), d.zeros.data(), act);
          const auto C = static_cast<std::size_t>(x.C);
          std::vector<double> s(C), sx(C), want(C, 0.0);
          route::backward_sums(s.data(), sx.data(), dy, x, d.mean.data(), act);
          const std::vector<double> ys = values(y), dxs = values(dx), gs = values(gt);
          std::size_t passed = 0, blocked = 0;
          for (std::size_t i = 0; i < ys.size(); ++i) {
            const bool pass = ys[i] > 0.0 || std::isnan(ys[i]);
            passed += pass, blocked += !pass;
            ASSERT_EQ(dxs[i], pass ? gs[i] : 0.0) << "element " << i << ", y = " << ys[i];
            want[(i / static_cast<std::size_t>(x.L)) % C] += pass ? gs[i] : 0.0;
          }
          EXPECT_GT(passed, ys.size() / 5);  // the data straddles the cut
          EXPECT_GT(blocked, ys.size() / 5);
          EXPECT_TRUE(near_sums(s, want));
        }
      }
    }
  }
  simd::force_target("");
}

// 16-bit outputs: z at or below half the smallest positive value rounds to +0 and blocks the
// gradient; just above it rounds to that value and passes it. Checked by value, not by the oracle.
TEST(ActivationKernels, SixteenBitThresholdIsTheRoundingOfTheOutput) {
  for (const std::string& target : simd::targets()) {
    simd::force_target(target);
    for (const auto& [dtype, half_min, one_ulp] :
         {std::tuple{DType::BFloat16, 0x1.0p-134, 0x1.0p-7},
          std::tuple{DType::Float16, 0x1.0p-25, 0x1.0p-10}}) {
      SCOPED_TRACE("target " + target + " " + dtype_name(dtype));
      const Shape s{2, 1, 40};
      std::vector<double> xv(80), gv(80, 1.0);
      for (std::size_t i = 0; i < xv.size(); ++i) xv[i] = i % 2 ? 1.0 + one_ulp : 1.0;
      const Tensor xt = make_tensor(xv, s, dtype), gt = make_tensor(gv, s, dtype);
      const std::vector<double> mean{0.0}, scale{half_min}, shift{0.0}, one{1.0}, zero{0.0};
      const Act act{Activation::ReLU, 0.0, scale.data(), shift.data()};
      const kernels::View3 x = detail::input_view(xt), dy = detail::input_view(gt);
      Tensor y = Tensor::empty(s, dtype), dx = Tensor::empty(s, dtype);
      route::normalize(detail::output_view(y), x, mean.data(), scale.data(), shift.data(), act);
      route::backward_input(detail::output_view(dx), dy, x, mean.data(), one.data(), zero.data(),
                            zero.data(), act);
      const std::vector<double> ys = values(y), dxs = values(dx);
      for (std::size_t i = 0; i < ys.size(); ++i) {
        if (i % 2) {
          EXPECT_EQ(ys[i], 2 * half_min) << i;  // the smallest positive value
          EXPECT_EQ(dxs[i], 1.0) << i;
        } else {
          EXPECT_EQ(ys[i], 0.0) << i;
          EXPECT_FALSE(std::signbit(ys[i])) << i;
          EXPECT_EQ(dxs[i], 0.0) << i;
        }
      }
    }
  }
  simd::force_target("");
}

}  // namespace
}  // namespace bn1d::test
