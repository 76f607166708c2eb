// SPDX-License-Identifier: MIT
// The SyncBatchNorm1d tests' main: MPI, progress printed by rank 0 only, failures by every rank,
// and a watchdog that turns a hang into a failure.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "dist_util.hpp"

namespace {

using bn1d::dist_test::world_rank;

/// Prints the failures of a rank other than 0 (whose progress output is silenced).
class FailurePrinter : public ::testing::EmptyTestEventListener {
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (result.failed()) {
      std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", world_rank(),
                   result.file_name() ? result.file_name() : "?", result.line_number(),
                   result.summary());
    }
  }
};

/// Turns a hang into a failure: a test running longer than BN1D_DIST_TEST_SECONDS (default 60)
/// ends this process with status 124, naming the test; mpirun then ends the other ranks.
class HangWatchdog : public ::testing::EmptyTestEventListener {
 public:
  HangWatchdog() {
    const char* env = std::getenv("BN1D_DIST_TEST_SECONDS");
    seconds_ = env ? static_cast<unsigned>(std::strtoul(env, nullptr, 10)) : 60u;
    std::signal(SIGALRM, &HangWatchdog::on_alarm);
  }

 private:
  static void on_alarm(int) {
    // Async-signal-safe: write(2) and _exit(2) only.
    ssize_t ignored = write(2, message_, std::strlen(message_));
    (void)ignored;
    _exit(124);
  }
  void OnTestStart(const ::testing::TestInfo& info) override {
    std::snprintf(message_, sizeof message_, "[rank %d] hang: %s.%s ran past its time limit\n",
                  world_rank(), info.test_suite_name(), info.name());
    alarm(seconds_);
  }
  void OnTestEnd(const ::testing::TestInfo&) override { alarm(0); }

  unsigned seconds_ = 60;
  static inline char message_[512] = {};
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  if (world_rank() != 0) {
    // Only rank 0 prints progress; failures on other ranks still print.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter);
  }
  ::testing::UnitTest::GetInstance()->listeners().Append(new HangWatchdog);
  int result = RUN_ALL_TESTS();
  int any = 0;
  MPI_Allreduce(&result, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any;
}
