#!/usr/bin/env python3
"""Served over gRPC against the engine offline: throughput ratio and the per-step overhead.

Two commands (python3 standard library only):

  served_vs_offline.py scrape URL OUT
      saves one /metrics scrape of llm-server (before and after llm-bench).
  served_vs_offline.py compare --offline E.json --served B.json --metrics_before M0.txt
                               --metrics_after M1.txt --out_dir DIR
      reads llm-bench-engine's JSON (offline), llm-bench's JSON (served) and the two scrapes, and
      writes DIR/served_vs_offline.json and DIR/served_vs_offline.md (also printed).

The server's decode step time is the increase of llm_engine_step_duration_seconds{phase="decode"}
sum over count between the scrapes: the forward step as the engine times it, the same quantity
llm-bench-engine reports as "decode step (forward)". The gRPC + scheduling overhead per decode step
is what a served stream waits per token beyond that step:
  - from latency: llm-bench's mean inter-token gap minus the server's mean decode step;
  - from throughput: concurrency / served tokens/s (the step period if every stream got a token
    every step) minus the same step, and, against the offline run, minus concurrency / offline
    tokens/s, which leaves only what serving adds to the engine's own loop (as does the served
    minus the offline mean inter-token gap).
"""

import argparse
import json
import os
import re
import sys
import urllib.request

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text exposition -> {(name, frozenset(labels)): value}."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = frozenset(_LABEL.findall(match.group(2) or ""))
        samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def phase_total(samples, name, phase):
    """Sum of `name` over every series whose phase label is `phase`."""
    return sum(value for (sample_name, labels), value in samples.items()
               if sample_name == name and ("phase", phase) in labels)


def metrics_delta(before, after, phase):
    """The step histograms' increase between two scrapes, for one phase."""
    def delta(name):
        return phase_total(after, name, phase) - phase_total(before, name, phase)
    steps = delta("llm_engine_step_duration_seconds_count")
    seconds = delta("llm_engine_step_duration_seconds_sum")
    sequences = delta("llm_engine_step_batch_sequences_sum")
    return {
        "steps": steps,
        "step_seconds_mean": seconds / steps if steps else 0.0,
        "batch_sequences_mean": sequences / steps if steps else 0.0,
    }


def compare(offline, served, before, after):
    served_decode = metrics_delta(before, after, "decode")
    served_steps = {phase: metrics_delta(before, after, phase)["steps"]
                    for phase in ("decode", "mixed", "prefill")}
    concurrency = served["concurrency"]
    offline_tps = offline["generated_tokens_per_second"]
    served_tps = served["generated_tokens_per_second"]
    offline_step = offline["decode_step_seconds"]["mean"]
    served_step = served_decode["step_seconds_mean"]
    served_itl = served["inter_token_seconds"]
    offline_itl = offline["inter_token_seconds"]
    served_period = concurrency / served_tps if served_tps else 0.0
    offline_period = offline["concurrency"] / offline_tps if offline_tps else 0.0
    return {
        "backend": offline.get("backend"),
        "concurrency": concurrency,
        "offline_concurrency": offline["concurrency"],
        "prompt_len": served.get("prompt_len"),
        "output_len": served.get("output_len"),
        "offline_tokens_per_second": offline_tps,
        "served_tokens_per_second": served_tps,
        "served_over_offline": served_tps / offline_tps if offline_tps else 0.0,
        "target_ratio": 0.9,
        "offline_decode_step_seconds_mean": offline_step,
        "offline_decode_step_seconds_p50": offline["decode_step_seconds"]["p50"],
        "offline_decode_batch_sequences_mean": offline["decode_batch_sequences_mean"],
        "offline_decode_iteration_seconds_mean": offline["decode_iteration_seconds"]["mean"],
        "offline_inter_token_seconds_p50": offline_itl["p50"],
        "offline_inter_token_seconds_mean": offline_itl["mean"],
        "served_decode_step_seconds_mean": served_step,
        "served_decode_batch_sequences_mean": served_decode["batch_sequences_mean"],
        "served_steps_by_phase": served_steps,
        "served_inter_token_seconds_p50": served_itl["p50"],
        "served_inter_token_seconds_mean": served_itl["mean"],
        "served_errors": served.get("errors", {}),
        # What a served stream waits per token beyond the engine's forward step.
        "overhead_per_decode_step_seconds_from_inter_token": served_itl["mean"] - served_step,
        "overhead_per_decode_step_seconds_from_throughput": served_period - served_step,
        # The same against the offline engine's closed loop: what serving alone adds.
        "served_minus_offline_step_period_seconds": served_period - offline_period,
        "served_minus_offline_inter_token_mean_seconds": served_itl["mean"] - offline_itl["mean"],
        "served_step_period_seconds": served_period,
        "offline_step_period_seconds": offline_period,
    }


def markdown(result):
    ms = 1e3
    rows = [
        ("offline tokens/s (llm-bench-engine)", f"{result['offline_tokens_per_second']:.1f}"),
        ("served tokens/s (llm-bench over gRPC)", f"{result['served_tokens_per_second']:.1f}"),
        ("served / offline (target >= 0.9)", f"{result['served_over_offline']:.3f}"),
        ("offline mean decode step (forward)",
         f"{result['offline_decode_step_seconds_mean'] * ms:.3f} ms "
         f"(batch {result['offline_decode_batch_sequences_mean']:.1f})"),
        ("served mean decode step (forward, /metrics)",
         f"{result['served_decode_step_seconds_mean'] * ms:.3f} ms "
         f"(batch {result['served_decode_batch_sequences_mean']:.1f})"),
        ("offline inter-token p50 / mean",
         f"{result['offline_inter_token_seconds_p50'] * ms:.3f} / "
         f"{result['offline_inter_token_seconds_mean'] * ms:.3f} ms"),
        ("served inter-token p50 / mean (llm-bench)",
         f"{result['served_inter_token_seconds_p50'] * ms:.3f} / "
         f"{result['served_inter_token_seconds_mean'] * ms:.3f} ms"),
        ("gRPC + scheduling overhead per decode step (inter-token mean - step)",
         f"{result['overhead_per_decode_step_seconds_from_inter_token'] * ms:.3f} ms"),
        (f"gRPC + scheduling overhead per decode step ({result['concurrency']} / served tokens/s - step)",
         f"{result['overhead_per_decode_step_seconds_from_throughput'] * ms:.3f} ms"),
        ("served - offline step period (concurrency / tokens/s)",
         f"{result['served_minus_offline_step_period_seconds'] * ms:.3f} ms"),
        ("served - offline inter-token mean",
         f"{result['served_minus_offline_inter_token_mean_seconds'] * ms:.3f} ms"),
    ]
    lines = [f"backend {result['backend']}, {result['concurrency']} streams, prompt "
             f"{result['prompt_len']}, output {result['output_len']}", "",
             "| quantity | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + "\n"


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    scrape = commands.add_parser("scrape", help="save one /metrics scrape")
    scrape.add_argument("url")
    scrape.add_argument("out")
    comparison = commands.add_parser("compare", help="write the comparison JSON and table")
    comparison.add_argument("--offline", required=True, help="llm-bench-engine --json_out")
    comparison.add_argument("--served", required=True, help="llm-bench --json_out")
    comparison.add_argument("--metrics_before", required=True)
    comparison.add_argument("--metrics_after", required=True)
    comparison.add_argument("--out_dir", required=True)
    args = parser.parse_args(argv)

    if args.command == "scrape":
        with urllib.request.urlopen(args.url, timeout=10) as response:
            text = response.read().decode("utf-8")
        with open(args.out, "w") as out:
            out.write(text)
        return 0

    with open(args.offline) as f:
        offline = json.load(f)
    with open(args.served) as f:
        served = json.load(f)
    with open(args.metrics_before) as f:
        before = parse_metrics(f.read())
    with open(args.metrics_after) as f:
        after = parse_metrics(f.read())
    result = compare(offline, served, before, after)
    table = markdown(result)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "served_vs_offline.json"), "w") as out:
        json.dump(result, out, indent=2)
        out.write("\n")
    with open(os.path.join(args.out_dir, "served_vs_offline.md"), "w") as out:
        out.write(table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
