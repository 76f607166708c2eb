// SPDX-License-Identifier: MIT
// State-file interchange between the R package and the C++ API, used by scripts/test-r.sh
// (not part of the R package: excluded by .Rbuildignore). Build against an installed bn1d:
//   g++ -O2 interop.cpp $(pkg-config --cflags --libs --static bn1d) -o interop
//
//   interop write <state> <data> <float32|float64>
//       trains a C++ BatchNorm1d (3 steps on seeded normal data), saves its state to <state>,
//       and writes an eval-mode input and output (keys "input", "output") and the module's
//       options (metadata) to <data>, for R to load and compare.
//   interop check <state> <data>
//       builds a module from <data>'s metadata, loads <state> (written by R), normalizes <data>'s
//       "input" in eval mode and compares with its "output" (R's result): exit status 0 when
//       every element is identical.
// Both sides compute on the column-major memory R arrays have, so that the same kernels run and
// the comparison can be bitwise: kernels chosen for other memory layouts may round the last bit
// differently (e.g. row-major (4, 5, 3) takes the SIMD kernels, column-major the reference ones).
#include <bn1d/bn1d.hpp>

#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <string>

namespace {

bn1d::BatchNorm1dOptions options_from(const bn1d::Metadata& m) {
  bn1d::BatchNorm1dOptions o(std::stoll(m.at("num_features")));
  o.eps(std::stod(m.at("eps")));
  const std::string& momentum = m.at("momentum");
  o.momentum(momentum == "None" ? std::nullopt : std::optional<double>(std::stod(momentum)));
  o.affine(m.at("affine") == "true");
  o.track_running_stats(m.at("track_running_stats") == "true");
  o.dtype(m.at("dtype") == "float32" ? bn1d::DType::Float32 : bn1d::DType::Float64);
  return o;
}

// Elements of two same-shaped contiguous tensors that differ (bitwise, as values).
template <class T>
long long differences(const bn1d::Tensor& a, const bn1d::Tensor& b) {
  long long n = 0;
  for (int64_t i = 0; i < a.numel(); ++i) n += a.data<T>()[i] != b.data<T>()[i];
  return n;
}

// A column-major copy of @p t (strides {1, N, N·C}), the memory layout of an R array, viewing
// @p storage (which must outlive it).
bn1d::Tensor column_major(const bn1d::Tensor& t, bn1d::Tensor& storage) {
  const bn1d::Shape& s = t.sizes();
  bn1d::Shape strides{1, s[0]};
  if (s.size() == 3) strides.push_back(s[0] * s[1]);
  storage = bn1d::Tensor::empty({t.numel()}, t.dtype());
  bn1d::Tensor view = bn1d::Tensor::from_blob(storage.raw_data(), s, strides, t.dtype());
  view.copy_from(t);
  return view;
}

int write(const std::string& state_path, const std::string& data_path, const std::string& dtype) {
  const bn1d::DType dt = dtype == "float32" ? bn1d::DType::Float32 : bn1d::DType::Float64;
  bn1d::BatchNorm1d m(bn1d::BatchNorm1dOptions(6).eps(1e-3).momentum(0.25).dtype(dt));
  bn1d::Tensor w = bn1d::randn({6}, dt, 1), b = bn1d::randn({6}, dt, 2);
  m.weight().copy_from(w);
  m.bias().copy_from(b);
  for (uint64_t step = 0; step < 3; ++step) m.forward(bn1d::randn({5, 6, 4}, dt, 10 + step));
  m.save(state_path);
  m.eval();
  bn1d::Tensor x = bn1d::randn({3, 6, 4}, dt, 20);
  bn1d::StateDict data;
  data.insert("input", x);
  bn1d::Tensor storage;
  data.insert("output", m.forward(column_major(x, storage)).contiguous());
  bn1d::save_safetensors(data_path, data,
                         {{"num_features", "6"},
                          {"eps", "0.001"},
                          {"momentum", "0.25"},
                          {"affine", "true"},
                          {"track_running_stats", "true"},
                          {"dtype", dtype}});
  std::printf("C++ wrote %s and %s (%s)\n", state_path.c_str(), data_path.c_str(), dtype.c_str());
  return 0;
}

int check(const std::string& state_path, const std::string& data_path) {
  bn1d::Metadata meta;
  const bn1d::StateDict data = bn1d::load_safetensors(data_path, "", &meta);
  bn1d::BatchNorm1d m(options_from(meta));
  m.load(state_path);
  m.eval();
  bn1d::Tensor storage;
  const bn1d::Tensor y = m.forward(column_major(data.at("input"), storage)).contiguous();
  const bn1d::Tensor& expected = data.at("output");
  if (y.sizes() != expected.sizes() || y.dtype() != expected.dtype()) {
    std::printf("C++ check %s: shape or dtype differs\n", data_path.c_str());
    return 1;
  }
  const long long n = y.dtype() == bn1d::DType::Float32 ? differences<float>(y, expected)
                                                        : differences<double>(y, expected);
  std::printf(
      "C++ loaded the state %s: eval output %s the writer's (%lld of %lld elements differ)\n",
      state_path.c_str(), n == 0 ? "identical to" : "DIFFERS from", n,
      static_cast<long long>(y.numel()));
  return n == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 5 && std::strcmp(argv[1], "write") == 0) return write(argv[2], argv[3], argv[4]);
    if (argc == 4 && std::strcmp(argv[1], "check") == 0) return check(argv[2], argv[3]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "interop: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr,
               "usage: interop write <state> <data> <float32|float64>\n"
               "       interop check <state> <data>\n");
  return 2;
}
