// SPDX-License-Identifier: MIT
// python_float_repr: numbers in messages and printouts look as they do in PyTorch.
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string>

#include "bn1d/tensor.hpp"

namespace bn1d {

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  // Shortest round-trip digits, in scientific form: "d[.ddd]e±XX".
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, std::fabs(value), std::chars_format::scientific);
  const std::string sci(buf, res.ptr);
  const std::size_t e_pos = sci.find('e');
  std::string digits = sci.substr(0, e_pos);
  if (digits.size() > 1) digits.erase(1, 1);  // drop the '.'
  const int exp = std::atoi(sci.c_str() + e_pos + 1);
  const std::string sign = std::signbit(value) ? "-" : "";
  const int nd = static_cast<int>(digits.size());

  if (exp < -4 || exp >= 16) {  // scientific, exponent with at least two digits
    std::string mant = digits.substr(0, 1);
    if (nd > 1) mant += "." + digits.substr(1);
    const int ae = std::abs(exp);
    return sign + mant + "e" + (exp < 0 ? "-" : "+") + (ae < 10 ? "0" : "") + std::to_string(ae);
  }
  std::string out;
  if (exp < 0) {
    out = "0." + std::string(static_cast<std::size_t>(-exp - 1), '0') + digits;
  } else if (nd <= exp + 1) {
    out = digits + std::string(static_cast<std::size_t>(exp + 1 - nd), '0') + ".0";
  } else {
    out = digits.substr(0, static_cast<std::size_t>(exp + 1)) + "." +
          digits.substr(static_cast<std::size_t>(exp + 1));
  }
  return sign + out;
}

}  // namespace bn1d
