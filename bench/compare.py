#!/usr/bin/env python3
"""Puts llm-bench-kernels' JSON next to sdpa_anchor.py's: ratio = ours / anchor for prefill TFLOP/s
and decode GB/s, plus decode bandwidth over the device-copy bandwidth. Prints a Markdown table.
Prefill rows of every kernel (sections prefill, prefill_mma_sync, prefill_wgmma: the default
dispatch and each kernel forced) are matched with SDPA's prefill row of the same shape.

usage: bench/compare.py ours.json sdpa.json
"""
import json
import sys


def main():
    ours = json.load(open(sys.argv[1]))
    anchor = json.load(open(sys.argv[2]))
    theirs = {(r["section"], r["shape"]): r for r in anchor["results"]}
    copy = next((r["gbytes_per_s"] for r in ours["results"] if r["section"] == "copy"), None)
    print(f"device: {ours['device']}; copy bandwidth {copy:.0f} GB/s (read + write)" if copy else ours["device"])
    print("\n| section | shape | ours ms | ours | SDPA | ours / SDPA | ours / copy |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in ours["results"]:
        key = (r["section"], r["shape"])
        if r["section"] == "prefill" or r["section"].startswith("prefill_"):
            other = theirs.get(("prefill", r["shape"]))
            ratio = f"{r['tflops'] / other['tflops']:.2f}" if other else "-"
            sdpa = f"{other['tflops']:.1f} TFLOP/s" if other else "-"
            kernel = f" ({r['note']})" if r.get("note") else ""
            print(f"| {r['section']} | {r['shape']}{kernel} | {r['median_ms']:.3f} | {r['tflops']:.1f} TFLOP/s | {sdpa} | {ratio} | |")
        elif r["section"] == "decode":
            other = theirs.get(key)
            ratio = f"{r['gbytes_per_s'] / other['gbytes_per_s']:.2f}" if other else "-"
            sdpa = f"{other['gbytes_per_s']:.0f} GB/s" if other else "-"
            vs_copy = f"{r['gbytes_per_s'] / copy:.2f}" if copy else "-"
            print(f"| decode | {r['shape']} ({r['note']}) | {r['median_ms']:.4f} | {r['gbytes_per_s']:.0f} GB/s | {sdpa} | {ratio} | {vs_copy} |")
        elif r["section"] == "decode_step":
            print(f"| decode_step | {r['shape']} | {r['median_ms']:.3f} | | | | |")
        elif r["section"] == "model_prefill":
            print(f"| model_prefill | {r['shape']} ({r['note']}) | {r['median_ms']:.3f} | {r['tflops']:.1f} TFLOP/s | | | |")


if __name__ == "__main__":
    main()
