// SPDX-License-Identifier: MIT
/// @file test_safetensors.cpp
/// @brief StateDict and the safetensors reader/writer, including hostile files.

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bn1d/error.hpp"
#include "bn1d/state.hpp"
#include "bn1d/tensor.hpp"
#include "test_util.hpp"

namespace {

using bn1d::DType;
using bn1d::Error;
using bn1d::StateDict;
using bn1d::Tensor;
using bn1d::test::throws_error;
using Bytes = std::vector<std::uint8_t>;

/// A fresh, empty directory for this test's files.
std::filesystem::path temp_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const auto dir = std::filesystem::path(::testing::TempDir()) / "bn1d_safetensors" /
                   (std::string(info->test_suite_name()) + "." + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

/// Writes @p bytes to @p path.
void write_file(const std::filesystem::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good());
}

/// A file whose 8-byte length field says @p length, followed by @p rest.
Bytes with_length(std::uint64_t length, std::string_view rest) {
  std::string text(8, '\0');
  std::memcpy(text.data(), &length, 8);  // the tests run on little-endian hosts only, like bn1d
  text += rest;
  return Bytes(text.begin(), text.end());
}

/// A file with JSON header @p header followed by @p data_bytes zero bytes of data.
Bytes make_file(std::string_view header, std::size_t data_bytes) {
  return with_length(header.size(), std::string(header) + std::string(data_bytes, '\0'));
}

/// The values of @p tensor in row-major order.
template <class T>
std::vector<T> values(const Tensor& tensor) {
  const Tensor dense = tensor.contiguous();
  const T* data = dense.data<T>();
  return std::vector<T>(data, data + dense.numel());
}

/// A contiguous tensor of the given @p sizes holding @p data.
template <class T>
Tensor make_tensor(const bn1d::Shape& sizes, const std::vector<T>& data) {
  Tensor tensor = Tensor::empty(sizes, bn1d::dtype_of<T>());
  std::copy(data.begin(), data.end(), tensor.data<T>());
  return tensor;
}

/// The bits of a 16-bit tensor (bfloat16 or float16) in row-major order.
std::vector<std::uint16_t> bits16(const Tensor& tensor) {
  const Tensor dense = tensor.contiguous();
  std::vector<std::uint16_t> bits(static_cast<std::size_t>(dense.numel()));
  if (!bits.empty()) std::memcpy(bits.data(), dense.raw_data(), bits.size() * 2);
  return bits;
}

/// A contiguous 16-bit tensor of @p dtype holding @p bits.
Tensor make_bits16(const bn1d::Shape& sizes, DType dtype, const std::vector<std::uint16_t>& bits) {
  Tensor tensor = Tensor::empty(sizes, dtype);
  if (!bits.empty()) std::memcpy(tensor.raw_data(), bits.data(), bits.size() * 2);
  return tensor;
}

/// Backing memory of the non-contiguous tensor in sample_state().
float transposed_storage[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};

/// A state dict covering every dtype, a 0-dim scalar, an empty and a non-contiguous tensor.
StateDict sample_state() {
  StateDict state;
  state.insert("z.weight", make_tensor<float>({2, 3}, {1.5F, -2.0F, 3.25F, 0.0F, -0.0F, 1e-30F}));
  state.insert("a.running_var", make_tensor<double>({4}, {1.0, 2.0 / 3.0, -1e300, 5e-324}));
  state.insert("a.num_batches_tracked", make_tensor<std::int64_t>({}, {-9'007'199'254'740'993}));
  state.insert("empty", Tensor::empty({0}, DType::Float32));
  // 4 x 3 transpose of a row-major 3 x 4 buffer.
  state.insert("transposed", Tensor::from_blob(transposed_storage, {4, 3}, {1, 4}, DType::Float32));
  // bfloat16 1, -0, +inf, a NaN, the smallest subnormal; float16 65504, -2^-24, -inf, a NaN.
  state.insert("b.bias",
               make_bits16({5}, DType::BFloat16, {0x3F80, 0x8000, 0x7F80, 0x7FC1, 0x0001}));
  state.insert("h.weight", make_bits16({2, 2}, DType::Float16, {0x7BFF, 0x8001, 0xFC00, 0x7E01}));
  return state;
}

/// Expects @p loaded to equal sample_state() (keys, order, shapes, dtypes and values).
void expect_sample(const StateDict& loaded) {
  EXPECT_EQ(loaded.keys(),
            (std::vector<std::string>{"z.weight", "a.running_var", "a.num_batches_tracked", "empty",
                                      "transposed", "b.bias", "h.weight"}));
  const StateDict expected = sample_state();
  for (const auto& [key, tensor] : expected) {
    SCOPED_TRACE(key);
    const Tensor& got = loaded.at(key);
    ASSERT_EQ(got.dtype(), tensor.dtype());
    ASSERT_EQ(got.sizes(), tensor.sizes());
    EXPECT_TRUE(got.is_contiguous());
    switch (tensor.dtype()) {
      case DType::Float32:
        EXPECT_EQ(values<float>(got), values<float>(tensor));
        break;
      case DType::Float64:
        EXPECT_EQ(values<double>(got), values<double>(tensor));
        break;
      case DType::Int64:
        EXPECT_EQ(values<std::int64_t>(got), values<std::int64_t>(tensor));
        break;
      case DType::BFloat16:
      case DType::Float16:
        EXPECT_EQ(bits16(got), bits16(tensor));  // bit for bit, NaN payloads included
        break;
    }
  }
  EXPECT_EQ(values<float>(loaded.at("transposed")),
            (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
}

/// The header length and text of a serialized file.
std::string header_of(const Bytes& bytes) {
  std::uint64_t length = 0;
  std::memcpy(&length, bytes.data(), 8);
  return std::string(reinterpret_cast<const char*>(bytes.data()) + 8, length);
}

TEST(StateDict, KeepsInsertionOrderAndReplacesInPlace) {
  StateDict state;
  EXPECT_TRUE(state.empty());
  state.insert("b", Tensor::zeros({1}));
  state.insert("a", Tensor::zeros({2}));
  state.insert("c", Tensor::zeros({3}));
  state.insert("a", Tensor::ones({5}, DType::Float64));
  EXPECT_EQ(state.size(), 3U);
  EXPECT_EQ(state.keys(), (std::vector<std::string>{"b", "a", "c"}));
  EXPECT_EQ(state.at("a").sizes(), (bn1d::Shape{5}));
  EXPECT_EQ(state.at("a").dtype(), DType::Float64);
  std::vector<std::string> iterated;
  for (const auto& [key, tensor] : state) iterated.push_back(key);
  EXPECT_EQ(iterated, state.keys());
}

TEST(StateDict, FindAndContains) {
  StateDict state;
  state.insert("weight", Tensor::zeros({2}));
  ASSERT_NE(state.find("weight"), nullptr);
  EXPECT_EQ(state.find("weight")->sizes(), (bn1d::Shape{2}));
  EXPECT_EQ(state.find("bias"), nullptr);
  EXPECT_TRUE(state.contains("weight"));
  EXPECT_FALSE(state.contains("weigh"));
}

TEST(StateDict, AtNamesTheMissingKey) {
  StateDict state;
  state.insert("weight", Tensor::zeros({2}));
  EXPECT_TRUE(throws_error([&] { (void)state.at("running_mean"); },
                           "state dict has no key \"running_mean\""));
}

TEST(Safetensors, RoundTripInMemory) {
  const Bytes bytes = bn1d::to_safetensors(sample_state());
  bn1d::Metadata metadata{{"stale", "value"}};
  expect_sample(bn1d::parse_safetensors(bytes, &metadata));
  EXPECT_TRUE(metadata.empty());  // the file has no __metadata__
}

TEST(Safetensors, WritesThePaddedLayout) {
  StateDict state;
  state.insert("x", make_tensor<float>({2}, {1.0F, 2.0F}));
  const Bytes bytes = bn1d::to_safetensors(state);
  const std::string header = header_of(bytes);
  EXPECT_EQ(header.size() % 8, 0U);
  EXPECT_EQ(header.rfind(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 0), 0U)
      << header;
  EXPECT_EQ(header.find_first_not_of(' ', header.find('}') + 2), std::string::npos) << header;
  ASSERT_EQ(bytes.size(), 8 + header.size() + 8);
  float data[2];
  std::memcpy(data, bytes.data() + 8 + header.size(), sizeof data);
  EXPECT_EQ(data[0], 1.0F);
  EXPECT_EQ(data[1], 2.0F);
  for (std::size_t keys = 0; keys < 9; ++keys) {  // several header lengths
    StateDict more;
    for (std::size_t i = 0; i < keys; ++i) more.insert(std::string(i + 1, 'k'), Tensor::zeros({1}));
    EXPECT_EQ(header_of(bn1d::to_safetensors(more)).size() % 8, 0U);
  }
}

TEST(Safetensors, Writes16BitDtypesAsBF16AndF16) {
  StateDict state;
  state.insert("b", make_bits16({2}, DType::BFloat16, {0x3F80, 0xC000}));  // 1, -2
  state.insert("h", make_bits16({1}, DType::Float16, {0x3C00}));           // 1
  const Bytes bytes = bn1d::to_safetensors(state);
  const std::string header = header_of(bytes);
  EXPECT_EQ(header.rfind(R"({"b":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},)"
                         R"("h":{"dtype":"F16","shape":[1],"data_offsets":[4,6]}})",
                         0),
            0U)
      << header;
  ASSERT_EQ(bytes.size(), 8 + header.size() + 6);
  const std::uint8_t* data = bytes.data() + 8 + header.size();
  EXPECT_EQ(Bytes(data, data + 6), (Bytes{0x80, 0x3F, 0x00, 0xC0, 0x00, 0x3C}));  // little-endian
}

TEST(Safetensors, ReadsBF16AndF16FromOtherWriters) {
  Bytes bytes = make_file(R"({"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},)"
                          R"("b":{"dtype":"BF16","shape":[1,1],"data_offsets":[4,6]}})",
                          6);
  const std::uint8_t data[6] = {0x55, 0x35, 0x00, 0x7C, 0xAB, 0x3E};  // 0x3555, 0x7C00, 0x3EAB
  std::copy(data, data + 6, bytes.end() - 6);
  const StateDict state = bn1d::parse_safetensors(bytes);
  ASSERT_EQ(state.at("h").dtype(), DType::Float16);
  ASSERT_EQ(state.at("b").dtype(), DType::BFloat16);
  EXPECT_EQ(state.at("b").sizes(), (bn1d::Shape{1, 1}));
  // Hand-decoded: 0x3555 = (1 + 341/1024)/4, 0x7C00 = +inf, 0x3EAB = (1 + 43/128)/4.
  EXPECT_EQ(bn1d::test::values(state.at("h")), (std::vector<double>{1365.0 / 4096, INFINITY}));
  EXPECT_EQ(bn1d::test::values(state.at("b")), (std::vector<double>{171.0 / 512}));
}

TEST(Safetensors, EmptyStateDict) {
  const Bytes bytes = bn1d::to_safetensors(StateDict{});
  EXPECT_EQ(header_of(bytes), "{}      ");
  EXPECT_TRUE(bn1d::parse_safetensors(bytes).empty());
}

TEST(Safetensors, MetadataRoundTrip) {
  const bn1d::Metadata metadata{
      {"format", "pt"}, {"note", "quotes \" and \\ and \n and \xc3\xa9"}, {"", ""}};
  const Bytes bytes = bn1d::to_safetensors(sample_state(), metadata);
  bn1d::Metadata loaded;
  expect_sample(bn1d::parse_safetensors(bytes, &loaded));
  EXPECT_EQ(loaded, metadata);
}

TEST(Safetensors, SaveAndLoadFile) {
  const auto path = (temp_dir() / "state.safetensors").string();
  bn1d::save_safetensors(path, sample_state(), {{"format", "pt"}});
  bn1d::Metadata metadata;
  expect_sample(bn1d::load_safetensors(path, "", &metadata));
  EXPECT_EQ(metadata, (bn1d::Metadata{{"format", "pt"}}));
  std::ifstream in(path, std::ios::binary);
  const Bytes on_disk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(on_disk, bn1d::to_safetensors(sample_state(), {{"format", "pt"}}));
}

TEST(Safetensors, LoadWithPrefixReadsOnlyThoseKeys) {
  const auto path = (temp_dir() / "state.safetensors").string();
  bn1d::save_safetensors(path, sample_state());
  const StateDict loaded = bn1d::load_safetensors(path, "a.");
  EXPECT_EQ(loaded.keys(), (std::vector<std::string>{"a.running_var", "a.num_batches_tracked"}));
  EXPECT_EQ(values<std::int64_t>(loaded.at("a.num_batches_tracked")),
            (std::vector<std::int64_t>{-9'007'199'254'740'993}));
  EXPECT_TRUE(bn1d::load_safetensors(path, "nothing.").empty());
}

TEST(Safetensors, ReadsFilesFromOtherWriters) {
  // Key order differing from data order, extra whitespace, an ignored extra field, newline padding.
  const Bytes bytes = make_file(
      "{ \"b\" : {\"shape\":[1],\"dtype\":\"I64\",\"data_offsets\":[4,12]},\n"
      "  "
      "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],\"extra\":{\"x\":\"y\"},"
      "\"more\":[1]},"
      "\"__metadata__\":{\"k\":\"v\"}}\n\n",
      12);
  bn1d::Metadata metadata;
  const StateDict state = bn1d::parse_safetensors(bytes, &metadata);
  EXPECT_EQ(state.keys(), (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(state.at("a").dim(), 0);
  EXPECT_EQ(values<std::int64_t>(state.at("b")), (std::vector<std::int64_t>{0}));
  EXPECT_EQ(metadata, (bn1d::Metadata{{"k", "v"}}));
}

TEST(Safetensors, RejectsUnwritableStates) {
  StateDict undefined;
  undefined.insert("w", Tensor());
  EXPECT_TRUE(throws_error([&] { bn1d::to_safetensors(undefined); }, "\"w\" is undefined"));
  StateDict reserved;
  reserved.insert("__metadata__", Tensor::zeros({1}));
  EXPECT_TRUE(throws_error([&] { bn1d::to_safetensors(reserved); }, "reserved"));
  StateDict nul;
  nul.insert(std::string("a\0b", 3), Tensor::zeros({1}));
  EXPECT_TRUE(throws_error([&] { bn1d::to_safetensors(nul); }, "NUL"));
  StateDict latin1;
  latin1.insert("caf\xe9", Tensor::zeros({1}));
  EXPECT_TRUE(throws_error([&] { bn1d::to_safetensors(latin1); }, "UTF-8"));
  EXPECT_TRUE(throws_error([&] { bn1d::to_safetensors({}, {{"k", "\xff"}}); }, "UTF-8"));
}

TEST(Safetensors, FileErrorsNameThePath) {
  const auto dir = temp_dir();
  const auto missing = (dir / "missing.safetensors").string();
  EXPECT_TRUE(throws_error([&] { bn1d::load_safetensors(missing); },
                           "cannot open \"" + missing + "\" for reading"));
  const auto unwritable = (dir / "no-such-dir" / "x.safetensors").string();
  EXPECT_TRUE(throws_error([&] { bn1d::save_safetensors(unwritable, sample_state()); },
                           "cannot open \"" + unwritable + "\" for writing"));
  EXPECT_TRUE(throws_error([&] { bn1d::load_safetensors(dir.string()); }, dir.string()));
}

// A file that cannot be opened, read or written is an IoError (a subclass of Error); a file that
// is read but malformed is an Error only.
TEST(Safetensors, FileAccessErrorsAreIoErrors) {
  const auto dir = temp_dir();
  const auto missing = (dir / "missing.safetensors").string();
  EXPECT_THROW(bn1d::load_safetensors(missing), bn1d::IoError);
  EXPECT_THROW(bn1d::BatchNorm1d(2).load(missing), bn1d::IoError);
  const auto unwritable = (dir / "no-such-dir" / "x.safetensors").string();
  EXPECT_THROW(bn1d::save_safetensors(unwritable, sample_state()), bn1d::IoError);
  EXPECT_THROW(bn1d::BatchNorm1d(2).save(unwritable), bn1d::IoError);
  EXPECT_THROW(bn1d::load_safetensors(dir.string()), bn1d::IoError);  // a directory
  const auto path = (dir / "short.safetensors").string();
  bn1d::save_safetensors(path, sample_state());
  std::filesystem::resize_file(path, 5);
  try {
    bn1d::load_safetensors(path);
    FAIL() << "no error for a truncated file";
  } catch (const bn1d::IoError& e) {
    FAIL() << "a malformed file is not an IoError: " << e.what();
  } catch (const bn1d::Error& e) {
    EXPECT_NE(std::string_view(e.what()).find("at least 8 bytes"), std::string_view::npos);
  }
}

TEST(Safetensors, TruncatedFileIsRejected) {
  const auto path = temp_dir() / "state.safetensors";
  bn1d::save_safetensors(path.string(), sample_state());
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size - 4);  // cut into the last tensor's data
  EXPECT_TRUE(throws_error([&] { bn1d::load_safetensors(path.string()); }, "past the end"));
  EXPECT_TRUE(throws_error([&] { bn1d::load_safetensors(path.string(), "a."); }, path.string()));
  std::filesystem::resize_file(path, 20);  // cut into the header
  EXPECT_TRUE(throws_error([&] { bn1d::load_safetensors(path.string()); }, "header length"));
  std::filesystem::resize_file(path, 5);  // cut into the length field
  EXPECT_TRUE(throws_error([&] { bn1d::load_safetensors(path.string()); }, "at least 8 bytes"));
}

/// The errno value of the IoError @p call throws (-1 when it throws another Error or none).
template <class Call>
int io_error_code(Call&& call) {
  try {
    call();
  } catch (const bn1d::IoError& e) {
    return e.error_code();
  } catch (const Error&) {
    return -1;
  }
  return -1;
}

// error_code() is the errno of the failure, so that bindings raise the system's error classes
// (FileNotFoundError, IsADirectoryError, ...); 0 where no system call failed.
TEST(Safetensors, IoErrorsCarryTheErrno) {
  const auto dir = temp_dir();
  const auto missing = (dir / "missing.safetensors").string();
  EXPECT_EQ(io_error_code([&] { bn1d::load_safetensors(missing); }), ENOENT);
  EXPECT_EQ(io_error_code([&] { bn1d::BatchNorm1d(2).load(missing); }), ENOENT);
  const auto unwritable = (dir / "no-such-dir" / "x.safetensors").string();
  EXPECT_EQ(io_error_code([&] { bn1d::save_safetensors(unwritable, sample_state()); }), ENOENT);
  EXPECT_EQ(io_error_code([&] { bn1d::load_safetensors(dir.string()); }), EISDIR);
  EXPECT_EQ(io_error_code([&] { bn1d::save_safetensors(dir.string(), sample_state()); }), EISDIR);
  const auto path = (dir / "short.safetensors").string();
  bn1d::save_safetensors(path, sample_state());
  std::filesystem::resize_file(path, 20);  // the header length runs past the end: not I/O
  EXPECT_EQ(io_error_code([&] { bn1d::load_safetensors(path); }), -1);
  EXPECT_EQ(bn1d::IoError("message").error_code(), 0);
}

/// @p text as bytes.
Bytes bytes_of(std::string_view text) { return Bytes(text.begin(), text.end()); }

// Files of other formats are "not a safetensors file", naming the format torch.save writes,
// rather than reporting the absurd header length their first 8 bytes make.
TEST(Safetensors, OtherFormatsAreNotSafetensorsFiles) {
  using namespace std::string_literals;
  const std::vector<std::pair<Bytes, std::string>> cases = {
      // torch.save since 1.6: a zip archive (local file header, version 20, no flags).
      {bytes_of("PK\x03\x04\x14\x00\x00\x00\x00\x00"s + "archive/data.pkl"), "a zip archive"},
      // the legacy torch.save: protocol 2, then the magic number as LONG1.
      {bytes_of("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."s),
       "a pickle (protocol 2)"},
      // pickle.dumps({}, protocol=4) padded: PROTO 4, FRAME with its 8-byte length.
      {bytes_of("\x80\x04\x95\x04\x00\x00\x00\x00\x00\x00\x00}\x94."s), "a pickle (protocol 4)"},
      {bytes_of("# a text file, not safetensors\n"), "header length"},
      {bytes_of("abc"), "need at least 8 bytes"},
  };
  const auto path = (temp_dir() / "other.pt").string();
  for (const auto& [bytes, word] : cases) {
    SCOPED_TRACE(word);
    EXPECT_TRUE(throws_error([&] { bn1d::parse_safetensors(bytes); }, "not a safetensors file"));
    EXPECT_TRUE(throws_error([&] { bn1d::parse_safetensors(bytes); }, word));
    write_file(path, bytes);
    for (const auto& load : {std::function<void()>([&] { bn1d::load_safetensors(path); }),
                             std::function<void()>([&] { bn1d::BatchNorm1d(2).load(path); })}) {
      EXPECT_TRUE(
          throws_error(load, "invalid safetensors file \"" + path + "\": not a safetensors file"));
      EXPECT_TRUE(throws_error(load, word));
      EXPECT_EQ(io_error_code(load), -1);  // an Error, not an IoError
    }
  }
  EXPECT_TRUE(throws_error([&] { bn1d::parse_safetensors(cases[0].first); }, "torch.save"));
  EXPECT_TRUE(throws_error([&] { bn1d::parse_safetensors(cases[1].first); }, "torch.load"));
  // A header that starts like JSON is a safetensors file whose header is too long or cut.
  for (const Bytes& bytes : {with_length(200'000'000, "{}      "), with_length(100, "{}")}) {
    try {
      bn1d::parse_safetensors(bytes);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(std::string_view(e.what()).find("not a safetensors file"), std::string_view::npos)
          << e.what();
    }
  }
  // A valid file whose header length begins with 0x80 0x02 (640 bytes) is no pickle.
  std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  header.resize(640, ' ');
  EXPECT_EQ(make_file(header, 4)[0], 0x80);
  EXPECT_EQ(make_file(header, 4)[1], 0x02);
  EXPECT_EQ(bn1d::parse_safetensors(make_file(header, 4)).keys(), std::vector<std::string>{"a"});
}

/// A malformed file and a word its error message must contain.
struct Hostile {
  const char* name;
  Bytes bytes;
  std::string word;
};

/// `open` repeated @p depth times, then `close` as often.
std::string nested(std::string_view open, std::string_view close, int depth) {
  std::string text;
  for (int i = 0; i < depth; ++i) text += open;
  for (int i = 0; i < depth; ++i) text += close;
  return text;
}

std::vector<Hostile> hostile_files() {
  const std::string f32x2 = R"({"dtype":"F32","shape":[2],"data_offsets":)";
  return {
      {"empty file", {}, "at least 8 bytes"},
      {"seven bytes", Bytes(7, 0), "at least 8 bytes"},
      {"truncated data", make_file(R"({"a":)" + f32x2 + "[0,8]}}", 4), "past the end"},
      {"header length past end", with_length(100, "{}"), "runs past the end"},
      {"header over 100 MB", with_length(200'000'000, "{}      "), "exceeds the limit"},
      {"header over 16 MiB", with_length((16 << 20) + 8, "{}      "), "exceeds the limit"},
      {"header length zero", with_length(0, ""), "JSON object"},
      {"header not JSON", make_file("{not json}", 0), "not valid JSON"},
      {"trailing garbage", make_file("{} x", 0), "not valid JSON"},
      {"invalid UTF-8", make_file("{\"\xff\":{}}", 0), "not valid JSON"},
      {"NUL byte then a second header",
       make_file(std::string(R"({"a":)" + f32x2 + "[0,8]}}") + '\0' +
                     R"({"b":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})",
                 8),
       "control character \"\\x00\""},
      {"control byte between tokens", make_file("{\x01}", 0), "control character"},
      {"JSON array", make_file("[1, 2]", 0), "JSON object"},
      {"JSON string", make_file(R"("abc")", 0), "JSON object"},
      {"leading space", make_file(" {}", 0), "JSON object"},
      {"deep arrays", make_file(nested("[", "]", 10000), 0), "JSON object"},
      {"deep arrays in a field", make_file(R"({"a":{"x":)" + nested("[", "]", 10000) + "}}", 0),
       "deeper"},
      {"deep objects", make_file(nested(R"({"a":)", "}", 10000).replace(10000 * 5, 0, "0"), 0),
       "deeper"},
      {"arrays as shape", make_file(R"({"a":{"shape":)" + nested("[", "]", 10000) + "}}", 0),
       "shape"},
      {"duplicate keys", make_file(R"({"a":)" + f32x2 + "[0,8]},\"a\":" + f32x2 + "[8,16]}}", 16),
       "duplicate key \"a\""},
      {"duplicate field", make_file(R"({"a":{"dtype":"F32","dtype":"F64"}})", 0),
       "duplicate field"},
      {"duplicate metadata", make_file(R"({"__metadata__":{"k":"1","k":"2"}})", 0), "duplicate"},
      {"unknown dtype",
       make_file(R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,4]}})", 4), "F8_E4M3"},
      {"negative shape",
       make_file(R"({"a":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,0]}})", 0), "negative"},
      {"fractional shape",
       make_file(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,0]}})", 0),
       "non-negative integers"},
      {"shape overflow",
       make_file(
           R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,0]}})",
           0),
       "overflow"},
      {"shape overflow with a zero",
       make_file(R"({"a":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}})",
                 0),
       "overflow"},
      {"shape entry past int64",
       make_file(R"({"a":{"dtype":"F32","shape":[18446744073709551615]}})", 0), "overflow"},
      {"too many dimensions",
       make_file(R"({"a":{"dtype":"F32","shape":[)" + nested("1,", "", 64) + "1]}}", 0),
       "dimensions"},
      {"offsets reversed", make_file(R"({"a":)" + f32x2 + "[8,0]}}", 8), "begin > end"},
      {"offsets past end", make_file(R"({"a":)" + f32x2 + "[8,16]}}", 8), "past the end"},
      {"negative offset", make_file(R"({"a":)" + f32x2 + "[-8,0]}}", 8), "negative"},
      {"overlapping offsets",
       make_file(R"({"a":)" + f32x2 + "[0,8]},\"b\":" + f32x2 + "[4,12]}}", 12), "overlap"},
      {"hole between tensors",
       make_file(R"({"a":)" + f32x2 + "[0,8]},\"b\":" + f32x2 + "[12,20]}}", 20), "hole"},
      {"hole at the end", make_file(R"({"a":)" + f32x2 + "[0,8]}}", 9), "hole"},
      {"data without tensors", make_file("{}", 8), "hole"},
      {"size mismatch", make_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       "needs 12 bytes"},
      {"dtype not a string", make_file(R"({"a":{"dtype":32,"shape":[],"data_offsets":[0,4]}})", 4),
       "dtype must be a string"},
      {"three data_offsets", make_file(R"({"a":)" + f32x2 + "[0,8,8]}}", 8),
       "data_offsets must be two"},
      {"one data_offset", make_file(R"({"a":)" + f32x2 + "[0]}}", 8), "data_offsets must be two"},
      {"data_offsets not an array", make_file(R"({"a":)" + f32x2 + "\"0-8\"}}", 8), "data_offsets"},
      {"missing dtype", make_file(R"({"a":{"shape":[],"data_offsets":[0,4]}})", 4),
       "missing \"dtype\""},
      {"NUL byte in key", make_file(R"({"a\u0000b":)" + f32x2 + "[0,8]}}", 8), "NUL"},
      {"metadata value not a string", make_file(R"({"__metadata__":{"k":1}})", 0), "__metadata__"},
      {"metadata not an object", make_file(R"({"__metadata__":["k"]})", 0), "__metadata__"},
      {"entry not an object", make_file(R"({"a":5})", 0), "\"a\" must be an object"},
      {"entry an array", make_file(R"({"a":[]})", 0), "\"a\" must be an object"},
  };
}

TEST(SafetensorsHostile, ParseRejectsEveryMalformedBuffer) {
  for (const Hostile& hostile : hostile_files()) {
    EXPECT_TRUE(throws_error([&] { bn1d::parse_safetensors(hostile.bytes); }, hostile.word))
        << hostile.name;
  }
}

TEST(SafetensorsHostile, LoadRejectsEveryMalformedFile) {
  const auto dir = temp_dir();
  for (const Hostile& hostile : hostile_files()) {
    const auto path = (dir / "hostile.safetensors").string();
    write_file(path, hostile.bytes);
    EXPECT_TRUE(throws_error([&] { bn1d::load_safetensors(path, "a"); }, hostile.word))
        << hostile.name;
    EXPECT_TRUE(throws_error([&] { bn1d::load_safetensors(path, "a"); }, path)) << hostile.name;
  }
}

// The fuzzer's seed corpus (fuzz/corpus/safetensors) is exactly these cases, one file each, so
// that every seed is also a unit test above. BN1D_WRITE_CORPUS=<dir> writes the files afresh.
std::string corpus_name(const char* name) {
  std::string file = name;
  for (char& ch : file) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
  return file + ".safetensors";
}

TEST(SafetensorsHostile, CommittedFuzzCorpusIsTheseCases) {
  const std::filesystem::path dir =
      std::filesystem::path(BN1D_FIXTURE_DIR) / "../../fuzz/corpus/safetensors";
  if (const char* out = std::getenv("BN1D_WRITE_CORPUS")) {
    for (const Hostile& hostile : hostile_files())
      write_file((std::filesystem::path(out) / corpus_name(hostile.name)).string(), hostile.bytes);
  }
  std::size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    files += entry.path().extension() == ".safetensors";
  EXPECT_EQ(files, hostile_files().size());
  for (const Hostile& hostile : hostile_files()) {
    std::ifstream in(dir / corpus_name(hostile.name), std::ios::binary);
    ASSERT_TRUE(in) << corpus_name(hostile.name);
    const Bytes bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(bytes, hostile.bytes) << hostile.name;
  }
}

TEST(SafetensorsHostile, ErrorsLeaveMetadataUnchanged) {
  bn1d::Metadata metadata{{"keep", "me"}};
  EXPECT_THROW(
      bn1d::parse_safetensors(make_file(R"({"__metadata__":{"k":"v"},"a":5})", 0), &metadata),
      Error);
  EXPECT_EQ(metadata, (bn1d::Metadata{{"keep", "me"}}));
}

}  // namespace
