// SPDX-License-Identifier: MIT
// mpirun -np K bn1d_demo --distributed: data-parallel training of the demo's BN model.
//
// Every rank holds a replica of the MLP; each global batch of cfg.batch rows is split into K
// contiguous parts (uneven when K does not divide it; a rank may get none). Per step:
//   forward:  SyncBatchNorm1d normalizes with the statistics of the global batch (1 collective
//             per layer)
//   backward: SyncBatchNorm1d's input gradient is that of the global loss (1 collective per
//             layer); the cross-entropy scales by 1/N_global, so each rank's gradients are its
//             share of the global gradient, and one MPI_Allreduce sums them (as
//             DistributedDataParallel does)
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
#include "experiment.hpp"

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

// Rows [part(N, r, K), part(N, r + 1, K)) of a global batch of N rows belong to rank r of K.
int part(int N, int r, int K) { return static_cast<int>(static_cast<long>(N) * r / K); }

double max_relative_difference(const float* a, const float* b, int count) {
  double worst = 0.0;
  for (int i = 0; i < count; i++) {
    const double scale = std::max(std::fabs(static_cast<double>(b[i])), 1e-30);
    worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]) / scale);
  }
  return worst;
}

// True on every rank when every parameter and running statistic of m is the same on all ranks.
bool replicas_identical(MLP<bn1d::SyncBatchNorm1d>& m, MPI_Comm comm) {
  bool same = true;
  auto check = [&](const float* v, size_t count) {
    same = same_on_all_ranks(v, static_cast<int>(count), comm) && same;
  };
  for (const Linear& f : m.fc) check(f.w.data(), f.w.size()), check(f.b.data(), f.b.size());
  for (auto& n : m.norm) {
    const size_t H = n->weight().numel();
    check(n->weight().data<float>(), H), check(n->bias().data<float>(), H);
    check(n->running_mean().data<float>(), H), check(n->running_var().data<float>(), H);
  }
  return same;
}

// Largest relative difference between the running statistics of the replica and the single model.
double running_stats_difference(MLP<bn1d::SyncBatchNorm1d>& dp, MLP<bn1d::BatchNorm1d>& single) {
  double worst = 0.0;
  for (size_t l = 0; l < dp.norm.size(); l++) {
    const int H = dp.fc[l].out;
    const bn1d::BatchNorm1d &a = dp.norm[l]->module(), &b = *single.norm[l];
    worst = std::max(
        {worst,
         max_relative_difference(a.running_mean().data<float>(), b.running_mean().data<float>(), H),
         max_relative_difference(a.running_var().data<float>(), b.running_var().data<float>(), H)});
  }
  return worst;
}

void print_setup(const Config& cfg, int K, const Trial& t) {
  std::printf("UCI handwritten digits, seed 1's stratified split: %d train / %d test rows\n",
              t.n_train(), t.n_test());
  std::printf(
      "data-parallel training over %d processes: SyncBatchNorm1d in each of %d hidden layers of "
      "%d, gradients summed with MPI_Allreduce\n",
      K, cfg.depth, cfg.hidden);
  std::printf("global batch %d split into rows per rank", cfg.batch);
  for (int r = 0; r < K; r++)
    std::printf("%s%d", r ? "," : " ", part(cfg.batch, r + 1, K) - part(cfg.batch, r, K));
  std::printf("; SGD, lr %g, %d epochs, seed 1\n\n", cfg.lr, cfg.epochs);
  std::printf("epoch | train loss: %d processes  1 process | relative difference\n", K);
}

int train_data_parallel(const Config& cfg, MPI_Comm comm) {
  int rank = 0, K = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &K);
  const bool root = rank == 0;
  const Dataset ds = load_digits(cfg.data);
  Trial t(ds, cfg, 1);  // identical on every rank: same file, same seed
  const int n_train = t.n_train();

  MLP<bn1d::SyncBatchNorm1d> replica = t.model<bn1d::SyncBatchNorm1d>(true, comm);
  MLP<bn1d::BatchNorm1d> single = t.model<bn1d::BatchNorm1d>(true);  // trained on rank 0 only
  auto sum_gradients = [comm](std::vector<float>& g) {
    MPI_Allreduce(MPI_IN_PLACE, g.data(), static_cast<int>(g.size()), MPI_FLOAT, MPI_SUM, comm);
  };
  if (root) print_setup(cfg, K, t);

  std::vector<float> x_batch, x_local, batch_losses, single_losses;
  std::vector<int> y_batch, y_local;
  double worst = 0.0;
  for (int epoch = 1; epoch <= cfg.epochs; epoch++) {
    t.rng.shuffle(t.train_idx);  // same order on every rank
    batch_losses.clear(), single_losses.clear();
    const int N = cfg.batch;
    for (int b = 0, start = 0; b < batches_per_epoch(n_train, N); b++, start += N) {
      const int lo = part(N, rank, K), hi = part(N, rank + 1, K);
      gather(ds, t.train_idx.data() + start + lo, hi - lo, x_local, y_local);
      batch_losses.push_back(
          replica.train_step(x_local.data(), y_local.data(), hi - lo, N, cfg.lr, sum_gradients));
      if (root) {
        gather(ds, t.train_idx.data() + start, N, x_batch, y_batch);
        single_losses.push_back(single.train_step(x_batch.data(), y_batch.data(), N, N, cfg.lr));
      }
    }
    // Per-batch loss sums of every rank: one collective per epoch.
    MPI_Allreduce(MPI_IN_PLACE, batch_losses.data(), static_cast<int>(batch_losses.size()),
                  MPI_FLOAT, MPI_SUM, comm);
    if (!root) continue;
    float loss_dp = 0.0f, loss_single = 0.0f;
    for (size_t b = 0; b < batch_losses.size(); b++)
      loss_dp += batch_losses[b] / N, loss_single += single_losses[b] / N;
    loss_dp /= batch_losses.size(), loss_single /= batch_losses.size();
    const double diff = max_relative_difference(&loss_dp, &loss_single, 1);
    worst = std::max(worst, diff);
    std::printf("%5d | %23.6f %10.6f | %19.2e\n", epoch, loss_dp, loss_single, diff);
  }

  const bool identical = replicas_identical(replica, comm);
  // Every rank evaluates: an eval forward of SyncBatchNorm1d is collective too (it checks that
  // the ranks agree); rank 0 alone could use each layer's module().infer().
  const float acc_dp = replica.accuracy(t.x_test.data(), t.y_test.data(), t.n_test());
  int ok = 1;
  if (root) {
    const double stats_diff = running_stats_difference(replica, single);
    const float acc_single = single.accuracy(t.x_test.data(), t.y_test.data(), t.n_test());
    std::printf("\nlargest per-epoch loss difference: %.2e (tolerance %.0e)\n", worst,
                kLossTolerance);
    std::printf("running statistics vs 1 process: largest relative difference %.2e\n", stats_diff);
    std::printf("test accuracy: %.1f%% (data-parallel), %.1f%% (1 process)\n", 100.0f * acc_dp,
                100.0f * acc_single);
    std::printf("parameters and running statistics identical on all %d ranks: %s\n", K,
                identical ? "yes" : "NO");
    ok = worst <= kLossTolerance && identical;
    std::printf("data-parallel check: %s\n", ok ? "ok" : "FAILED");
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
  return ok ? 0 : 1;
}

}  // namespace

int run_distributed(int argc, char** argv, const Config& cfg) {
  MPI_Init(&argc, &argv);
  int rank = 0, rc = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  try {
    rc = train_data_parallel(cfg, MPI_COMM_WORLD);
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
