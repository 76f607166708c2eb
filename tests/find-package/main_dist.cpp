// Built against the installed bn1d::dist by scripts/test.sh and run under mpirun: exits 0 only if
// SyncBatchNorm1d normalizes with the statistics of the global batch.
#include <mpi.h>
#include <bn1d/bn1d.hpp>
#include <bn1d/dist/sync_batch_norm.hpp>

#include <cmath>
#include <iostream>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1, ok = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  {
    // Rank r holds two rows of value r: the global batch has mean (size − 1) / 2, so this rank's
    // output is (r − mean) / sqrt(var + eps) in every channel.
    bn1d::SyncBatchNorm1d m(bn1d::BatchNorm1dOptions(2).dtype(bn1d::DType::Float64));
    bn1d::Tensor x = bn1d::Tensor::full({2, 2}, static_cast<double>(rank), bn1d::DType::Float64);
    const bn1d::Tensor y = m(x);
    const double mean = (size - 1) / 2.0;
    double var = 0;  // biased variance of {0, 0, 1, 1, ..., size − 1, size − 1}
    for (int r = 0; r < size; r++) var += (r - mean) * (r - mean) / size;
    const double expected = (rank - mean) / std::sqrt(var + 1e-5);
    ok = std::fabs(y.data<double>()[0] - expected) < 1e-12 && m.num_batches_tracked() == 1;
    if (rank == 0)
      std::cout << "consumer_dist: " << size << " ranks, output " << y.data<double>()[0]
                << (ok ? " ok\n" : " WRONG\n");
  }
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
  MPI_Finalize();
  return ok ? 0 : 1;
}
