// SPDX-License-Identifier: MIT
// bn1d_sync_bench: the cost of synchronizing batch statistics. Times one training step of
// SyncBatchNorm1d (forward + backward, each two MPI_Allgathers: a fixed-size header, then the
// per-channel records) against the same step of an unsynchronized BatchNorm1d on the local batch,
// per rank count, for C ∈ {64, 1024, 16384}, and prints the bytes each call sends (header plus
// records).
//
//   mpirun -np 2 bn1d_sync_bench [--rows N] [--steps S] [--channels C]
//   mpirun -np 4 bn1d_sync_bench
//
// Every step starts after an MPI_Barrier and is timed on each rank with MPI_Wtime; the figure for
// a step is the slowest rank's time (the step is only as fast as that rank), the figure reported
// the median over S steps. Each rank runs one OpenMP thread unless OMP_NUM_THREADS says otherwise.
#include <mpi.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "bn1d/bn1d.hpp"
#include "bn1d/dist/sync_batch_norm.hpp"

namespace {

struct Args {
  int rows = 64;     // local batch rows per rank
  int steps = 200;   // timed steps per case
  int channels = 0;  // only this C (0: each of 64, 1024, 16384)
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i++) {
    const bool has_value = i + 1 < argc;
    if (std::strcmp(argv[i], "--rows") == 0 && has_value)
      a.rows = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--steps") == 0 && has_value)
      a.steps = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--channels") == 0 && has_value)
      a.channels = std::atoi(argv[++i]);
    else
      throw std::runtime_error(std::string("unknown argument ") + argv[i] +
                               " (use --rows N --steps S --channels C)");
  }
  if (a.rows < 1 || a.steps < 1) throw std::runtime_error("--rows and --steps must be >= 1");
  if (a.channels < 0) throw std::runtime_error("--channels must be >= 1");
  return a;
}

// Median over steps of the slowest rank's time of one step(), in seconds.
template <class Step>
double median_step_seconds(MPI_Comm comm, int steps, Step&& step) {
  for (int i = 0; i < 5; i++) step();  // warm-up: scratch, caches, MPI connections
  std::vector<double> times(static_cast<size_t>(steps));
  for (double& t : times) {
    MPI_Barrier(comm);
    const double start = MPI_Wtime();
    step();
    t = MPI_Wtime() - start;
  }
  MPI_Allreduce(MPI_IN_PLACE, times.data(), steps, MPI_DOUBLE, MPI_MAX, comm);
  std::nth_element(times.begin(), times.begin() + steps / 2, times.end());
  return times[static_cast<size_t>(steps / 2)];
}

std::string bytes_text(std::size_t b) {
  char buf[32];
  if (b < 10 * 1024)
    std::snprintf(buf, sizeof buf, "%zu B", b);
  else
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(b) / 1024.0);
  return buf;
}

int run(const Args& args) {
  int rank = 0, K = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &K);
  const bool root = rank == 0;
  const long cores = sysconf(_SC_NPROCESSORS_ONLN);  // the machine's, not this rank's binding
  if (root) {
    std::printf("bn1d_sync_bench: %d ranks, %d OpenMP thread(s) per rank, %d CPU core(s) here%s\n",
                K, omp_get_max_threads(), static_cast<int>(cores),
                K * omp_get_max_threads() > cores ? " (oversubscribed)" : "");
    std::printf(
        "one training step = forward (batch statistics) + backward, float32, input (%d, C) "
        "per rank;\nmedian of %d steps, each the slowest rank's time after a barrier\n\n",
        args.rows, args.steps);
    std::printf("%6s | %11s %11s %7s | %27s | %27s\n", "C", "local (ms)", "synced (ms)", "ratio",
                "forward: sent/rank, gathered", "backward: sent/rank, gathered");
  }
  const std::vector<int> all_channels = {64, 1024, 16384};
  for (const int C : args.channels > 0 ? std::vector<int>{args.channels} : all_channels) {
    const int64_t seed = 1000 + rank;
    const bn1d::Tensor x = bn1d::randn({args.rows, C}, bn1d::DType::Float32, seed);
    const bn1d::Tensor dy = bn1d::randn({args.rows, C}, bn1d::DType::Float32, seed + 7919);
    bn1d::Tensor y;
    bn1d::BatchNormGradients grads;

    bn1d::BatchNorm1d local(C);
    const double t_local = median_step_seconds(MPI_COMM_WORLD, args.steps, [&] {
      local.forward(x, y);
      local.backward(dy, grads);
    });
    bn1d::SyncBatchNorm1d synced(C);
    const double t_sync = median_step_seconds(MPI_COMM_WORLD, args.steps, [&] {
      synced.forward(x, y);
      synced.backward(dy, grads);
    });
    if (root) {
      const std::size_t fwd = bn1d::SyncBatchNorm1d::forward_record_bytes(C);
      const std::size_t bwd = bn1d::SyncBatchNorm1d::backward_record_bytes(C);
      const std::string f = bytes_text(fwd) + ", " + bytes_text(fwd * static_cast<size_t>(K));
      const std::string b = bytes_text(bwd) + ", " + bytes_text(bwd * static_cast<size_t>(K));
      std::printf("%6d | %11.4f %11.4f %6.2fx | %27s | %27s\n", C, t_local * 1e3, t_sync * 1e3,
                  t_sync / t_local, f.c_str(), b.c_str());
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rc = 1;
  try {
    rc = run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bn1d_sync_bench: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return rc;
}
