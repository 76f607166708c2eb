#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Turns the CSV of `bn1d_bench --csv FILE` into the README's chart and table.

    bench/plot.py results.csv docs/perf.png            # the chart (PNG or SVG, by the suffix)
    bench/plot.py --markdown results.csv               # the README's table, as Markdown
    bench/plot.py --title "AMD EPYC, 2 threads" results.csv docs/perf.png

The chart needs matplotlib (Debian: python3-matplotlib); the table needs nothing but Python.
Both show, for each case of the run, how many times faster bn1d is than libtorch and oneDNN
(peer time / bn1d time) in forward-train, forward-eval and backward; the table also shows
bn1d's time over the measured bandwidth bound (1.00 = at the bound, bench/README.md).
"""

import argparse
import csv
import sys

OPS = ("train", "eval", "backward")
PEERS = (("torch_per_bn1d", "libtorch"), ("dnnl_per_bn1d", "oneDNN"))


def read_cases(path):
    """The CSV's rows grouped by case, in the order of the run: [(label, {op: row})]."""
    cases = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["shape"], row["dtype"], row["layout"])
            cases.setdefault(key, {})[row["op"]] = row
    return [(label(*key), rows) for key, rows in cases.items()]


def label(shape, dtype, layout):
    """'(64, 256, 1024) f32 channels-last' from '64x256x1024', 'f32', 'NLC'."""
    text = "(" + ", ".join(shape.split("x")) + ") " + dtype
    return text + " channels-last" if layout == "NLC" else text


def number(row, column):
    """A float, or None where the CSV cell is empty (library not built in or unsupported)."""
    value = row.get(column, "") if row else ""
    return float(value) if value else None


def ratio_text(x):
    return f"{x:.0f}×" if x >= 10 else f"{x:.1f}×" if x >= 1 else f"{x:.2f}×"


def threads_of(cases):
    values = {rows[op]["threads"] for _, rows in cases for op in rows}
    return ", ".join(sorted(values, key=int))


def markdown(cases):
    lines = [
        "| case | train: × libtorch · × oneDNN | eval: × libtorch · × oneDNN "
        "| backward: × libtorch · × oneDNN | time / bound: train · eval · backward |",
        "|---|---|---|---|---|",
    ]
    for name, rows in cases:
        cells = [name]
        for op in OPS:
            ratios = [number(rows.get(op), column) for column, _ in PEERS]
            cells.append(" · ".join("–" if r is None else f"{r:.2f}×" for r in ratios))
        bounds = [number(rows.get(op), "bn1d_per_bound") for op in OPS]
        cells.append(" · ".join("–" if b is None else f"{b:.2f}" for b in bounds))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(cases, out, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    names = [name for name, _ in cases]
    ratios = [number(rows.get(op), column) for _, rows in cases for op in OPS for column, _ in PEERS]
    ratios = [r for r in ratios if r is not None and r > 0]
    low, high = min([0.5] + [r / 1.3 for r in ratios]), max([2.0] + [r * 4 for r in ratios])
    fig, axes = plt.subplots(1, len(OPS), figsize=(13, 0.42 * len(names) + 1.8), sharey=True)
    height = 0.38
    colors = ("#4c72b0", "#dd8452")
    for ax, op in zip(axes, OPS):
        for k, (column, peer) in enumerate(PEERS):
            ys, xs = [], []
            for i, (_, rows) in enumerate(cases):
                r = number(rows.get(op), column)
                if r is not None:
                    ys.append(i + (k - 0.5) * height)
                    xs.append(r)
            ax.barh(ys, xs, height=height, color=colors[k], label=f"vs {peer}")
            for y, x in zip(ys, xs):
                ax.text(x * 1.05, y, ratio_text(x), va="center", fontsize=7, clip_on=True)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.set_title(op)
        ax.set_xlabel("peer time / bn1d time (> 1×: bn1d faster)", fontsize=9)
        ax.grid(axis="x", which="major", linewidth=0.3)
    axes[0].set_yticks(range(len(names)))
    axes[0].set_yticklabels(names, fontsize=8)
    axes[0].invert_yaxis()
    heading = "bn1d BatchNorm1d: speed-up over libtorch and oneDNN"
    threads = threads_of(cases)
    heading += f" ({threads} thread{'' if threads == '1' else 's'}" + (f", {title})" if title else ")")
    fig.suptitle(heading)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(out, dpi=90)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", help="the CSV written by bn1d_bench --csv")
    parser.add_argument("out", nargs="?", help="the chart to write (.png or .svg)")
    parser.add_argument("--markdown", action="store_true", help="print the Markdown table")
    parser.add_argument("--title", default="", help="machine to name in the chart's heading")
    args = parser.parse_args()
    if not args.markdown and not args.out:
        parser.error("give a chart to write, or --markdown")
    cases = read_cases(args.csv)
    if not cases:
        sys.exit(f"plot.py: no rows in {args.csv}")
    if args.markdown:
        print(markdown(cases))
    if args.out:
        chart(cases, args.out, args.title)


if __name__ == "__main__":
    main()
