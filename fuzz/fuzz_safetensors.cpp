// libFuzzer target: the safetensors reader, in memory, from a file and into a module. Malformed
// input must give bn1d::Error and nothing else; whatever parses must serialize and parse back
// identically.
#include <unistd.h>

#include <bn1d/module.hpp>
#include <bn1d/state.hpp>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  bn1d::StateDict state;
  bn1d::Metadata metadata;
  bool parsed = false;
  try {
    state = bn1d::parse_safetensors(bytes, &metadata);
    parsed = true;
  } catch (const bn1d::Error&) {
  }
  if (parsed) {  // outside the try: an Error here is a finding
    const std::vector<std::uint8_t> written = bn1d::to_safetensors(state, metadata);
    bn1d::Metadata metadata_again;
    const bn1d::StateDict again = bn1d::parse_safetensors(written, &metadata_again);
    if (again.keys() != state.keys() || metadata_again != metadata ||
        bn1d::to_safetensors(again, metadata_again) != written) {
      __builtin_trap();
    }
  }
  // The file loader validates the same way but reads only the selected tensors.
  static const std::string path = "/tmp/bn1d_fuzz_" + std::to_string(getpid()) + ".safetensors";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  const std::string prefix =
      size > 0 && (data[0] & 1) ? std::string(1, static_cast<char>(data[size / 2])) : "";
  try {
    const bn1d::StateDict loaded = bn1d::load_safetensors(path, prefix);
    if (!parsed) __builtin_trap();  // the file loader accepted what the parser rejected
  } catch (const bn1d::Error&) {
    if (parsed) __builtin_trap();  // and the other way round
  }
  // A module checks the header against its own shapes before reading any tensor.
  try {
    bn1d::BatchNorm1d module(2);
    module.load(path, prefix);
  } catch (const bn1d::Error&) {
  }
  return 0;
}
