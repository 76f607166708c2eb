// Concurrency: distinct modules trained from several threads at once, and one module serving
// infer() to several threads at once, give exactly the results of a sequential run. Run under
// ThreadSanitizer by `ctest --preset tsan`.
#include <gtest/gtest.h>

#include <bn1d/bn1d.hpp>
#include <thread>
#include <vector>

#include "test_util.hpp"

namespace bn1d::test {
namespace {

constexpr int kThreads = 4;

// Trains a module for a few steps on seeded inputs and returns everything it produced.
std::vector<std::vector<double>> train_run(int seed) {
  BatchNorm1d m(BatchNorm1dOptions(6).momentum(std::nullopt));
  std::vector<std::vector<double>> out;
  Tensor y;
  BatchNorm1d::Gradients g;
  for (int step = 0; step < 20; ++step) {
    const Tensor x = randn({16, 6, 9}, DType::Float32, static_cast<uint64_t>(seed * 100 + step));
    m.forward(x, y);
    m.backward(randn({16, 6, 9}, DType::Float32, static_cast<uint64_t>(seed * 100 + 50 + step)), g);
    out.push_back(values(y));
    out.push_back(values(g.input));
  }
  out.push_back(values(m.running_mean()));
  out.push_back(values(m.running_var()));
  return out;
}

TEST(Threads, DistinctModulesTrainConcurrently) {
  std::vector<std::vector<std::vector<double>>> sequential, concurrent(kThreads);
  for (int t = 0; t < kThreads; ++t) sequential.push_back(train_run(t));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([t, &concurrent] { concurrent[t] = train_run(t); });
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(concurrent, sequential);
}

TEST(Threads, OneModuleServesInferConcurrently) {
  for (bool track : {true, false}) {
    BatchNorm1d m(BatchNorm1dOptions(5).track_running_stats(track));
    for (int i = 0; i < 3; ++i) m(randn({32, 5}, DType::Float32, static_cast<uint64_t>(i)));
    const std::vector<double> before = values(m.state_dict().at("weight"));
    std::vector<Tensor> inputs;
    std::vector<std::vector<double>> sequential, concurrent(kThreads);
    for (int t = 0; t < kThreads; ++t) {
      inputs.push_back(randn({64, 5, 3}, DType::Float32, static_cast<uint64_t>(10 + t)));
      sequential.push_back(values(m.infer(inputs.back())));
    }
    const int64_t batches = m.num_batches_tracked();
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        Tensor y;
        for (int rep = 0; rep < 25; ++rep) m.infer(inputs[t], y);
        concurrent[t] = values(y);
      });
    }
    for (std::thread& th : threads) th.join();
    EXPECT_EQ(concurrent, sequential) << "track " << track;
    EXPECT_EQ(m.num_batches_tracked(), batches);  // infer() changes nothing
    EXPECT_EQ(values(m.state_dict().at("weight")), before);
  }
}

TEST(Threads, InferEqualsEvalForwardAndChangesNothing) {
  BatchNorm1d m(4);
  m(randn({10, 4}, DType::Float32, 1));
  const Tensor x = randn({7, 4}, DType::Float32, 2);
  const std::vector<double> inferred = values(m.infer(x));  // module still in training mode
  EXPECT_TRUE(m.is_training());
  EXPECT_EQ(m.num_batches_tracked(), 1);
  m.eval();
  EXPECT_EQ(inferred, values(m(x)));
  EXPECT_TRUE(throws_error([&] { m.infer(randn({7, 5})); }, "expected input with 4 channels"));
}

}  // namespace
}  // namespace bn1d::test
