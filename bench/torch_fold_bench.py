# SPDX-License-Identifier: MIT
"""torch_fold_bench.py: the inference time that bn1d.torch.fold saves on a
Linear(in -> C) -> BatchNorm1d(C) -> ReLU micro-model in torch (eval mode, float32).

For each batch size, width (in = C) and thread count it times the model's forward as built
(three ops: Linear, batch norm, ReLU) and the model that bn1d.torch.fold returns (the batch
norm folded into the Linear: two ops), interleaved call by call under torch.inference_mode,
and prints the medians, the time saved, the time of the batch norm alone (the op that folding
removes: what the saving should be) and how far the outputs are apart: max |folded -
unfolded|, and each one's max distance from the unfolded model run in float64.

    PYTHONPATH=build/python/python /usr/bin/python3 bench/torch_fold_bench.py
    ... --threads 1 2 --batches 256 4096 --widths 256 1024 --seconds 0.5
"""

import argparse
import copy
import os
import re
import statistics
import sys
import time
from typing import Callable, List, Tuple

import torch

import bn1d
import bn1d.torch


def build_model(width: int, seed: int) -> torch.nn.Sequential:
    """Linear(width -> width) -> BatchNorm1d(width) -> ReLU in eval mode, with running
    statistics, weight and bias far from their defaults (a folded identity would prove
    nothing)."""
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.BatchNorm1d(width),
                                torch.nn.ReLU())
    bn = model[1]
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(width, generator=gen) * 0.5)
        bn.running_var.copy_(torch.rand(width, generator=gen) * 2.0 + 0.25)
        bn.weight.copy_(torch.rand(width, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(width, generator=gen) * 0.2)
    return model.eval()


def time_interleaved(fns: List[Callable[[], object]], seconds: float) -> List[Tuple[float, int]]:
    """(median seconds, calls) of each function: warmed up, then called in turn (the order
    alternating each round) until each has had about `seconds` of calls, at least 20."""
    for fn in fns:
        for _ in range(2):
            fn()
    estimate = []
    for fn in fns:
        start = time.perf_counter()
        fn()
        estimate.append(time.perf_counter() - start)
    rounds = max(20, int(seconds / max(max(estimate), 1e-6)))
    samples: List[List[float]] = [[] for _ in fns]
    for r in range(rounds):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            start = time.perf_counter()
            fns[i]()
            samples[i].append(time.perf_counter() - start)
    return [(statistics.median(s), len(s)) for s in samples]


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def copy_double(model: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of the unfolded model: the reference both outputs are measured against."""
    return copy.deepcopy(model).double()


def run_case(batch: int, width: int, seconds: float) -> str:
    """One row of the table: times and differences of the unfolded and folded model."""
    model = build_model(width, seed=batch * 7919 + width)
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(width))
    folded, report = bn1d.torch.fold(model, x)
    if len(report.folded) != 1:
        sys.exit(f"torch_fold_bench: expected one folded pair, got:\n{report}")
    with torch.inference_mode():
        reference = copy_double(model)(x.double())
        y_unfolded, y_folded = model(x), folded(x)
        linear_out, bn = model[0](x), model[1]
        (t_unfolded, runs), (t_folded, _), (t_bn, _) = time_interleaved(
            [lambda: model(x), lambda: folded(x), lambda: bn(linear_out)], seconds)
    saved = t_unfolded - t_folded
    return (f"{batch:6d} {width:6d} {torch.get_num_threads():7d} {runs:5d} "
            f"{t_unfolded * 1e3:11.4f} {t_folded * 1e3:10.4f} {saved * 1e3:9.4f} "
            f"{100 * saved / t_unfolded:6.1f}% {t_unfolded / t_folded:6.2f}x {t_bn * 1e3:8.4f} "
            f"{max_abs(y_folded, y_unfolded):11.2e} {max_abs(y_unfolded, reference):11.2e} "
            f"{max_abs(y_folded, reference):11.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="torch.set_num_threads values (default: 1 2)")
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 4096])
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 1024],
                        help="in = C of the Linear and the batch norm (default: 256 1024)")
    parser.add_argument("--seconds", type=float, default=0.5,
                        help="time each model gets per row, about; at least 20 calls each "
                        "(default: 0.5)")
    args = parser.parse_args()
    blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    print(f"torch_fold_bench: torch {torch.__version__} (BLAS_INFO={blas[1] if blas else '?'}), "
          f"bn1d {bn1d.__version__}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}")
    print("model: Linear(C -> C) -> BatchNorm1d(C) -> ReLU, eval, float32; folded = "
          "bn1d.torch.fold(model, x)")
    print("times: median of interleaved calls under torch.inference_mode; bn_ms: the batch "
          "norm alone on the Linear's output\n(the op that folding removes); diff columns: "
          "max |a - b| (ref = unfolded model in float64)\n")
    print(f"{'batch':>6} {'C':>6} {'threads':>7} {'runs':>5} {'unfolded_ms':>11} "
          f"{'folded_ms':>10} {'saved_ms':>9} {'saved':>7} {'speedup':>7} {'bn_ms':>8} "
          f"{'|fold-unf|':>11} {'|unf-ref|':>11} {'|fold-ref|':>11}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batches:
            for width in args.widths:
                print(run_case(batch, width, args.seconds), flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
