// SPDX-License-Identifier: MIT
// bn1d_demo: train a small MLP on the Wine data (13 chemical measurements, 3 cultivars) with and
// without bn1d::BatchNorm1d, then save the trained BatchNorm1d, reload it into a fresh module and
// check that both give bitwise identical outputs.
//
//   with BN:    Linear(13→32) → BatchNorm1d(32) → ReLU → Linear(32→3)
//   without BN: Linear(13→32) → ReLU → Linear(32→3)
//
// Everything except the BatchNorm1d layer is written out as plain float32 loops (mlp.hpp).
//
// Usage: bn1d_demo [path/to/wine_data.csv]
//        mpirun -np K bn1d_demo --distributed [path/to/wine_data.csv]
// The second form trains the BN model data-parallel over K processes (demo_distributed.cpp).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "bn1d/bn1d.hpp"
#include "demo_distributed.hpp"
#include "mlp.hpp"

namespace demo {
namespace {

int run(const std::string& csv_path) {
  Experiment ex(csv_path);
  const int D = ex.ds.d, H = kHidden, K = ex.ds.k;
  const int n_train = ex.n_train(), n_test = ex.n_test();
  std::printf("Wine data: %d samples, %d raw features (means from %.2f to %.1f), %d classes\n",
              ex.ds.n, D, ex.raw_mean_lo, ex.raw_mean_hi, K);
  std::printf("split (stratified, seed %llu): %d train / %d test\n",
              static_cast<unsigned long long>(kSeed), n_train, n_test);

  // --- two models with the same initial Linear weights -----------------------------------------
  MLP<bn1d::BatchNorm1d> with_bn = ex.model<bn1d::BatchNorm1d>(true);
  MLP<bn1d::BatchNorm1d> without_bn = ex.model<bn1d::BatchNorm1d>(false);

  // --- training: the same shuffled mini-batches for both models --------------------------------
  std::printf(
      "\nSGD, batch %d, lr %g, %d epochs, features standardized with training-set statistics\n",
      kBatch, kLearningRate, kEpochs);
  std::printf("epoch | with BatchNorm1d: train loss  test acc | without: train loss  test acc\n");
  std::vector<float> x_batch;
  std::vector<int> y_batch;
  std::vector<int> order = ex.train_idx;
  for (int epoch = 1; epoch <= kEpochs; epoch++) {
    ex.rng.shuffle(order);
    float loss_bn = 0.0f, loss_plain = 0.0f;
    int batches = 0;
    for (int start = 0; start < n_train; start += kBatch) {
      const int N = std::min(kBatch, n_train - start);
      gather(ex.ds, order.data() + start, N, x_batch, y_batch);
      loss_bn += with_bn.train_step(x_batch.data(), y_batch.data(), N, N, kLearningRate) / N;
      loss_plain += without_bn.train_step(x_batch.data(), y_batch.data(), N, N, kLearningRate) / N;
      batches++;
    }
    if (epoch == 1 || epoch % 5 == 0) {
      float acc_bn = with_bn.evaluate(ex.x_test.data(), ex.y_test.data(), n_test).accuracy;
      float acc_plain = without_bn.evaluate(ex.x_test.data(), ex.y_test.data(), n_test).accuracy;
      std::printf("%5d | %28.4f %8.1f%% | %19.4f %8.1f%%\n", epoch, loss_bn / batches,
                  100.0f * acc_bn, loss_plain / batches, 100.0f * acc_plain);
    }
  }

  // --- final accuracies ------------------------------------------------------------------------
  std::printf("\n%-20s %10s %10s %19s\n", "model", "train acc", "test acc", "ReLUs > 0 (train)");
  for (MLP<bn1d::BatchNorm1d>* m : {&with_bn, &without_bn}) {
    auto train = m->evaluate(ex.x_train.data(), ex.y_train.data(), n_train);
    auto test = m->evaluate(ex.x_test.data(), ex.y_test.data(), n_test);
    std::printf("%-20s %9.1f%% %9.1f%% %18.1f%%\n",
                m->bn ? "with BatchNorm1d" : "without BatchNorm1d", 100.0f * train.accuracy,
                100.0f * test.accuracy, 100.0f * train.active);
  }
  std::printf(
      "\nSame initial weights, same batches, same learning rate: BatchNorm1d keeps every hidden\n"
      "channel at zero mean and unit variance per batch, so the network reaches a lower loss in\n"
      "fewer epochs.\n");

  // --- save the trained BatchNorm1d, reload it, compare eval outputs bitwise -------------------
  bn1d::BatchNorm1d& bn = *with_bn.bn;
  std::cout << "\ntrained layer: " << bn << ", num_batches_tracked=" << bn.num_batches_tracked()
            << "\n";
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() /
      ("bn1d_demo_" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) +
       ".safetensors");
  bn.save(path.string());
  bn1d::BatchNorm1d reloaded(H);
  reloaded.load(path.string());
  std::filesystem::remove(path);

  std::vector<float> h_test(static_cast<size_t>(n_test) * H);  // test-set hidden activations
  linear_forward(h_test.data(), ex.x_test.data(), with_bn.w1.data(), with_bn.b1.data(), n_test, D,
                 H);
  bn1d::Tensor h = bn1d::Tensor::from_blob(h_test.data(), {n_test, H}, bn1d::DType::Float32);
  bn.eval();
  reloaded.eval();
  bn1d::Tensor out_a = bn.forward(h), out_b = reloaded.forward(h);
  const float *pa = out_a.data<float>(), *pb = out_b.data<float>();
  float max_diff = 0.0f;
  for (int i = 0; i < n_test * H; i++) max_diff = std::max(max_diff, std::fabs(pa[i] - pb[i]));
  const bool identical = std::memcmp(pa, pb, sizeof(float) * n_test * H) == 0;
  std::printf("reload check: outputs %s (max |diff| = %g)\n", identical ? "identical" : "DIFFER",
              max_diff);
  return identical ? 0 : 1;
}

}  // namespace
}  // namespace demo

int main(int argc, char** argv) {
  bool distributed = false;
  std::string csv = std::string(BN1D_DATA_DIR) + "/wine_data.csv";
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--distributed") == 0)
      distributed = true;
    else
      csv = argv[i];
  }
  if (distributed) return demo::run_distributed(argc, argv, csv);
  try {
    return demo::run(csv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bn1d_demo: %s\n", e.what());
    return 1;
  }
}
