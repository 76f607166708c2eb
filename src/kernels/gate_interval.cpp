// SPDX-License-Identifier: MIT
// The gate intervals of gate_interval.hpp: found per channel by searching the storage type's
// values in order, starting where the real-valued boundary lies, with z formed by
// ActChannel::input itself, so that the interval holds exactly the inputs act_passes picks.
#include "kernels/gate_interval.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "kernels/element.hpp"

namespace bn1d::kernels {
namespace {

// The values of T other than NaN in increasing order, as integers: the sign-magnitude bits as
// a signed number (±0 both at 0).
template <class T>
using BitsOf = std::conditional_t<sizeof(T) == 2, uint16_t,
                                  std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>;

template <class T>
int64_t index_of(T x) {
  using U = BitsOf<T>;
  constexpr U kSign = U{1} << (8 * sizeof(U) - 1);
  U u;
  std::memcpy(&u, &x, sizeof(U));
  return (u & kSign) != 0 ? -static_cast<int64_t>(u & ~kSign) : static_cast<int64_t>(u);
}

template <class T>
T value_at(int64_t i) {
  using U = BitsOf<T>;
  constexpr U kSign = U{1} << (8 * sizeof(U) - 1);
  const U u = i >= 0 ? static_cast<U>(i) : static_cast<U>(kSign | static_cast<U>(-i));
  T x;
  std::memcpy(&x, &u, sizeof(U));
  return x;
}

// The smallest i in [lo, hi] where pred(i) holds (pred is false, then true, over [lo, hi]), or
// hi + 1, by bisection.
template <class Pred>
int64_t first_true(const Pred& pred, int64_t lo, int64_t hi) {
  int64_t end = hi + 1;  // the answer is in [lo, end]
  while (lo < end) {
    // (end − lo) may exceed int64_t's range for float64's indices: halved as unsigned.
    const auto half = (static_cast<uint64_t>(end) - static_cast<uint64_t>(lo)) / 2;
    const int64_t mid = lo + static_cast<int64_t>(half);
    if (pred(mid))
      end = mid;
    else
      lo = mid + 1;
  }
  return end;
}

// first_true near a guess: the answer is bracketed by steps doubling away from the guess (it is
// usually within a few values of it: z's roundings move the boundary by a few ulps), then found by
// bisection in the bracket. Differences of indices are taken as unsigned: for float64 they may
// exceed int64_t's range.
template <class Pred>
int64_t first_true(const Pred& pred, int64_t lo, int64_t hi, int64_t guess) {
  const int64_t g = std::clamp(guess, lo, hi);
  int64_t below = lo - 1, above = hi + 1;  // pred false at below, true at above (or past the ends)
  uint64_t step = 1;
  if (pred(g)) {
    for (above = g; static_cast<uint64_t>(above) - static_cast<uint64_t>(lo) >= step; step *= 2) {
      const int64_t i = above - static_cast<int64_t>(step);
      if (!pred(i)) {
        below = i;
        break;
      }
      above = i;
    }
  } else {
    for (below = g; static_cast<uint64_t>(hi) - static_cast<uint64_t>(below) >= step; step *= 2) {
      const int64_t i = below + static_cast<int64_t>(step);
      if (pred(i)) {
        above = i;
        break;
      }
      below = i;
    }
  }
  return first_true(pred, below + 1, above - 1);
}

// The interval of one channel (gate_interval), its z parameters finite in ActCompute<T>.
template <class T>
GateInterval interval_of(const ActChannel<T>& ch, Activation kind) {
  using CT = ActCompute<T>;
  const int64_t lowest = index_of(narrow<T>(-std::numeric_limits<double>::infinity()));
  const int64_t highest = index_of(narrow<T>(std::numeric_limits<double>::infinity()));
  const auto x = [](int64_t i) { return static_cast<CT>(widen(value_at<T>(i))); };
  // In the interval: ReLU blocks x, or LeakyReLU passes it.
  const auto in = [&](int64_t i) {
    return (kind == Activation::ReLU) != act_passes<T>(kind, ch.input(x(i)));
  };
  const auto out = [&](int64_t i) { return !in(i); };
  int64_t first = 1, last = 0;  // empty
  if (ch.scale == 0) {
    // z is the constant shift where x − mean is finite, an interval of x, and NaN outside it.
    const auto xm = [&](int64_t i) { return (x(i) - ch.mean_hi) - ch.mean_lo; };
    if (in(0)) {
      first = first_true([&](int64_t i) { return xm(i) > -INFINITY; }, lowest, highest, lowest + 1);
      last =
          first_true([&](int64_t i) { return xm(i) == INFINITY; }, lowest, highest, highest - 1) -
          1;
    }
  } else {
    // z crosses kActiveAbove near mean + (kActiveAbove − shift) / scale, with z's rounded
    // parameters; the interval is the inputs above it for (ReLU, scale < 0) and (LeakyReLU,
    // scale > 0), below it otherwise.
    const double mean_c = static_cast<double>(ch.mean_hi) + static_cast<double>(ch.mean_lo);
    const double crossing =
        mean_c + (kActiveAbove<T> - static_cast<double>(ch.shift)) / static_cast<double>(ch.scale);
    const int64_t guess = index_of(narrow<T>(crossing));
    if ((kind == Activation::ReLU) == (ch.scale < 0))
      first = first_true(in, lowest, highest, guess), last = highest;
    else
      first = lowest, last = first_true(out, lowest, highest, guess) - 1;
  }
  if (first > last) return {INFINITY, -INFINITY};
  return {widen(value_at<T>(first)), widen(value_at<T>(last))};
}

template <class T>
bool interval_t(Activation kind, double mean, double scale, double shift, GateInterval& interval) {
  const auto ch = ActChannel<T>::of(mean, scale, shift, 0.0);
  if (!std::isfinite(ch.mean_hi) || !std::isfinite(ch.mean_lo) || !std::isfinite(ch.scale) ||
      !std::isfinite(ch.shift))
    return false;
  interval = interval_of(ch, kind);
  return true;
}

}  // namespace

bool gate_interval(DType dtype, Activation kind, double mean, double scale, double shift,
                   GateInterval& interval) {
  return with_storage(dtype,
                      [&]<class T>() { return interval_t<T>(kind, mean, scale, shift, interval); });
}

bool gate_test(GateInterval interval, GateTest& test) {
  constexpr uint64_t kAll = ~uint64_t{0}, kSign = uint64_t{1} << 63;
  const double lo = interval.lo, hi = interval.hi;
  if (lo > hi)
    test = {kAll & ~kSign, 0, -INFINITY};  // |x| ≤ −inf: never
  else if (lo == -INFINITY)
    test = {kAll, 0, hi};  // x ≤ hi
  else if (hi == INFINITY)
    test = {kAll, kSign, -lo};  // −x ≤ −lo
  else if (lo == -hi)
    test = {kAll & ~kSign, 0, hi};  // |x| ≤ hi
  else
    return false;
  return true;
}

bool gate_tests(DType dtype, Activation kind, const double* mean, const double* scale,
                const double* shift, int64_t C, uint64_t* keep, uint64_t* flip, double* max) {
  return with_storage(dtype, [&]<class T>() {
    for (int64_t c = 0; c < C; ++c) {
      GateInterval interval;
      GateTest test;
      if (!interval_t<T>(kind, mean[c], scale[c], shift[c], interval) || !gate_test(interval, test))
        return false;
      keep[c] = test.keep, flip[c] = test.flip, max[c] = test.max;
    }
    return true;
  });
}

}  // namespace bn1d::kernels
