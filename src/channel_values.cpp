// SPDX-License-Identifier: MIT
#include "channel_values.hpp"

namespace bn1d::detail {
namespace {

template <class T>
void store(const Tensor& t, const std::vector<double>& v) {
  const int64_t s = t.strides()[0];
  T* p = t.data<T>();
  for (std::size_t c = 0; c < v.size(); ++c) p[static_cast<int64_t>(c) * s] = static_cast<T>(v[c]);
}

}  // namespace

std::vector<double> channel_values(const Tensor& t, int64_t C, double fallback) {
  std::vector<double> v(static_cast<std::size_t>(C), fallback);
  if (!t.defined()) return v;
  const int64_t s = t.strides()[0];
  for (int64_t c = 0; c < C; ++c) {
    v[static_cast<std::size_t>(c)] =
        t.dtype() == DType::Float32 ? t.data<float>()[c * s] : t.data<double>()[c * s];
  }
  return v;
}

void store_channel_values(const Tensor& t, const std::vector<double>& v) {
  if (t.dtype() == DType::Float32) store<float>(t, v);
  else store<double>(t, v);
}

void check_optional_param(const Tensor& t, const char* name, int64_t C, DType dtype) {
  if (t.defined()) check_channel_tensor(t, name, C, dtype);
}

}  // namespace bn1d::detail
