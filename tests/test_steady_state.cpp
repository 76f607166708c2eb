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
#include <vector>

#include "format.hpp"
#include "kernels/virtual_cols.hpp"
#include "test_util.hpp"
#include "validate.hpp"

namespace {
// Fault injection: on the thread that armed it, the fail_after-th allocation from now throws.
thread_local long fail_after = 0;
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
  if (fail_after > 0 && --fail_after == 0) throw std::bad_alloc();
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
      for (Activation act : {Activation::None, Activation::LeakyReLU}) {  // the gate reuses scratch
        BatchNorm1d m(BatchNorm1dOptions(shape[1]).activation(act));
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
        EXPECT_EQ(n, 0) << format_shape(shape) << " training " << training << " "
                        << activation_name(act);
        EXPECT_EQ(y.raw_data(), y_storage);
        // Same results as the allocating forms.
        BatchNorm1d fresh(m.options());
        fresh.train(training);
        fresh.load_state_dict(m.state_dict());
        EXPECT_EQ(values(y), values(fresh(x)));
      }
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

// The strong guarantee under out-of-memory: the k-th allocation of a call fails, for every k
// until the call needs fewer; the module is then unchanged (running statistics, count, and what
// the next backward computes from the saved forward), and so are the caller's result buffers.
std::vector<uint8_t> bytes(const Tensor& t) {
  if (!t.defined()) return {};
  const Tensor c = t.contiguous();
  const auto* p = static_cast<const uint8_t*>(c.raw_data());
  return {p, p + c.numel() * static_cast<int64_t>(element_size(c.dtype()))};
}

struct Observed {
  std::vector<uint8_t> mean, var, weight, bias, grad_input, grad_weight;
  int64_t count = 0;
  bool operator==(const Observed&) const = default;
};

Observed observe(const BatchNorm1d& m, const Tensor& dy) {
  BatchNorm1d copy(m);  // a copy keeps the saved forward: its backward shows it
  Observed o{
      bytes(m.running_mean()), bytes(m.running_var()), bytes(m.weight()), bytes(m.bias()), {}, {},
      m.num_batches_tracked()};
  const BatchNorm1d::Gradients g = copy.backward(dy);
  o.grad_input = bytes(g.input);
  o.grad_weight = bytes(g.weight);
  return o;
}

// Runs @p call with its k-th allocation failing, k = 1, 2, …, until it succeeds; @p check runs
// after every failure. Returns how many failures were injected.
long inject_failures(const std::function<void()>& call, const std::function<void()>& check) {
  for (long k = 1; k < 10000; ++k) {
    fail_after = k;
    bool failed = false;
    try {
      call();
    } catch (const std::bad_alloc&) {
      failed = true;
    }
    fail_after = 0;
    if (!failed) return k - 1;
    check();
  }
  ADD_FAILURE() << "no call succeeded";
  return 0;
}

TEST(SteadyState, OutOfMemoryChangesNothing) {
  if (!BN1D_COUNTS_ALLOCATIONS) GTEST_SKIP() << "fault injection is off under sanitizers";
  const Shape shape{8, 4, 3};
  const Tensor x = randn(shape, DType::Float32, 1), dy = randn(shape, DType::Float32, 2);
  const Tensor x2 = randn({6, 4, 3}, DType::Float32, 3), dy2 = randn({6, 4, 3}, DType::Float32, 4);
  for (const bool training : {true, false}) {
    for (const bool track : {true, false}) {
      SCOPED_TRACE(std::string("training ") + (training ? "1" : "0") + " track " +
                   (track ? "1" : "0"));
      BatchNorm1d base(BatchNorm1dOptions(4).track_running_stats(track).momentum(std::nullopt));
      base.train(training);
      base.forward(x);  // warm: the thread's scratch is sized
      base.backward(dy);
      const Observed before = observe(base, dy);
      // forward into a fresh output, and into a caller buffer that must stay unwritten.
      BatchNorm1d m(base);
      long failures =
          inject_failures([&] { m.forward(x2); }, [&] { ASSERT_EQ(observe(m, dy), before); });
      EXPECT_GT(failures, 0);
      BatchNorm1d m2(base);
      Tensor out = Tensor::full({6, 4, 3}, 7.0);
      const std::vector<uint8_t> out_bytes = bytes(out);
      inject_failures([&] { m2.forward(x2, out); },
                      [&] {
                        ASSERT_EQ(observe(m2, dy), before);
                        ASSERT_EQ(bytes(out), out_bytes);
                      });
      // backward into fresh gradients, and into buffers of which one must be replaced (it
      // overlaps grad_output): the others stay unwritten until nothing can fail.
      BatchNorm1d m3(base);
      inject_failures([&] { (void)m3.backward(dy); }, [&] { ASSERT_EQ(observe(m3, dy), before); });
      BatchNorm1d m4(base);
      BatchNorm1d::Gradients g;
      g.input = Tensor::full(shape, 5.0);
      g.bias = Tensor::full({4}, 6.0);
      g.weight = Tensor::from_blob(dy.raw_data(), {4}, DType::Float32);
      const std::vector<uint8_t> gi = bytes(g.input), gb = bytes(g.bias);
      inject_failures([&] { m4.backward(dy, g); },
                      [&] {
                        ASSERT_EQ(observe(m4, dy), before);
                        ASSERT_EQ(bytes(g.input), gi);
                        ASSERT_EQ(bytes(g.bias), gb);
                      });
      // Resets.
      BatchNorm1d m5(base);
      inject_failures([&] { m5.reset_parameters(); }, [&] { ASSERT_EQ(observe(m5, dy), before); });
    }
  }
}

}  // namespace
}  // namespace bn1d::test
