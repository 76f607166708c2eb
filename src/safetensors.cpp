// SPDX-License-Identifier: MIT
/// @file safetensors.cpp
/// @brief Reading and writing state dicts in the safetensors format: the files (the header's
/// parser is in safetensors_header.cpp).

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "bn1d/error.hpp"
#include "bn1d/state.hpp"
#include "bn1d/tensor.hpp"
#include "safetensors_format.hpp"

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts would need byte swapping");

namespace bn1d {
namespace {

using json = nlohmann::json;
using detail::quote;

/// Throws Error with @p message.
[[noreturn]] void fail(const std::string& message) { throw Error(message); }

/// Throws IoError with @p message and, if @p error is not 0, strerror(@p error); the IoError
/// carries @p error as its error_code().
[[noreturn]] void fail_io(const std::string& message, int error = 0) {
  throw IoError(error == 0 ? message : message + ": " + std::strerror(error), error);
}

/// What a file of mode @p mode is, for messages ("a FIFO").
std::string file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

/// Throws IoError "@p what: it is a FIFO, not a regular file" for a file of mode @p mode, with
/// error_code() EISDIR for a directory (as open() reports for writing), 0 for the others.
[[noreturn]] void fail_not_regular(const std::string& what, mode_t mode) {
  throw IoError(what + ": it is " + file_kind(mode) + ", not a regular file",
                S_ISDIR(mode) ? EISDIR : 0);
}

/// Runs @p check, prefixing any Error it throws with the file @p path.
template <class Check>
auto checking_file(const std::string& path, Check&& check) {
  try {
    return check();
  } catch (const IoError&) {
    throw;
  } catch (const Error& error) {
    fail("invalid safetensors file " + quote(path, 4096) + ": " + error.what());
  }
}

/// A file descriptor closed on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

/// The file that writing @p path replaces: @p path itself, or the final target of the symbolic
/// links it names (which need not exist yet). Throws IoError if that file exists and is not a
/// regular file. @p existing receives its status when it exists.
std::string write_target(const std::string& path, struct stat& existing, bool& exists) {
  std::filesystem::path target = path;
  for (int links = 0;; ++links) {
    if (::lstat(target.c_str(), &existing) != 0) {
      exists = false;  // opening the temporary file reports a missing directory
      return target.string();
    }
    if (!S_ISLNK(existing.st_mode)) break;
    if (links == 40) fail_io("cannot write " + quote(path, 4096), ELOOP);
    std::string link(4096, '\0');
    const ssize_t length = ::readlink(target.c_str(), link.data(), link.size());
    if (length < 0 || static_cast<std::size_t>(length) == link.size()) {
      fail_io("cannot write " + quote(path, 4096) + " (cannot read the link " +
              quote(target.string(), 4096) + ")");
    }
    link.resize(static_cast<std::size_t>(length));
    target = std::filesystem::path(link).is_absolute() ? std::filesystem::path(link)
                                                       : target.parent_path() / link;
  }
  exists = true;
  if (!S_ISREG(existing.st_mode)) {
    fail_not_regular(
        "cannot write " + quote(path, 4096) +
            (target.string() == path ? "" : " (a link to " + quote(target.string(), 4096) + ")"),
        existing.st_mode);
  }
  return target.string();
}

/// Writes all @p size bytes of @p data to @p fd; returns errno on failure, else 0.
int write_all(int fd, const std::uint8_t* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, std::min<std::size_t>(size, std::size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return 0;
}

}  // namespace

std::vector<std::uint8_t> to_safetensors(const StateDict& state, const Metadata& metadata) {
  try {
    // Quotes a name as JSON, rejecting invalid UTF-8 (nlohmann throws on it).
    const auto quote_strict = [](const std::string& name) {
      try {
        return json(name).dump();
      } catch (const json::type_error&) {
        fail(detail::quote(name) + " is not valid UTF-8");
      }
    };
    std::string header = "{";
    if (!metadata.empty()) {
      header += "\"__metadata__\":{";
      for (const auto& [name, value] : metadata) {
        detail::check_name(name);
        if (header.back() != '{') header += ',';
        header += quote_strict(name) + ":" + quote_strict(value);
      }
      header += '}';
    }
    std::vector<Tensor> tensors;
    tensors.reserve(state.size());
    std::uint64_t offset = 0;
    for (const auto& [name, tensor] : state) {
      detail::check_name(name);
      if (name == "__metadata__") fail("the key \"__metadata__\" is reserved for metadata");
      if (!tensor.defined()) fail("tensor " + detail::quote(name) + " is undefined");
      std::string shape = "[";
      for (const std::int64_t size : tensor.sizes()) {
        if (shape.size() > 1) shape += ',';
        shape += std::to_string(size);
      }
      const std::uint64_t bytes =
          static_cast<std::uint64_t>(tensor.numel()) * element_size(tensor.dtype());
      if (header.size() > 1) header += ',';
      header += quote_strict(name) + ":{\"dtype\":\"" +
                std::string(detail::dtype_code(tensor.dtype())) + "\",\"shape\":" + shape +
                "],\"data_offsets\":[" + std::to_string(offset) + "," +
                std::to_string(offset + bytes) + "]}";
      offset += bytes;
      tensors.push_back(tensor.contiguous());
    }
    header += '}';
    header.append((8 - header.size() % 8) % 8, ' ');
    if (header.size() > detail::kMaxHeaderBytes) {
      fail("the header would exceed the limit of " + std::to_string(detail::kMaxHeaderBytes) +
           " bytes");
    }

    std::vector<std::uint8_t> out(8 + header.size() + offset);
    const std::uint64_t length = header.size();
    std::memcpy(out.data(), &length, sizeof length);
    std::memcpy(out.data() + 8, header.data(), header.size());
    std::uint8_t* data = out.data() + 8 + header.size();
    for (const Tensor& tensor : tensors) {
      const std::size_t bytes =
          static_cast<std::size_t>(tensor.numel()) * element_size(tensor.dtype());
      if (bytes != 0) std::memcpy(data, tensor.raw_data(), bytes);
      data += bytes;
    }
    return out;
  } catch (const Error& error) {
    fail(std::string("cannot serialize state dict as safetensors: ") + error.what());
  }
}

StateDict parse_safetensors(std::span<const std::uint8_t> bytes, Metadata* metadata) {
  try {
    const auto* text = reinterpret_cast<const char*>(bytes.data());
    const std::uint64_t length = detail::header_length(text, bytes.size());
    detail::Header header = detail::parse_header({text + 8, length}, bytes.size() - 8 - length);
    StateDict state;
    for (const detail::TensorEntry& entry : header.entries) {
      Tensor tensor = Tensor::empty(entry.shape, entry.dtype);
      if (entry.end != entry.begin) {
        std::memcpy(tensor.raw_data(), text + 8 + length + entry.begin, entry.end - entry.begin);
      }
      state.insert(entry.key, std::move(tensor));
    }
    if (metadata != nullptr) *metadata = std::move(header.metadata);
    return state;
  } catch (const Error& error) {
    fail(std::string("invalid safetensors data: ") + error.what());
  }
}

void save_safetensors(const std::string& path, const StateDict& state, const Metadata& metadata) {
  const std::vector<std::uint8_t> bytes = to_safetensors(state, metadata);
  struct stat existing {};
  bool exists = false;
  const std::string target = write_target(path, existing, exists);
  // A temporary file next to the target, renamed over it: a failed write leaves no partial file.
  static std::atomic<unsigned> counter{0};
  std::string temp;
  Fd out;
  for (int attempt = 0; out.fd < 0; ++attempt) {
    temp = target + ".tmp-bn1d-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) +
           "-" + std::to_string(std::random_device{}());
    out.fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (out.fd < 0 && (errno != EEXIST || attempt == 100))
      fail_io("cannot open " + quote(path, 4096) + " for writing", errno);
  }
  int error = write_all(out.fd, bytes.data(), bytes.size());
  if (error == 0 && exists && ::fchmod(out.fd, existing.st_mode & 07777) != 0) error = errno;
  if (error == 0 && ::fsync(out.fd) != 0) error = errno;
  if (error == 0 && ::close(out.fd) != 0) error = errno;
  out.fd = -1;
  if (error == 0 && ::rename(temp.c_str(), target.c_str()) != 0) error = errno;
  if (error != 0) {
    ::unlink(temp.c_str());
    fail_io("cannot write " + quote(path, 4096), error);
  }
}

namespace detail {

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd_ < 0) fail_io("cannot open " + quote(path, 4096) + " for reading", errno);
  try {
    struct stat status {};
    if (::fstat(fd_, &status) != 0) fail_io("cannot read " + quote(path, 4096), errno);
    if (!S_ISREG(status.st_mode)) {
      fail_not_regular("cannot read " + quote(path, 4096), status.st_mode);
    }
    const auto total = static_cast<std::uint64_t>(status.st_size);
    std::array<char, 9> head{};  // the header length and the header's first byte
    read_at(head.data(), 0, std::min<std::uint64_t>(total, head.size()));
    // Every size below is checked against the file's real size before anything is allocated.
    const std::uint64_t length =
        checking_file(path, [&] { return header_length(head.data(), total); });
    std::string text(length, '\0');
    read_at(text.data(), 8, length);
    header_ = checking_file(path, [&] { return parse_header(text, total - 8 - length); });
    data_start_ = 8 + length;
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() { ::close(fd_); }

void SafetensorsFile::read_at(char* into, std::uint64_t offset, std::uint64_t count) const {
  while (count > 0) {
    const ssize_t n = ::pread(fd_, into, std::min<std::uint64_t>(count, std::uint64_t{1} << 30),
                              static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail_io("cannot read " + quote(path_, 4096), errno);
    if (n == 0) fail_io("cannot read " + quote(path_, 4096) + ": the file ended early");
    into += n;
    offset += static_cast<std::uint64_t>(n);
    count -= static_cast<std::uint64_t>(n);
  }
}

Tensor SafetensorsFile::read(const TensorEntry& entry) const {
  Tensor tensor = Tensor::empty(entry.shape, entry.dtype);
  read_at(static_cast<char*>(tensor.raw_data()), data_start_ + entry.begin,
          entry.end - entry.begin);
  return tensor;
}

}  // namespace detail

StateDict load_safetensors(const std::string& path, const std::string& prefix, Metadata* metadata) {
  detail::SafetensorsFile file(path);
  StateDict state;
  for (const detail::TensorEntry& entry : file.header().entries) {
    if (entry.key.starts_with(prefix)) state.insert(entry.key, file.read(entry));
  }
  if (metadata != nullptr) *metadata = std::move(file.header().metadata);
  return state;
}

}  // namespace bn1d
