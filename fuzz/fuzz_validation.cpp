// libFuzzer target: the input-validation path. Random ranks, sizes, strides (negative, zero,
// huge, overflowing int64 products), dtypes, options and modes are fed to BatchNorm1d and the
// functional API; anything invalid must give bn1d::Error, never a crash, UB or out-of-bounds
// access. Views are kept inside one buffer (the harness's job; the library cannot know a
// caller's allocation), and outputs are capped at 64 Ki elements to keep memory small.
#include <fuzzer/FuzzedDataProvider.h>

#include <bn1d/bn1d.hpp>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

namespace {

constexpr int64_t kBufferBytes = 1 << 16;
constexpr int64_t kMaxElements = 1 << 16;
constexpr int64_t kAllocatableElements = int64_t{1} << 40;  // > ASan's 1 TiB malloc cap at 4 B

int64_t pick_int(FuzzedDataProvider& fdp) {
  switch (fdp.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      return fdp.ConsumeIntegralInRange<int64_t>(-2, 9);
    case 1:
      return fdp.ConsumeIntegralInRange<int64_t>(-100, 100);
    case 2:
      return fdp.ConsumeBool()
                 ? std::numeric_limits<int64_t>::max() - fdp.ConsumeIntegralInRange<int64_t>(0, 3)
                 : std::numeric_limits<int64_t>::min() + fdp.ConsumeIntegralInRange<int64_t>(0, 3);
    default:
      return fdp.ConsumeIntegral<int64_t>();
  }
}

double pick_double(FuzzedDataProvider& fdp) {
  switch (fdp.ConsumeIntegralInRange<int>(0, 4)) {
    case 0:
      return 1e-5;
    case 1:
      return std::numeric_limits<double>::quiet_NaN();
    case 2:
      return fdp.ConsumeBool() ? std::numeric_limits<double>::infinity() : -1.0;
    default:
      return fdp.ConsumeFloatingPoint<double>();
  }
}

bn1d::DType pick_dtype(FuzzedDataProvider& fdp) {
  return fdp.PickValueInArray({bn1d::DType::Float32, bn1d::DType::Float64, bn1d::DType::Int64});
}

// A view into `buffer`, or an undefined tensor when the harness cannot place it there.
bn1d::Tensor make_view(FuzzedDataProvider& fdp, std::vector<unsigned char>& buffer) {
  if (fdp.ConsumeIntegralInRange<int>(0, 15) == 0) return {};
  const int dim = fdp.ConsumeIntegralInRange<int>(0, 5);
  bn1d::Shape sizes(static_cast<std::size_t>(dim)), strides(sizes.size());
  for (int d = 0; d < dim; ++d) {
    sizes[d] = pick_int(fdp);
    strides[d] = fdp.ConsumeBool() ? pick_int(fdp) : fdp.ConsumeIntegralInRange<int64_t>(-8, 64);
  }
  const bn1d::DType dtype = pick_dtype(fdp);
  const auto esize = static_cast<int64_t>(bn1d::element_size(dtype));
  const int64_t offset = fdp.ConsumeIntegralInRange<int64_t>(0, kBufferBytes / esize - 1);
  bn1d::Tensor t;
  try {
    t = bn1d::Tensor::from_blob(buffer.data() + offset * esize, sizes, strides, dtype);
  } catch (const bn1d::Error&) {
    return {};
  }
  if (t.numel() > kMaxElements) return {};
  int64_t lo = 0, hi = 0;  // element offsets reached, relative to the first element
  for (int d = 0; d < dim && t.numel() > 0; ++d)
    (strides[d] < 0 ? lo : hi) += (sizes[d] - 1) * strides[d];
  if (t.numel() > 0 && (offset + lo < 0 || (offset + hi + 1) * esize > kBufferBytes)) return {};
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider fdp(data, size);
  static std::vector<unsigned char> buffer(kBufferBytes);
  for (std::size_t i = 0; i < buffer.size(); ++i)
    buffer[i] = static_cast<unsigned char>(i * 37 % 61);  // finite values
  try {
    const int64_t num_features =
        fdp.ConsumeBool() ? fdp.ConsumeIntegralInRange<int64_t>(-1, 12) : pick_int(fdp);
    // A count past the element cap but small enough to be allocated is a real multi-GiB
    // allocation, not a validation case (it would only hit libFuzzer's malloc limit). Larger
    // counts stay: their byte size overflows or exceeds what the allocator can give, and the
    // library must answer bn1d::Error.
    if (num_features > kMaxElements && num_features < kAllocatableElements) return 0;
    bn1d::BatchNorm1dOptions options(num_features);
    options.eps(fdp.ConsumeBool() ? 1e-5 : pick_double(fdp));
    if (fdp.ConsumeBool())
      options.momentum(fdp.ConsumeBool() ? std::nullopt : std::optional<double>(pick_double(fdp)));
    options.affine(fdp.ConsumeBool()).track_running_stats(fdp.ConsumeBool()).dtype(pick_dtype(fdp));
    bn1d::BatchNorm1d m(options);
    m.train(fdp.ConsumeBool());
    const bn1d::Tensor input = make_view(fdp, buffer);
    bn1d::Tensor output = fdp.ConsumeBool() ? make_view(fdp, buffer) : bn1d::Tensor();
    m.forward(input, output);
    const bn1d::Tensor grad = make_view(fdp, buffer);
    bn1d::BatchNorm1d::Gradients grads;
    m.backward(grad, grads);
  } catch (const bn1d::Error&) {
  }
  try {  // the functional form with arbitrary optional tensors
    const bn1d::Tensor input = make_view(fdp, buffer);
    const bn1d::Tensor rm = make_view(fdp, buffer), rv = make_view(fdp, buffer);
    const bn1d::Tensor w = make_view(fdp, buffer), b = make_view(fdp, buffer);
    bn1d::batch_norm(input, rm, rv, w, b, fdp.ConsumeBool(), pick_double(fdp), pick_double(fdp));
  } catch (const bn1d::Error&) {
  }
  return 0;
}
