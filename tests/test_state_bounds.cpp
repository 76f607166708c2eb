// SPDX-License-Identifier: MIT
/// @file test_state_bounds.cpp
/// @brief State files under attack: bounded memory and work for hostile headers, strict JSON
/// (no NUL or control bytes, nothing after the object but whitespace), valid UTF-8 messages,
/// and save() writing through symbolic links and refusing FIFOs, devices and directories.
///
/// Peak memory is measured with getrusage(RUSAGE_SELF).ru_maxrss: the process's peak resident
/// set, which only grows. A test compares it before and after the call under test, so it bounds
/// the call's extra peak (ctest runs every test in its own process, so the baseline is small).
/// Nothing here asserts on time: bounded work shows as bounded message lengths and memory.

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <bn1d/bn1d.hpp>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "test_util.hpp"

namespace bn1d::test {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

/// A fresh, empty directory for this test's files.
fs::path temp_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const auto dir = fs::path(::testing::TempDir()) / "bn1d_state_bounds" /
                   (std::string(info->test_suite_name()) + "." + info->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

/// The process's peak resident set so far, in bytes.
std::int64_t peak_rss() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<std::int64_t>(usage.ru_maxrss) * 1024;  // kilobytes on Linux
}

constexpr std::int64_t kMiB = std::int64_t{1} << 20;

/// The 8-byte little-endian length of @p header followed by it.
std::string length_prefix(std::uint64_t length) {
  std::string text(8, '\0');
  std::memcpy(text.data(), &length, 8);
  return text;
}

/// A file with JSON header @p header followed by @p data_bytes zero bytes of data.
Bytes make_file(std::string_view header, std::size_t data_bytes = 0) {
  std::string text = length_prefix(header.size()) + std::string(header);
  text.append(data_bytes, '\0');
  return Bytes(text.begin(), text.end());
}

/// A header of @p count empty F32 tensors named by their index, with @p pad more key characters.
std::string many_entries(std::size_t count, std::size_t pad = 0) {
  std::string header = "{";
  for (std::size_t i = 0; i < count; ++i) {
    if (i > 0) header += ',';
    header += '"' + std::string(pad, 'k') + std::to_string(i) +
              R"(":{"dtype":"F32","shape":[0],"data_offsets":[0,0]})";
  }
  return header + '}';
}

/// The message of the Error @p call throws ("" if none).
template <class Call>
std::string error_of(Call&& call) {
  try {
    call();
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

/// True when @p text is valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
bool valid_utf8(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    std::size_t length = lead < 0x80                    ? 1
                         : lead >= 0xC2 && lead <= 0xDF ? 2
                         : lead >= 0xE0 && lead <= 0xEF ? 3
                         : lead >= 0xF0 && lead <= 0xF4 ? 4
                                                        : 0;
    if (length == 0 || text.size() - i < length) return false;
    std::uint32_t code = lead & (0x7F >> length);
    for (std::size_t k = 1; k < length; ++k) {
      const auto byte = static_cast<unsigned char>(text[i + k]);
      if ((byte & 0xC0) != 0x80) return false;
      code = (code << 6) | (byte & 0x3F);
    }
    const std::uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < least[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    i += length;
  }
  return true;
}

// --- 1. Memory: a module checks the header against its shapes before reading any tensor. ------

TEST(SafetensorsBounds, ModuleLoadChecksShapesBeforeReadingData) {
  // A sparse file (a few KiB on disk) whose header claims a 3 GiB weight: load() must reject the
  // shape from the header alone, without allocating or reading the 3 GiB.
  const auto path = (temp_dir() / "claim.safetensors").string();
  const std::uint64_t numel = 805'306'368, bytes = 4 * numel;
  std::string header = R"({"weight":{"dtype":"F32","shape":[)" + std::to_string(numel) +
                       R"(],"data_offsets":[0,)" + std::to_string(bytes) + "]}}";
  header.append((8 - header.size() % 8) % 8, ' ');
  {
    std::ofstream out(path, std::ios::binary);
    out << length_prefix(header.size()) << header;
  }
  fs::resize_file(path, 8 + header.size() + bytes);
  BatchNorm1d m(4);
  const std::int64_t before = peak_rss();
  EXPECT_TRUE(throws_error([&] { m.load(path); },
                           "size or dtype mismatch for weight: copying a float32 tensor of shape "
                           "[805306368] from the state dict"));
  EXPECT_LT(peak_rss() - before, 64 * kMiB);
  EXPECT_EQ(values(m.weight()), std::vector<double>(4, 1.0));  // unchanged
}

TEST(SafetensorsBounds, SizesAreCheckedAgainstTheRealFileSize) {
  // The header claims 3 GiB of data but the file ends after the header: rejected before
  // anything is allocated, by the generic loader and by the module.
  const auto path = (temp_dir() / "short.safetensors").string();
  const std::string header =
      R"({"weight":{"dtype":"F32","shape":[805306368],"data_offsets":[0,3221225472]}})";
  const Bytes bytes = make_file(header);
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  const std::int64_t before = peak_rss();
  EXPECT_TRUE(throws_error([&] { load_safetensors(path); }, "run past the end"));
  EXPECT_TRUE(throws_error([&] { BatchNorm1d(4).load(path); }, "run past the end"));
  EXPECT_LT(peak_rss() - before, 64 * kMiB);
}

// --- 2. Header cost: at most 16 MiB and 65,536 entries; messages name at most 20 keys. --------

TEST(SafetensorsBounds, HeaderOverTheSizeLimitIsRejectedBeforeItIsRead) {
  // 1.7 million empty tensors: a 99 MB header that the reference reader (100 MB limit) accepts.
  // Written in pieces, so the test itself holds no copy of it.
  const auto path = (temp_dir() / "many.safetensors").string();
  std::uint64_t length = 0;
  {
    std::ofstream out(path, std::ios::binary);
    out << length_prefix(0) << '{';
    std::string chunk;
    for (std::size_t i = 0; i < 1'700'000; ++i) {
      if (i > 0) chunk += ',';
      chunk += '"' + std::to_string(i) + R"(":{"dtype":"F32","shape":[0],"data_offsets":[0,0]})";
      if (chunk.size() > (1 << 20)) {
        out << chunk;
        length += chunk.size();
        chunk.clear();
      }
    }
    chunk += '}';
    chunk.append((8 - (length + 1 + chunk.size()) % 8) % 8, ' ');
    out << chunk;
    length += 1 + chunk.size();
    out.seekp(0);
    out << length_prefix(length);
  }
  ASSERT_GT(length, 90'000'000U);
  const std::int64_t before = peak_rss();
  for (const std::string& message :
       {error_of([&] { load_safetensors(path); }), error_of([&] { BatchNorm1d(4).load(path); })}) {
    EXPECT_NE(message.find("header length " + std::to_string(length) +
                           " exceeds the limit of 16777216 bytes"),
              std::string::npos)
        << message;
    EXPECT_LT(message.size(), 512U);
  }
  EXPECT_LT(peak_rss() - before, 64 * kMiB);  // the header is never read
  fs::remove(path);
  // In memory the limit is the same: 16 MiB of header loads, one byte more does not.
  std::string largest = "{}";
  largest.resize(std::size_t{16} << 20, ' ');
  EXPECT_TRUE(parse_safetensors(make_file(largest)).empty());
  largest += ' ';
  EXPECT_TRUE(throws_error([&] { parse_safetensors(make_file(largest)); }, "exceeds the limit"));
}

TEST(SafetensorsBounds, EntryLimitCountsTensorsAndMetadata) {
  EXPECT_EQ(parse_safetensors(make_file(many_entries(65'536))).size(), 65'536U);
  const std::string message = error_of([&] { parse_safetensors(make_file(many_entries(65'537))); });
  EXPECT_NE(message.find("header has more than 65536 entries"), std::string::npos) << message;
  std::string metadata = R"({"__metadata__":{)";
  for (int i = 0; i < 65'536; ++i)
    metadata += (i > 0 ? ",\"" : "\"") + std::to_string(i) + "\":\"\"";
  metadata += R"(},"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})";
  EXPECT_TRUE(throws_error([&] { parse_safetensors(make_file(metadata)); }, "more than 65536"));
}

TEST(SafetensorsBounds, LargestHeaderHasBoundedCostAndMessage) {
  // The worst header within the limits: 65,536 tensors with 190-byte keys, ~16 MiB. The module
  // rejects it from the header (reading no tensor) with a message naming 20 of the keys.
  const auto path = (temp_dir() / "largest.safetensors").string();
  const std::string header = many_entries(65'536, 190);
  ASSERT_LT(header.size(), std::size_t{16} << 20);
  {
    std::ofstream out(path, std::ios::binary);
    out << length_prefix(header.size()) << header;
  }
  const std::int64_t before = peak_rss();
  const std::string message = error_of([&] { BatchNorm1d(4).load(path); });
  const std::int64_t module_peak = peak_rss() - before;
  EXPECT_NE(message.find("Unexpected key(s) in state_dict: \"" + std::string(190, 'k') + "0\""),
            std::string::npos);
  EXPECT_NE(message.find(", ... and 65516 more."), std::string::npos) << message.substr(0, 300);
  EXPECT_LT(message.size(), 8192U);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  // Measured: ~56 MiB for this 16 MiB header (the text, its parse, one entry per tensor).
  EXPECT_LT(module_peak, 128 * kMiB);
#else
  (void)module_peak;  // sanitizers' shadow memory and quarantine distort the resident set
#endif
  fs::remove(path);
}

// --- 3. Strict JSON: no NUL or control bytes; only whitespace after the object. ---------------

TEST(SafetensorsBounds, ControlBytesAndTrailingBytesAreRejected) {
  const std::string a = R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})";
  const std::string b = R"({"b":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})";
  // A valid header, a NUL, then a second header: the JSON parser must not stop at the NUL.
  EXPECT_TRUE(throws_error([&] { parse_safetensors(make_file(a + '\0' + b)); },
                           "control character \"\\x00\""));
  EXPECT_TRUE(throws_error([&] { parse_safetensors(make_file(a + std::string(1, '\0'))); },
                           "header byte " + std::to_string(a.size())));
  for (const char control : {'\x01', '\x1f', '\x0b', '\x0c'}) {
    EXPECT_TRUE(
        throws_error([&] { parse_safetensors(make_file(a + ' ' + std::string(1, control) + ' ')); },
                     "control character"))
        << int(control);
  }
  // Inside a string a raw control character is invalid JSON too (tab included).
  EXPECT_TRUE(
      throws_error([&] { parse_safetensors(make_file("{\"a\tb\":{}}")); }, "not valid JSON"));
  EXPECT_TRUE(throws_error([&] { parse_safetensors(make_file(a + " x")); }, "not valid JSON"));
  EXPECT_TRUE(throws_error([&] { parse_safetensors(make_file(a + "{}")); }, "not valid JSON"));
  // JSON whitespace after the object is padding, as for the reference reader (serde_json).
  EXPECT_EQ(parse_safetensors(make_file(a + "  \n\t\r  ")).keys(), std::vector<std::string>{"a"});
}

// --- 4. Messages are valid UTF-8 whatever the file holds. -------------------------------------

TEST(SafetensorsMessages, AreValidUtf8AndBounded) {
  const std::string f32 = R"({"dtype":"F32","shape":[0],"data_offsets":[0,0]})";
  const std::vector<std::string> headers = {
      "{\"\xff\":{}}",                                   // invalid UTF-8 in a key
      "{\"a\":{\"dtype\":\"\xc3\"}}",                    // truncated sequence in a value
      "{\"a\":{\"dtype\":\"\xed\xa0\x80\"}}",            // an encoded surrogate
      "{\"a\":" + f32 + ",\xfe}",                        // a raw byte where a key belongs
      "{\"" + std::string(100'000, 'x') + "\xff\":{}}",  // a long token before the bad byte
      R"({"a":{"dtype":"B\u0001\u007f","shape":[],"data_offsets":[0,0]}})",  // control characters
                                                                             // in a dtype
      "{\"" + std::string(100'000, 'k') + "\":5}",  // a long key in a message
  };
  for (const std::string& header : headers) {
    const std::string message = error_of([&] { parse_safetensors(make_file(header)); });
    EXPECT_FALSE(message.empty()) << header.substr(0, 40);
    EXPECT_TRUE(valid_utf8(message)) << message.substr(0, 200);
    EXPECT_LT(message.size(), 1024U) << message.substr(0, 200);
  }
  EXPECT_NE(error_of([&] { parse_safetensors(make_file(headers[0])); }).find("\\xff"),
            std::string::npos);
  EXPECT_NE(error_of([&] { parse_safetensors(make_file(headers[5])); }).find("\"B\\x01\\x7f\""),
            std::string::npos);
  // Paths and keys given by the caller are quoted the same way.
  const std::string bad_path = (temp_dir() / "caf\xe9.safetensors").string();
  const std::string message = error_of([&] { load_safetensors(bad_path); });
  EXPECT_TRUE(valid_utf8(message)) << message;
  EXPECT_NE(message.find("caf\\xe9.safetensors"), std::string::npos) << message;
  StateDict state;
  state.insert("w\xff", Tensor::zeros({2}));
  for (const std::string& m : {error_of([&] { (void)state.at("\xfe"); }),
                               error_of([&] { BatchNorm1d(2).load_state_dict(state); })}) {
    EXPECT_TRUE(valid_utf8(m)) << m;
  }
  EXPECT_NE(error_of([&] { BatchNorm1d(2).load_state_dict(state); }).find("\"w\\xff\""),
            std::string::npos);
}

// --- 5. save() writes through symbolic links and refuses what is not a regular file. ----------

/// The bytes of the file at @p path.
Bytes read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST(SafetensorsSave, WritesThroughSymbolicLinks) {
  const auto dir = temp_dir();
  fs::create_directories(dir / "ckpt");
  BatchNorm1d m(3);
  m.running_mean().copy_from(Tensor::full({3}, 7.0));
  // latest -> ckpt/100.safetensors (relative), an existing file with custom permissions.
  std::ofstream(dir / "ckpt" / "100.safetensors") << "old";
  fs::permissions(dir / "ckpt" / "100.safetensors", fs::perms::owner_read | fs::perms::owner_write);
  fs::create_symlink("ckpt/100.safetensors", dir / "latest");
  // chain -> latest (absolute) -> ckpt/100.safetensors
  fs::create_symlink(dir / "latest", dir / "chain");
  m.save((dir / "chain").string());
  EXPECT_TRUE(fs::is_symlink(dir / "latest"));
  EXPECT_TRUE(fs::is_symlink(dir / "chain"));
  EXPECT_EQ(read_file(dir / "ckpt" / "100.safetensors"), to_safetensors(m.state_dict()));
  EXPECT_EQ(fs::status(dir / "ckpt" / "100.safetensors").permissions(),
            fs::perms::owner_read | fs::perms::owner_write);
  BatchNorm1d loaded(3);
  loaded.load((dir / "latest").string());
  EXPECT_EQ(values(loaded.running_mean()), std::vector<double>(3, 7.0));
  // A dangling link: its target is created, the link stays.
  fs::create_symlink("ckpt/200.safetensors", dir / "next");
  m.save((dir / "next").string());
  EXPECT_TRUE(fs::is_symlink(dir / "next"));
  EXPECT_EQ(read_file(dir / "ckpt" / "200.safetensors"), to_safetensors(m.state_dict()));
  // A loop of links is an IoError, and no temporary file is left behind.
  fs::create_symlink("loop_b", dir / "loop_a");
  fs::create_symlink("loop_a", dir / "loop_b");
  EXPECT_THROW(m.save((dir / "loop_a").string()), IoError);
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    EXPECT_EQ(entry.path().string().find(".tmp-bn1d"), std::string::npos) << entry.path();
}

TEST(SafetensorsSave, RefusesFifosDevicesAndDirectories) {
  const auto dir = temp_dir();
  const auto fifo = dir / "fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  fs::create_symlink(fifo, dir / "to_fifo");
  fs::create_directories(dir / "directory");
  const BatchNorm1d m(2);
  const std::vector<std::pair<fs::path, std::string>> cases = {
      {fifo, "it is a FIFO, not a regular file"},
      {dir / "to_fifo", "it is a FIFO, not a regular file"},
      {dir / "directory", "it is a directory, not a regular file"},
      {"/dev/null", "it is a character device, not a regular file"},
  };
  for (const auto& [path, what] : cases) {
    try {
      m.save(path.string());
      ADD_FAILURE() << "no error saving to " << path;
    } catch (const IoError& error) {
      EXPECT_NE(std::string_view(error.what()).find(path.string()), std::string_view::npos)
          << error.what();
      EXPECT_NE(std::string_view(error.what()).find(what), std::string_view::npos) << error.what();
    }
  }
  EXPECT_EQ(fs::status(fifo).type(), fs::file_type::fifo);  // still a FIFO
  EXPECT_TRUE(fs::is_symlink(dir / "to_fifo"));
  EXPECT_TRUE(fs::is_directory(dir / "directory"));
  // Loading from them is refused at once (a FIFO without a writer does not block).
  EXPECT_TRUE(throws_error([&] { BatchNorm1d(2).load(fifo.string()); }, "it is a FIFO"));
  EXPECT_THROW(load_safetensors((dir / "directory").string()), IoError);
  EXPECT_TRUE(throws_error([&] { load_safetensors("/dev/zero"); }, "a character device"));
}

// --- 6. num_batches_tracked: every count in [0, INT64_MAX] loads. ----------------------------

TEST(ModuleStateCount, LoadsTheLargestCount) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  BatchNorm1d m(2);
  StateDict state = m.state_dict();
  state.insert("num_batches_tracked", Tensor::full({}, 0, DType::Int64));
  *const_cast<std::int64_t*>(state.at("num_batches_tracked").data<std::int64_t>()) = kMax;
  m.load_state_dict(state);
  EXPECT_EQ(m.num_batches_tracked(), kMax);
  const auto path = (temp_dir() / "max.safetensors").string();
  m.save(path);
  BatchNorm1d loaded(2);
  loaded.load(path);
  EXPECT_EQ(loaded.num_batches_tracked(), kMax);
  *const_cast<std::int64_t*>(state.at("num_batches_tracked").data<std::int64_t>()) =
      std::numeric_limits<std::int64_t>::min();
  EXPECT_TRUE(throws_error([&] { loaded.load_state_dict(state); }, "expected a count >= 0"));
  EXPECT_EQ(loaded.num_batches_tracked(), kMax);
}

}  // namespace
}  // namespace bn1d::test
