// SPDX-License-Identifier: MIT
/// @file safetensors.cpp
/// @brief Reading and writing state dicts in the safetensors format.
///
/// The header is parsed with a SAX handler rather than into a JSON DOM: it checks the structure
/// while parsing (so hostile input fails at its first bad token), sees duplicate keys (which a
/// DOM would merge) and runs in linear time (nlohmann's callback DOM parser is quadratic in the
/// number of top-level entries).

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "bn1d/error.hpp"
#include "bn1d/state.hpp"
#include "bn1d/tensor.hpp"
#include "format.hpp"

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts would need byte swapping");

namespace bn1d {
namespace {

using json = nlohmann::json;

constexpr std::uint64_t kMaxHeaderSize = 100'000'000;  ///< as in the reference implementation
constexpr std::size_t kMaxDepth =
    3;  ///< top-level object > entry object > shape/data_offsets array
constexpr std::size_t kMaxRank = 64;  ///< bounds the memory a hostile shape array can claim
/// The safetensors dtype codes bn1d supports.
constexpr std::array<std::pair<std::string_view, DType>, 3> kDTypes{
    {{"F32", DType::Float32}, {"F64", DType::Float64}, {"I64", DType::Int64}}};
/// The fields of an entry, in the order of Slot::DType, Slot::Shape, Slot::Offsets.
constexpr std::array<std::string_view, 3> kFields{"dtype", "shape", "data_offsets"};

/// Throws Error with @p message.
[[noreturn]] void fail(const std::string& message) { throw Error(message); }

/// Throws IoError with @p message: a file that cannot be opened, read or written.
[[noreturn]] void fail_io(const std::string& message) { throw IoError(message); }

/// @p text as a JSON string literal, for messages (invalid UTF-8 shown as U+FFFD).
std::string quote(const std::string& text) {
  return json(text).dump(-1, ' ', false, json::error_handler_t::replace);
}

/// `[begin, end]`, for messages.
std::string range(std::uint64_t begin, std::uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

/// Rejects names that cannot round-trip through C strings.
void check_name(const std::string& name) {
  if (name.find('\0') != std::string::npos) fail("key " + quote(name) + " contains a NUL byte");
}

/// The safetensors code of @p dtype.
std::string_view dtype_code(DType dtype) {
  return std::find_if(kDTypes.begin(), kDTypes.end(),
                      [&](const auto& d) { return d.second == dtype; })
      ->first;
}

/// One tensor of a validated header.
struct Entry {
  std::string key;
  DType dtype;
  Shape shape;
  std::uint64_t begin;  ///< Data offsets relative to the data section.
  std::uint64_t end;
};

/// A validated header: entries in header order, and "__metadata__".
struct Header {
  std::vector<Entry> entries;
  Metadata metadata;
};

/// What a JSON value (or, on the stack, an open container) means at its position in the header.
/// The first three are the entry fields, indexed like kFields.
enum class Slot {
  DType,
  Shape,
  Offsets,
  Root,
  Entry,
  Metadata,
  MetadataValue,
  ShapeItem,
  OffsetItem,
  Unknown
};

/// SAX handler that builds the header's entries while checking types, nesting and duplicates.
/// Unknown fields inside an entry are ignored, like the reference implementation does.
class HeaderParser final : public json::json_sax_t {
 public:
  /// @p data_size: bytes in the data section, which every data_offsets must lie within.
  explicit HeaderParser(std::uint64_t data_size) : data_size_(data_size) {}

  /// The parsed entries and metadata (call after a successful parse).
  Header take() { return std::move(header_); }

  bool null() override { return scalar("null"); }
  bool boolean(bool /*value*/) override { return scalar("a boolean"); }
  bool number_integer(json::number_integer_t /*value*/) override {
    return scalar("a negative number");  // nlohmann reports non-negative integers as unsigned
  }
  bool number_float(json::number_float_t /*value*/, const std::string& /*text*/) override {
    return scalar("a non-integer number");
  }
  bool binary(json::binary_t& /*value*/) override { return scalar("binary data"); }

  bool number_unsigned(json::number_unsigned_t value) override {
    const Slot slot = current();
    if (slot == Slot::ShapeItem) {
      if (entry_.shape.size() == kMaxRank) {
        fail(tensor() + ": shape has more than " + std::to_string(kMaxRank) + " dimensions");
      }
      if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        fail(tensor() + ": shape entry " + std::to_string(value) + " overflows int64");
      }
      entry_.shape.push_back(static_cast<std::int64_t>(value));
      return true;
    }
    if (slot == Slot::OffsetItem && entry_.offsets.size() < 2) {
      entry_.offsets.push_back(value);
      return true;
    }
    return scalar(slot == Slot::OffsetItem ? "more than two" : "a number");
  }

  bool string(std::string& value) override {
    switch (current()) {
      case Slot::DType:
        entry_.dtype = std::move(value);
        return true;
      case Slot::MetadataValue:
        header_.metadata.emplace(metadata_key_, std::move(value));
        return true;
      default:
        return scalar("a string");
    }
  }

  bool start_object(std::size_t /*size*/) override { return open(true); }
  bool start_array(std::size_t /*size*/) override { return open(false); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }

  bool key(std::string& name) override {
    check_name(name);
    switch (stack_.back()) {
      case Slot::Root:
        if (!top_keys_.insert(name).second) fail("duplicate key " + quote(name));
        top_key_ = name;
        break;
      case Slot::Entry: {
        const auto field = std::find(kFields.begin(), kFields.end(), name);
        field_ =
            field == kFields.end() ? Slot::Unknown : static_cast<Slot>(field - kFields.begin());
        if (field_ == Slot::Unknown) break;
        if (entry_.seen[field - kFields.begin()])
          fail(tensor() + ": duplicate field " + quote(name));
        entry_.seen[field - kFields.begin()] = true;
        break;
      }
      case Slot::Metadata:
        if (header_.metadata.contains(name)) fail("duplicate __metadata__ key " + quote(name));
        metadata_key_ = name;
        break;
      default:  // inside an ignored field
        break;
    }
    return true;
  }

  bool parse_error(std::size_t /*position*/, const std::string& /*token*/,
                   const json::exception& error) override {
    fail(std::string("header is not valid JSON: ") + error.what());
  }

 private:
  /// An entry while it is being parsed.
  struct RawEntry {
    std::string dtype;
    Shape shape;
    std::vector<std::uint64_t> offsets;
    std::array<bool, kFields.size()> seen{};  ///< which kFields were present
  };

  /// `tensor "<key>"`, the subject of messages about the current entry.
  std::string tensor() const { return "tensor " + quote(top_key_); }

  /// The meaning of the next value, from the innermost open container and the last key.
  Slot current() const {
    if (stack_.empty()) return Slot::Root;
    switch (stack_.back()) {
      case Slot::Root:
        return top_key_ == "__metadata__" ? Slot::Metadata : Slot::Entry;
      case Slot::Entry:
        return field_;
      case Slot::Metadata:
        return Slot::MetadataValue;
      case Slot::Shape:
        return Slot::ShapeItem;
      case Slot::Offsets:
        return Slot::OffsetItem;
      default:
        return Slot::Unknown;
    }
  }

  /// Throws the error for a value described by @p got where current() expects something else.
  [[noreturn]] void mismatch(const std::string& got) const {
    std::string expected;
    switch (current()) {
      case Slot::Root:
        expected = "the header must be a JSON object";
        break;
      case Slot::Entry:
        expected = tensor() + " must be an object";
        break;
      case Slot::Metadata:
        expected = "__metadata__ must be an object of strings";
        break;
      case Slot::MetadataValue:
        expected = "__metadata__ value " + quote(metadata_key_) + " must be a string";
        break;
      case Slot::DType:
        expected = tensor() + ": dtype must be a string";
        break;
      case Slot::Shape:
      case Slot::ShapeItem:
        expected = tensor() + ": shape must be an array of non-negative integers";
        break;
      default:
        expected = tensor() + ": data_offsets must be two non-negative integers [begin, end]";
    }
    fail(expected + ", got " + got);
  }

  /// Accepts a scalar described by @p got only inside ignored fields.
  bool scalar(const std::string& got) const {
    if (current() != Slot::Unknown) mismatch(got);
    return true;
  }

  /// Opens an object (@p object) or an array where current() allows it.
  bool open(bool object) {
    const Slot slot = current();
    const bool allowed =
        slot == Slot::Unknown ||
        (object ? slot == Slot::Root || slot == Slot::Entry || slot == Slot::Metadata
                : slot == Slot::Shape || slot == Slot::Offsets);
    if (!allowed) mismatch(object ? "an object" : "an array");
    if (stack_.size() == kMaxDepth) {
      fail("header nests deeper than the " + std::to_string(kMaxDepth) +
           " levels the format allows");
    }
    if (slot == Slot::Entry) entry_ = RawEntry{};
    stack_.push_back(slot);
    return true;
  }

  /// Closes the innermost container, finishing an entry or a data_offsets array.
  bool close() {
    const Slot slot = stack_.back();
    stack_.pop_back();
    if (slot == Slot::Offsets && entry_.offsets.size() != 2) {
      mismatch("an array of " + std::to_string(entry_.offsets.size()));
    }
    if (slot == Slot::Entry) header_.entries.push_back(finish_entry());
    return true;
  }

  /// Validates the entry just closed against the data section.
  Entry finish_entry() const {
    for (std::size_t field = 0; field < kFields.size(); ++field) {
      if (!entry_.seen[field]) fail(tensor() + ": missing " + quote(std::string(kFields[field])));
    }
    const auto known = std::find_if(kDTypes.begin(), kDTypes.end(),
                                    [&](const auto& d) { return d.first == entry_.dtype; });
    if (known == kDTypes.end()) {
      fail(tensor() + ": unknown dtype " + quote(entry_.dtype) + " (supported: F32, F64, I64)");
    }
    // Tensor::empty's strides must fit int64 even when a size is 0, so bound every size by 1 below.
    auto extent = static_cast<std::int64_t>(element_size(known->second));
    std::int64_t numel = 1;
    for (const std::int64_t size : entry_.shape) {
      if (__builtin_mul_overflow(extent, std::max<std::int64_t>(size, 1), &extent)) {
        fail(tensor() + ": shape " + format_shape(entry_.shape) + " overflows int64");
      }
      numel *= size;
    }
    const std::uint64_t begin = entry_.offsets[0];
    const std::uint64_t end = entry_.offsets[1];
    if (begin > end)
      fail(tensor() + ": data_offsets " + range(begin, end) + " are reversed (begin > end)");
    if (end > data_size_) {
      fail(tensor() + ": data_offsets " + range(begin, end) + " run past the end of the " +
           std::to_string(data_size_) + "-byte data section");
    }
    const std::uint64_t bytes = static_cast<std::uint64_t>(numel) * element_size(known->second);
    if (end - begin != bytes) {
      fail(tensor() + ": shape " + format_shape(entry_.shape) + " of " + std::string(known->first) +
           " needs " + std::to_string(bytes) + " bytes, but data_offsets " + range(begin, end) +
           " span " + std::to_string(end - begin));
    }
    return Entry{top_key_, known->second, entry_.shape, begin, end};
  }

  std::uint64_t data_size_;
  Header header_;
  std::vector<Slot> stack_;  ///< open containers, outermost first
  std::unordered_set<std::string> top_keys_;
  std::string top_key_;         ///< last top-level key
  std::string metadata_key_;    ///< last key inside __metadata__
  Slot field_ = Slot::Unknown;  ///< last field key inside the current entry
  RawEntry entry_;
};

/// Checks that the entries' byte ranges tile the data section [0, @p data_size) exactly.
void check_layout(const std::vector<Entry>& entries, std::uint64_t data_size) {
  std::vector<const Entry*> order;
  order.reserve(entries.size());
  for (const Entry& entry : entries) order.push_back(&entry);
  std::stable_sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  std::uint64_t covered = 0;
  const Entry* previous = nullptr;
  for (const Entry* entry : order) {
    if (entry->begin < covered) {
      fail("tensors " + quote(previous->key) + " and " + quote(entry->key) +
           " overlap (data_offsets " + range(previous->begin, previous->end) + " and " +
           range(entry->begin, entry->end) + ")");
    }
    if (entry->begin > covered) {
      fail("hole in the data section: bytes [" + std::to_string(covered) + ", " +
           std::to_string(entry->begin) + ") belong to no tensor");
    }
    covered = entry->end;
    previous = entry;
  }
  if (covered != data_size) {
    fail("hole in the data section: bytes [" + std::to_string(covered) + ", " +
         std::to_string(data_size) + ") belong to no tensor");
  }
}

/// Parses and validates the JSON @p text of a header followed by @p data_size bytes of data.
Header parse_header(std::string_view text, std::uint64_t data_size) {
  if (text.empty() || text.front() != '{')
    fail("the header must be a JSON object starting with '{'");
  HeaderParser parser(data_size);
  json::sax_parse(text.begin(), text.end(), &parser);
  Header header = parser.take();
  check_layout(header.entries, data_size);
  return header;
}

/// Validates and returns the header length of a file of @p total bytes that starts with @p head
/// (its first min(total, 8) bytes).
std::uint64_t header_length(const char* head, std::uint64_t total) {
  if (total < 8) fail("need at least 8 bytes for the header length, got " + std::to_string(total));
  std::uint64_t length = 0;
  std::memcpy(&length, head, sizeof length);
  if (length > kMaxHeaderSize) {
    fail("header length " + std::to_string(length) + " exceeds the limit of " +
         std::to_string(kMaxHeaderSize) + " bytes");
  }
  if (length > total - 8) {
    fail("header length " + std::to_string(length) + " runs past the end (" +
         std::to_string(total - 8) + " bytes follow it)");
  }
  return length;
}

/// Runs @p check, prefixing any Error it throws with the file @p path.
template <class Check>
auto checking_file(const std::string& path, Check&& check) {
  try {
    return check();
  } catch (const IoError&) {
    throw;
  } catch (const Error& error) {
    fail("invalid safetensors file " + quote(path) + ": " + error.what());
  }
}

}  // namespace

std::vector<std::uint8_t> to_safetensors(const StateDict& state, const Metadata& metadata) {
  try {
    // Quotes a name as JSON, rejecting invalid UTF-8 (nlohmann throws on it).
    const auto quote_strict = [](const std::string& name) {
      try {
        return json(name).dump();
      } catch (const json::type_error&) {
        fail(quote(name) + " is not valid UTF-8");
      }
    };
    std::string header = "{";
    if (!metadata.empty()) {
      header += "\"__metadata__\":{";
      for (const auto& [name, value] : metadata) {
        check_name(name);
        if (header.back() != '{') header += ',';
        header += quote_strict(name) + ":" + quote_strict(value);
      }
      header += '}';
    }
    std::vector<Tensor> tensors;
    tensors.reserve(state.size());
    std::uint64_t offset = 0;
    for (const auto& [name, tensor] : state) {
      check_name(name);
      if (name == "__metadata__") fail("the key \"__metadata__\" is reserved for metadata");
      if (!tensor.defined()) fail("tensor " + quote(name) + " is undefined");
      std::string shape = "[";
      for (const std::int64_t size : tensor.sizes()) {
        if (shape.size() > 1) shape += ',';
        shape += std::to_string(size);
      }
      const std::uint64_t bytes =
          static_cast<std::uint64_t>(tensor.numel()) * element_size(tensor.dtype());
      if (header.size() > 1) header += ',';
      header += quote_strict(name) + ":{\"dtype\":\"" + std::string(dtype_code(tensor.dtype())) +
                "\",\"shape\":" + shape + "],\"data_offsets\":[" + std::to_string(offset) + "," +
                std::to_string(offset + bytes) + "]}";
      offset += bytes;
      tensors.push_back(tensor.contiguous());
    }
    header += '}';
    header.append((8 - header.size() % 8) % 8, ' ');
    if (header.size() > kMaxHeaderSize) {
      fail("the header would exceed the limit of " + std::to_string(kMaxHeaderSize) + " bytes");
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
    const std::uint64_t length = header_length(text, bytes.size());
    Header header = parse_header({text + 8, length}, bytes.size() - 8 - length);
    StateDict state;
    for (const Entry& entry : header.entries) {
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
  const std::string temp = path + ".tmp-bn1d";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) fail_io("cannot open " + quote(path) + " for writing");
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      std::remove(temp.c_str());
      fail_io("cannot write " + quote(path));
    }
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    std::remove(temp.c_str());
    fail_io("cannot write " + quote(path) + " (rename of the temporary file failed)");
  }
}

StateDict load_safetensors(const std::string& path, const std::string& prefix, Metadata* metadata) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_io("cannot open " + quote(path) + " for reading");
  const auto read = [&](char* into, std::uint64_t offset, std::uint64_t count) {
    in.seekg(static_cast<std::streamoff>(offset));
    in.read(into, static_cast<std::streamsize>(count));
    if (!in) fail_io("cannot read " + quote(path));
  };
  in.seekg(0, std::ios::end);
  const std::streamoff end = in.tellg();
  if (!in || end < 0) fail_io("cannot read " + quote(path));
  const auto total = static_cast<std::uint64_t>(end);

  std::array<char, 8> head{};
  read(head.data(), 0, std::min<std::uint64_t>(total, head.size()));
  const std::uint64_t length =
      checking_file(path, [&] { return header_length(head.data(), total); });
  std::string text(length, '\0');
  read(text.data(), 8, length);
  Header header = checking_file(path, [&] { return parse_header(text, total - 8 - length); });

  StateDict state;
  for (const Entry& entry : header.entries) {
    if (!entry.key.starts_with(prefix)) continue;
    Tensor tensor = Tensor::empty(entry.shape, entry.dtype);
    if (entry.end != entry.begin) {
      read(static_cast<char*>(tensor.raw_data()), 8 + length + entry.begin,
           entry.end - entry.begin);
    }
    state.insert(entry.key, std::move(tensor));
  }
  if (metadata != nullptr) *metadata = std::move(header.metadata);
  return state;
}

}  // namespace bn1d
