# SPDX-License-Identifier: MIT
"""Runs one job function on K torch.distributed (gloo) processes on 127.0.0.1, bounded in time.

run_job(job, world_size, workdir) starts K processes with torch.multiprocessing's spawn context.
Each initializes a gloo process group over a file:// store in workdir (no port to pick, so no race
for one), calls job(rank, world_size, workdir) and torch.save()s what it returns to
workdir/rank<r>.pt.
The parent joins them all within a deadline, kills stragglers, and raises an AssertionError that
names every rank that timed out (with the case it was in) or failed (with its traceback). Not a
test module (no test_ prefix): test_torch_sync.py uses it.
"""

import datetime
import os
import time
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

JOIN_TIMEOUT_S = 180  # the whole job, all ranks
COLLECTIVE_TIMEOUT_S = 60  # one collective: a desynchronized rank raises instead of waiting forever


def distributed_unavailable():
    """Why these tests cannot run here (a reason for pytest.skip), or None."""
    if not dist.is_available():
        return "torch.distributed is not available in this torch build"
    if not dist.is_gloo_available():
        return "torch.distributed has no gloo backend in this torch build"
    return None


def mark_progress(workdir, rank, what):
    """Records what rank is doing now, for the parent's message if it times out."""
    with open(os.path.join(workdir, f"rank{rank}.progress"), "w") as f:
        f.write(what)


def _child(rank, world_size, job, workdir):
    """The body of one process: init the group, run the job, save its result or the traceback."""
    # Loopback only: CI machines may have no resolvable hostname and no other interface.
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    torch.set_num_threads(1)  # K processes share few cores
    try:
        mark_progress(workdir, rank, "init_process_group")
        dist.init_process_group(
            "gloo", init_method="file://" + os.path.join(workdir, "store"), rank=rank,
            world_size=world_size, timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
        result = job(rank, world_size, workdir)
        torch.save(result, os.path.join(workdir, f"rank{rank}.pt"))
        mark_progress(workdir, rank, "done")
        dist.destroy_process_group()
    except BaseException:
        with open(os.path.join(workdir, f"rank{rank}.error"), "w") as f:
            f.write(traceback.format_exc())
        raise


def _stop(process):
    """Terminates a process, then kills it if it does not exit."""
    process.terminate()
    process.join(5)
    if process.is_alive():
        process.kill()
        process.join(5)


def _read(path, default=""):
    return open(path).read() if os.path.exists(path) else default


def run_job(job, world_size, workdir, timeout_s=JOIN_TIMEOUT_S):
    """job(rank, world_size, workdir) on world_size gloo processes; their results by rank.

    job must be a module-level function (spawn pickles it by name). AssertionError if a rank
    times out (all are then killed) or fails."""
    context = mp.get_context("spawn")
    processes = [context.Process(target=_child, args=(rank, world_size, job, workdir),
                                 name=f"bn1d-sync-rank{rank}", daemon=True)
                 for rank in range(world_size)]
    for p in processes:
        p.start()
    deadline = time.monotonic() + timeout_s
    for p in processes:
        p.join(max(deadline - time.monotonic(), 0))
    problems = []
    for rank, p in enumerate(processes):
        if p.is_alive():
            _stop(p)
            doing = _read(os.path.join(workdir, f"rank{rank}.progress"), "?")
            problems.append(f"rank {rank} timed out after {timeout_s} s (in: {doing})")
        elif p.exitcode != 0:
            error = _read(os.path.join(workdir, f"rank{rank}.error"), "(no traceback)")
            problems.append(f"rank {rank} exited with code {p.exitcode}:\n{error}")
    assert not problems, (f"{job.__name__} on {world_size} processes:\n"
                          + "\n".join(problems))
    return [torch.load(os.path.join(workdir, f"rank{rank}.pt")) for rank in range(world_size)]
