// SPDX-License-Identifier: MIT
// bn1d_demo --distributed: the demo's BN model trained data-parallel over the processes of an
// MPI job, checked against the single-process run.
#pragma once

#include <cstdio>
#include <string>

#include "experiment.hpp"

namespace demo {

// Default epochs of a data-parallel run, fewer than the demo's to keep ctest quick (every step
// is 7 collectives). Its float sums are grouped by rank, so its losses differ from one process's
// by rounding, which SGD amplifies: ≤ 4.5e-7 relative over these 5 epochs on 1-20 ranks, ≤ 1.5e-6
// over 15 (measured), under the check's 1e-5.
constexpr int kDistributedEpochs = 5;

#ifdef BN1D_DEMO_DISTRIBUTED
/// Initializes MPI, trains the BN model data-parallel over MPI_COMM_WORLD (SyncBatchNorm1d,
/// gradients summed with MPI_Allreduce) and, on rank 0, the same model in one process on the same
/// global batches (seed 1 of the single-process demo); prints both per-epoch losses. Returns 0 when
/// every epoch's losses agree to 1e-5 relative and all ranks hold identical parameters and running
/// statistics.
int run_distributed(int argc, char** argv, const Config& cfg);
#else
inline int run_distributed(int, char**, const Config&) {
  std::fprintf(stderr,
               "bn1d_demo: --distributed needs bn1d::dist; this build found no MPI "
               "(install libopenmpi-dev and reconfigure)\n");
  return 2;
}
#endif

}  // namespace demo
