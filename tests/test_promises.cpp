// Promises under attack: moved-from tensors and modules, results aliased with inputs, copies
// between overlapping views, counts at the int64 limit, and NaN statistics.
#include <gtest/gtest.h>

#include <bn1d/bn1d.hpp>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "test_util.hpp"

namespace bn1d::test {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::vector<uint8_t> bytes_of(const Tensor& t) {
  if (!t.defined()) return {};
  const Tensor c = t.contiguous();
  const auto* p = static_cast<const uint8_t*>(c.raw_data());
  return {p, p + c.numel() * static_cast<int64_t>(element_size(c.dtype()))};
}

void expect_same_bytes(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.defined(), b.defined()) << what;
  if (!a.defined()) return;
  EXPECT_EQ(a.sizes(), b.sizes()) << what;
  EXPECT_EQ(bytes_of(a), bytes_of(b)) << what;
}

// ---- 1. Moved-from objects -------------------------------------------------------------------

TEST(Promises, MovedFromTensorIsUndefined) {
  Tensor a = Tensor::ones({3, 4});
  const void* data = a.raw_data();
  Tensor b(std::move(a));
  EXPECT_EQ(b.raw_data(), data);
  for (const Tensor* moved : {&a}) {
    EXPECT_FALSE(moved->defined());  // NOLINT(bugprone-use-after-move)
    EXPECT_EQ(moved->numel(), 0);
    EXPECT_EQ(moved->dim(), 0);
    EXPECT_EQ(moved->raw_data(), nullptr);
    EXPECT_TRUE(throws_error([&] { (void)moved->data<float>(); }, "undefined"));
  }
  Tensor c = Tensor::zeros({2});
  c = std::move(b);
  EXPECT_EQ(c.raw_data(), data);
  EXPECT_FALSE(b.defined());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(b.numel(), 0);
  EXPECT_EQ(b.raw_data(), nullptr);
  // Self-move leaves the tensor as it was.
  Tensor& alias = c;
  c = std::move(alias);
  EXPECT_TRUE(c.defined());
  EXPECT_EQ(c.raw_data(), data);
  // A read-only view moved from is no longer read-only, and the copy assignment of a moved-from
  // tensor makes it usable again.
  const float blob[2] = {1, 2};
  Tensor ro = Tensor::from_blob(blob, {2}, DType::Float32);
  Tensor ro2 = std::move(ro);
  EXPECT_TRUE(ro2.is_read_only());
  EXPECT_FALSE(ro.is_read_only());  // NOLINT(bugprone-use-after-move)
  ro = ro2;
  EXPECT_TRUE(ro.defined());
  EXPECT_EQ(values(ro), (std::vector<double>{1, 2}));
}

void expect_moved_from_error(const std::function<void()>& call, const std::string& what) {
  EXPECT_TRUE(throws_error(call, "BatchNorm1d: use of a moved-from module")) << what;
}

TEST(Promises, EveryCallOnAMovedFromModuleIsAClearError) {
  for (const bool affine : {true, false}) {
    for (const bool track : {true, false}) {
      SCOPED_TRACE(std::string("affine ") + (affine ? "1" : "0") + " track " + (track ? "1" : "0"));
      BatchNorm1d m(BatchNorm1dOptions(3).affine(affine).track_running_stats(track));
      const Tensor x = randn({5, 3, 2}, DType::Float32, 1);
      m(x);
      BatchNorm1d moved(std::move(m));
      // The moved-to module has the state.
      EXPECT_EQ(moved.num_batches_tracked(), track ? 1 : 0);
      EXPECT_NO_THROW(moved.backward(randn({5, 3, 2}, DType::Float32, 2)));
      // The moved-from one is empty, and every call that reads or changes state says so.
      EXPECT_FALSE(m.weight().defined());  // NOLINT(bugprone-use-after-move)
      EXPECT_FALSE(m.bias().defined());
      EXPECT_FALSE(m.running_mean().defined());
      EXPECT_FALSE(m.running_var().defined());
      EXPECT_EQ(m.num_batches_tracked(), 0);
      EXPECT_EQ(m.options().num_features(), 3);
      const BatchNorm1d& cm = m;
      Tensor out;
      BatchNorm1d::Gradients grads;
      expect_moved_from_error([&] { m.forward(x); }, "forward");
      expect_moved_from_error([&] { m.forward(x, out); }, "forward into");
      expect_moved_from_error([&] { (void)m(x); }, "operator()");
      m.eval();
      expect_moved_from_error([&] { m.forward(x); }, "eval forward");
      m.train();
      expect_moved_from_error([&] { (void)cm.infer(x); }, "infer");
      expect_moved_from_error([&] { cm.infer(x, out); }, "infer into");
      expect_moved_from_error([&] { m.backward(x); }, "backward");
      expect_moved_from_error([&] { m.backward(x, grads); }, "backward into");
      expect_moved_from_error([&] { (void)cm.state_dict(); }, "state_dict");
      expect_moved_from_error([&] { m.load_state_dict(moved.state_dict()); }, "load_state_dict");
      expect_moved_from_error([&] { m.load_state_dict(StateDict{}, false); }, "load non-strict");
      const std::string path = ::testing::TempDir() + "bn1d_moved_from.safetensors";
      expect_moved_from_error([&] { cm.save(path); }, "save");
      moved.save(path);
      expect_moved_from_error([&] { m.load(path); }, "load");
      std::remove(path.c_str());
      expect_moved_from_error([&] { m.reset_parameters(); }, "reset_parameters");
      expect_moved_from_error([&] { m.reset_running_stats(); }, "reset_running_stats");
      expect_moved_from_error([&] { BatchNorm1d copy(cm); }, "copy");
      expect_moved_from_error(
          [&] {
            BatchNorm1d other(3);
            other = cm;
          },
          "copy assignment");
      EXPECT_FALSE(out.defined());
      // Moving again keeps it moved-from; assigning a module makes it usable.
      BatchNorm1d again(std::move(m));
      expect_moved_from_error([&] { again.forward(x); }, "moved-from moved");
      m = BatchNorm1d(BatchNorm1dOptions(3).affine(affine).track_running_stats(track));
      EXPECT_NO_THROW(m.forward(x));
      EXPECT_EQ(m.num_batches_tracked(), track ? 1 : 0);
      // Move assignment empties the source too, and self-move leaves a moved-from module.
      BatchNorm1d target(3);
      target = std::move(moved);
      expect_moved_from_error([&] { moved.forward(x); }, "move-assigned from");
      EXPECT_NO_THROW(target.backward(randn({5, 3, 2}, DType::Float32, 2)));
    }
  }
}

// ---- 2. Aliased results ----------------------------------------------------------------------

TEST(Promises, CopyFromBetweenOverlappingViews) {
  for (const DType dtype : {DType::Float32, DType::Float64}) {
    // Shift by one inside one buffer, both directions, strided on one or both sides.
    for (const int64_t shift : {1, -1, 2}) {
      std::vector<double> init(20);
      for (std::size_t i = 0; i < init.size(); ++i) init[i] = static_cast<double>(i);
      Tensor base = make_tensor(init, {20}, dtype);
      const int64_t lo = shift > 0 ? 0 : -shift;
      const int64_t n = 6;
      // dst: elements lo + shift + 2i ; src: elements lo + 2i (stride 2), and a transposed pair.
      auto view = [&](int64_t start, Shape sizes, Shape strides) {
        const auto esize = static_cast<int64_t>(element_size(dtype));
        return Tensor::from_blob(static_cast<char*>(base.raw_data()) + start * esize,
                                 std::move(sizes), std::move(strides), dtype);
      };
      const Tensor src = view(lo, {n}, {2});
      const Tensor dst = view(lo + shift, {n}, {2});
      const std::vector<double> want = values(src);
      dst.copy_from(src);
      EXPECT_EQ(values(dst), want) << "shift " << shift;
      // A 2-D transpose in place (src and dst the same memory, different strides).
      Tensor sq = make_tensor({0, 1, 2, 3, 4, 5, 6, 7, 8}, {3, 3}, dtype);
      const Tensor t = Tensor::from_blob(sq.raw_data(), {3, 3}, {1, 3}, dtype);
      const std::vector<double> tv = values(t);
      sq.copy_from(t);
      EXPECT_EQ(values(sq), tv);
      // Contiguous overlapping (memmove) still right.
      Tensor line = make_tensor(init, {20}, dtype);
      const Tensor a = view(0, {10}, {1});
      const Tensor b = view(3, {10}, {1});
      const std::vector<double> av = values(a);
      b.copy_from(a);
      EXPECT_EQ(values(b), av);
    }
  }
}

// Float64 (N, C, L) and {C} views into one arena: aliasing between any result and any input.
struct Arena {
  std::vector<double> memory = std::vector<double>(4096, 0.0);
  Tensor at(int64_t offset, Shape sizes) {
    return Tensor::from_blob(memory.data() + offset, std::move(sizes), DType::Float64);
  }
};

TEST(Promises, ModuleResultsAliasedWithInputsAreReplaced) {
  constexpr int64_t N = 4, C = 3, L = 2;
  const Shape shape{N, C, L};
  for (const bool training : {true, false}) {
    SCOPED_TRACE(training ? "training" : "eval");
    // Reference: no aliasing.
    auto fresh = [&] {
      BatchNorm1d m(BatchNorm1dOptions(C).dtype(DType::Float64));
      m.weight().copy_from(make_tensor({0.5, 2.0, -1.5}, {C}, DType::Float64));
      m.bias().copy_from(make_tensor({0.25, -1.0, 3.0}, {C}, DType::Float64));
      m.running_mean().copy_from(make_tensor({0.1, 0.2, -0.3}, {C}, DType::Float64));
      m.running_var().copy_from(make_tensor({1.5, 0.5, 2.0}, {C}, DType::Float64));
      m.train(training);
      return m;
    };
    const Tensor x0 = randn(shape, DType::Float64, 7);
    const Tensor dy0 = randn(shape, DType::Float64, 8);
    BatchNorm1d ref = fresh();
    const Tensor y_ref = ref.forward(x0);
    const BatchNorm1d::Gradients g_ref = ref.backward(dy0);

    // Each output aliased with each input, in the arena: the module's parameters and buffers are
    // put into the arena too (views of it), the input and grad_output as well.
    enum Input { X, DY, W, B, RM, RV, kInputs };
    for (int target = 0; target < kInputs; ++target) {
      for (int output = 0; output < 4; ++output) {  // y, grads.input, grads.weight, grads.bias
        if (output == 0 && target == DY) continue;  // grad_output is no input of forward()
        SCOPED_TRACE("output " + std::to_string(output) + " on input " + std::to_string(target));
        Arena arena;
        const int64_t off[kInputs] = {0, 100, 200, 210, 220, 230};
        BatchNorm1d m = fresh();
        Tensor x = arena.at(off[X], shape);
        x.copy_from(x0);
        Tensor dy = arena.at(off[DY], shape);
        dy.copy_from(dy0);
        Tensor* params[] = {&m.weight(), &m.bias(), &m.running_mean(), &m.running_var()};
        for (int p = 0; p < 4; ++p) {
          Tensor v = arena.at(off[W + p], {C});
          v.copy_from(*params[p]);
          *params[p] = v;
        }
        const std::vector<double> before = arena.memory;
        // The aliased output: a view at the target input's place, of the output's shape.
        const bool big = output < 2;
        Tensor alias = arena.at(off[target], big ? shape : Shape{C});
        Tensor y;
        BatchNorm1d::Gradients g;
        if (output == 0) y = alias;
        if (output == 1) g.input = alias;
        if (output == 2) g.weight = alias;
        if (output == 3) g.bias = alias;
        m.forward(x, y);
        expect_same_bytes(y, y_ref, "output");
        m.backward(dy, g);
        expect_same_bytes(g.input, g_ref.input, "grads.input");
        expect_same_bytes(g.weight, g_ref.weight, "grads.weight");
        expect_same_bytes(g.bias, g_ref.bias, "grads.bias");
        // Inputs unchanged (the running statistics change only in training, as the reference's).
        for (int p = 0; p < kInputs; ++p) {
          if (training && (p == RM || p == RV)) continue;
          const int64_t n = p < W ? N * C * L : C;
          EXPECT_TRUE(std::equal(before.begin() + off[p], before.begin() + off[p] + n,
                                 arena.memory.begin() + off[p]))
              << "input " << p << " changed";
        }
        if (training) {
          expect_same_bytes(m.running_mean(), ref.running_mean(), "running_mean");
          expect_same_bytes(m.running_var(), ref.running_var(), "running_var");
        }
        // infer's output aliased with the input and the module's tensors.
        m.eval();
        if (output == 0) {
          Tensor out = alias;
          const std::vector<double> mem = arena.memory;
          m.infer(x, out);
          expect_same_bytes(out, m.infer(x0), "infer");
          EXPECT_EQ(arena.memory, mem);
        }
        // Results overlapping each other: grads.weight and grads.bias the same view.
        BatchNorm1d::Gradients same;
        same.weight = arena.at(1000, {C});
        same.bias = same.weight;
        same.input = arena.at(1000, shape);
        BatchNorm1d m2 = fresh();
        m2.forward(x0);
        m2.backward(dy0, same);
        expect_same_bytes(same.input, g_ref.input, "mutual grads.input");
        expect_same_bytes(same.weight, g_ref.weight, "mutual grads.weight");
        expect_same_bytes(same.bias, g_ref.bias, "mutual grads.bias");
      }
    }
  }
}

TEST(Promises, GradientsIntoTheModulesOwnParameters) {
  BatchNorm1d ref(4);
  const Tensor x = randn({6, 4}, DType::Float32, 1), dy = randn({6, 4}, DType::Float32, 2);
  ref.forward(x);
  const BatchNorm1d::Gradients want = ref.backward(dy);
  BatchNorm1d m(4);
  m.forward(x);
  const std::vector<double> w = values(m.weight()), b = values(m.bias());
  BatchNorm1d::Gradients g;
  g.weight = m.weight();
  g.bias = m.bias();
  g.input = Tensor::from_blob(dy.raw_data(), {6, 4}, DType::Float32);  // grads.input = dy
  const std::vector<double> dyv = values(dy);
  m.backward(dy, g);
  EXPECT_EQ(values(m.weight()), w);
  EXPECT_EQ(values(m.bias()), b);
  EXPECT_EQ(values(dy), dyv);
  expect_same_bytes(g.input, want.input, "grads.input");
  expect_same_bytes(g.weight, want.weight, "grads.weight");
  expect_same_bytes(g.bias, want.bias, "grads.bias");
  // forward's output into the weight's memory (a {1, 4} output) and the input itself.
  BatchNorm1d e(4);
  e.eval();
  const Tensor x1 = randn({1, 4}, DType::Float32, 3);
  const Tensor y_want = e.forward(x1);
  Tensor y = Tensor::from_blob(e.weight().raw_data(), {1, 4}, DType::Float32);
  e.forward(x1, y);
  expect_same_bytes(y, y_want, "output");
  EXPECT_EQ(values(e.weight()), std::vector<double>(4, 1.0));
  Tensor xin = x1.clone();
  Tensor y2 = xin;
  e.forward(xin, y2);
  expect_same_bytes(y2, y_want, "output = input");
  EXPECT_EQ(values(xin), values(x1));
}

TEST(Promises, FunctionalResultsAliasedWithInputsAreReplaced) {
  constexpr int64_t N = 5, C = 3;
  const Tensor x = randn({N, C}, DType::Float64, 4);
  const Tensor dy = randn({N, C}, DType::Float64, 5);
  const Tensor w = make_tensor({0.5, 2.0, -1.0}, {C}, DType::Float64);
  const Tensor b = make_tensor({1.0, 0.0, -2.0}, {C}, DType::Float64);
  const BatchStats stats_ref = batch_stats(x);
  const Normalization norm_ref = normalization_from_batch(stats_ref, 1e-5);
  const Tensor y_ref = batch_norm_apply(x, norm_ref, w, b);
  const GradStats gs_ref = backward_stats(dy, x, norm_ref);
  const Tensor gi_ref = batch_norm_backward_input(dy, x, norm_ref, w, gs_ref, true);
  const BatchNormGradients gp_ref = batch_norm_backward_params(gs_ref, norm_ref, DType::Float64);
  const BatchNormGradients all_ref = batch_norm_backward(dy, x, norm_ref, w, true, true);

  {  // batch_stats: mean and m2 into the input, and into each other.
    Tensor xc = x.clone();
    BatchStats s;
    s.mean = Tensor::from_blob(xc.raw_data(), {C}, DType::Float64);
    s.m2 = s.mean;
    batch_stats(s, xc);
    expect_same_bytes(s.mean, stats_ref.mean, "stats.mean");
    expect_same_bytes(s.m2, stats_ref.m2, "stats.m2");
    expect_same_bytes(xc, x, "input");
  }
  {  // normalization_from_batch: norm into the stats, and into each other.
    BatchStats s{stats_ref.count, stats_ref.mean.clone(), stats_ref.m2.clone()};
    Normalization n{s.m2, s.mean};
    normalization_from_batch(n, s, 1e-5);
    expect_same_bytes(n.mean, norm_ref.mean, "norm.mean");
    expect_same_bytes(n.invstd, norm_ref.invstd, "norm.invstd");
    expect_same_bytes(s.mean, stats_ref.mean, "stats.mean unchanged");
    expect_same_bytes(s.m2, stats_ref.m2, "stats.m2 unchanged");
    Normalization same{Tensor::zeros({C}, DType::Float64), Tensor()};
    same.invstd = same.mean;
    normalization_from_batch(same, s, 1e-5);
    expect_same_bytes(same.mean, norm_ref.mean, "same norm.mean");
    expect_same_bytes(same.invstd, norm_ref.invstd, "same norm.invstd");
  }
  {  // normalization_from_running: norm into the running statistics.
    Tensor rm = make_tensor({0.5, -1.0, 2.0}, {C}, DType::Float64);
    Tensor rv = make_tensor({1.0, 4.0, 0.25}, {C}, DType::Float64);
    const Normalization want = normalization_from_running(rm.clone(), rv.clone(), 1e-5);
    Normalization n{rv, rm};
    normalization_from_running(n, rm, rv, 1e-5);
    expect_same_bytes(n.mean, want.mean, "running norm.mean");
    expect_same_bytes(n.invstd, want.invstd, "running norm.invstd");
    EXPECT_EQ(values(rm), (std::vector<double>{0.5, -1.0, 2.0}));
    EXPECT_EQ(values(rv), (std::vector<double>{1.0, 4.0, 0.25}));
  }
  // batch_norm_apply: the output over x, norm.mean, norm.invstd, weight, bias.
  for (int target = 0; target < 5; ++target) {
    Tensor xc = x.clone();
    Normalization n{norm_ref.mean.clone(), norm_ref.invstd.clone()};
    Tensor wc = w.clone(), bc = b.clone();
    const Tensor* inputs[] = {&xc, &n.mean, &n.invstd, &wc, &bc};
    Tensor out = Tensor::from_blob(inputs[target]->raw_data(), {1, C}, DType::Float64);
    if (target == 0) out = xc;
    batch_norm_apply(out, xc, n, wc, bc);
    expect_same_bytes(out, y_ref, "apply target " + std::to_string(target));
    expect_same_bytes(xc, x, "apply x");
    expect_same_bytes(n.mean, norm_ref.mean, "apply norm.mean");
    expect_same_bytes(n.invstd, norm_ref.invstd, "apply norm.invstd");
    expect_same_bytes(wc, w, "apply weight");
    expect_same_bytes(bc, b, "apply bias");
  }
  // backward_stats, backward_input, backward_params, backward: results over every input.
  for (int target = 0; target < 5; ++target) {
    SCOPED_TRACE("backward target " + std::to_string(target));
    Tensor xc = x.clone(), dyc = dy.clone(), wc = w.clone();
    Normalization n{norm_ref.mean.clone(), norm_ref.invstd.clone()};
    const Tensor* inputs[] = {&xc, &dyc, &n.mean, &n.invstd, &wc};
    auto small = [&] { return Tensor::from_blob(inputs[target]->raw_data(), {C}, DType::Float64); };
    auto big = [&] {
      return Tensor::from_blob(inputs[target]->raw_data(), {1, C}, DType::Float64);
    };
    GradStats gs;
    if (target != 4) {  // the weight is no input of backward_stats
      gs.sum_dy = small();
      gs.sum_dy_xmu = small();
    }
    backward_stats(gs, dyc, xc, n);
    expect_same_bytes(gs.sum_dy, gs_ref.sum_dy, "sum_dy");
    expect_same_bytes(gs.sum_dy_xmu, gs_ref.sum_dy_xmu, "sum_dy_xmu");
    GradStats global{gs_ref.count, gs_ref.sum_dy.clone(), gs_ref.sum_dy_xmu.clone()};
    Tensor gi = target < 2 ? *inputs[target] : big();
    batch_norm_backward_input(gi, dyc, xc, n, wc, global, true);
    expect_same_bytes(gi, gi_ref, "grad_input");
    Tensor gi2 = Tensor::from_blob(global.sum_dy.raw_data(), {1, C}, DType::Float64);
    batch_norm_backward_input(gi2, dyc, xc, n, wc, global, true);
    expect_same_bytes(gi2, gi_ref, "grad_input over global.sum_dy");
    BatchNormGradients gp;
    gp.weight = Tensor::from_blob(global.sum_dy.raw_data(), {C}, DType::Float64);
    gp.bias = Tensor::from_blob(global.sum_dy_xmu.raw_data(), {C}, DType::Float64);
    batch_norm_backward_params(gp, global, n, DType::Float64);
    expect_same_bytes(gp.weight, gp_ref.weight, "grad_weight");
    expect_same_bytes(gp.bias, gp_ref.bias, "grad_bias");
    expect_same_bytes(global.sum_dy, gs_ref.sum_dy, "global.sum_dy unchanged");
    BatchNormGradients all;
    all.input = target < 2 ? *inputs[target] : big();
    all.weight = small();
    all.bias = all.weight;
    batch_norm_backward(all, dyc, xc, n, wc, true, true);
    expect_same_bytes(all.input, all_ref.input, "backward input");
    expect_same_bytes(all.weight, all_ref.weight, "backward weight");
    expect_same_bytes(all.bias, all_ref.bias, "backward bias");
    expect_same_bytes(xc, x, "x unchanged");
    expect_same_bytes(dyc, dy, "dy unchanged");
    expect_same_bytes(wc, w, "weight unchanged");
    expect_same_bytes(n.mean, norm_ref.mean, "norm.mean unchanged");
    expect_same_bytes(n.invstd, norm_ref.invstd, "norm.invstd unchanged");
  }
}

// ---- 4. Counts and NaN statistics ------------------------------------------------------------

StateDict with_count(const BatchNorm1d& m, int64_t count) {
  StateDict s = m.state_dict();
  Tensor n = Tensor::empty({}, DType::Int64);
  *n.data<int64_t>() = count;
  s.insert("num_batches_tracked", n);
  return s;
}

TEST(Promises, NumBatchesTrackedStopsAtTheInt64Maximum) {
  for (const std::optional<double> momentum :
       {std::optional<double>(0.1), std::optional<double>()}) {
    BatchNorm1d m(BatchNorm1dOptions(3).momentum(momentum));
    m.load_state_dict(with_count(m, INT64_MAX - 1));
    const Tensor x = randn({4, 3}, DType::Float32, 1);
    m.forward(x);
    EXPECT_EQ(m.num_batches_tracked(), INT64_MAX);
    const std::vector<uint8_t> mean = bytes_of(m.running_mean()), var = bytes_of(m.running_var());
    Tensor out;
    EXPECT_TRUE(throws_error([&] { m.forward(x, out); }, "num_batches_tracked"));
    EXPECT_FALSE(out.defined());
    EXPECT_EQ(m.num_batches_tracked(), INT64_MAX);
    EXPECT_EQ(bytes_of(m.running_mean()), mean);
    EXPECT_EQ(bytes_of(m.running_var()), var);
    // Eval, inference and an empty batch do not count: still fine.
    EXPECT_NO_THROW(m.forward(Tensor::zeros({0, 3})));
    m.eval();
    EXPECT_NO_THROW(m.forward(x));
    EXPECT_NO_THROW((void)m.infer(x));
    EXPECT_EQ(m.num_batches_tracked(), INT64_MAX);
  }
}

TEST(Promises, CombinedCountsMustFitInt64) {
  BatchStats a = batch_stats(randn({4, 2}, DType::Float64, 1));
  BatchStats b = a;
  a.count = INT64_MAX - 2;
  b.count = 3;
  const BatchStats parts[] = {a, b};
  EXPECT_TRUE(throws_error([&] { (void)combine_stats(parts); }, "int64"));
  const Tensor x = randn({4, 2}, DType::Float64, 3);
  GradStats h = backward_stats(x, x, normalization_from_batch(batch_stats(x), 1e-5));
  GradStats h2 = h;
  h.count = INT64_MAX;
  h2.count = 1;
  const GradStats gparts[] = {h, h2};
  EXPECT_TRUE(throws_error([&] { (void)combine_grad_stats(gparts); }, "int64"));
  b.count = 2;
  const BatchStats fits[] = {a, b};
  EXPECT_EQ(combine_stats(fits).count, INT64_MAX);
}

TEST(Promises, NegativeOrNaNM2IsAnError) {
  BatchStats s = batch_stats(randn({4, 3}, DType::Float64, 1));
  for (const double bad : {-1.0, kNaN}) {
    BatchStats t{s.count, s.mean.clone(), s.m2.clone()};
    t.m2.data<double>()[1] = bad;
    Normalization n;
    EXPECT_TRUE(throws_error([&] { normalization_from_batch(n, t, 1e-5); }, "stats.m2[1]"));
    EXPECT_FALSE(n.mean.defined());
  }
}

TEST(Promises, StridedStatisticsAreAnError) {
  // The steps read statistics as plain arrays: every other value of a {2C} tensor is refused.
  const BatchStats s = batch_stats(randn({4, 3}, DType::Float64, 1));
  const Tensor wide = randn({6}, DType::Float64, 2);
  const Tensor strided = Tensor::from_blob(wide.raw_data(), {3}, {2}, DType::Float64);
  const BatchStats parts[] = {s, BatchStats{s.count, strided, s.m2}};
  EXPECT_TRUE(throws_error([&] { (void)combine_stats(parts); }, "stride 2"));
  EXPECT_TRUE(throws_error(
      [&] {
        (void)normalization_from_batch({s.count, s.mean, strided}, 1e-5);
      },
      "stats m2: expected a contiguous tensor"));
  const Normalization norm{strided, s.m2};
  EXPECT_TRUE(throws_error(
      [&] {
        (void)batch_norm_apply(randn({4, 3}, DType::Float64, 3), norm, Tensor(), Tensor());
      },
      "norm.mean: expected a contiguous tensor"));
}

TEST(Promises, NaNRunningVarIsAnErrorEverywhere) {
  const char* want = "running_var: expected non-negative variances, got running_var[2] = nan";
  for (const DType dtype : {DType::Float32, DType::Float64}) {
    BatchNorm1d m(BatchNorm1dOptions(5).dtype(dtype));
    m.eval();
    if (dtype == DType::Float32)
      m.running_var().data<float>()[2] = std::numeric_limits<float>::quiet_NaN();
    else
      m.running_var().data<double>()[2] = kNaN;
    const Tensor x = randn({3, 5}, dtype, 1);
    EXPECT_TRUE(throws_error([&] { m.forward(x); }, want));
    EXPECT_TRUE(throws_error([&] { (void)m.infer(x); }, want));
    EXPECT_TRUE(throws_error(
        [&] { (void)batch_norm(x, m.running_mean(), m.running_var(), {}, {}, false); }, want));
    EXPECT_TRUE(throws_error(
        [&] { (void)normalization_from_running(m.running_mean(), m.running_var(), 1e-5); }, want));
  }
}

}  // namespace
}  // namespace bn1d::test
