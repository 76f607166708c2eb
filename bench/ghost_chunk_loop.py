#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Times ghost batch norm in Python: TabNet's loop, torch.cat([bn(c) for c in x.chunk(k)])
with a torch.nn.BatchNorm1d, against bn1d.torch.GhostBatchNorm1d, on (16384, 64) and
(16384, 512) float32 with virtual_batch_size 128 and momentum 0.01 (TabNet's GBN defaults).

    PYTHONPATH=build/python/python /usr/bin/python3 bench/ghost_chunk_loop.py [--threads T]

Rows: train (forward in training mode, no autograd), train+bwd (forward and backward with
autograd, as in training) and eval (no_grad). Each time is the median of --repeat calls after
warm-up calls; x = loop time / bn1d time (> 1: bn1d faster; the issue's target is 5x). Before
timing, both modules' first training forward, running statistics and gradients are compared.
"""

import argparse
import math
import statistics
import sys
import time

import torch

try:
    import bn1d.torch as bn1d_torch
except ImportError as error:
    sys.exit(f"ghost_chunk_loop.py: cannot import bn1d.torch ({error}); "
             "set PYTHONPATH to the built package (scripts/test-python.sh builds build/python)")


class ChunkLoopGBN(torch.nn.Module):
    """TabNet's GBN: a torch.nn.BatchNorm1d applied to each chunk of the batch in turn."""

    def __init__(self, num_features, virtual_batch_size=128, momentum=0.01):
        super().__init__()
        self.virtual_batch_size = virtual_batch_size
        self.bn = torch.nn.BatchNorm1d(num_features, momentum=momentum)

    def forward(self, x):
        chunks = x.chunk(int(math.ceil(x.shape[0] / self.virtual_batch_size)), 0)
        return torch.cat([self.bn(c) for c in chunks], dim=0)


def median_seconds(call, repeat, warmup):
    """The median wall time of call() over repeat calls, after warmup calls."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_same(loop, ghost, x, dy):
    """The first training step of both modules: outputs, running statistics and gradients."""
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    ys = [m(xi) for m, xi in zip((loop, ghost), xs)]
    for y in ys:
        y.backward(dy)
    pairs = [("output", ys[0], ys[1]), ("grad_input", xs[0].grad, xs[1].grad),
             ("running_mean", loop.bn.running_mean, ghost.running_mean),
             ("running_var", loop.bn.running_var, ghost.running_var),
             ("num_batches_tracked", loop.bn.num_batches_tracked, ghost.num_batches_tracked),
             ("grad_weight", loop.bn.weight.grad, ghost.weight.grad),
             ("grad_bias", loop.bn.bias.grad, ghost.bias.grad)]
    for name, want, got in pairs:
        if not torch.allclose(got.double(), want.double(), rtol=1e-4, atol=1e-4):
            print(f"WARNING: {name} differs: max |diff| = "
                  f"{(got.double() - want.double()).abs().max().item():g}")


def bench_shape(n, c, vbs, repeat, warmup):
    """Prints the three rows of one shape."""
    torch.manual_seed(0)
    x = torch.randn(n, c)
    dy = torch.randn(n, c)
    loop = ChunkLoopGBN(c, vbs, momentum=0.01)
    ghost = bn1d_torch.GhostBatchNorm1d(c, virtual_batch_size=vbs, momentum=0.01)
    check_same(loop, ghost, x, dy)

    def train(m):
        m.train()
        with torch.no_grad():
            m(x)

    def step(m):
        m.train()
        xi = x.detach().requires_grad_(True)
        m(xi).backward(dy)

    def evaluate(m):
        m.eval()
        with torch.no_grad():
            m(x)

    label = f"({n},{c}) f32 vbs {vbs}"
    for op, fn in (("train", train), ("train+bwd", step), ("eval", evaluate)):
        t_loop = median_seconds(lambda: fn(loop), repeat, warmup)
        t_bn1d = median_seconds(lambda: fn(ghost), repeat, warmup)
        print(f"{label:<24} {op:<10} {t_loop * 1e3:10.3f} {t_bn1d * 1e3:10.3f} "
              f"{t_loop / t_bn1d:7.2f}x", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch.set_num_threads (bn1d uses the same OpenMP runtime)")
    parser.add_argument("--repeat", type=int, default=30, help="timed calls per row")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls before them")
    args = parser.parse_args()
    if not hasattr(bn1d_torch, "GhostBatchNorm1d"):
        sys.exit("ghost_chunk_loop.py: this bn1d has no bn1d.torch.GhostBatchNorm1d yet")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); median of "
          f"{args.repeat} calls after {args.warmup}; x = loop / bn1d (> 1: bn1d faster)")
    print(f"{'shape dtype vbs':<24} {'op':<10} {'loop_ms':>10} {'bn1d_ms':>10} {'x':>8}")
    for n, c in ((16384, 64), (16384, 512)):
        bench_shape(n, c, 128, args.repeat, args.warmup)


if __name__ == "__main__":
    main()
