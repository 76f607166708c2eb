// SPDX-License-Identifier: MIT
// mpirun -np K bn1d_demo --distributed: data-parallel training of the demo's BN model.
//
// Every rank holds a replica of the MLP; each global batch of kBatch rows is split into K
// contiguous parts (uneven when K does not divide it; a rank may get none). Per step:
//   forward:  SyncBatchNorm1d normalizes with the statistics of the global batch (1 collective)
//   backward: SyncBatchNorm1d's input gradient is that of the global loss (1 collective); the
//             cross-entropy scales by 1/N_global, so each rank's gradients are its share of the
//             global gradient, and one MPI_Allreduce sums them (as DistributedDataParallel does)
//   update:   every rank applies the same SGD step to identical parameters
// so the replicas follow the single-process run on the same batches up to float rounding (sums
// are grouped by rank). Rank 0 also trains the single-process model and compares the losses.
#include "demo_distributed.hpp"

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "bn1d/bn1d.hpp"
#include "bn1d/dist/sync_batch_norm.hpp"
#include "mlp.hpp"

namespace demo {
namespace {

constexpr double kLossTolerance = 1e-5;  // relative, per epoch

// True on every rank when v holds the same bits on every rank of comm.
bool same_on_all_ranks(const float* v, int count, MPI_Comm comm) {
  std::vector<float> root(v, v + count);
  MPI_Bcast(root.data(), count, MPI_FLOAT, 0, comm);
  int same = std::memcmp(root.data(), v, sizeof(float) * count) == 0, all = 0;
  MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_LAND, comm);
  return all != 0;
}

double max_relative_difference(const float* a, const float* b, int count) {
  double worst = 0.0;
  for (int i = 0; i < count; i++) {
    const double scale = std::max(std::fabs(static_cast<double>(b[i])), 1e-30);
    worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]) / scale);
  }
  return worst;
}

int train_data_parallel(const std::string& csv_path, MPI_Comm comm) {
  int rank = 0, K = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &K);
  const bool root = rank == 0;
  Experiment ex(csv_path);  // identical on every rank: same file, same seed
  const int n_train = ex.n_train(), n_test = ex.n_test(), H = kHidden;

  MLP<bn1d::SyncBatchNorm1d> replica = ex.model<bn1d::SyncBatchNorm1d>(true, comm);
  MLP<bn1d::BatchNorm1d> single = ex.model<bn1d::BatchNorm1d>(true);  // trained on rank 0 only
  auto sum_gradients = [comm](std::vector<float>& g) {
    MPI_Allreduce(MPI_IN_PLACE, g.data(), static_cast<int>(g.size()), MPI_FLOAT, MPI_SUM, comm);
  };
  // Rows [part(N, r), part(N, r + 1)) of a global batch of N rows belong to rank r.
  auto part = [K](int N, int r) { return static_cast<int>(static_cast<long>(N) * r / K); };

  if (root) {
    std::printf(
        "data-parallel training over %d processes: SyncBatchNorm1d(%d), gradients summed "
        "with MPI_Allreduce\n",
        K, H);
    std::printf("global batch %d split into rows per rank", kBatch);
    for (int r = 0; r < K; r++)
      std::printf("%s%d", r ? "," : " ", part(kBatch, r + 1) - part(kBatch, r));
    const int last = n_train % kBatch;
    if (last) {
      std::printf(" (last batch of %d:", last);
      for (int r = 0; r < K; r++)
        std::printf("%s%d", r ? "," : " ", part(last, r + 1) - part(last, r));
      std::printf(")");
    }
    std::printf("; SGD, lr %g, %d epochs\n\n", kLearningRate, kEpochs);
    std::printf("epoch | train loss: %d processes  1 process | relative difference\n", K);
  }

  std::vector<float> x_batch, x_local, batch_losses, single_losses;
  std::vector<int> y_batch, y_local;
  std::vector<int> order = ex.train_idx;
  double worst = 0.0;
  for (int epoch = 1; epoch <= kEpochs; epoch++) {
    ex.rng.shuffle(order);  // same order on every rank
    batch_losses.clear(), single_losses.clear();
    for (int start = 0; start < n_train; start += kBatch) {
      const int N = std::min(kBatch, n_train - start);
      const int lo = part(N, rank), hi = part(N, rank + 1);
      gather(ex.ds, order.data() + start + lo, hi - lo, x_local, y_local);
      batch_losses.push_back(replica.train_step(x_local.data(), y_local.data(), hi - lo, N,
                                                kLearningRate, sum_gradients));
      if (root) {
        gather(ex.ds, order.data() + start, N, x_batch, y_batch);
        single_losses.push_back(
            single.train_step(x_batch.data(), y_batch.data(), N, N, kLearningRate) / N);
      }
    }
    // Per-batch loss sums of every rank: one collective per epoch.
    MPI_Allreduce(MPI_IN_PLACE, batch_losses.data(), static_cast<int>(batch_losses.size()),
                  MPI_FLOAT, MPI_SUM, comm);
    if (!root) continue;
    float loss_dp = 0.0f, loss_single = 0.0f;
    for (size_t b = 0; b < batch_losses.size(); b++) {
      const int N = std::min(kBatch, n_train - static_cast<int>(b) * kBatch);
      loss_dp += batch_losses[b] / N;
      loss_single += single_losses[b];
    }
    const auto batches = static_cast<float>(batch_losses.size());
    loss_dp /= batches, loss_single /= batches;
    const double diff = max_relative_difference(&loss_dp, &loss_single, 1);
    worst = std::max(worst, diff);
    if (epoch == 1 || epoch % 5 == 0)
      std::printf("%5d | %23.6f %10.6f | %19.2e\n", epoch, loss_dp, loss_single, diff);
  }

  // Replicas must hold identical parameters and running statistics.
  bn1d::SyncBatchNorm1d& bn = *replica.bn;
  const bool replicas_identical =
      same_on_all_ranks(replica.w1.data(), static_cast<int>(replica.w1.size()), comm) &&
      same_on_all_ranks(replica.w2.data(), static_cast<int>(replica.w2.size()), comm) &&
      same_on_all_ranks(bn.weight().data<float>(), H, comm) &&
      same_on_all_ranks(bn.running_mean().data<float>(), H, comm) &&
      same_on_all_ranks(bn.running_var().data<float>(), H, comm);
  int ok = 1;
  if (root) {
    const double stats_diff =
        std::max(max_relative_difference(bn.running_mean().data<float>(),
                                         single.bn->running_mean().data<float>(), H),
                 max_relative_difference(bn.running_var().data<float>(),
                                         single.bn->running_var().data<float>(), H));
    const float acc_dp = replica.evaluate(ex.x_test.data(), ex.y_test.data(), n_test).accuracy;
    const float acc_single = single.evaluate(ex.x_test.data(), ex.y_test.data(), n_test).accuracy;
    std::printf("\nlargest per-epoch loss difference: %.2e (tolerance %.0e)\n", worst,
                kLossTolerance);
    std::printf("running statistics vs 1 process: largest relative difference %.2e\n", stats_diff);
    std::printf("test accuracy: %.1f%% (%d processes), %.1f%% (1 process)\n", 100.0f * acc_dp, K,
                100.0f * acc_single);
    std::printf("parameters and running statistics identical on all %d ranks: %s\n", K,
                replicas_identical ? "yes" : "NO");
    ok = worst <= kLossTolerance && replicas_identical;
    std::printf("data-parallel check: %s\n", ok ? "ok" : "FAILED");
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
  return ok ? 0 : 1;
}

}  // namespace

int run_distributed(int argc, char** argv, const std::string& csv_path) {
  MPI_Init(&argc, &argv);
  int rank = 0, rc = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  try {
    rc = train_data_parallel(csv_path, MPI_COMM_WORLD);
  } catch (const std::exception& e) {
    // SyncBatchNorm1d makes every rank throw together; anything else (e.g. an unreadable file
    // on one machine) must not leave the other ranks waiting in a collective.
    std::fprintf(stderr, "bn1d_demo (rank %d): %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return rc;
}

}  // namespace demo
