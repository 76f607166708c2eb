// SPDX-License-Identifier: MIT
// Blocks of a batch (the runs of a mask, a GhostBatchNorm1d's chunks) processed in one OpenMP
// region: each block's kernel calls then run on their thread alone. Blocks are independent and
// their results are combined afterwards in block order, so nothing depends on the thread count.
#pragma once

#include <omp.h>

#include <cstdint>
#include <exception>

namespace bn1d::detail {

/// Runs body(i) for i in [0, count) on the OpenMP threads (dynamic schedule; inline for one block,
/// one thread, or inside a parallel region). The first exception a body throws is rethrown once
/// every body has run.
template <class Body>
void parallel_blocks(int64_t count, Body&& body) {
  if (count <= 1 || omp_get_max_threads() <= 1 || omp_in_parallel()) {
    for (int64_t i = 0; i < count; ++i) body(i);
    return;
  }
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < count; ++i) {
    try {
      body(i);
    } catch (...) {
#pragma omp critical(bn1d_parallel_blocks)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace bn1d::detail
