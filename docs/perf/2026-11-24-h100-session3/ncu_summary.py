#!/usr/bin/env python3
"""Per-kernel table of an Nsight Compute CSV of llm-bench-kernels decode steps.

usage: ncu_summary.py NCU.csv [...]   (from `ncu --csv --metrics gpu__time_duration.sum`, one or
more profiled steps; a step starts at its embedding gather). Prints count x mean us = total per
kernel name and launch shape, and the step's kernel sum (kernels run serialised under ncu).
"""
import collections
import csv
import re
import sys


def load(path):
    lines = open(path).read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('"ID"'))
    return list(csv.DictReader(lines[start:]))


for path in sys.argv[1:]:
    steps, current = [], []
    for row in load(path):
        if "GatherRowsKernel" in row["Kernel Name"] and current:
            steps.append(current)
            current = []
        current.append(row)
    steps.append(current)
    print(f"{path}: {len(steps)} steps")
    for index, step in enumerate(steps):
        kernels = collections.OrderedDict()
        for row in step:
            name = re.sub(r"\(.*", "", row["Kernel Name"])[:72]
            key = f"{name} grid{row['Grid Size']}"
            kernels.setdefault(key, []).append(float(row["Metric Value"].replace(",", "")) / 1e3)
        total = sum(sum(v) for v in kernels.values())
        print(f"  step {index}: {len(step)} kernels, sum {total:.1f} us")
        for key, times in kernels.items():
            print(f"    {len(times):3d} x {sum(times) / len(times):7.2f} us = {sum(times):7.1f}  {key}")
