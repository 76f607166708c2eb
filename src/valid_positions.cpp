// SPDX-License-Identifier: MIT
// ValidPositions: lengths or an (N, L) mask turned into runs of consecutive valid positions, the
// sub-views the masked steps hand to the kernels.
#include "bn1d/valid_positions.hpp"

#include <string>

#include "bn1d/error.hpp"
#include "format.hpp"

namespace bn1d {
namespace {

// The runs of nonzero values of each row of a row-major (N, L) mask.
template <class Bool>
std::vector<ValidPositions::Run> mask_runs(std::span<const Bool> mask, int64_t N, int64_t L) {
  if (N < 0 || L < 0) {
    throw Error("mask: expected a non-negative shape, got [" + std::to_string(N) + ", " +
                std::to_string(L) + "]");
  }
  const auto size = static_cast<int64_t>(mask.size());
  if ((L == 0 && size != 0) || (L != 0 && (size % L != 0 || size / L != N))) {
    throw Error("mask: expected " + std::to_string(N) + " x " + std::to_string(L) +
                " values (shape [" + std::to_string(N) + ", " + std::to_string(L) + "]), got " +
                std::to_string(size));
  }
  std::vector<ValidPositions::Run> runs;
  for (int64_t n = 0; n < N; ++n) {
    const Bool* row = mask.data() + n * L;
    for (int64_t l = 0; l < L;) {
      if (!row[l]) {
        ++l;
        continue;
      }
      const int64_t start = l;
      while (l < L && row[l]) ++l;
      runs.push_back({n, start, l - start});
    }
  }
  return runs;
}

}  // namespace

ValidPositions::ValidPositions(std::vector<Run> runs, int64_t N, int64_t L)
    : runs_(std::move(runs)), batch_size_(N), length_(L) {
  for (const Run& r : runs_) {
    count_ += r.length;  // within N·L of the data the runs were made from, or checked by lengths
    if (r.start + r.length > max_length_) max_length_ = r.start + r.length;
  }
}

ValidPositions ValidPositions::from_lengths(std::span<const int64_t> lengths) {
  std::vector<Run> runs;
  int64_t total = 0;
  for (std::size_t n = 0; n < lengths.size(); ++n) {
    if (lengths[n] < 0) {
      throw Error("lengths: expected values >= 0, got lengths[" + std::to_string(n) +
                  "] = " + std::to_string(lengths[n]));
    }
    if (__builtin_add_overflow(total, lengths[n], &total)) {
      throw Error("lengths: expected a total within the int64 range, got lengths[" +
                  std::to_string(n) + "] = " + std::to_string(lengths[n]) + " past it");
    }
    if (lengths[n] > 0) runs.push_back({static_cast<int64_t>(n), 0, lengths[n]});
  }
  return {std::move(runs), static_cast<int64_t>(lengths.size()), -1};
}

ValidPositions ValidPositions::from_mask(std::span<const uint8_t> mask, int64_t N, int64_t L) {
  return {mask_runs(mask, N, L), N, L};
}

ValidPositions ValidPositions::from_mask(std::span<const bool> mask, int64_t N, int64_t L) {
  return {mask_runs(mask, N, L), N, L};
}

void ValidPositions::check_fits(const std::vector<int64_t>& sizes) const {
  const char* name = from_lengths() ? "lengths" : "mask";
  if (sizes.size() != 3) {
    throw Error(std::string(name) + ": expected an (N, C, L) input, got input size " +
                format_shape(sizes));
  }
  const int64_t N = sizes[0], L = sizes[2];
  if (from_lengths()) {
    if (batch_size_ != N) {
      throw Error("lengths: expected " + std::to_string(N) +
                  " values (one per sample of the input of size " + format_shape(sizes) +
                  "), got " + std::to_string(batch_size_));
    }
    if (max_length_ > L) {
      for (const Run& r : runs_) {
        if (r.length > L) {
          throw Error("lengths: expected values <= " + std::to_string(L) +
                      " (the input's length L, input size " + format_shape(sizes) +
                      "), got lengths[" + std::to_string(r.n) + "] = " + std::to_string(r.length));
        }
      }
    }
  } else if (batch_size_ != N || length_ != L) {
    throw Error("mask: expected shape [" + std::to_string(N) + ", " + std::to_string(L) +
                "] (the input's N and L, input size " + format_shape(sizes) + "), got [" +
                std::to_string(batch_size_) + ", " + std::to_string(length_) + "]");
  }
}

}  // namespace bn1d
