// SPDX-License-Identifier: MIT
/// @file safetensors_header.cpp
/// @brief The safetensors header reader, and quoting of untrusted text for messages.
///
/// The header is parsed with a SAX handler rather than into a JSON DOM: it checks the structure
/// while parsing (so hostile input fails at its first bad token), sees duplicate keys (which a
/// DOM would merge) and runs in linear time (nlohmann's callback DOM parser is quadratic in the
/// number of top-level entries). Its memory is the entries it keeps: kMaxHeaderEntries bounds it.

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
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
#include "safetensors_format.hpp"

namespace bn1d::detail {
namespace {

using json = nlohmann::json;

/// The length of the valid UTF-8 sequence starting at @p text[@p i], or 0 if none does.
std::size_t utf8_length(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned lead = byte(i);
  if (lead < 0x80) return 1;
  std::size_t length = 0;
  unsigned low = 0x80, high = 0xBF;  // the range of the second byte (no overlongs, surrogates)
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return 0;
  }
  if (text.size() - i < length || byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (std::size_t k = 2; k < length; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return length;
}

/// @p text with `"` and `\` escaped and control characters and invalid UTF-8 as `\xNN`, cut after
/// @p max_bytes bytes of @p text; sets @p cut when it was cut.
std::string escape(std::string_view text, std::size_t max_bytes, bool& cut) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(std::min(text.size(), max_bytes) + 2);
  std::size_t i = 0;
  while (i < text.size() && i < max_bytes) {
    const auto byte = static_cast<unsigned char>(text[i]);
    const std::size_t length = utf8_length(text, i);
    if (length == 1 && byte >= 0x20 && byte != 0x7F) {
      if (byte == '"' || byte == '\\') out += '\\';
      out += static_cast<char>(byte);
    } else if (length > 1) {
      out.append(text.substr(i, length));
    } else {  // a control character or a byte of no valid UTF-8 sequence
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 15];
    }
    i += std::max<std::size_t>(length, 1);
  }
  cut = i < text.size();
  return out;
}

/// nlohmann's parse error message with its quoted token (`last read: '...'`, raw bytes from the
/// file, possibly a whole long string) shortened and escaped by quote().
std::string json_error_message(const std::string& what) {
  static constexpr std::string_view kToken = "last read: '";
  const std::size_t begin = what.find(kToken);
  const std::size_t expected = what.rfind("'; expected ");
  bool cut = false;
  if (begin == std::string::npos) return escape(what, 512, cut);
  const std::size_t token = begin + kToken.size();
  const std::size_t end = expected != std::string::npos && expected >= token ? expected
                          : what.back() == '\'' && what.size() - 1 >= token  ? what.size() - 1
                                                                             : what.size();
  std::string message = escape(std::string_view(what).substr(0, begin), 512, cut);
  message += "last read: " + quote(std::string_view(what).substr(token, end - token), 64);
  if (end < what.size()) message += escape(std::string_view(what).substr(end + 1), 512, cut);
  return message;
}

/// Throws Error with @p message.
[[noreturn]] void fail(const std::string& message) { throw Error(message); }

/// What the first min(@p total, 9) bytes @p head of a file say it is when it is a format users
/// mistake for safetensors, or "": torch.save writes a zip archive (a pickle inside) since
/// PyTorch 1.6, a bare pickle before, as pickle.dump does (protocol 2 and later start 0x80 N).
/// Neither can be a valid safetensors file: their length fields exceed the 16 MiB limit.
std::string foreign_format(const char* head, std::uint64_t total) {
  if (total >= 4 && std::memcmp(head, "PK\x03\x04", 4) == 0) {
    return "a zip archive (\"PK\\x03\\x04\"), as torch.save writes: read it with torch.load "
           "and save the state dict as safetensors";
  }
  const auto protocol = total >= 2 ? static_cast<unsigned char>(head[1]) : 0;
  if (total >= 8 && static_cast<unsigned char>(head[0]) == 0x80 && protocol >= 2 && protocol <= 5) {
    std::uint64_t length = 0;
    std::memcpy(&length, head, sizeof length);
    if (length > kMaxHeaderBytes) {
      return "a pickle (protocol " + std::to_string(protocol) +
             "), as pickle.dump and the legacy torch.save write: read it with torch.load or "
             "pickle.load and save the state dict as safetensors";
    }
  }
  return "";
}

/// `[begin, end]`, for messages.
std::string range(std::uint64_t begin, std::uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

/// top-level object > entry object > shape/data_offsets array
constexpr std::size_t kMaxDepth = 3;
constexpr std::size_t kMaxRank = 64;  ///< bounds the memory a hostile shape array can claim
/// The safetensors dtype codes bn1d supports.
constexpr std::array<std::pair<std::string_view, DType>, 5> kDTypes{{{"F32", DType::Float32},
                                                                     {"F64", DType::Float64},
                                                                     {"I64", DType::Int64},
                                                                     {"BF16", DType::BFloat16},
                                                                     {"F16", DType::Float16}}};
/// The fields of an entry, in the order of Slot::DType, Slot::Shape, Slot::Offsets.
constexpr std::array<std::string_view, 3> kFields{"dtype", "shape", "data_offsets"};

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
        count_entry();
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
        count_entry();
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
    fail("header is not valid JSON: " + json_error_message(error.what()));
  }

 private:
  /// An entry while it is being parsed.
  struct RawEntry {
    std::string dtype;
    Shape shape;
    std::vector<std::uint64_t> offsets;
    std::array<bool, kFields.size()> seen{};  ///< which kFields were present
  };

  /// Counts one more tensor or __metadata__ pair against kMaxHeaderEntries.
  void count_entry() {
    if (++entries_ > kMaxHeaderEntries) {
      fail("header has more than " + std::to_string(kMaxHeaderEntries) +
           " entries (tensors and __metadata__ pairs), the limit");
    }
  }

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
  TensorEntry finish_entry() const {
    for (std::size_t field = 0; field < kFields.size(); ++field) {
      if (!entry_.seen[field]) fail(tensor() + ": missing " + quote(std::string(kFields[field])));
    }
    const auto known = std::find_if(kDTypes.begin(), kDTypes.end(),
                                    [&](const auto& d) { return d.first == entry_.dtype; });
    if (known == kDTypes.end()) {
      fail(tensor() + ": unknown dtype " + quote(entry_.dtype) +
           " (supported: F32, F64, I64, BF16, F16)");
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
    return TensorEntry{top_key_, known->second, entry_.shape, begin, end};
  }

  std::uint64_t data_size_;
  Header header_;
  std::vector<Slot> stack_;  ///< open containers, outermost first
  std::unordered_set<std::string> top_keys_;
  std::string top_key_;         ///< last top-level key
  std::string metadata_key_;    ///< last key inside __metadata__
  Slot field_ = Slot::Unknown;  ///< last field key inside the current entry
  RawEntry entry_;
  std::size_t entries_ = 0;  ///< tensors and __metadata__ pairs so far
};

/// Checks that the entries' byte ranges tile the data section [0, @p data_size) exactly.
void check_layout(const std::vector<TensorEntry>& entries, std::uint64_t data_size) {
  std::vector<const TensorEntry*> order;
  order.reserve(entries.size());
  for (const TensorEntry& entry : entries) order.push_back(&entry);
  std::stable_sort(order.begin(), order.end(), [](const TensorEntry* a, const TensorEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  std::uint64_t covered = 0;
  const TensorEntry* previous = nullptr;
  for (const TensorEntry* entry : order) {
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

}  // namespace

std::string quote(std::string_view text, std::size_t max_bytes) {
  bool cut = false;
  std::string quoted = '"' + escape(text, max_bytes, cut) + '"';
  if (cut) quoted += "... (" + std::to_string(text.size()) + " bytes)";
  return quoted;
}

std::string quote_list(const std::vector<std::string_view>& items, std::size_t max_items) {
  std::string list;
  for (std::size_t i = 0; i < items.size() && i < max_items; ++i) {
    if (i > 0) list += ", ";
    list += quote(items[i]);
  }
  if (items.size() > max_items) {
    list += ", ... and " + std::to_string(items.size() - max_items) + " more";
  }
  return list;
}

void check_name(const std::string& name) {
  if (name.find('\0') != std::string::npos) fail("key " + quote(name) + " contains a NUL byte");
}

std::string_view dtype_code(DType dtype) {
  return std::find_if(kDTypes.begin(), kDTypes.end(),
                      [&](const auto& d) { return d.second == dtype; })
      ->first;
}

Header parse_header(std::string_view text, std::uint64_t data_size) {
  if (text.empty() || text.front() != '{')
    fail("the header must be a JSON object starting with '{'");
  // nlohmann's lexer takes a NUL byte for the end of the input: refuse every control byte that
  // JSON does not allow unescaped, so that nothing after one can go unread.
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x20 && byte != '\t' && byte != '\n' && byte != '\r') {
      fail("header byte " + std::to_string(i) + " is the control character " +
           quote(text.substr(i, 1)) + ", which JSON does not allow (write it as \\u00XX)");
    }
  }
  HeaderParser parser(data_size);
  json::sax_parse(text.begin(), text.end(), &parser);
  Header header = parser.take();
  check_layout(header.entries, data_size);
  return header;
}

std::uint64_t header_length(const char* head, std::uint64_t total) {
  const std::string foreign = foreign_format(head, total);
  if (!foreign.empty()) fail("not a safetensors file: it starts like " + foreign);
  if (total < 8) {
    fail("not a safetensors file: need at least 8 bytes for the header length, got " +
         std::to_string(total));
  }
  std::uint64_t length = 0;
  std::memcpy(&length, head, sizeof length);
  // A JSON header starts with '{': without one, an absurd length means another kind of file.
  const std::string what = total > 8 && head[8] == '{' ? "" : "not a safetensors file: ";
  if (length > kMaxHeaderBytes) {
    fail(what + "header length " + std::to_string(length) + " exceeds the limit of " +
         std::to_string(kMaxHeaderBytes) + " bytes (16 MiB)");
  }
  if (length > total - 8) {
    fail(what + "header length " + std::to_string(length) + " runs past the end (" +
         std::to_string(total - 8) + " bytes follow it)");
  }
  return length;
}

}  // namespace bn1d::detail
