#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Times one training step of bn1d.torch.SyncBatchNorm over K gloo processes against the same
step unsynchronized, for C in {64, 1024, 16384}, and counts its collectives.

    PYTHONPATH=build/python/python OMP_NUM_THREADS=1 /usr/bin/python3 bench/torch_sync_bench.py \
        [--procs 2] [--mib 8] [--mpi build/bench/bench/bn1d_sync_bench]

A step is forward in training mode and backward through autograd of a float32 (N, C) input of
--mib MiB per process (N = mib * 2^20 / (4 C)), the same shape on every process. Columns, each
timed in 5 interleaved rounds of --repeat / 5 steps, the median of the rounds' medians of the
slowest process's time (every step starts after a barrier; the processes run at the same time,
so they share the machine's memory bandwidth):
torch.nn.BatchNorm1d, bn1d.torch.BatchNorm1d, bn1d.torch.SyncBatchNorm in a group of its own
process only (world size 1: the module's local path), and bn1d.torch.SyncBatchNorm over all K
processes. The collectives of one synced step are counted with torch.profiler (its gloo:* events)
with the values each process sends; every process gathers K times that (float64: 8 bytes each).

With --mpi, the MPI SyncBatchNorm1d benchmark (bench/sync_bench.cpp) runs on the same shapes
(mpirun -np K BINARY --rows N --channels C) and its local and synced times are added; without
it, the mpirun commands are printed.
"""

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing

try:
    import bn1d.torch as bn1d_torch
except ImportError as error:
    sys.exit(f"torch_sync_bench.py: cannot import bn1d.torch ({error}); set PYTHONPATH to the "
             "built package (scripts/test-python.sh builds build/python)")

CHANNELS = (64, 1024, 16384)


def rows_for(channels, mib):
    """N such that a float32 (N, C) input takes mib MiB."""
    return max(2, mib * 2**20 // (4 * channels))


def slowest_median_ms(step, repeat, warmup):
    """The median over repeat steps of the slowest process's time of step(), in ms."""
    for _ in range(warmup):
        step()
    times = torch.zeros(repeat, dtype=torch.float64)
    for i in range(repeat):
        dist.barrier()
        start = time.perf_counter()
        step()
        times[i] = time.perf_counter() - start
    dist.all_reduce(times, op=dist.ReduceOp.MAX)
    return statistics.median(times.tolist()) * 1e3


def collectives_of(step):
    """The gloo collectives one call of step() makes: a list of values sent by this process."""
    with torch.profiler.profile(record_shapes=True) as prof:
        step()
    sent = []
    for event in prof.events():
        if event.name.startswith("gloo:") and event.name != "gloo:barrier":
            sent.append(sum(torch.Size(s).numel() for s in event.input_shapes if s))
    return sent


def bench_channels(channels, args, own_group):
    """The times (ms) of the four modules on one C, and the synced step's collectives."""
    n = rows_for(channels, args.mib)
    generator = torch.Generator().manual_seed(1000 + dist.get_rank())
    x = torch.randn(n, channels, generator=generator)
    dy = torch.randn(n, channels, generator=generator)
    modules = {
        "torch": torch.nn.BatchNorm1d(channels),
        "bn1d": bn1d_torch.BatchNorm1d(channels),
        "sync1": bn1d_torch.SyncBatchNorm(channels, process_group=own_group),
        "sync": bn1d_torch.SyncBatchNorm(channels),
    }

    def step_of(module):
        def step():
            xi = x.detach().requires_grad_(True)
            module(xi).backward(dy)
        return step

    times = {name: [] for name in modules}
    rounds = 5  # interleaved, so that a slow spell of the machine is shared by all columns
    for _ in range(rounds):
        for name, module in modules.items():
            times[name].append(slowest_median_ms(step_of(module), args.repeat // rounds or 1,
                                                 args.warmup))
    medians = {name: statistics.median(t) for name, t in times.items()}
    return n, medians, collectives_of(step_of(modules["sync"]))


def worker(rank, world, port, args, queue):
    """One process: joins the group, times every C, rank 0 puts the results on queue."""
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    own_groups = [dist.new_group([r]) for r in range(world)]  # every rank creates every group
    results = []
    for channels in CHANNELS:
        results.append((channels,) + bench_channels(channels, args, own_groups[rank]))
    if rank == 0:
        queue.put(results)
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mpirun_command(args, channels, rows):
    """The mpirun command line of the MPI benchmark on (rows, C) inputs."""
    command = ["mpirun", "-np", str(args.procs)]
    if os.geteuid() == 0:
        command.append("--allow-run-as-root")  # OpenMPI's opt-in for root
    if args.procs > (os.cpu_count() or 1):
        command.append("--oversubscribe")
    return command + [args.mpi or "build/bench/bench/bn1d_sync_bench", "--rows", str(rows),
                      "--channels", str(channels), "--steps", str(args.repeat)]


def mpi_times(args, channels, rows):
    """(local ms, synced ms) of bn1d_sync_bench's row for this C, run on (rows, C) inputs."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run(mpirun_command(args, channels, rows), env=env, check=True, text=True,
                         capture_output=True, timeout=600).stdout
    match = re.search(rf"^\s*{channels}\s*\|\s*([\d.]+)\s+([\d.]+)", out, re.MULTILINE)
    if not match:
        sys.exit(f"torch_sync_bench.py: no row for C = {channels} in the output of "
                 f"{' '.join(mpirun_command(args, channels, rows))}:\n{out}")
    return float(match.group(1)), float(match.group(2))


def print_table(args, results):
    print(f"torch {torch.__version__}, {args.procs} gloo processes on 127.0.0.1, "
          f"{args.threads} thread(s) each, float32 (N, C) inputs of {args.mib} MiB per process; "
          f"{args.repeat} steps (forward + backward) in 5 rounds, median of their medians, ms")
    print()
    header = ("| C | N | torch.nn.BatchNorm1d | bn1d BatchNorm1d | SyncBatchNorm, K = 1 | "
              f"SyncBatchNorm, K = {args.procs} | synced / K = 1 | "
              "collectives per step: values sent (KiB gathered) per process |")
    if args.mpi:
        header += " MPI local | MPI synced | MPI ratio |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for channels, n, ms, sent in results:
        row = (f"| {channels} | {n} | {ms['torch']:.3f} | {ms['bn1d']:.3f} | {ms['sync1']:.3f} | "
               f"{ms['sync']:.3f} | {ms['sync'] / ms['sync1']:.2f}x | {len(sent)}: "
               f"{' + '.join(f'{v} ({8 * args.procs * v / 1024:.1f})' for v in sent)} |")
        if args.mpi:
            local, synced = mpi_times(args, channels, n)
            row += f" {local:.3f} | {synced:.3f} | {synced / local:.2f}x |"
        print(row, flush=True)
    if not args.mpi:
        print("\nThe MPI SyncBatchNorm1d on the same shapes (see bench/variants_and_sync.md to "
              "build it; or pass --mpi BINARY):")
        for channels, n, _, _ in results:
            print(f"  OMP_NUM_THREADS={args.threads} "
                  f"{' '.join(mpirun_command(args, channels, n))}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=2, help="K, gloo processes (default 2)")
    parser.add_argument("--mib", type=int, default=8, help="input MiB per process (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--repeat", type=int, default=50, help="timed steps per column")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before each round")
    parser.add_argument("--mpi", metavar="BINARY", help="bn1d_sync_bench to run under mpirun")
    args = parser.parse_args()
    if args.procs < 2 or args.mib < 1 or args.threads < 1 or args.repeat < 1:
        parser.error("--procs must be >= 2, --mib, --threads and --repeat >= 1")
    if not hasattr(bn1d_torch, "SyncBatchNorm"):
        sys.exit("torch_sync_bench.py: this bn1d has no bn1d.torch.SyncBatchNorm yet")
    context = torch.multiprocessing.get_context("spawn")
    queue = context.SimpleQueue()
    torch.multiprocessing.spawn(worker, args=(args.procs, free_port(), args, queue),
                                nprocs=args.procs)
    print_table(args, queue.get())


if __name__ == "__main__":
    main()
