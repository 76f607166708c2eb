// SPDX-License-Identifier: MIT
/// @file relu_kernels.hpp
/// @brief The separate ReLU passes of the "unfused" bn1d rows of bn1d_act_bench: float32 loops
/// (Highway, every target, dispatched at run time; relu_kernels.cpp), split over the OpenMP
/// threads in contiguous chunks.
#pragma once

#include <cstddef>

namespace bench {

/// y[i] = max(y[i], 0) for i < @p count, in place (one read and one write of y).
void relu_in_place(float* y, std::size_t count);

/// dx[i] = dy[i] where y[i] > 0, else 0, for i < @p count: torch's threshold_backward(dy, y, 0)
/// (two reads and one write).
void relu_backward(float* dx, const float* dy, const float* y, std::size_t count);

}  // namespace bench
