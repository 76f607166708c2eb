// SPDX-License-Identifier: MIT
// The demo's data: the UCI handwritten digits (data/digits.csv.gz, 1,797 8×8 images, pixels
// 0..16, labels 0..9), read with zlib, and the seeded random generator behind its splits,
// initial weights and batch orders.
#pragma once

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace demo {

struct Dataset {
  int n = 0, d = 0, k = 0;  // samples, features, classes
  std::vector<float> x;     // (n, d)
  std::vector<int> y;       // (n)
};

// Rows of d pixel counts 0..16 followed by an integer label, no header. gzopen also reads an
// uncompressed file. Pixels are scaled to [0, 1], the usual preprocessing of image data.
inline Dataset load_digits(const std::string& path) {
  std::unique_ptr<gzFile_s, int (*)(gzFile)> in(gzopen(path.c_str(), "rb"), gzclose);
  if (!in) throw std::runtime_error("cannot open " + path);
  constexpr float kMaxPixel = 16.0f;
  Dataset ds;
  std::vector<char> buf(1 << 16);
  while (gzgets(in.get(), buf.data(), static_cast<int>(buf.size()))) {
    std::string line(buf.data());
    if (line.find_first_not_of(" \r\n") == std::string::npos) continue;
    std::vector<float> row;
    std::stringstream ss(line);
    for (std::string f; std::getline(ss, f, ',');) row.push_back(std::stof(f));
    const int d = static_cast<int>(row.size()) - 1;
    if (ds.n == 0) ds.d = d;
    const std::string where = path + ": row " + std::to_string(ds.n + 1);
    if (d < 1 || d != ds.d)
      throw std::runtime_error(where + " has " + std::to_string(d + 1) + " fields");
    const int label = static_cast<int>(row.back());
    if (label < 0 || static_cast<float>(label) != row.back())
      throw std::runtime_error(where + " has a bad label");
    for (int j = 0; j < d; j++) ds.x.push_back(row[j] / kMaxPixel);
    ds.y.push_back(label);
    ds.k = std::max(ds.k, label + 1);
    ds.n++;
  }
  if (ds.n == 0) throw std::runtime_error(path + ": no data");
  return ds;
}

// mt19937_64 is specified bit for bit by the standard; its distributions are not, so the few we
// need are written here and the demo gives the same numbers with every standard library.
struct Rng {
  std::mt19937_64 gen;
  explicit Rng(uint64_t seed) : gen(seed) {}
  uint64_t below(uint64_t n) { return gen() % n; }
  float uniform(float lo, float hi) {  // 24 random bits: exact in float
    return lo + (hi - lo) * static_cast<float>(gen() >> 40) * 0x1p-24f;
  }
  void shuffle(std::vector<int>& v) {
    for (size_t i = v.size(); i > 1; i--) std::swap(v[i - 1], v[below(i)]);
  }
};

// Rows idx of ds as a contiguous (count, d) block and their labels.
inline void gather(const Dataset& ds, const int* idx, int count, std::vector<float>& x,
                   std::vector<int>& y) {
  const size_t d = ds.d;
  x.resize(count * d), y.resize(count);
  for (int i = 0; i < count; i++) {
    std::copy_n(&ds.x[idx[i] * d], d, &x[i * d]);
    y[i] = ds.y[idx[i]];
  }
}

// A stratified split: test_fraction of every class, drawn at random, goes to the test set.
inline void stratified_split(const Dataset& ds, double test_fraction, Rng& rng,
                             std::vector<int>& train_idx, std::vector<int>& test_idx) {
  train_idx.clear(), test_idx.clear();
  for (int k = 0; k < ds.k; k++) {
    std::vector<int> cls;
    for (int i = 0; i < ds.n; i++)
      if (ds.y[i] == k) cls.push_back(i);
    rng.shuffle(cls);
    const auto n_test = static_cast<size_t>(std::lround(test_fraction * cls.size()));
    test_idx.insert(test_idx.end(), cls.begin(), cls.begin() + n_test);
    train_idx.insert(train_idx.end(), cls.begin() + n_test, cls.end());
  }
}

}  // namespace demo
