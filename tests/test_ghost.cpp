// GhostBatchNorm1d against the loop it replaces: one BatchNorm1d call per chunk of the input,
// the chunks built with Tensor::from_blob on the input's own memory as torch.chunk builds them
// (chunk size ceil(N / ceil(N / virtual_batch_size))). Outputs, gradients (weight and bias summed
// over the chunks), running statistics, num_batches_tracked; both splits' chunk bounds (written
// out by hand); eval; the one-value chunk error that changes nothing; threads bitwise.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <bn1d/bn1d.hpp>
#include <cmath>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace bn1d::test {
namespace {

/// torch.chunk(x, ceil(N / vbs)) of an N-row batch: the chunk bounds {0, s, 2s, ..., N} with
/// s = ceil(N / k), k = ceil(N / vbs).
std::vector<int64_t> torch_chunk_bounds(int64_t N, int64_t vbs) {
  const int64_t k = (N + vbs - 1) / vbs;
  const int64_t s = (N + k - 1) / k;
  std::vector<int64_t> b{0};
  while (b.back() < N) b.push_back(std::min(b.back() + s, N));
  return b;
}

/// Samples [begin, end) of @p t (any strides), as a view of its memory.
Tensor samples(const Tensor& t, int64_t begin, int64_t end) {
  Shape sizes = t.sizes();
  sizes[0] = end - begin;
  return Tensor::from_blob(
      static_cast<char*>(t.raw_data()) +
          begin * t.strides()[0] * static_cast<int64_t>(element_size(t.dtype())),
      sizes, t.strides(), t.dtype());
}

/// @p got against @p want: float32/float64 within all_close's bound, 16-bit values within one
/// ulp of @p want.
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

/// What one step of the ghost module or of the loop produced.
struct StepResult {
  std::vector<double> y, dx, dw, db;
  std::vector<double> dw_magnitude;  // Σ over chunks of |chunk grad_weight| (the bound's scale)
};

/// The loop: for each chunk, a forward and a backward of @p ref; outputs and input gradients
/// concatenated in chunk order, weight and bias gradients summed.
StepResult run_loop(BatchNorm1d& ref, const Tensor& x, const Tensor& dy,
                    const std::vector<int64_t>& bounds) {
  StepResult r;
  const int64_t C = x.size(1);
  r.dw.assign(static_cast<std::size_t>(C), 0.0);
  r.db = r.dw;
  r.dw_magnitude = r.dw;
  for (std::size_t i = 0; i + 1 < bounds.size(); ++i) {
    const Tensor y = ref.forward(samples(x, bounds[i], bounds[i + 1]));
    const BatchNorm1d::Gradients g = ref.backward(samples(dy, bounds[i], bounds[i + 1]));
    for (double v : values(y)) r.y.push_back(v);
    for (double v : values(g.input)) r.dx.push_back(v);
    if (!g.weight.defined()) continue;
    const std::vector<double> dw = values(g.weight), db = values(g.bias);
    for (int64_t c = 0; c < C; ++c) {
      r.dw[c] += dw[c];
      r.db[c] += db[c];
      r.dw_magnitude[c] += std::fabs(dw[c]) + std::fabs(db[c]);
    }
  }
  return r;
}

/// Training steps, then an eval step, of a GhostBatchNorm1d and of the loop over the chunks
/// @p bounds, on inputs of @p sizes in @p layout.
void expect_equals_loop(const BatchNorm1dOptions& options, int64_t vbs, GhostSplit split,
                        const Shape& sizes, DType input, Layout layout,
                        const std::vector<int64_t>& bounds, int train_steps = 2) {
  SCOPED_TRACE("N " + std::to_string(sizes[0]) + ", vbs " + std::to_string(vbs) + ", " +
               ghost_split_name(split) + ", " + dtype_name(input) + " input, " +
               layout_name(layout) + (sizes.size() == 3 ? ", (N, C, L)" : ", (N, C)"));
  GhostBatchNorm1d m(options, vbs, split);
  const int64_t L = sizes.size() == 3 ? sizes[2] : 1;
  ASSERT_EQ(m.chunk_bounds(sizes[0], L), bounds);
  BatchNorm1d ref(options);
  // The same non-trivial weight and bias in both.
  if (options.affine()) {
    for (int64_t c = 0; c < sizes[1]; ++c) {
      store_as(m.weight().raw_data(), c, 0.75 + 0.125 * static_cast<double>(c % 5),
               options.dtype());
      store_as(m.bias().raw_data(), c, 0.25 * static_cast<double>(c % 3) - 0.2, options.dtype());
    }
    ref.load_state_dict(m.state_dict());
  }
  const int64_t chunks = static_cast<int64_t>(bounds.size()) - 1;
  for (int step = 0; step <= train_steps; ++step) {
    const bool training = step < train_steps;
    m.train(training);
    ref.train(training);
    const std::string tag = (training ? "train step " : "eval step ") + std::to_string(step);
    std::shared_ptr<std::vector<char>> kx, kdy;
    const Tensor x = make_strided(round_to(values(randn(sizes, DType::Float64, 10 + step)), input),
                                  sizes, input, layout, kx);
    const Tensor dy = make_strided(round_to(values(randn(sizes, DType::Float64, 20 + step)), input),
                                   sizes, input, layout, kdy);
    // Eval with running statistics: the loop is one call on the whole batch (every chunk is
    // normalized with the same statistics).
    const bool whole = !training && options.track_running_stats();
    const StepResult want =
        run_loop(ref, x, dy, whole ? std::vector<int64_t>{0, sizes[0]} : bounds);
    const Tensor y = m.forward(x);
    const GhostBatchNorm1d::Gradients g = m.backward(dy);
    EXPECT_EQ(y.sizes(), sizes) << tag;
    EXPECT_TRUE(close_as(values(y), want.y, input)) << tag << " output";
    EXPECT_TRUE(close_as(values(g.input), want.dx, input)) << tag << " grad_input";
    if (options.affine()) {
      EXPECT_TRUE(all_close(values(g.weight), want.dw, options.dtype(), max_abs(want.dw_magnitude)))
          << tag << " grad_weight";
      EXPECT_TRUE(all_close(values(g.bias), want.db, options.dtype(), max_abs(want.dw_magnitude)))
          << tag << " grad_bias";
    } else {
      EXPECT_FALSE(g.weight.defined());
    }
    if (options.track_running_stats()) {
      EXPECT_TRUE(all_close(m.running_mean(), values(ref.running_mean()))) << tag;
      EXPECT_TRUE(all_close(m.running_var(), values(ref.running_var()))) << tag;
      EXPECT_EQ(m.num_batches_tracked(), chunks * std::min(step + 1, train_steps)) << tag;
    }
    EXPECT_EQ(m.num_batches_tracked(), ref.num_batches_tracked()) << tag;
    if (!training) {
      EXPECT_TRUE(close_as(values(m.infer(x)), want.y, input)) << tag << " infer";
    }
  }
}

TEST(Ghost, ChunkBoundsOfBothSplits) {
  const GhostBatchNorm1d chunk(BatchNorm1dOptions(3), 4, GhostSplit::Chunk);
  EXPECT_EQ(chunk.chunk_bounds(10), (std::vector<int64_t>{0, 4, 8, 10}));
  EXPECT_EQ(chunk.chunk_bounds(9), (std::vector<int64_t>{0, 3, 6, 9}));  // 3 chunks of 3
  EXPECT_EQ(chunk.chunk_bounds(5), (std::vector<int64_t>{0, 3, 5}));     // 2 chunks: 3 and 2
  EXPECT_EQ(chunk.chunk_bounds(4), (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(chunk.chunk_bounds(1), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(chunk.chunk_bounds(0), (std::vector<int64_t>{0, 0}));  // one empty chunk
  const GhostBatchNorm1d three(BatchNorm1dOptions(3), 3);
  EXPECT_EQ(three.chunk_bounds(10), (std::vector<int64_t>{0, 3, 6, 9, 10}));  // 4 chunks: 3,3,3,1
  const GhostBatchNorm1d fixed(BatchNorm1dOptions(3), 4, GhostSplit::Fixed);
  EXPECT_EQ(fixed.chunk_bounds(10), (std::vector<int64_t>{0, 4, 8, 10}));
  EXPECT_EQ(fixed.chunk_bounds(9), (std::vector<int64_t>{0, 4, 9}));  // 1 row joins
  EXPECT_EQ(fixed.chunk_bounds(9, 1), (std::vector<int64_t>{0, 4, 9}));
  EXPECT_EQ(fixed.chunk_bounds(9, 3), (std::vector<int64_t>{0, 4, 8, 9}));  // 3 values: a chunk
  EXPECT_EQ(fixed.chunk_bounds(8), (std::vector<int64_t>{0, 4, 8}));
  EXPECT_EQ(fixed.chunk_bounds(3), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(fixed.chunk_bounds(0), (std::vector<int64_t>{0, 0}));
  // The test's own torch.chunk formula agrees with the hand-written bounds above.
  EXPECT_EQ(torch_chunk_bounds(10, 4), (std::vector<int64_t>{0, 4, 8, 10}));
  EXPECT_EQ(torch_chunk_bounds(10, 3), (std::vector<int64_t>{0, 3, 6, 9, 10}));
}

TEST(Ghost, DefaultsAndPrinting) {
  const GhostBatchNorm1d m(64);
  EXPECT_EQ(m.virtual_batch_size(), 128);
  EXPECT_EQ(m.split(), GhostSplit::Chunk);
  EXPECT_EQ(m.options().momentum(), 0.01);
  EXPECT_STREQ(ghost_split_name(GhostSplit::Fixed), "fixed");
  std::ostringstream os;
  os << m;
  EXPECT_EQ(os.str(),
            "GhostBatchNorm1d(64, virtual_batch_size=128, split=chunk, eps=1e-05, momentum=0.01, "
            "affine=true, track_running_stats=true)");
  EXPECT_TRUE(
      throws_error([] { GhostBatchNorm1d g(BatchNorm1dOptions(3), 0); }, "virtual_batch_size"));
  EXPECT_TRUE(throws_error([] { GhostBatchNorm1d g(BatchNorm1dOptions(0), 4); }, "num_features"));
}

TEST(Ghost, EqualsChunkLoopEveryDtypeAndLayout) {
  struct Config {
    DType input, param;
  };
  for (Config k : {Config{DType::Float32, DType::Float32}, Config{DType::Float64, DType::Float64},
                   Config{DType::BFloat16, DType::Float32}})
    for (Layout layout : {Layout::Contiguous, Layout::ChannelsLast, Layout::Sliced}) {
      const BatchNorm1dOptions o = BatchNorm1dOptions(6).dtype(k.param).momentum(0.2);
      expect_equals_loop(o, 4, GhostSplit::Chunk, {10, 6, 7}, k.input, layout, {0, 4, 8, 10});
      expect_equals_loop(o, 5, GhostSplit::Chunk, {37, 6}, k.input, layout,
                         {0, 5, 10, 15, 20, 25, 30, 35, 37});
      // A last chunk of one sample holding 3 values per channel.
      expect_equals_loop(o, 4, GhostSplit::Chunk, {13, 6, 3}, k.input, layout, {0, 4, 8, 12, 13});
    }
}

TEST(Ghost, EqualsChunkLoopSweep) {
  // (N, virtual_batch_size) from one chunk to many, against the test's torch.chunk bounds (no
  // chunk of one row: that is an error).
  const int64_t cases[][2] = {{2, 2}, {8, 3}, {50, 512}, {100, 7}, {258, 16}, {600, 33}};
  for (const auto& [N, vbs] : cases) {
    expect_equals_loop(BatchNorm1dOptions(9), vbs, GhostSplit::Chunk, {N, 9}, DType::Float32,
                       Layout::Contiguous, torch_chunk_bounds(N, vbs));
  }
}

TEST(Ghost, EqualsChunkLoopTabNetDefaults) {
  // TabNet's model: virtual_batch_size 128, momentum 0.02; 1000 rows are 8 chunks of 125.
  const std::vector<int64_t> b{0, 125, 250, 375, 500, 625, 750, 875, 1000};
  expect_equals_loop(BatchNorm1dOptions(16).momentum(0.02), 128, GhostSplit::Chunk, {1000, 16},
                     DType::Float32, Layout::Contiguous, b, 3);
}

TEST(Ghost, EqualsChunkLoopEveryOption) {
  const BatchNorm1dOptions options[] = {BatchNorm1dOptions(5).momentum(std::nullopt),
                                        BatchNorm1dOptions(5).track_running_stats(false),
                                        BatchNorm1dOptions(5).affine(false).eps(1e-3)};
  for (const BatchNorm1dOptions& o : options) {
    expect_equals_loop(o, 4, GhostSplit::Chunk, {10, 5, 3}, DType::Float32, Layout::ChannelsLast,
                       {0, 4, 8, 10});
    expect_equals_loop(o, 4, GhostSplit::Fixed, {9, 5}, DType::Float32, Layout::Contiguous,
                       {0, 4, 9});
  }
}

TEST(Ghost, FixedSplitEqualsItsLoop) {
  expect_equals_loop(BatchNorm1dOptions(4), 4, GhostSplit::Fixed, {10, 4}, DType::Float32,
                     Layout::Contiguous, {0, 4, 8, 10});
  expect_equals_loop(BatchNorm1dOptions(4), 4, GhostSplit::Fixed, {9, 4, 1}, DType::Float32,
                     Layout::Contiguous, {0, 4, 9});
  expect_equals_loop(BatchNorm1dOptions(4), 4, GhostSplit::Fixed, {9, 4, 2}, DType::Float32,
                     Layout::ChannelsLast, {0, 4, 8, 9});
}

TEST(Ghost, OneValueChunkIsAnErrorThatChangesNothing) {
  for (const Shape& sizes : {Shape{5, 3}, Shape{5, 3, 1}}) {
    GhostBatchNorm1d m(BatchNorm1dOptions(3), 2);  // chunks {0, 2, 4, 5}: the last has one row
    m.forward(randn({4, 3}, DType::Float32, 1));
    const std::vector<double> rm = values(m.running_mean()), rv = values(m.running_var());
    ASSERT_EQ(m.num_batches_tracked(), 2);
    Tensor out = Tensor::full(sizes, 7.0);
    EXPECT_TRUE(throws_error([&] { m.forward(randn(sizes, DType::Float32, 2), out); },
                             "more than 1 value per channel"));
    EXPECT_EQ(m.num_batches_tracked(), 2);
    EXPECT_EQ(values(m.running_mean()), rm);
    EXPECT_EQ(values(m.running_var()), rv);
    EXPECT_EQ(values(out), std::vector<double>(15, 7.0));
    // Eval mode normalizes the same batch with the running statistics.
    m.eval();
    BatchNorm1d ref(3);
    ref.load_state_dict(m.state_dict());
    ref.eval();
    const Tensor x = randn(sizes, DType::Float32, 3);
    EXPECT_TRUE(all_close(m.forward(x), values(ref.forward(x))));
  }
}

TEST(Ghost, BitwiseIdenticalAcrossThreadCounts) {
  // Batches of more than two of the kernels' 2^16-value grains, so that a second thread takes part.
  const int saved = omp_get_max_threads();
  const std::pair<Shape, Layout> cases[] = {{{4096, 64}, Layout::Contiguous},
                                            {{700, 24, 9}, Layout::ChannelsLast},
                                            {{700, 24, 9}, Layout::Contiguous}};
  for (const auto& [sizes, layout] : cases) {
    SCOPED_TRACE(layout_name(layout));
    std::shared_ptr<std::vector<char>> kx, kdy;
    const Tensor x =
        make_strided(values(randn(sizes, DType::Float64, 1)), sizes, DType::Float32, layout, kx);
    const Tensor dy =
        make_strided(values(randn(sizes, DType::Float64, 2)), sizes, DType::Float32, layout, kdy);
    std::vector<std::vector<double>> first;
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      GhostBatchNorm1d m(BatchNorm1dOptions(sizes[1]), 128);
      const Tensor y = m.forward(x);
      const GhostBatchNorm1d::Gradients g = m.backward(dy);
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

}  // namespace
}  // namespace bn1d::test
