// libFuzzer target: the input-validation path. Random ranks, sizes, strides (negative, zero,
// huge, overflowing int64 products), dtypes, options and modes are fed to BatchNorm1d and the
// functional API; anything invalid must give bn1d::Error, never a crash, UB or out-of-bounds
// access. Views are kept inside one buffer (the harness's job; the library cannot know a
// caller's allocation), and outputs are capped at 64 Ki elements to keep memory small.
// Moved-from modules must refuse every call with bn1d::Error, and results placed over inputs
// (fuzzer-chosen aliasing) must equal those computed into new tensors.
#include <fuzzer/FuzzedDataProvider.h>

#include <bn1d/bn1d.hpp>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>
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
  return fdp.PickValueInArray({bn1d::DType::Float32, bn1d::DType::Float64, bn1d::DType::Int64,
                               bn1d::DType::BFloat16, bn1d::DType::Float16});
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

// A contiguous tensor of @p sizes and @p dtype at a fuzzer-chosen place in `buffer` (so that it
// may overlap the other tensors placed there), or a new tensor when the fuzzer says so.
bn1d::Tensor place(FuzzedDataProvider& fdp, std::vector<unsigned char>& buffer,
                   const bn1d::Shape& sizes, bn1d::DType dtype) {
  int64_t n = 1;
  for (const int64_t s : sizes) n *= s;
  const auto esize = static_cast<int64_t>(bn1d::element_size(dtype));
  if (fdp.ConsumeBool() || n * esize > kBufferBytes) return bn1d::Tensor::zeros(sizes, dtype);
  const int64_t slots = kBufferBytes / esize - n;
  // Near the start most of the time, so that placed tensors overlap often.
  const int64_t offset = fdp.ConsumeBool() ? fdp.ConsumeIntegralInRange<int64_t>(0, 64)
                                           : fdp.ConsumeIntegralInRange<int64_t>(0, slots);
  return bn1d::Tensor::from_blob(buffer.data() + offset * esize, sizes, dtype);
}

// Whether two contiguous tensors share a byte.
bool overlap(const bn1d::Tensor& a, const bn1d::Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0) return false;
  const auto* a0 = static_cast<const unsigned char*>(a.raw_data());
  const auto* b0 = static_cast<const unsigned char*>(b.raw_data());
  const auto* a1 = a0 + a.numel() * static_cast<int64_t>(bn1d::element_size(a.dtype()));
  const auto* b1 = b0 + b.numel() * static_cast<int64_t>(bn1d::element_size(b.dtype()));
  return a0 < b1 && b0 < a1;
}

std::vector<unsigned char> bytes_of(const bn1d::Tensor& t) {
  if (!t.defined()) return {};
  const bn1d::Tensor c = t.contiguous();
  const auto* p = static_cast<const unsigned char*>(c.raw_data());
  return {p, p + c.numel() * static_cast<int64_t>(bn1d::element_size(c.dtype()))};
}

// A result computed into aliased buffers must equal the one computed into new ones.
void expect_same(const bn1d::Tensor& got, const bn1d::Tensor& want) {
  if (got.defined() != want.defined() || bytes_of(got) != bytes_of(want)) __builtin_trap();
}

// Calls one public member of a moved-from module: each must throw bn1d::Error.
void use_moved_from(FuzzedDataProvider& fdp, bn1d::BatchNorm1d& m, const bn1d::Tensor& x) {
  bn1d::Tensor out;
  bn1d::BatchNorm1d::Gradients grads;
  try {
    switch (fdp.ConsumeIntegralInRange<int>(0, 7)) {
      case 0:
        m.forward(x, out);
        break;
      case 1:
        m.backward(x, grads);
        break;
      case 2:
        m.infer(x, out);
        break;
      case 3:
        (void)m.state_dict();
        break;
      case 4:
        m.load_state_dict(bn1d::StateDict{}, false);
        break;
      case 5:
        m.reset_parameters();
        break;
      case 6:
        m.reset_running_stats();
        break;
      default: {
        bn1d::BatchNorm1d copy(m);
        break;
      }
    }
  } catch (const bn1d::Error&) {
    if (m.weight().defined() || m.running_mean().defined() || m.num_batches_tracked() != 0)
      __builtin_trap();
    return;
  }
  __builtin_trap();  // a moved-from module must refuse
}

// The module with its parameters, buffers and result buffers placed in `buffer` (aliasing the
// input and each other as the fuzzer chooses): every result equals that of a deep copy that
// writes into new tensors, run first.
void aliased_module(FuzzedDataProvider& fdp, std::vector<unsigned char>& buffer) {
  const int64_t C = fdp.ConsumeIntegralInRange<int64_t>(1, 6);
  const int64_t N = fdp.ConsumeIntegralInRange<int64_t>(0, 6);
  const int64_t L = fdp.ConsumeIntegralInRange<int64_t>(0, 4);
  const bn1d::DType dtype = fdp.ConsumeBool() ? bn1d::DType::Float32 : bn1d::DType::Float64;
  const bn1d::Shape shape = L == 0 ? bn1d::Shape{N, C} : bn1d::Shape{N, C, L};
  bn1d::BatchNorm1d m(bn1d::BatchNorm1dOptions(C)
                          .dtype(dtype)
                          .affine(fdp.ConsumeBool())
                          .track_running_stats(fdp.ConsumeBool()));
  m.train(fdp.ConsumeBool());
  std::vector<const bn1d::Tensor*> placed;
  for (bn1d::Tensor* t : {&m.weight(), &m.bias(), &m.running_mean(), &m.running_var()}) {
    if (!t->defined() || fdp.ConsumeBool()) continue;
    bn1d::Tensor v = place(fdp, buffer, {C}, dtype);
    // Two of the module's own tensors over each other (one updated in place changes the other)
    // is the caller's aliasing of inputs, not a result's: not placed.
    bool clash = false;
    for (const bn1d::Tensor* other : placed) clash = clash || overlap(v, *other);
    if (clash) continue;
    v.copy_from(*t);
    *t = v;
    placed.push_back(t);
  }
  const bn1d::Tensor x = place(fdp, buffer, shape, dtype);
  bn1d::BatchNorm1d ref(m);  // deep copy: writes nothing into the buffer
  bn1d::Tensor y_ref, y = place(fdp, buffer, shape, dtype);
  bool ok_ref = true, ok = true;
  try {
    ref.forward(x, y_ref);
  } catch (const bn1d::Error&) {
    ok_ref = false;
  }
  try {
    m.forward(x, y);
  } catch (const bn1d::Error&) {
    ok = false;
  }
  if (ok != ok_ref) __builtin_trap();
  if (!ok) return;
  expect_same(y, y_ref);
  const bn1d::Tensor dy = place(fdp, buffer, shape, dtype);
  bn1d::BatchNorm1d::Gradients g_ref, g;
  g.input = place(fdp, buffer, shape, dtype);
  g.weight = place(fdp, buffer, {C}, dtype);
  g.bias = fdp.ConsumeBool() ? g.weight : place(fdp, buffer, {C}, dtype);
  ok_ref = ok = true;
  try {
    ref.backward(dy, g_ref);
  } catch (const bn1d::Error&) {
    ok_ref = false;
  }
  try {
    m.backward(dy, g);
  } catch (const bn1d::Error&) {
    ok = false;
  }
  if (ok != ok_ref) __builtin_trap();
  if (!ok) return;
  expect_same(g.input, g_ref.input);
  expect_same(g.weight, g_ref.weight);
  expect_same(g.bias, g_ref.bias);
  bn1d::Tensor z = place(fdp, buffer, shape, dtype);
  bn1d::Tensor z_ref;
  try {
    ref.infer(x, z_ref);
  } catch (const bn1d::Error&) {
    return;
  }
  m.infer(x, z);
  expect_same(z, z_ref);
}

// The functional steps with results placed in `buffer` over their inputs, against the
// allocating forms run first.
void aliased_functional(FuzzedDataProvider& fdp, std::vector<unsigned char>& buffer) {
  const int64_t C = fdp.ConsumeIntegralInRange<int64_t>(1, 6);
  const int64_t N = fdp.ConsumeIntegralInRange<int64_t>(1, 6);
  const bn1d::DType dtype = fdp.ConsumeBool() ? bn1d::DType::Float32 : bn1d::DType::Float64;
  const bn1d::DType f64 = bn1d::DType::Float64;
  const bn1d::Tensor x = place(fdp, buffer, {N, C}, dtype);
  const bn1d::Tensor dy = place(fdp, buffer, {N, C}, dtype);
  const bn1d::Tensor w = place(fdp, buffer, {C}, dtype), b = place(fdp, buffer, {C}, dtype);
  const bool batch = fdp.ConsumeBool();
  try {
    const bn1d::BatchStats stats_ref = bn1d::batch_stats(x);
    bn1d::BatchStats stats{0, place(fdp, buffer, {C}, f64), place(fdp, buffer, {C}, f64)};
    // The input must not change while its statistics are written over it: compare with the
    // reference before anything else reads the buffer.
    bn1d::batch_stats(stats, x);
    expect_same(stats.mean, stats_ref.mean);
    expect_same(stats.m2, stats_ref.m2);
    const bn1d::Normalization norm_ref = bn1d::normalization_from_batch(stats, 1e-5);
    bn1d::Normalization norm{place(fdp, buffer, {C}, f64), place(fdp, buffer, {C}, f64)};
    bn1d::normalization_from_batch(norm, stats, 1e-5);
    expect_same(norm.mean, norm_ref.mean);
    expect_same(norm.invstd, norm_ref.invstd);
    const bn1d::Tensor y_ref = bn1d::batch_norm_apply(x, norm, w, b);
    bn1d::Tensor y = place(fdp, buffer, {N, C}, dtype);
    bn1d::batch_norm_apply(y, x, norm, w, b);
    expect_same(y, y_ref);
    const bn1d::GradStats gs_ref = bn1d::backward_stats(dy, x, norm);
    bn1d::GradStats gs{0, place(fdp, buffer, {C}, f64), place(fdp, buffer, {C}, f64)};
    bn1d::backward_stats(gs, dy, x, norm);
    expect_same(gs.sum_dy, gs_ref.sum_dy);
    expect_same(gs.sum_dy_xmu, gs_ref.sum_dy_xmu);
    const bn1d::Tensor gi_ref = bn1d::batch_norm_backward_input(dy, x, norm, w, gs, batch);
    bn1d::Tensor gi = place(fdp, buffer, {N, C}, dtype);
    bn1d::batch_norm_backward_input(gi, dy, x, norm, w, gs, batch);
    expect_same(gi, gi_ref);
    const bn1d::BatchNormGradients gp_ref = bn1d::batch_norm_backward_params(gs, norm, dtype);
    bn1d::BatchNormGradients gp;
    gp.weight = place(fdp, buffer, {C}, dtype);
    gp.bias = place(fdp, buffer, {C}, dtype);
    bn1d::batch_norm_backward_params(gp, gs, norm, dtype);
    expect_same(gp.weight, gp_ref.weight);
    expect_same(gp.bias, gp_ref.bias);
    const bn1d::BatchNormGradients all_ref = bn1d::batch_norm_backward(dy, x, norm, w, batch, true);
    bn1d::BatchNormGradients all;
    all.input = place(fdp, buffer, {N, C}, dtype);
    all.weight = place(fdp, buffer, {C}, dtype);
    all.bias = place(fdp, buffer, {C}, dtype);
    bn1d::batch_norm_backward(all, dy, x, norm, w, batch, true);
    expect_same(all.input, all_ref.input);
    expect_same(all.weight, all_ref.weight);
    expect_same(all.bias, all_ref.bias);
  } catch (const bn1d::Error&) {  // e.g. a NaN m2 from the buffer's bytes
  }
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
    bn1d::BatchNorm1d built(options);
    built.train(fdp.ConsumeBool());
    const bn1d::Tensor input = make_view(fdp, buffer);
    // A moved-from module refuses every call; its successor has the state.
    const bool move = fdp.ConsumeBool();
    bn1d::BatchNorm1d m(std::move(built));
    if (move) use_moved_from(fdp, built, input);
    bn1d::Tensor output = fdp.ConsumeBool() ? make_view(fdp, buffer) : bn1d::Tensor();
    m.forward(input, output);
    const bn1d::Tensor grad = make_view(fdp, buffer);
    bn1d::BatchNorm1d::Gradients grads;
    if (fdp.ConsumeBool()) grads.input = make_view(fdp, buffer);
    if (fdp.ConsumeBool()) grads.weight = make_view(fdp, buffer);
    if (fdp.ConsumeBool()) grads.bias = make_view(fdp, buffer);
    m.backward(grad, grads);
  } catch (const bn1d::Error&) {
  }
  for (std::size_t i = 0; i < buffer.size(); ++i)  // finite values for the aliasing checks
    buffer[i] = static_cast<unsigned char>(i * 37 % 61);
  aliased_module(fdp, buffer);
  aliased_functional(fdp, buffer);
  try {  // the functional form with arbitrary optional tensors
    const bn1d::Tensor input = make_view(fdp, buffer);
    const bn1d::Tensor rm = make_view(fdp, buffer), rv = make_view(fdp, buffer);
    const bn1d::Tensor w = make_view(fdp, buffer), b = make_view(fdp, buffer);
    bn1d::batch_norm(input, rm, rv, w, b, fdp.ConsumeBool(), pick_double(fdp), pick_double(fdp));
  } catch (const bn1d::Error&) {
  }
  return 0;
}
