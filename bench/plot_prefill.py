#!/usr/bin/env python3
"""Plots flash prefill TFLOP/s against sequence length: our kernels (the dispatched one and, when
present, the mma.sync one forced) and torch SDPA, one panel per head_dim, from the JSON files of
llm-bench-kernels and bench/sdpa_anchor.py (same device call).

usage: python3 bench/plot_prefill.py BENCH.json SDPA.json OUT.png   (needs matplotlib)
"""
import json
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SHAPE = re.compile(r"B(\d+) S(\d+) Hq(\d+) Hkv(\d+) D(\d+)")


def rows(results, section):
    """{(head_dim, batch): [(S, TFLOP/s)]} of one section's prefill rows."""
    curves = {}
    for r in results:
        if r["section"] != section:
            continue
        m = SHAPE.match(r["shape"])
        if not m:
            continue
        batch, seq, _, _, head_dim = map(int, m.groups())
        curves.setdefault((head_dim, batch), []).append((seq, r["tflops"]))
    return curves


def main():
    ours = json.load(open(sys.argv[1]))
    sdpa = json.load(open(sys.argv[2]))
    series = [("ours (dispatched)", rows(ours["results"], "prefill"), "-o"),
              ("ours, mma.sync kernel", rows(ours["results"], "prefill_mma_sync"), ":s"),
              ("torch SDPA (flash)", rows(sdpa["results"], "prefill"), "--^")]
    head_dims = sorted({hd for _, curves, _ in series for hd, _ in curves})
    fig, axes = plt.subplots(1, len(head_dims), figsize=(6 * len(head_dims), 4.2), squeeze=False)
    for axis, head_dim in zip(axes[0], head_dims):
        for label, curves, style in series:
            # Batched shapes (B x S = 16k tokens) and single sequences, as two lines per series.
            for single in (False, True):
                points = sorted(p for (hd, b), pts in curves.items() if hd == head_dim
                                and (b == 1) == single for p in pts)
                if not points:
                    continue
                xs, ys = zip(*points)
                axis.plot(xs, ys, style, alpha=0.55 if single else 1.0,
                          label=f"{label}, {'B1' if single else 'B x S = 16k'}")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("sequence length S")
        axis.set_ylabel("TFLOP/s (causal)")
        axis.set_title(f"causal paged prefill, head_dim {head_dim}")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    fig.suptitle(ours.get("device", ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(sys.argv[3], dpi=100)


if __name__ == "__main__":
    main()
