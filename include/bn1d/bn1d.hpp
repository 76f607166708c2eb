// SPDX-License-Identifier: MIT
/// @file bn1d.hpp
/// @brief Umbrella header: everything public in bn1d.
#pragma once

#include "bn1d/activation.hpp"
#include "bn1d/batch_norm.hpp"
#include "bn1d/combine.hpp"
#include "bn1d/error.hpp"
#include "bn1d/fold.hpp"
#include "bn1d/ghost_batch_norm.hpp"
#include "bn1d/module.hpp"
#include "bn1d/state.hpp"
#include "bn1d/tensor.hpp"
#include "bn1d/valid_positions.hpp"
