#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Data-parallel training on CPUs with PyTorch and bn1d.torch.SyncBatchNorm.

An MLP with three torch.nn.BatchNorm1d layers, converted by bn1d.torch.convert_sync_batchnorm and
wrapped in DistributedDataParallel (gloo), learns the UCI handwritten digits (data/digits.csv.gz).
torch.nn.SyncBatchNorm cannot do this: it refuses CPU tensors, and DDP refuses it on CPU.

    PYTHONPATH=build/python/python python3 -m torch.distributed.run --standalone \
        --nproc_per_node=2 --redirects 2 --tee 2 examples/torch_sync_train.py
    PYTHONPATH=build/python/python python3 examples/torch_sync_train.py     # one process

(--redirects 2 --tee 2: torch 1.13's launcher fails on Python 3.11 with their default, 0.)

Every global batch of --batch-size rows is split in rank order into equal per-rank slices, so the
batch norm layers normalize with the statistics of the whole global batch and DDP's averaged
gradients are the global batch's: K processes follow one process's training (up to rounding).
Rank 0 prints the mean training loss and the test accuracy per epoch, then whether the running
statistics are identical on every rank (DDP's buffer broadcast is off, so only the layers' own
synchronization makes them so).
"""

import argparse
import gzip
import os
import pathlib
import sys
import time

import torch
import torch.distributed as dist

try:
    import bn1d.torch
except ImportError as error:
    sys.exit(f"torch_sync_train.py: cannot import bn1d.torch ({error}); set PYTHONPATH to the "
             "built package (scripts/test-python.sh builds build/python/python)")

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "digits.csv.gz"


def load_digits(path):
    """The 1,797 images as float32 (n, 64) pixels scaled to [0, 1] and int64 labels 0..9."""
    with gzip.open(path, "rt") as f:
        rows = [[int(v) for v in line.split(",")] for line in f if line.strip()]
    table = torch.tensor(rows, dtype=torch.int64)
    return table[:, :-1].float() / 16.0, table[:, -1]


def make_model(hidden):
    """Three hidden layers, each Linear, BatchNorm1d, ReLU; 10 outputs."""
    layers, width = [], 64
    for _ in range(3):
        layers += [torch.nn.Linear(width, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.ReLU()]
        width = hidden
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))


def gather_running_stats(model, world):
    """Every rank's running statistics, flattened, in rank order (this rank's alone if world is
    1), and the tensor this rank sent."""
    flat = torch.cat([b.detach().double().flatten() for name, b in model.named_buffers()
                      if name.endswith(("running_mean", "running_var"))])
    if world == 1:
        return [flat], flat
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    return gathered, flat


def train(args, rank, world):
    x, y = load_digits(args.data)
    split = torch.randperm(len(y), generator=torch.Generator().manual_seed(args.seed))
    n_test = len(y) // 4
    test, train_rows = split[:n_test], split[n_test:]
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = bn1d.torch.convert_sync_batchnorm(make_model(args.hidden))
    if world > 1:
        # broadcast_buffers=False: the running statistics stay equal through SyncBatchNorm alone
        model = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    local = args.batch_size // world
    steps = len(train_rows) // args.batch_size
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = train_rows[torch.randperm(len(train_rows),
                                          generator=torch.Generator().manual_seed(epoch))]
        loss_sum = torch.zeros(1, dtype=torch.float64)
        for step in range(steps):
            first = step * args.batch_size + rank * local
            rows = order[first:first + local]  # this rank's slice of the global batch
            loss = torch.nn.functional.cross_entropy(model(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
        if world > 1:
            dist.all_reduce(loss_sum)  # equal slices: the global loss is the mean over ranks
        model.eval()
        with torch.no_grad():
            accuracy = (model(x[test]).argmax(1) == y[test]).double().mean().item()
        if rank == 0:
            print(f"epoch {epoch:2d}  loss {loss_sum.item() / (steps * world):.4f}  "
                  f"test accuracy {100 * accuracy:.1f} %", flush=True)
    return model, accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="digits CSV (gzip), default %(default)s")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=96,
                        help="global batch, split evenly over the processes (default %(default)s)")
    parser.add_argument("--hidden", type=int, default=64, help="width of the hidden layers")
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate")
    parser.add_argument("--seed", type=int, default=0, help="test split and initial weights")
    args = parser.parse_args()

    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ  # set by torchrun
    if launched:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if launched else 0
    world = dist.get_world_size() if launched else 1
    if args.batch_size % world != 0 or args.batch_size // world < 1:
        parser.error(f"--batch-size {args.batch_size} must be a positive multiple of the "
                     f"world size {world}")
    start = time.perf_counter()
    if rank == 0:
        print(f"{world} process(es), global batch {args.batch_size} "
              f"({args.batch_size // world} per process), {args.epochs} epochs", flush=True)
    model, accuracy = train(args, rank, world)
    # The collective's tensors outlive the process group: torch 1.13 on Python 3.11 can hang at
    # exit when a gloo thread frees them (it needs the GIL) while the group's end waits for it.
    gathered, sent = gather_running_stats(model, world)
    identical = all(torch.equal(g, gathered[0]) for g in gathered)
    if rank == 0:
        kinds = sorted({type(m).__name__ for m in model.modules()
                        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)})
        print(f"batch norm layers: {', '.join(kinds)}; running statistics "
              f"{'identical' if identical else 'DIFFERENT'} on all {world} rank(s)")
        print(f"final test accuracy {100 * accuracy:.1f} % "
              f"({time.perf_counter() - start:.1f} s)", flush=True)
    if launched:
        del model  # DDP's reducer holds the group: destroy_process_group() then ends it
        dist.destroy_process_group()
    del gathered, sent


if __name__ == "__main__":
    main()
