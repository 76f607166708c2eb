// Tensor: factories, views of caller memory, copies, argument errors, randn.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>

#include <bn1d/bn1d.hpp>
#include <cmath>

#include "format.hpp"
#include "test_util.hpp"

namespace bn1d::test {
namespace {

using ::testing::HasSubstr;

TEST(Tensor, UndefinedByDefault) {
  Tensor t;
  EXPECT_FALSE(t.defined());
  EXPECT_EQ(t.raw_data(), nullptr);
  EXPECT_THROW(t.data<float>(), Error);
  EXPECT_FALSE(t.clone().defined());
}

// Storage is 64-byte aligned; tensors of 16 MiB or more are aligned to 2 MiB (huge pages).
TEST(Tensor, StorageAlignment) {
  for (const Shape& sizes : {Shape{3}, Shape{7, 5}, Shape{1000, 33}}) {
    const Tensor t = Tensor::empty(sizes, DType::Float32);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.raw_data()) % 64, 0u) << format_shape(sizes);
  }
  const Tensor big = Tensor::zeros({int64_t{1} << 22}, DType::Float32);  // 16 MiB
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(big.raw_data()) % (std::uintptr_t{2} << 20), 0u);
  EXPECT_EQ(big.data<float>()[(int64_t{1} << 22) - 1], 0.0f);
}

TEST(Tensor, Factories) {
  const Tensor z = Tensor::zeros({2, 3}, DType::Float64);
  EXPECT_EQ(z.sizes(), (Shape{2, 3}));
  EXPECT_EQ(z.strides(), (Shape{3, 1}));
  EXPECT_EQ(z.dim(), 2);
  EXPECT_EQ(z.numel(), 6);
  EXPECT_EQ(z.size(-1), 3);
  EXPECT_THROW(z.size(2), Error);
  EXPECT_TRUE(z.is_contiguous());
  EXPECT_EQ(values(z), std::vector<double>(6, 0.0));
  EXPECT_EQ(values(Tensor::ones({4})), std::vector<double>(4, 1.0));
  EXPECT_EQ(values(Tensor::full({2}, 2.5, DType::Float32)), (std::vector<double>{2.5, 2.5}));
  const Tensor scalar = Tensor::zeros({}, DType::Int64);
  EXPECT_EQ(scalar.dim(), 0);
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_EQ(Tensor::empty({0, 5}).numel(), 0);
}

TEST(Tensor, DataChecksDType) {
  const Tensor t = Tensor::zeros({2}, DType::Float32);
  try {
    t.data<double>();
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("requested float64 from a float32 tensor"));
  }
}

TEST(Tensor, FromBlobViewsCallerMemoryWithAnyStrides) {
  float buf[6] = {0, 1, 2, 3, 4, 5};
  // Memory (2, 3) row-major viewed transposed as (3, 2).
  const Tensor t = Tensor::from_blob(buf, {3, 2}, {1, 3}, DType::Float32);
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(values(t), (std::vector<double>{0, 3, 1, 4, 2, 5}));
  buf[1] = 10;  // a view, not a copy
  EXPECT_EQ(values(t)[2], 10);
  const Tensor c = t.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(values(c), values(t));
  buf[1] = 1;
  EXPECT_EQ(values(c)[2], 10);  // contiguous() of a strided view copies
  const Tensor same = Tensor::from_blob(buf, {2, 3}, DType::Float32);
  EXPECT_EQ(same.contiguous().raw_data(), static_cast<void*>(buf));  // no copy when contiguous
  // Negative and zero strides.
  const Tensor rev = Tensor::from_blob(buf + 5, {6}, {-1}, DType::Float32);
  EXPECT_EQ(values(rev), (std::vector<double>{5, 4, 3, 2, 1, 0}));
  const Tensor bcast = Tensor::from_blob(buf, {3}, {0}, DType::Float32);
  EXPECT_EQ(values(bcast), (std::vector<double>{0, 0, 0}));
}

TEST(Tensor, FromBlobRejectsBadArguments) {
  float buf[4] = {};
  EXPECT_TRUE(throws_error(
      [&] {
        Tensor::from_blob(buf, {2, 2}, {1}, DType::Float32);
      },
      "expected one stride per dimension (2), got 1 strides"));
  EXPECT_TRUE(throws_error(
      [&] {
        Tensor::from_blob(buf, {2, -1}, {1, 1}, DType::Float32);
      },
      "sizes must be non-negative, got size -1 in dimension 1"));
  EXPECT_TRUE(
      throws_error([&] { Tensor::from_blob(nullptr, {2}, {1}, DType::Float32); }, "null pointer"));
  EXPECT_TRUE(throws_error(
      [&] {
        Tensor::from_blob(buf, {1LL << 40, 1LL << 40}, {1, 1}, DType::Float32);
      },
      "more elements than int64 holds"));
  EXPECT_TRUE(throws_error(
      [&] {
        Tensor::from_blob(buf, {3, 3}, {INT64_MAX / 2, 1}, DType::Float32);
      },
      "address beyond the int64 range"));
  EXPECT_TRUE(throws_error([&] { Tensor::from_blob(buf, {2}, {INT64_MIN}, DType::Float32); },
                           "address beyond the int64 range"));
  EXPECT_TRUE(throws_error([&] { Tensor::empty({-2}); }, "non-negative"));
  EXPECT_TRUE(throws_error(
      [&] {
        Tensor::empty({0, int64_t{1} << 40, int64_t{1} << 40});
      },
      "need strides beyond the int64 range"));
  EXPECT_TRUE(throws_error([&] { Tensor::empty({int64_t{1} << 55}); },
                           "cannot allocate 144115188075855872 bytes for a float32 tensor of sizes "
                           "[36028797018963968]"));
  // An empty view may have a null pointer.
  EXPECT_NO_THROW(Tensor::from_blob(nullptr, {0, 3}, DType::Float32));
}

TEST(Tensor, CloneAndCopyFrom) {
  double buf[4] = {1, 2, 3, 4};
  const Tensor view = Tensor::from_blob(buf, {2, 2}, {1, 2}, DType::Float64);
  const Tensor copy = view.clone();
  buf[0] = 100;
  EXPECT_EQ(values(copy), (std::vector<double>{1, 3, 2, 4}));
  const Tensor dst = Tensor::zeros({2, 2}, DType::Float64);
  dst.copy_from(view);
  EXPECT_EQ(values(dst), (std::vector<double>{100, 3, 2, 4}));
  // Copying into a strided view writes through to the caller's memory.
  view.copy_from(Tensor::ones({2, 2}, DType::Float64));
  EXPECT_EQ(buf[3], 1.0);
  EXPECT_THROW(dst.copy_from(Tensor::zeros({2, 2}, DType::Float32)), Error);
  EXPECT_THROW(dst.copy_from(Tensor::zeros({4}, DType::Float64)), Error);
  EXPECT_THROW(dst.copy_from(Tensor()), Error);
}

// from_blob of const memory: a read-only view, read like any other, never written by bn1d.
TEST(Tensor, ReadOnlyViews) {
  const double buf[4] = {1, 2, 3, 4};
  const Tensor view = Tensor::from_blob(buf, {2, 2}, {1, 2}, DType::Float64);
  EXPECT_TRUE(view.is_read_only());
  EXPECT_TRUE(Tensor(view).is_read_only());  // copies share the storage and the flag
  EXPECT_TRUE(Tensor::from_blob(buf, {4}, DType::Float64).is_read_only());
  EXPECT_EQ(values(view), (std::vector<double>{1, 3, 2, 4}));
  EXPECT_FALSE(view.clone().is_read_only());
  EXPECT_FALSE(view.contiguous().is_read_only());  // a strided view: a new contiguous copy
  double writable[4] = {};
  EXPECT_FALSE(Tensor::from_blob(writable, {4}, DType::Float64).is_read_only());
  EXPECT_FALSE(Tensor::zeros({4}).is_read_only());
  EXPECT_FALSE(Tensor().is_read_only());
  // The same argument checks as for writable memory.
  EXPECT_TRUE(throws_error(
      [&] { Tensor::from_blob(static_cast<const void*>(nullptr), {2}, {1}, DType::Float64); },
      "null pointer"));
}

TEST(Tensor, CopyFromIntoReadOnlyThrows) {
  const double buf[2] = {1, 2};
  const Tensor view = Tensor::from_blob(buf, {2}, DType::Float64);
  EXPECT_TRUE(throws_error([&] { view.copy_from(Tensor::zeros({2}, DType::Float64)); },
                           "copy_from: the destination is read-only"));
  EXPECT_EQ(buf[0], 1.0);
  EXPECT_EQ(buf[1], 2.0);
  const Tensor dst = Tensor::zeros({2}, DType::Float64);
  dst.copy_from(view);  // reading from it is fine
  EXPECT_EQ(values(dst), (std::vector<double>{1, 2}));
}

// A read-only input works as any input; its module results are those of a writable copy.
TEST(Tensor, ReadOnlyInputs) {
  const std::vector<float> x = {1, -2, 3, 5, -7, 11, 0.5f, 4};
  const Tensor input = Tensor::from_blob(x.data(), {4, 2}, DType::Float32);
  BatchNorm1d m(2), reference(2);
  const Tensor y = m.forward(input);
  EXPECT_EQ(values(y), values(reference.forward(input.clone())));
  const std::vector<float> dy = {1, 2, 3, 4, 5, 6, 7, 8};
  const auto grads = m.backward(Tensor::from_blob(dy.data(), {4, 2}, DType::Float32));
  const auto expected = reference.backward(Tensor::from_blob(dy.data(), {4, 2}, DType::Float32));
  EXPECT_EQ(values(grads.input), values(expected.input));
  EXPECT_EQ(values(grads.weight), values(expected.weight));
  // Evaluation with read-only running statistics only reads them.
  const std::vector<float> mean = {0.5f, -1}, var = {2, 3};
  m.eval();
  m.running_mean() = Tensor::from_blob(mean.data(), {2}, DType::Float32);
  m.running_var() = Tensor::from_blob(var.data(), {2}, DType::Float32);
  EXPECT_NO_THROW(m.forward(input));
  EXPECT_NO_THROW(m.infer(input));
}

// A read-only result buffer is replaced by a new tensor, as one of the wrong shape is.
TEST(Tensor, ReadOnlyResultBuffersAreReplaced) {
  const Tensor input = randn({4, 3}, DType::Float32, 1);
  const std::vector<float> zeros(12, 0.0f);
  BatchNorm1d m(3);
  Tensor output = Tensor::from_blob(zeros.data(), {4, 3}, DType::Float32);
  m.forward(input, output);
  EXPECT_NE(output.raw_data(), zeros.data());
  EXPECT_FALSE(output.is_read_only());
  EXPECT_EQ(values(output), values(BatchNorm1d(3).forward(input)));
  BatchNorm1d::Gradients grads;
  grads.input = Tensor::from_blob(zeros.data(), {4, 3}, DType::Float32);
  grads.weight = Tensor::from_blob(zeros.data(), {3}, DType::Float32);
  m.backward(Tensor::ones({4, 3}), grads);
  EXPECT_NE(grads.input.raw_data(), zeros.data());
  EXPECT_NE(grads.weight.raw_data(), zeros.data());
  const std::vector<double> stat(3, 0.0);
  BatchStats stats;
  stats.mean = Tensor::from_blob(stat.data(), {3}, DType::Float64);
  batch_stats(stats, input);
  EXPECT_NE(stats.mean.raw_data(), stat.data());
  EXPECT_EQ(zeros, std::vector<float>(12, 0.0f));
  EXPECT_EQ(stat, std::vector<double>(3, 0.0));
}

// The module's tensors are copied into in place; a read-only one is replaced instead.
TEST(Tensor, ReadOnlyModuleTensorsAreReplaced) {
  const std::vector<float> w = {2, 3};
  BatchNorm1d m(2);
  m.weight() = Tensor::from_blob(w.data(), {2}, DType::Float32);
  m.reset_parameters();
  EXPECT_NE(m.weight().raw_data(), w.data());
  EXPECT_EQ(values(m.weight()), (std::vector<double>{1, 1}));
  m.weight() = Tensor::from_blob(w.data(), {2}, DType::Float32);
  StateDict state = BatchNorm1d(2).state_dict();
  m.load_state_dict(state);
  EXPECT_NE(m.weight().raw_data(), w.data());
  EXPECT_EQ(w, (std::vector<float>{2, 3}));
}

// Running statistics a training forward would update in place: Error naming them, nothing
// written (not the caller's memory, not the output buffer, not the module's count).
TEST(Tensor, ReadOnlyRunningStatsAreNotUpdated) {
  const Tensor input = randn({4, 2}, DType::Float32, 2);
  const std::vector<float> mean = {0, 0}, var = {1, 1};
  const Tensor ro_mean = Tensor::from_blob(mean.data(), {2}, DType::Float32);
  const Tensor ro_var = Tensor::from_blob(var.data(), {2}, DType::Float32);
  BatchNorm1d m(2);
  m.running_var() = ro_var;
  Tensor output = Tensor::full({4, 2}, 7.0);
  EXPECT_TRUE(throws_error([&] { m.forward(input, output); }, "running_var: expected a writable"));
  EXPECT_EQ(values(output), std::vector<double>(8, 7.0));
  EXPECT_EQ(m.num_batches_tracked(), 0);
  EXPECT_TRUE(throws_error([&] { batch_norm(input, ro_mean, Tensor::ones({2}), {}, {}, true); },
                           "running_mean: expected a writable"));
  EXPECT_TRUE(throws_error(
      [&] { update_running_stats(Tensor::zeros({2}), ro_var, batch_stats(input), 0.1); },
      "running_var"));
  EXPECT_EQ(mean, (std::vector<float>{0, 0}));
  EXPECT_EQ(var, (std::vector<float>{1, 1}));
  // Without training, or without tracking, they are only read.
  EXPECT_NO_THROW(batch_norm(input, ro_mean, ro_var, {}, {}, false));
  m.eval();
  EXPECT_NO_THROW(m.forward(input));
}

TEST(Tensor, RandnIsSeededAndStandardNormal) {
  const Tensor a = randn({100000}, DType::Float64, 42);
  EXPECT_EQ(values(a), values(randn({100000}, DType::Float64, 42)));
  EXPECT_NE(values(a), values(randn({100000}, DType::Float64, 43)));
  double mean = 0, sq = 0;
  for (double v : values(a)) mean += v;
  mean /= 100000;
  for (double v : values(a)) sq += (v - mean) * (v - mean);
  EXPECT_NEAR(mean, 0.0, 0.02);         // 6 standard errors
  EXPECT_NEAR(sq / 100000, 1.0, 0.03);  // ~7 standard errors
  EXPECT_EQ(randn({3}, DType::Float32, 1).dtype(), DType::Float32);
  EXPECT_THROW(randn({3}, DType::Int64), Error);
}

TEST(Tensor, Formatting) {
  EXPECT_EQ(format_shape({1, 100}), "[1, 100]");
  EXPECT_EQ(format_shape({}), "[]");
  EXPECT_EQ(python_float_repr(1e-5), "1e-05");
  EXPECT_EQ(python_float_repr(0.1), "0.1");
  EXPECT_EQ(python_float_repr(1.0), "1.0");
  EXPECT_EQ(python_float_repr(0.0001), "0.0001");
  EXPECT_EQ(python_float_repr(1e16), "1e+16");
  EXPECT_EQ(python_float_repr(123.456), "123.456");
  EXPECT_EQ(python_float_repr(-2.5e-7), "-2.5e-07");
  EXPECT_EQ(python_float_repr(NAN), "nan");
}

}  // namespace
}  // namespace bn1d::test

// The conversion to int64 is defined only inside [-2^63, 2^63): other values are refused.
TEST(Tensor, FullInt64RefusesValuesOutsideItsRange) {
  for (double bad :
       {std::nan(""), double{INFINITY}, -double{INFINITY}, 0x1p63, -0x1.0000000000001p63, 1e300}) {
    EXPECT_THROW(bn1d::Tensor::full({2}, bad, bn1d::DType::Int64), bn1d::Error) << bad;
  }
  const bn1d::Tensor low = bn1d::Tensor::full({1}, -0x1p63, bn1d::DType::Int64);
  EXPECT_EQ(low.data<int64_t>()[0], INT64_MIN);
  const bn1d::Tensor high = bn1d::Tensor::full({1}, 0x1.fffffffffffffp62, bn1d::DType::Int64);
  EXPECT_EQ(high.data<int64_t>()[0], int64_t{0x7ffffffffffffc00});
  EXPECT_EQ(bn1d::Tensor::full({1}, -2.75, bn1d::DType::Int64).data<int64_t>()[0], -2);
}
