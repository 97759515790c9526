#!/usr/bin/env python3
"""Writes a Hugging Face-style Llama checkpoint with random bf16 weights, for benchmarks.

The directory gets config.json (LlamaForCausalLM, the fields server/model/model_config.cc reads) and
one model.safetensors with the standard tensor names. Only python3 and numpy are needed: the
safetensors header is JSON written here, the data raw little-endian bf16 (the top 16 bits of the
float32 value, rounded to nearest even).

Weights are normal(0, --std); norm weights normal(1, --std). Defaults give the TinyLlama-1.1B shape
(hidden 2048, 22 layers, 32/4 q/kv heads, head_dim 64, intermediate 5632, vocab 32000, untied head:
2.2 GB). Drawing 1.1e9 independent normals takes about a minute, so large checkpoints fill each
tensor with segments of --segment values copied from one pool of 4M independent draws at random
offsets: every value is still a normal(0, std) draw, only segments repeat, which no kernel's speed
depends on. Checkpoints up to --independent_limit values are drawn independently.

  python3 tools/make_random_checkpoint.py --out /tmp/tinyllama-1.1b-random
  python3 tools/make_random_checkpoint.py --out /tmp/tiny --hidden_size 128 --num_hidden_layers 2 \
      --num_attention_heads 4 --num_key_value_heads 2 --intermediate_size 256 --vocab_size 512
"""

import argparse
import json
import os
import sys
import time

import numpy as np

_POOL_SIZE = 1 << 22
_CHUNK_ELEMENTS = 1 << 24  # values converted and written at a time (32 MB of bf16)


def to_bf16_bits(values):
    """float32 array -> uint16 bf16 bit patterns, round to nearest even (finite inputs)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    # Adding 0x7FFF plus the lowest kept bit rounds halfway cases to the even neighbour.
    rounding = (bits >> 16) & 1
    rounding += 0x7FFF
    rounding += bits
    rounding >>= 16
    return rounding.astype("<u2")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="checkpoint directory (created)")
    parser.add_argument("--hidden_size", type=int, default=2048)
    parser.add_argument("--num_hidden_layers", type=int, default=22)
    parser.add_argument("--num_attention_heads", type=int, default=32)
    parser.add_argument("--num_key_value_heads", type=int, default=4)
    parser.add_argument("--head_dim", type=int, default=0, help="0 = hidden_size / heads")
    parser.add_argument("--intermediate_size", type=int, default=5632)
    parser.add_argument("--vocab_size", type=int, default=32000)
    parser.add_argument("--max_position_embeddings", type=int, default=2048)
    parser.add_argument("--rms_norm_eps", type=float, default=1e-5)
    parser.add_argument("--rope_theta", type=float, default=10000.0)
    parser.add_argument("--tie_word_embeddings", action="store_true",
                        help="no lm_head.weight; the head reuses the embeddings")
    parser.add_argument("--std", type=float, default=0.02, help="standard deviation of the weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--segment", type=int, default=8192,
                        help="values per pooled segment in large checkpoints")
    parser.add_argument("--independent_limit", type=int, default=1 << 26,
                        help="checkpoints with at most this many values are drawn independently")
    args = parser.parse_args(argv)
    if args.head_dim == 0:
        if args.hidden_size % args.num_attention_heads:
            parser.error("hidden_size is not a multiple of num_attention_heads; pass --head_dim")
        args.head_dim = args.hidden_size // args.num_attention_heads
    if args.num_attention_heads % args.num_key_value_heads:
        parser.error("num_attention_heads must be a multiple of num_key_value_heads")
    for name in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size",
                 "max_position_embeddings", "segment"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    return args


def tensor_shapes(args):
    """(name, shape, kind) in file order; kind is "weight" or "norm"."""
    hidden, inter = args.hidden_size, args.intermediate_size
    q_rows = args.num_attention_heads * args.head_dim
    kv_rows = args.num_key_value_heads * args.head_dim
    shapes = [("model.embed_tokens.weight", (args.vocab_size, hidden), "weight")]
    for layer in range(args.num_hidden_layers):
        prefix = f"model.layers.{layer}."
        shapes += [
            (prefix + "input_layernorm.weight", (hidden,), "norm"),
            (prefix + "self_attn.q_proj.weight", (q_rows, hidden), "weight"),
            (prefix + "self_attn.k_proj.weight", (kv_rows, hidden), "weight"),
            (prefix + "self_attn.v_proj.weight", (kv_rows, hidden), "weight"),
            (prefix + "self_attn.o_proj.weight", (hidden, q_rows), "weight"),
            (prefix + "post_attention_layernorm.weight", (hidden,), "norm"),
            (prefix + "mlp.gate_proj.weight", (inter, hidden), "weight"),
            (prefix + "mlp.up_proj.weight", (inter, hidden), "weight"),
            (prefix + "mlp.down_proj.weight", (hidden, inter), "weight"),
        ]
    shapes.append(("model.norm.weight", (hidden,), "norm"))
    if not args.tie_word_embeddings:
        shapes.append(("lm_head.weight", (args.vocab_size, hidden), "weight"))
    return shapes


def config_json(args):
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": args.head_dim,
        "hidden_act": "silu",
        "hidden_size": args.hidden_size,
        "initializer_range": args.std,
        "intermediate_size": args.intermediate_size,
        "max_position_embeddings": args.max_position_embeddings,
        "mlp_bias": False,
        "num_attention_heads": args.num_attention_heads,
        "num_hidden_layers": args.num_hidden_layers,
        "num_key_value_heads": args.num_key_value_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": args.rms_norm_eps,
        "rope_scaling": None,
        "rope_theta": args.rope_theta,
        "tie_word_embeddings": args.tie_word_embeddings,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": args.vocab_size,
    }


def safetensors_header(shapes):
    """The JSON header bytes, padded with spaces so the data section starts 8-byte aligned."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, _ in shapes:
        size = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    return text, offset


class ValueSource:
    """Hands out bf16 chunks: independent draws, or pooled segments for large checkpoints."""

    def __init__(self, args, total_values):
        self.rng = np.random.default_rng(args.seed)
        self.std = args.std
        self.segment = min(args.segment, _POOL_SIZE)
        self.pooled = total_values > args.independent_limit
        if self.pooled:
            pool = to_bf16_bits(self.rng.standard_normal(_POOL_SIZE, dtype=np.float32) * self.std)
            # Doubled so that any segment starting in the first half is contiguous.
            doubled = np.concatenate([pool, pool])
            self.windows = np.lib.stride_tricks.sliding_window_view(doubled, self.segment)

    def weights(self, count):
        if not self.pooled:
            return to_bf16_bits(self.rng.standard_normal(count, dtype=np.float32) * self.std)
        segments = -(-count // self.segment)
        starts = self.rng.integers(0, _POOL_SIZE, size=segments)
        return self.windows[starts].reshape(-1)[:count]

    def norms(self, count):
        return to_bf16_bits(1.0 + self.rng.standard_normal(count, dtype=np.float32) * self.std)


def write_checkpoint(args):
    shapes = tensor_shapes(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as config_file:
        json.dump(config_json(args), config_file, indent=2)
        config_file.write("\n")
    header, data_bytes = safetensors_header(shapes)
    source = ValueSource(args, data_bytes // 2)
    path = os.path.join(args.out, "model.safetensors")
    with open(path, "wb") as out:
        out.write(len(header).to_bytes(8, "little"))
        out.write(header)
        for _, shape, kind in shapes:
            remaining = int(np.prod(shape))
            while remaining > 0:
                count = min(remaining, _CHUNK_ELEMENTS)
                chunk = source.weights(count) if kind == "weight" else source.norms(count)
                out.write(memoryview(np.ascontiguousarray(chunk)))
                remaining -= count
    return path, data_bytes, source.pooled


def main(argv):
    args = parse_args(argv)
    start = time.monotonic()
    path, data_bytes, pooled = write_checkpoint(args)
    parameters = data_bytes // 2
    print(f"wrote {path}: {parameters / 1e6:.1f}M parameters, {data_bytes / 1e9:.3f} GB bf16 "
          f"({'pooled segments' if pooled else 'independent draws'}), "
          f"{time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
