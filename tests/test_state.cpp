// Module state: state_dict keys and order, load_state_dict checks, save/load files.
#include <gtest/gtest.h>

#include <bn1d/bn1d.hpp>
#include <filesystem>

#include "test_util.hpp"

namespace bn1d::test {
namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) / name).string();
}

BatchNorm1d trained(const BatchNorm1dOptions& options, uint64_t seed) {
  BatchNorm1d m(options);
  const int64_t C = options.num_features();
  if (options.affine()) m.weight().copy_from(randn({C}, options.dtype(), seed));
  for (int i = 0; i < 3; ++i) m(randn({8, C, 2}, options.dtype(), seed + 1 + i));
  return m;
}

TEST(ModuleState, KeysAndOrderAsTorch) {
  const BatchNorm1d m = trained(BatchNorm1dOptions(3), 1);
  const StateDict s = m.state_dict();
  EXPECT_EQ(s.keys(), (std::vector<std::string>{"weight", "bias", "running_mean", "running_var",
                                                "num_batches_tracked"}));
  EXPECT_EQ(s.at("num_batches_tracked").dtype(), DType::Int64);
  EXPECT_EQ(s.at("num_batches_tracked").dim(), 0);
  EXPECT_EQ(values(s.at("num_batches_tracked")), std::vector<double>{3});
  EXPECT_EQ(values(s.at("running_mean")), values(m.running_mean()));
  // state_dict() returns copies.
  s.at("weight").data<float>()[0] = 99;
  EXPECT_NE(m.weight().data<float>()[0], 99);
  EXPECT_EQ(BatchNorm1d(BatchNorm1dOptions(3).affine(false)).state_dict().keys(),
            (std::vector<std::string>{"running_mean", "running_var", "num_batches_tracked"}));
  EXPECT_EQ(BatchNorm1d(BatchNorm1dOptions(3).track_running_stats(false)).state_dict().keys(),
            (std::vector<std::string>{"weight", "bias"}));
}

TEST(ModuleState, LoadStateDictCopiesInPlace) {
  const BatchNorm1d src = trained(BatchNorm1dOptions(3).dtype(DType::Float64), 2);
  BatchNorm1d dst(BatchNorm1dOptions(3).dtype(DType::Float64));
  const Tensor view = dst.running_mean();
  dst.load_state_dict(src.state_dict());
  EXPECT_EQ(values(view), values(src.running_mean()));  // existing views see the new values
  EXPECT_EQ(dst.num_batches_tracked(), 3);
  const Tensor x = randn({5, 3, 2}, DType::Float64, 9);
  BatchNorm1d a = src, b = dst;
  a.eval();
  b.eval();
  EXPECT_EQ(values(a(x)), values(b(x)));
}

TEST(ModuleState, LoadStateDictErrorsNameTheKeyAndChangeNothing) {
  BatchNorm1d m = trained(BatchNorm1dOptions(3), 3);
  const StateDict good = m.state_dict();
  const StateDict before = m.state_dict();
  auto with = [&](const std::string& key, Tensor value) {
    StateDict s = good;
    s.insert(key, value);
    return s;
  };
  auto without = [&](const std::string& key) {
    StateDict s;
    for (const auto& [k, v] : good)
      if (k != key) s.insert(k, v);
    return s;
  };
  StateDict changed = with("weight", Tensor::full({3}, 5.0));  // would change weight if committed
  changed.insert("extra", Tensor::zeros({1}));
  EXPECT_TRUE(throws_error([&] { m.load_state_dict(changed); },
                           "Unexpected key(s) in state_dict: \"extra\""));
  EXPECT_TRUE(throws_error([&] { m.load_state_dict(without("running_var")); },
                           "Missing key(s) in state_dict: \"running_var\""));
  EXPECT_TRUE(
      throws_error([&] { m.load_state_dict(with("bias", Tensor::zeros({4}))); },
                   "size or dtype mismatch for bias: copying a float32 tensor of shape [4]"));
  EXPECT_TRUE(throws_error(
      [&] { m.load_state_dict(with("running_mean", Tensor::zeros({3}, DType::Float64))); },
      "mismatch for running_mean: copying a float64 tensor"));
  EXPECT_TRUE(throws_error(
      [&] { m.load_state_dict(with("num_batches_tracked", Tensor::zeros({}, DType::Float32))); },
      "num_batches_tracked: expected an int64 scalar"));
  EXPECT_TRUE(throws_error(
      [&] { m.load_state_dict(with("num_batches_tracked", Tensor::full({}, -1, DType::Int64))); },
      "num_batches_tracked: expected a count >= 0, got -1"));
  // Non-strict still checks shapes, but ignores missing and unexpected keys.
  EXPECT_TRUE(
      throws_error([&] { m.load_state_dict(with("bias", Tensor::zeros({4})), false); }, "bias"));
  for (const auto& [k, v] : before) EXPECT_EQ(values(m.state_dict().at(k)), values(v)) << k;

  StateDict partial;
  partial.insert("weight", Tensor::full({3}, 2.0));
  partial.insert("unrelated", Tensor::zeros({7}));
  m.load_state_dict(partial, /*strict=*/false);
  EXPECT_EQ(values(m.weight()), std::vector<double>(3, 2.0));
  EXPECT_EQ(values(m.running_mean()), values(before.at("running_mean")));
}

TEST(ModuleState, MissingNumBatchesTrackedLoadsAsZero) {
  BatchNorm1d m = trained(BatchNorm1dOptions(2), 4);
  StateDict s;
  for (const auto& [k, v] : m.state_dict())
    if (k != "num_batches_tracked") s.insert(k, v);
  m.load_state_dict(s);
  EXPECT_EQ(m.num_batches_tracked(), 0);
}

TEST(ModuleState, SaveAndLoadRoundTrip) {
  for (DType dtype : {DType::Float32, DType::Float64}) {
    const BatchNorm1d src = trained(BatchNorm1dOptions(4).dtype(dtype).momentum(std::nullopt), 5);
    const std::string path =
        temp_path(std::string("roundtrip_") + dtype_name(dtype) + ".safetensors");
    src.save(path);
    BatchNorm1d dst(BatchNorm1dOptions(4).dtype(dtype).momentum(std::nullopt));
    dst.load(path);
    for (const auto& [k, v] : src.state_dict())
      EXPECT_EQ(values(dst.state_dict().at(k)), values(v)) << k;
    // Loading into a module of another dtype or size fails and leaves it unchanged.
    BatchNorm1d other(BatchNorm1dOptions(5).dtype(dtype));
    EXPECT_TRUE(throws_error([&] { other.load(path); }, "size or dtype mismatch for weight"));
    EXPECT_EQ(values(other.weight()), std::vector<double>(5, 1.0));
  }
}

TEST(ModuleState, LoadOneLayerOfAWholeModelFile) {
  const BatchNorm1d bn1 = trained(BatchNorm1dOptions(3), 6),
                    bn2 = trained(BatchNorm1dOptions(2), 7);
  StateDict model;
  model.insert("fc.weight", randn({3, 3}));
  for (const auto& [k, v] : bn1.state_dict()) model.insert("bn1." + k, v);
  for (const auto& [k, v] : bn2.state_dict()) model.insert("bn2." + k, v);
  const std::string path = temp_path("model.safetensors");
  save_safetensors(path, model);
  BatchNorm1d m(2);
  m.load(path, "bn2.");
  EXPECT_EQ(values(m.running_var()), values(bn2.running_var()));
  EXPECT_EQ(m.num_batches_tracked(), 3);
  EXPECT_TRUE(throws_error([&] { m.load(path, "bn1."); }, "size or dtype mismatch"));
  EXPECT_TRUE(throws_error(
      [&] { m.load(path, "missing."); },
      "Missing key(s) in state_dict: \"weight\", \"bias\", \"running_mean\", \"running_var\""));
  EXPECT_TRUE(throws_error([&] { m.load(path); }, "Unexpected key(s)"));
  EXPECT_TRUE(throws_error([&] { m.load(temp_path("does_not_exist.safetensors")); },
                           "does_not_exist.safetensors"));
}

}  // namespace
}  // namespace bn1d::test
