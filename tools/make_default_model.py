#!/usr/bin/env python3
"""Writes the embedded default checkpoint models/default/: a small random LlamaForCausalLM.

It is a placeholder that lets the server, the client and the benchmarks run end to end without a
download; its outputs are meaningless. Replace the folder with a trained Llama-family checkpoint
(config.json + safetensors) to serve a real model.

Shape: hidden 256, 4 layers, 8 query heads / 2 KV heads with head_dim 64 (the CUDA kernels' fast
path), SwiGLU intermediate 688, vocab 512, 2048 positions, weights stored as bfloat16 (~7 MB).

Run with the reference venv:  /opt/hfref/bin/python tools/make_default_model.py
"""

import argparse
import json
import pathlib
import shutil

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SEED = 20261124


def main():
  root = pathlib.Path(__file__).resolve().parent.parent
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=str(root / "models" / "default"))
  args = parser.parse_args()
  out = pathlib.Path(args.out)

  torch.manual_seed(SEED)
  config = LlamaConfig(
      hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
      num_key_value_heads=2, head_dim=64, vocab_size=512, max_position_embeddings=2048,
      rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
      bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
      # Larger than the 0.02 default so logits are spread out and greedy decoding is not a near-tie.
      initializer_range=0.08)
  model = LlamaForCausalLM(config).to(torch.bfloat16)

  readme = out / "README.md"
  kept_readme = readme.read_text() if readme.exists() else None
  if out.exists():
    shutil.rmtree(out)
  model.save_pretrained(out, safe_serialization=True)
  if kept_readme is not None:
    readme.write_text(kept_readme)
  (out / "generation_config.json").unlink(missing_ok=True)  # decoding settings come from requests
  size = sum(f.stat().st_size for f in out.iterdir())
  print(f"wrote {out} ({size / 1e6:.1f} MB): {json.loads((out / 'config.json').read_text())['architectures']}")


if __name__ == "__main__":
  main()
