// Steady state allocates nothing: forward(input, out) and backward(grad_output, grads) reuse the
// caller's buffers and the module's statistics. Counted by replacing the global operator new
// (every Tensor allocation also allocates its shared_ptr control block through it).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <bn1d/bn1d.hpp>
#include <cstdlib>
#include <functional>
#include <new>
#include <thread>

#include "format.hpp"
#include "kernels/virtual_cols.hpp"
#include "test_util.hpp"
#include "validate.hpp"

namespace {
std::atomic<bool> counting{false};
std::atomic<long> allocations{0};
std::atomic<long> allocated_bytes{0};
}  // namespace

// Sanitizers bring their own operator new; counting is then left out and the test skipped.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define BN1D_COUNTS_ALLOCATIONS 0
#else
#define BN1D_COUNTS_ALLOCATIONS 1
// GCC pairs the replaced new/delete below with gtest's `new` and warns of a mismatch: they are a
// matched pair (malloc/free) by construction.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

void* operator new(std::size_t n) {
  if (counting.load(std::memory_order_relaxed)) {
    allocations.fetch_add(1, std::memory_order_relaxed);
    allocated_bytes.fetch_add(static_cast<long>(n), std::memory_order_relaxed);
  }
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif

namespace bn1d::test {
namespace {

long allocations_during(const std::function<void()>& body) {
  allocations = 0;
  allocated_bytes = 0;
  counting = true;
  body();
  counting = false;
  return allocations.load();
}

TEST(SteadyState, ForwardAndBackwardIntoBuffersAllocateNothing) {
  if (!BN1D_COUNTS_ALLOCATIONS) GTEST_SKIP() << "allocation counting is off under sanitizers";
  // (8, 16, 40) and (8, 16, 5): short rows walked as virtual channels by the reductions, and by
  // every pass; (1000, 13): narrow channels, 31 groups of 32 rows and 8 rows left over.
  for (const Shape& shape : {Shape{64, 32}, Shape{8, 16, 40}, Shape{8, 16, 5}, Shape{1000, 13}}) {
    for (bool training : {true, false}) {
      BatchNorm1d m(shape[1]);
      m.train(training);
      const Tensor x = randn(shape, DType::Float32, 1), dy = randn(shape, DType::Float32, 2);
      Tensor y;
      BatchNorm1d::Gradients g;
      m.forward(x, y);  // first calls size the buffers
      m.backward(dy, g);
      const void* y_storage = y.raw_data();
      const long n = allocations_during([&] {
        for (int i = 0; i < 3; ++i) {
          m.forward(x, y);
          m.backward(dy, g);
        }
      });
      EXPECT_EQ(n, 0) << format_shape(shape) << " training " << training;
      EXPECT_EQ(y.raw_data(), y_storage);
      // Same results as the allocating forms.
      BatchNorm1d fresh(m.options().num_features());
      fresh.train(training);
      fresh.load_state_dict(m.state_dict());
      EXPECT_EQ(values(y), values(fresh(x)));
    }
  }
}

// Beyond the output (tensor storage, not counted here), a first call on a fresh thread allocates
// only scratch that grows with C and the thread count — never with N·L: the kernels' partition
// buffers (≤ 16 × C × 2 float64), per-channel parameters and statistics; for inputs walked as a
// wide view of virtual channels (kernels/virtual_cols.hpp, e.g. (16384, 32) as (2048, 256)) the
// same per virtual channel, whose number is bounded by a constant.
TEST(SteadyState, ScratchGrowsWithChannelsNotWithTheBatch) {
  if (!BN1D_COUNTS_ALLOCATIONS) GTEST_SKIP() << "allocation counting is off under sanitizers";
  const int64_t C = 32;
  for (const Shape& shape : {Shape{64, C, 512}, Shape{16384, C}, Shape{256, C, 256}}) {
    const Tensor x = randn(shape, DType::Float32, 1), dy = randn(shape, DType::Float32, 2);
    long bytes = 0;
    std::thread([&] {  // fresh thread-local scratch
      BatchNorm1d m(C);
      Tensor y;
      BatchNorm1d::Gradients g;
      allocations_during([&] {
        m.forward(x, y);
        m.backward(dy, g);
      });
      bytes = allocated_bytes.load();
    })
        .join();
    EXPECT_GT(bytes, 0);  // the counter sees this thread's first-call allocations
    namespace vc = bn1d::kernels::virtual_cols;
    const bn1d::kernels::View3 v = bn1d::detail::input_view(x);
    const int64_t width = std::max(
        {C, vc::plan(v, vc::Op::Reduction).width(), vc::plan(v, vc::Op::Elementwise).width()});
    const long per_thread = 8 * width * (2 * 16 + 8) + 4096;  // partitions + parameters + slack
    EXPECT_LT(bytes, 4 * per_thread) << format_shape(shape) << ": " << bytes << " bytes for a "
                                     << x.numel() * 4 << "-byte input";
  }
}

TEST(SteadyState, AnOutputOverlappingTheInputIsReplaced) {
  BatchNorm1d m(4);
  Tensor x = randn({6, 4}, DType::Float32, 3);
  const std::vector<double> before = values(x);
  Tensor out = x;  // same storage
  m.forward(x, out);
  EXPECT_NE(out.raw_data(), x.raw_data());
  EXPECT_EQ(values(x), before);  // the input (saved for backward) is intact
}

TEST(SteadyState, AnOutputInTheInputsLayoutIsKept) {
  const Shape shape{4, 24, 33};
  const std::vector<double> xs = values(randn(shape, DType::Float64, 5)),
                            gs = values(randn(shape, DType::Float64, 6));
  for (DType dtype : {DType::Float32, DType::Float64}) {
    std::shared_ptr<std::vector<char>> kx, kg, ky, kdx;
    const Tensor x = make_strided(xs, shape, dtype, Layout::ChannelsLast, kx);
    const Tensor g = make_strided(gs, shape, dtype, Layout::ChannelsLast, kg);
    Tensor y = make_strided(std::vector<double>(xs.size()), shape, dtype, Layout::ChannelsLast, ky);
    BatchNorm1d::Gradients grads;
    grads.input =
        make_strided(std::vector<double>(xs.size()), shape, dtype, Layout::ChannelsLast, kdx);
    const void* y_storage = y.raw_data();
    const void* dx_storage = grads.input.raw_data();
    BatchNorm1d m(BatchNorm1dOptions(24).dtype(dtype)), plain(BatchNorm1dOptions(24).dtype(dtype));
    m.forward(x, y);
    m.backward(g, grads);
    EXPECT_EQ(y.raw_data(), y_storage);  // written in place, channels-last
    EXPECT_EQ(grads.input.raw_data(), dx_storage);
    EXPECT_EQ(y.strides(), x.strides());
    // The same values as a contiguous output.
    EXPECT_EQ(values(y), values(plain(x)));
    EXPECT_EQ(values(grads.input), values(plain.backward(g).input));
  }
}

}  // namespace
}  // namespace bn1d::test
