// SPDX-License-Identifier: MIT
// format_shape and python_float_repr: shapes and numbers in messages and printouts look as they
// do in PyTorch.
#include "format.hpp"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string>

namespace bn1d {

std::string format_shape(const Shape& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  // Shortest round-trip digits, in scientific form: "d[.ddd]e±XX".
  char buf[64];
  const auto res =
      std::to_chars(buf, buf + sizeof buf, std::fabs(value), std::chars_format::scientific);
  const std::string sci(buf, res.ptr);
  const std::size_t e_pos = sci.find('e');
  std::string digits = sci.substr(0, e_pos);
  if (digits.size() > 1) digits.erase(1, 1);  // drop the '.'
  const int exp = std::atoi(sci.c_str() + e_pos + 1);
  const std::string sign = std::signbit(value) ? "-" : "";
  const int nd = static_cast<int>(digits.size());

  if (exp < -4 || exp >= 16) {  // scientific, exponent with at least two digits
    std::string out = sign;
    out.push_back(digits[0]);
    if (nd > 1) out.append(".").append(digits, 1, std::string::npos);
    const int ae = std::abs(exp);
    out.append(exp < 0 ? "e-" : "e+").append(ae < 10 ? "0" : "").append(std::to_string(ae));
    return out;
  }
  std::string out = sign;
  if (exp < 0) {
    out.append("0.").append(static_cast<std::size_t>(-exp - 1), '0').append(digits);
  } else if (nd <= exp + 1) {
    out.append(digits).append(static_cast<std::size_t>(exp + 1 - nd), '0').append(".0");
  } else {
    const auto point = static_cast<std::size_t>(exp + 1);
    out.append(digits, 0, point).append(".").append(digits, point, std::string::npos);
  }
  return out;
}

}  // namespace bn1d
