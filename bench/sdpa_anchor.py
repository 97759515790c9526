#!/usr/bin/env python3
"""The anchor for llm-bench-kernels: torch scaled_dot_product_attention on the same shapes.

prefill: causal, flash backend forced, enable_gqa=True, q [B, Hq, S, D], k/v [B, Hkv, S, D];
         TFLOP/s = 4 * B * Hq * D * S(S+1)/2 / time (the count bench_kernels.cu uses).
decode:  one query token per sequence over a contiguous KV of C tokens (SDPA picks its backend),
         bandwidth = K+V bytes / time; small cases rotate among copies so L2 does not serve them.
Median of CUDA-event timings after warm-up, random bf16 inputs. Writes JSON with --json.
"""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def median_ms(fn, warmup=3, iterations=30):
    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    times = []
    for i in range(iterations):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(warmup + i)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def prefill(results, quick):
    cases = []
    for hq, hkv, d in ((32, 8, 128), (32, 4, 64)):
        for s in (512, 1024, 2048, 4096, 8192, 16384):
            cases.append((hq, hkv, d, s, max(1, 16384 // s)))
            if not quick and 2048 <= s <= 8192:
                cases.append((hq, hkv, d, s, 1))
    print(f"\n{'sdpa prefill (flash, causal)':34s} {'ms':>10s} {'TFLOP/s':>10s}")
    for hq, hkv, d, s, b in cases:
        q = torch.randn(b, hq, s, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(b, hkv, s, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(b, hkv, s, d, device="cuda", dtype=torch.bfloat16)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            ms = median_ms(lambda i: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
                           iterations=10 if quick else 30)
        tflops = 4.0 * b * hq * d * (s * (s + 1) / 2) / (ms * 1e-3) / 1e12
        shape = f"B{b} S{s} Hq{hq} Hkv{hkv} D{d}"
        print(f"{shape:34s} {ms:10.3f} {tflops:10.1f}")
        results.append({"section": "prefill", "shape": shape, "median_ms": ms, "tflops": tflops})
        del q, k, v


def decode(results, quick):
    hq, hkv, d = 32, 8, 128
    print(f"\n{'sdpa decode (contiguous KV)':34s} {'ms':>10s} {'GB/s':>10s}")
    for b, c in ((1, 4096), (1, 32768), (8, 4096), (32, 4096), (64, 2048), (16, 16384)):
        kv_bytes = 2 * b * c * hkv * d * 2
        copies = max(1, min(64, int(256e6 // kv_bytes) + 1))
        q = torch.randn(b, hq, 1, d, device="cuda", dtype=torch.bfloat16)
        ks = [torch.randn(b, hkv, c, d, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
        vs = [torch.randn(b, hkv, c, d, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
        ms = median_ms(lambda i: F.scaled_dot_product_attention(q, ks[i % copies], vs[i % copies], enable_gqa=True),
                       warmup=5, iterations=20 if quick else 100)
        shape = f"B{b} C{c} Hq{hq} Hkv{hkv} D{d}"
        gbps = kv_bytes / (ms * 1e-3) / 1e9
        print(f"{shape:34s} {ms:10.4f} {gbps:10.1f}")
        results.append({"section": "decode", "shape": shape, "median_ms": ms, "gbytes_per_s": gbps})
        del ks, vs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    results = []
    prefill(results, args.quick)
    decode(results, args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
