// The spec's example (R torch's nn_batch_norm1d page), in C++. This file is the README's snippet.
#include <bn1d/bn1d.hpp>

#include <iostream>

int main() {
  // With learnable parameters
  bn1d::BatchNorm1d m(100);
  // Without learnable parameters
  bn1d::BatchNorm1d m_plain(bn1d::BatchNorm1dOptions(100).affine(false));

  bn1d::Tensor input = bn1d::randn({20, 100}, bn1d::DType::Float32, /*seed=*/0);
  bn1d::Tensor output = m(input);
  bn1d::Tensor output_plain = m_plain(input);

  std::cout << m << "\n" << m_plain << "\n";
  std::cout << "output [" << output.size(0) << ", " << output.size(1) << "], first value "
            << output.data<float>()[0] << " (without affine: " << output_plain.data<float>()[0]
            << ")\nrunning_mean[0] = " << m.running_mean().data<float>()[0]
            << ", num_batches_tracked = " << m.num_batches_tracked() << "\n";

  // Gradients of the last forward, e.g. for a loss sum(output):
  auto grads = m.backward(bn1d::Tensor::ones({20, 100}));
  std::cout << "grad_bias[0] = " << grads.bias.data<float>()[0] << "\n";
}
