#!/usr/bin/env python3
"""Plots where a decode step's GPU time goes, from the JSON that llm-bench-kernels writes with
$LLM_BENCH_KERNEL_TIMELINE (bench/kernel_timeline.h): one stacked bar per batch shape, a segment per
kernel group (us per step), idle time on top; groups under 2% of every step folded into "other".

usage: python3 bench/plot_timeline.py TIMELINE.json OUT.png [TITLE]   (needs matplotlib)
  TITLE replaces the decode-step title (e.g. for the prefill and mixed steps' timelines).
"""
import json
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label(kernel, grid):
    """A short legend name: the kernel's name without template arguments, and its grid."""
    name = re.sub(r"<.*", "", kernel)
    return f"{name} [{'x'.join(str(g) for g in grid)}]"


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        steps = json.load(f)
    shares = {}  # label -> {shape: us per step}
    for step in steps:
        for group in step["groups"]:
            shares.setdefault(label(group["kernel"], group["grid"]), {})[step["shape"]] = (
                group["us_per_step"])
    busy = {s["shape"]: s["busy_us"] for s in steps}
    kept, other = {}, {}  # other: shape -> us of the folded groups
    for name, per_shape in shares.items():
        if any(us >= 0.02 * busy[shape] for shape, us in per_shape.items()):
            kept[name] = per_shape
        else:
            for shape, us in per_shape.items():
                other[shape] = other.get(shape, 0.0) + us
    shapes = [s["shape"] for s in steps]
    fig, ax = plt.subplots(figsize=(11, 6))
    colors = plt.get_cmap("tab20").colors
    bottom = [0.0] * len(shapes)
    ordered = sorted(kept.items(), key=lambda kv: -sum(kv[1].values()))
    for index, (name, per_shape) in enumerate(ordered):
        values = [per_shape.get(shape, 0.0) for shape in shapes]
        ax.bar(shapes, values, bottom=bottom, label=name, color=colors[index % len(colors)])
        for x, (b, v) in enumerate(zip(bottom, values)):
            if v >= 40:  # segments tall enough to carry their legend number
                ax.text(x, b + v / 2, f"{index + 1}: {v:.0f} us", ha="center", va="center",
                        fontsize=7)
        bottom = [b + v for b, v in zip(bottom, values)]
    for name, values in (("other kernels", [other.get(shape, 0.0) for shape in shapes]),
                         ("idle", [s["idle_us"] for s in steps])):
        ax.bar(shapes, values, bottom=bottom, label=name, color="lightgrey",
               hatch="//" if name == "idle" else None)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("us per step (GPU, CUPTI)")
    ax.set_title(sys.argv[3] if len(sys.argv) == 4 else
                 "Decode step, TinyLlama-1.1B shape, context 512: GPU time per kernel")
    ax.tick_params(axis="x", labelsize=8, labelrotation=10)
    handles, labels = ax.get_legend_handles_labels()
    labels = [f"{i + 1}: {text}" if i < len(ordered) else text for i, text in enumerate(labels)]
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=120)


if __name__ == "__main__":
    main()
