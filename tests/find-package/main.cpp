// Built against the installed library by scripts/test.sh: exits 0 only if bn1d works.
#include <bn1d/bn1d.hpp>

#include <cmath>
#include <iostream>

int main() {
  bn1d::BatchNorm1d m(3);
  const bn1d::Tensor y = m(bn1d::randn({8, 3}, bn1d::DType::Float32, 1));
  double sum = 0;
  for (int i = 0; i < 8; ++i) sum += y.data<float>()[i * 3];
  if (std::fabs(sum) > 1e-4 || m.num_batches_tracked() != 1) {
    std::cerr << "consumer: unexpected result\n";
    return 1;
  }
  std::cout << "consumer: " << m << " ok\n";
  return 0;
}
