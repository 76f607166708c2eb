// SPDX-License-Identifier: MIT
// The command line of the benchmarks that take only a thread count and a row filter
// (bn1d_variants_bench, bn1d_act_bench): `--threads T` and `--filter SUBSTR`.
#pragma once

#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace bench {

/// A benchmark's options: OpenMP threads and the substring a row's label must contain.
struct ThreadsAndFilter {
  int threads = omp_get_num_procs();
  std::string filter;
};

/// Prints "program: message" and exits with status 2.
[[noreturn]] inline void fail(const char* program, const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", program, message.c_str());
  std::exit(2);
}

/// Parses `--threads T` and `--filter SUBSTR` (`--help` prints the usage and exits).
inline ThreadsAndFilter parse_threads_and_filter(int argc, char** argv, const char* program) {
  ThreadsAndFilter o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::printf("usage: %s [--threads T] [--filter SUBSTR]\n", program);
      std::exit(0);
    }
    if (i + 1 >= argc) fail(program, "missing value after " + arg);
    const std::string value = argv[++i];
    if (arg == "--threads") {
      o.threads = std::atoi(value.c_str());
      if (o.threads < 1) fail(program, "--threads needs a positive integer");
    } else if (arg == "--filter") {
      o.filter = value;
    } else {
      fail(program, "unknown option " + arg + " (try --help)");
    }
  }
  return o;
}

}  // namespace bench
