# SPDX-License-Identifier: MIT
"""Runs one job function on K torch.distributed (gloo) processes on 127.0.0.1, bounded in time.

run_job(job, world_size, workdir) starts K processes with torch.multiprocessing's spawn context.
Each initializes a gloo process group over a file:// store in workdir (no port to pick, so no race
for one), calls job(rank, world_size, workdir) and torch.save()s what it returns to
workdir/rank<r>.pt.
The parent joins them all within a deadline, kills stragglers, and raises an AssertionError that
names every rank that timed out (with the case it was in) or failed (with its traceback); a rank
that saved its result but hangs at exit is stopped without failing. Not a
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
# A rank that saved its result gets this long to exit; then it is stopped, not failed: DDP over
# gloo in torch 1.13 can hang at process exit (the main thread joins a gloo worker thread that
# waits for the GIL), whatever the batch norm.
EXIT_GRACE_S = 15


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


def _join(processes, workdir, timeout_s):
    """Waits until every process has exited, or has saved its result and had EXIT_GRACE_S to
    exit, or the deadline passes; returns when each rank finished its job (monotonic time)."""
    deadline = time.monotonic() + timeout_s
    finished_at = {}
    while True:
        now = time.monotonic()
        for rank in range(len(processes)):
            progress = os.path.join(workdir, f"rank{rank}.progress")
            if rank not in finished_at and _read(progress) == "done":
                finished_at[rank] = now
        waiting = [p for rank, p in enumerate(processes) if p.is_alive()
                   and now - finished_at.get(rank, now) < EXIT_GRACE_S]
        if not waiting or now > deadline:
            return finished_at
        time.sleep(0.05)


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
    finished_at = _join(processes, workdir, timeout_s)
    problems = []
    for rank, p in enumerate(processes):
        if p.is_alive():
            _stop(p)
            if rank in finished_at:  # its result is saved: stuck in gloo's teardown at exit
                continue
            doing = _read(os.path.join(workdir, f"rank{rank}.progress"), "?")
            problems.append(f"rank {rank} timed out after {timeout_s} s (in: {doing})")
        elif p.exitcode != 0:
            error = _read(os.path.join(workdir, f"rank{rank}.error"), "(no traceback)")
            problems.append(f"rank {rank} exited with code {p.exitcode}:\n{error}")
    assert not problems, (f"{job.__name__} on {world_size} processes:\n"
                          + "\n".join(problems))
    return [torch.load(os.path.join(workdir, f"rank{rank}.pt")) for rank in range(world_size)]
