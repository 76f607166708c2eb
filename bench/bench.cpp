// SPDX-License-Identifier: MIT
/// @file bench.cpp
/// @brief bn1d_bench: times bn1d's BatchNorm1d (forward-train, forward-eval, backward) on the
/// shapes of bench/shapes.txt against a bandwidth bound and, when built with them, libtorch and
/// oneDNN. See bench/README.md for the model and the columns.
///
///   bn1d_bench [--threads T] [--filter SUBSTR] [--shapes FILE] [--csv FILE]
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <bn1d/half.hpp>
#include <bn1d/tensor.hpp>

#include "measure.hpp"
#include "runner.hpp"

namespace bench {
namespace {

struct Options {
  int threads = omp_get_num_procs();
  std::string filter;
  std::string shapes = BN1D_BENCH_SHAPES;  // bench/shapes.txt of the source tree
  std::string csv;                         // also write the table as CSV to this file
};

/// One line of the shapes file.
struct Case {
  Problem problem;  // buffers not yet attached
  std::string label;
  std::string sizes, dtype, layout;  // the label's parts: "64x256x1024", "f32", "NLC"
};

/// The dtypes of the shapes file.
struct DtypeName {
  const char* name;
  bn1d::DType dtype;
};
constexpr DtypeName kDtypes[] = {{"f32", bn1d::DType::Float32},
                                 {"f64", bn1d::DType::Float64},
                                 {"bf16", bn1d::DType::BFloat16},
                                 {"f16", bn1d::DType::Float16}};

/// The ops and their traffic: reads and writes of the whole tensor (for the GB/s column). Their
/// bound is made of their passes over memory (see bound_kernels and Bound). EvalRead is an eval
/// followed by a read of its output, as the next layer of a network reads it: it prices the
/// choice of stores (an output streamed past the caches makes the eval faster and that read
/// slower).
enum class Kind { Train, Eval, EvalRead, Backward };
struct Op {
  Kind kind;
  const char* name;
  int reads, writes;
};
constexpr Op kOps[] = {{Kind::Train, "train", 2, 1},
                       {Kind::Eval, "eval", 1, 1},
                       {Kind::EvalRead, "eval+rd", 2, 1},
                       {Kind::Backward, "backward", 4, 1}};

/// A library under test: its name and its runner for the current case (null when unsupported).
/// The last column is bn1d in float32 on the 16-bit cases' shapes (its own float32 buffers).
struct Lib {
  const char* name;
  std::unique_ptr<Runner> runner;
};
constexpr std::size_t kFloat32Column = 3;

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "bn1d_bench: %s\n", message.c_str());
  std::exit(2);
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::printf(
          "usage: bn1d_bench [--threads T] [--filter SUBSTR] [--shapes FILE] [--csv FILE]\n");
      std::exit(0);
    }
    if (i + 1 >= argc) fail("missing value after " + arg);
    const std::string value = argv[++i];
    if (arg == "--threads") {
      o.threads = std::atoi(value.c_str());
      if (o.threads < 1) fail("--threads needs a positive integer");
    } else if (arg == "--filter") {
      o.filter = value;
    } else if (arg == "--shapes") {
      o.shapes = value;
    } else if (arg == "--csv") {
      o.csv = value;
    } else {
      fail("unknown option " + arg + " (try --help)");
    }
  }
  return o;
}

/// Reads lines `NxC[xL] f32|f64|bf16|f16 contiguous|channels_last` ('#' starts a comment).
std::vector<Case> read_shapes(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("cannot open " + path);
  std::vector<Case> cases;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    line = line.substr(0, line.find('#'));
    std::istringstream fields(line);
    std::string sizes, dtype, layout;
    if (!(fields >> sizes)) continue;
    const std::string where = path + ":" + std::to_string(number) + ": ";
    if (!(fields >> dtype >> layout)) fail(where + "expected `NxC[xL] dtype layout`");
    std::vector<int64_t> dims;
    std::istringstream parts(sizes);
    for (std::string part; std::getline(parts, part, 'x');)
      dims.push_back(std::atoll(part.c_str()));
    Case k;
    Problem& p = k.problem;
    if (dims.size() < 2 || dims.size() > 3 ||
        std::any_of(dims.begin(), dims.end(), [](int64_t d) { return d < 1; }))
      fail(where + "bad sizes " + sizes);
    p.n = dims[0];
    p.c = dims[1];
    p.three_d = dims.size() == 3;
    p.l = p.three_d ? dims[2] : 1;
    const auto* known = std::find_if(std::begin(kDtypes), std::end(kDtypes),
                                     [&](const DtypeName& d) { return dtype == d.name; });
    if (known == std::end(kDtypes)) fail(where + "dtype must be f32, f64, bf16 or f16");
    p.dtype = known->dtype;
    if (layout != "contiguous" && layout != "channels_last") fail(where + "bad layout " + layout);
    p.channels_last = layout == "channels_last";
    if (p.channels_last && !p.three_d) fail(where + "channels_last needs (N, C, L)");
    k.sizes = std::to_string(p.n) + "x" + std::to_string(p.c);
    if (p.three_d) k.sizes += "x" + std::to_string(p.l);
    k.dtype = dtype;
    k.layout = !p.three_d ? "NC" : p.channels_last ? "NLC" : "NCL";
    std::ostringstream label;
    label << "(" << p.n << "," << p.c;
    if (p.three_d) label << "," << p.l;
    label << ") " << dtype << " " << k.layout;
    k.label = label.str();
    cases.push_back(k);
  }
  return cases;
}

/// Largest |a − b| over the (N, C, L) elements of two outputs (NaN when any element is NaN).
double max_abs_diff(const Problem& p, const View& a, const View& b) {
  const auto value = [dtype = p.dtype](const View& v, int64_t i) {
    switch (dtype) {
      case bn1d::DType::Float32:
        return static_cast<double>(static_cast<const float*>(v.data)[i]);
      case bn1d::DType::BFloat16:
        return bn1d::to_double(static_cast<const bn1d::BFloat16*>(v.data)[i]);
      case bn1d::DType::Float16:
        return bn1d::to_double(static_cast<const bn1d::Float16*>(v.data)[i]);
      default:
        return static_cast<const double*>(v.data)[i];
    }
  };
  double worst = 0;
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t c = 0; c < p.c; ++c)
      for (int64_t l = 0; l < p.l; ++l) {
        const int64_t i = n * a.strides[0] + c * a.strides[1] + l * a.strides[2];
        const int64_t j = n * b.strides[0] + c * b.strides[1] + l * b.strides[2];
        const double d = value(a, i) - value(b, j);
        if (std::isnan(d)) return d;
        worst = std::max(worst, std::fabs(d));
      }
  return worst;
}

/// Milliseconds with 3–4 significant digits in a field of 9.
std::string ms(double seconds) {
  const double v = seconds * 1e3;
  char buf[32];
  std::snprintf(buf, sizeof buf, v < 1 ? "%9.4f" : v < 100 ? "%9.3f" : "%9.1f", v);
  return buf;
}

/// The 1-minute load average: other busy processes make OpenMP timings wait for time slices.
std::string load_average() {
  double load = 0;
  if (getloadavg(&load, 1) != 1) return "unknown";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", load);
  return buf;
}

void print_header(const Options& o) {
  std::printf(
      "bn1d_bench: BatchNorm1d on the CPU, %d thread(s) (omp_get_max_threads() = %d), "
      "%d cores, load average %s\n",
      o.threads, omp_get_max_threads(), omp_get_num_procs(), load_average().c_str());
#if BN1D_HAVE_TORCH
  std::printf("peer: %s: at::native_batch_norm(_backward), outputs allocated per call\n",
              torch_description().c_str());
#endif
#if BN1D_HAVE_DNNL
  std::printf("peer: %s: primitives created once, zero-copy memory\n", dnnl_description().c_str());
#endif
  std::printf(
      "malloc: no mmap, no trim, so that a freed block is reused warm (matters for "
      "libtorch's outputs)\n");
  std::printf(
      "timing: steady_clock median of >= %d runs after >= %d warm-up calls and >= %.0f ms (up to "
      "%d for fast ops; %d..%d if %d\n        runs would exceed %.1f s), split into %d "
      "interleaved rounds (bound kernels and libraries in turn,\n        each after >= %d calls "
      "and %.0f ms of warm-up); column 'runs' = fewest in the row; outputs preallocated and "
      "reused\n"
      "bound: each pass of the op timed as a bandwidth kernel over the same streams, no math "
      "(full\n"
      "       vectors of the CPU's best SIMD target):\n"
      "       train = read(x) + copy(x -> out), eval = copy(x -> out), eval+rd = copy(x -> out) "
      "then read(out),\n       backward = read(x, dy) + combine(x, dy -> out); copy and "
      "combine = the faster of plain and non-temporal stores;\n       each kernel's fastest "
      "median over the case's rows (traffic: train 2 reads + 1 write of the tensor,\n       eval "
      "1 + 1, eval+rd 2 + 1, backward 4 + 1)\n"
      "eval+rd: an eval followed by a read of its output, as the next layer reads it (outputs "
      "streamed past the caches\n       make the eval faster and that read slower)\n"
      "GB/s = (reads+writes)*bytes / bn1d time; /bound = bn1d time / t_bound; x torch, x dnnl = "
      "peer time / bn1d time (>1: bn1d faster)\n"
      "bf16/f16: mixed precision (float32 weight, bias and statistics) in bn1d, libtorch and "
      "oneDNN; bytes = 2 per element;\n       x f32 = bn1d float32 time on the same shape / "
      "bn1d 16-bit time\n\n",
      kMinRuns, kWarmupCalls, kWarmupSeconds * 1e3, kMaxRuns, kFloorRuns, kMinRuns - 1, kMinRuns,
      kCapSeconds, kRounds, kWarmupCalls, kRoundWarmupSeconds * 1e3);
  std::printf("%-22s %-8s %4s %9s %9s %7s %6s %9s %7s %9s %7s %9s %7s\n", "shape dtype layout",
              "op", "runs", "bound_ms", "bn1d_ms", "GB/s", "/bound", "torch_ms", "x torch",
              "dnnl_ms", "x dnnl", "f32_ms", "x f32");
}

/// Fills a buffer of @p p's size with standard-normal values (reproducible from @p seed).
bn1d::Tensor random_buffer(const Problem& p, uint64_t seed) {
  return bn1d::randn({p.numel()}, p.dtype, seed);
}

/// The bound's ingredients: the fastest time of each pass kernel over a case's rows.
struct Bound {
  double read = 1e30;       // read x
  double copy = 1e30;       // x -> out (the faster store kind)
  double copy_read = 1e30;  // x -> out, then read out (the faster store kind)
  double read2 = 1e30;      // read x and dy together
  double combine = 1e30;    // x, dy -> out (the faster store kind)

  /// The op's bound: its passes, each at the speed of its bandwidth kernel. Each pass is
  /// measured over the streams it really has: a lone buffer somewhat larger than the L3 reads
  /// faster than two of them (part of it stays in the L3), so "4 reads" of a backward timed as
  /// 4 lone reads would claim a speed no pass over x and dy reaches (bench/README.md).
  double of(Kind kind) const {
    switch (kind) {
      case Kind::Train:
        return read + copy;  // statistics pass, then normalize pass
      case Kind::Eval:
        return copy;
      case Kind::EvalRead:
        return copy_read;
      case Kind::Backward:
        return read2 + combine;  // gradient sums pass, then input-gradient pass
    }
    return 0;
  }
};

/// The three bandwidth kernels of an op's row, as the op's passes: for train and eval the read
/// of x, then the two copies x -> @p dst; for eval+rd the read of x, then the two copies each
/// followed by a read of @p dst; for backward the read of x and dy together, then the two
/// combines x, dy -> @p dst. Of each pair the faster counts (plain stores win in cache,
/// non-temporal stores in memory).
constexpr std::size_t kBoundKernels = 3;
std::vector<std::function<void()>> bound_kernels(Kind kind, const Problem& p, void* dst) {
  if (kind == Kind::Backward)
    return {[&p] { read2_kernel(p.x, p.dy, p.bytes()); },
            [&p, dst] { combine_kernel(dst, p.x, p.dy, p.bytes(), false); },
            [&p, dst] { combine_kernel(dst, p.x, p.dy, p.bytes(), true); }};
  if (kind == Kind::EvalRead)
    return {[&p] { read_kernel(p.x, p.bytes()); },
            [&p, dst] {
              copy_kernel(dst, p.x, p.bytes(), false);
              read_kernel(dst, p.bytes());
            },
            [&p, dst] {
              copy_kernel(dst, p.x, p.bytes(), true);
              read_kernel(dst, p.bytes());
            }};
  return {[&p] { read_kernel(p.x, p.bytes()); },
          [&p, dst] { copy_kernel(dst, p.x, p.bytes(), false); },
          [&p, dst] { copy_kernel(dst, p.x, p.bytes(), true); }};
}

/// The columns of --csv: one row per case and op, times in milliseconds, ratios as in the table
/// (empty where a library was not built in or does not support the case).
constexpr const char* kCsvHeader =
    "shape,dtype,layout,op,threads,runs,bound_ms,bn1d_ms,torch_ms,dnnl_ms,f32_ms,gb_per_s,"
    "bn1d_per_bound,torch_per_bn1d,dnnl_per_bn1d,f32_per_bn1d\n";

/// Runs one case: sanity check, then for each op its bound kernels and every library, timed
/// interleaved; prints the case's rows, each pass kernel at its fastest median over the rows
/// that time it (one consistent bound per case), and writes them to @p csv when it is not null.
/// Returns the notes printed under the table.
std::vector<std::string> run_case(Case& k, int threads, std::FILE* csv) {
  Problem& p = k.problem;
  const bn1d::Tensor x = random_buffer(p, 1), dy = random_buffer(p, 2);
  p.x = x.raw_data();
  p.dy = dy.raw_data();
  // Copy destination at a distance of 2 KiB modulo 4 KiB from the input: buffers a multiple of
  // 4 KiB apart make copies up to 1.7x slower (4K aliasing), which would loosen the bound. Its
  // memory comes from bn1d's allocator, like bn1d's outputs (huge pages from 16 MiB on): a copy
  // into 4 KiB pages runs about 10% slower, which would loosen the bound too.
  const bn1d::Tensor scratch =
      bn1d::Tensor::empty({static_cast<int64_t>(p.bytes() + 4096) / 4}, bn1d::DType::Float32);
  auto* const scratch_bytes = static_cast<std::byte*>(scratch.raw_data());
  const auto gap = reinterpret_cast<std::uintptr_t>(p.x) + 2048 -
                   reinterpret_cast<std::uintptr_t>(scratch_bytes);
  void* const dst = scratch_bytes + gap % 4096;

  // A 16-bit case also times bn1d in float32 on the same shape, on float32 copies of its inputs.
  const bool half = p.dtype == bn1d::DType::BFloat16 || p.dtype == bn1d::DType::Float16;
  Problem p32 = p;
  p32.dtype = bn1d::DType::Float32;
  const bn1d::Tensor x32 = half ? random_buffer(p32, 1) : bn1d::Tensor();
  const bn1d::Tensor dy32 = half ? random_buffer(p32, 2) : bn1d::Tensor();
  p32.x = x32.raw_data();
  p32.dy = dy32.raw_data();

  // The table's columns: bn1d, then the peers (no runner where not built in or not supported).
  Lib libs[] = {{"bn1d", make_bn1d_runner(p)},
                {"torch", nullptr},
                {"oneDNN", nullptr},
                {"bn1d f32", half ? make_bn1d_runner(p32) : nullptr}};
  std::vector<std::string> notes;
#if BN1D_HAVE_TORCH
  libs[1].runner = make_torch_runner(p);
#endif
#if BN1D_HAVE_DNNL
  std::string dnnl_why;
  libs[2].runner = make_dnnl_runner(p, dnnl_why);
  if (!dnnl_why.empty()) notes.push_back(k.label + " oneDNN " + dnnl_why);
#endif

  // Sanity: every peer's training output must match bn1d's before anything is timed (16-bit
  // outputs within about 2 ulps at |y| < 8: bfloat16 2^-4, float16 2^-6).
  const double tolerance = p.dtype == bn1d::DType::Float32    ? 1e-3
                           : p.dtype == bn1d::DType::BFloat16 ? 0x1p-4
                           : p.dtype == bn1d::DType::Float16  ? 0x1p-6
                                                              : 1e-9;
  libs[0].runner->forward_train();
  for (std::size_t i = 1; i < std::size(libs); ++i) {
    if (!libs[i].runner || i == kFloat32Column) continue;
    libs[i].runner->forward_train();
    const double diff = max_abs_diff(p, libs[0].runner->output(), libs[i].runner->output());
    char buf[200];
    std::snprintf(buf, sizeof buf, "%s %s: max |%s - bn1d| = %.1e", k.label.c_str(),
                  diff <= tolerance ? "ok" : "WARNING", libs[i].name, diff);
    notes.push_back(buf);
    if (!(diff <= tolerance))
      std::printf("WARNING: %s forward-train differs from bn1d by %.3g (tolerance %.0e)\n",
                  libs[i].name, diff, tolerance);
    if (const std::string note = libs[i].runner->note(); !note.empty())
      notes.push_back(k.label + " " + libs[i].name + " " + note);
  }

  constexpr std::size_t kLibs = std::size(libs);
  Timing times[std::size(kOps)][kLibs];
  int runs[std::size(kOps)];
  Bound best;
  for (std::size_t o = 0; o < std::size(kOps); ++o) {
    // The row's calls, timed interleaved: the bound kernels, then each library's op.
    std::vector<std::function<void()>> calls = bound_kernels(kOps[o].kind, p, dst);
    std::vector<std::size_t> lib_of_call;
    for (std::size_t i = 0; i < kLibs; ++i) {
      Runner* r = libs[i].runner.get();
      if (!r) continue;
      lib_of_call.push_back(i);
      switch (kOps[o].kind) {
        case Kind::Train:
          calls.emplace_back([r] { r->forward_train(); });
          break;
        case Kind::Eval:
          calls.emplace_back([r] { r->forward_eval(); });
          break;
        case Kind::EvalRead:  // every output is dense: its bytes start at its first element
          calls.emplace_back([r, &p] {
            r->forward_eval();
            read_kernel(r->output().data, p.bytes());
          });
          break;
        case Kind::Backward:
          r->forward_train();  // backward differentiates the last training forward
          calls.emplace_back([r] { r->backward(); });
          break;
      }
    }
    const std::vector<Timing> t = time_interleaved(calls);
    const bool two = kOps[o].kind == Kind::Backward;
    double& read = two ? best.read2 : best.read;
    double& write = two                              ? best.combine
                    : kOps[o].kind == Kind::EvalRead ? best.copy_read
                                                     : best.copy;
    read = std::min(read, t[0].seconds);
    write = std::min({write, t[1].seconds, t[2].seconds});
    runs[o] = std::min({t[0].runs, t[1].runs, t[2].runs});
    for (std::size_t k = 0; k < lib_of_call.size(); ++k) {
      times[o][lib_of_call[k]] = t[kBoundKernels + k];
      runs[o] = std::min(runs[o], t[kBoundKernels + k].runs);
    }
  }

  for (std::size_t o = 0; o < std::size(kOps); ++o) {
    const Op& op = kOps[o];
    const double bound = best.of(op.kind);
    const double t = times[o][0].seconds;
    std::printf("%-22s %-8s %4d %s %s %7.2f %6.2f", k.label.c_str(), op.name, runs[o],
                ms(bound).c_str(), ms(t).c_str(), (op.reads + op.writes) * p.bytes() / t / 1e9,
                t / bound);
    for (std::size_t i = 1; i < kLibs; ++i) {
      if (libs[i].runner)
        std::printf(" %s %6.2fx", ms(times[o][i].seconds).c_str(), times[o][i].seconds / t);
      else
        std::printf(" %9s %7s", "-", "-");
    }
    std::printf("\n");
    if (!csv) continue;
    std::fprintf(csv, "%s,%s,%s,%s,%d,%d,%.6g,%.6g", k.sizes.c_str(), k.dtype.c_str(),
                 k.layout.c_str(), op.name, threads, runs[o], bound * 1e3, t * 1e3);
    for (std::size_t i = 1; i < kLibs; ++i) {
      if (libs[i].runner)
        std::fprintf(csv, ",%.6g", times[o][i].seconds * 1e3);
      else
        std::fprintf(csv, ",");
    }
    std::fprintf(csv, ",%.4g,%.4g", (op.reads + op.writes) * p.bytes() / t / 1e9, t / bound);
    for (std::size_t i = 1; i < kLibs; ++i) {
      if (libs[i].runner)
        std::fprintf(csv, ",%.4g", times[o][i].seconds / t);
      else
        std::fprintf(csv, ",");
    }
    std::fprintf(csv, "\n");
  }
  std::fflush(stdout);
  if (csv) std::fflush(csv);
  return notes;
}

}  // namespace
}  // namespace bench

int main(int argc, char** argv) {
  using namespace bench;
  const auto start = std::chrono::steady_clock::now();
  const Options o = parse_args(argc, argv);
  prepare_process(o.threads);
  std::vector<Case> cases = read_shapes(o.shapes);
  std::FILE* csv = nullptr;
  if (!o.csv.empty()) {
    csv = std::fopen(o.csv.c_str(), "w");
    if (!csv) fail("cannot write " + o.csv);
    std::fputs(kCsvHeader, csv);
  }
  print_header(o);

  std::vector<std::string> notes;
  for (Case& k : cases) {
    if (k.label.find(o.filter) == std::string::npos) continue;
    for (std::string& note : run_case(k, o.threads, csv)) notes.push_back(std::move(note));
  }
  if (csv && std::fclose(csv) != 0) fail("cannot write " + o.csv);

  if (!notes.empty()) std::printf("\n");
  for (const std::string& note : notes) std::printf("%s\n", note.c_str());
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("\npeak RSS %.0f MiB, total time %.1f s, load average %s\n", usage.ru_maxrss / 1024.0,
              elapsed, load_average().c_str());
}
