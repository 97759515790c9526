#!/usr/bin/env python3
"""Trains the server's default model: a small Llama (transformers LlamaForCausalLM) on Debian's fortunes.

Runs on the GPU machine (torch + transformers are there) in one call of a few minutes. Inputs come from
prepare_data.py (records.jsonl, tokenizer.model); outputs, written to --out: config.json,
model.safetensors (bf16), generation_config.json, tokenizer.model, training_log.json (loss per step,
validation loss) and loss_curve.png.
"""
import argparse
import json
import math
import pathlib
import shutil
import time

import sentencepiece as spm
import torch
from transformers import LlamaConfig, LlamaForCausalLM


def load_token_stream(records_path: pathlib.Path, sp: spm.SentencePieceProcessor) -> torch.Tensor:
    ids: list[int] = []
    with open(records_path, encoding="utf-8") as f:
        for line in f:
            ids.append(sp.bos_id())
            ids.extend(sp.encode(json.loads(line)))
            ids.append(sp.eos_id())
    return torch.tensor(ids, dtype=torch.long)


def random_windows(stream: torch.Tensor, batch: int, length: int, generator: torch.Generator):
    starts = torch.randint(0, stream.numel() - length - 1, (batch,), generator=generator)
    offsets = torch.arange(length + 1)
    return stream[starts[:, None] + offsets[None, :]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--eval-every", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(0)
    device = args.device

    sp = spm.SentencePieceProcessor(model_file=str(args.data / "tokenizer.model"))
    stream = load_token_stream(args.data / "records.jsonl", sp)
    split = int(stream.numel() * 0.98)
    train_stream, valid_stream = stream[:split], stream[split:]
    print(f"tokens: {stream.numel()} (train {train_stream.numel()}, valid {valid_stream.numel()})")

    config = LlamaConfig(
        vocab_size=sp.get_piece_size(),
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=sp.bos_id(),
        eos_token_id=sp.eos_id(),
        attention_dropout=0.0,
    )
    model = LlamaForCausalLM(config).to(device)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"parameters: {parameters}")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), fused=(device == "cuda"))
    warmup = 100

    def learning_rate(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return 0.05 * args.lr + 0.95 * args.lr * 0.5 * (1 + math.cos(math.pi * progress))

    generator = torch.Generator().manual_seed(0)
    log = {"steps": [], "loss": [], "valid_steps": [], "valid_loss": []}

    def validation_loss() -> float:
        model.eval()
        losses = []
        g = torch.Generator().manual_seed(1)
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
            for _ in range(8):
                window = random_windows(valid_stream, args.batch, args.context, g).to(device)
                logits = model(input_ids=window[:, :-1]).logits.float()
                losses.append(torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)), window[:, 1:].reshape(-1)).item())
        model.train()
        return sum(losses) / len(losses)

    best_valid, best_step, best_state = float("inf"), -1, None
    start = time.time()
    model.train()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        window = random_windows(train_stream, args.batch, args.context, generator).to(device)
        inputs, targets = window[:, :-1], window[:, 1:]
        with torch.autocast(device, dtype=torch.bfloat16):
            logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 20 == 0 or step == args.steps - 1:
            log["steps"].append(step)
            log["loss"].append(loss.item())
        if step % args.eval_every == 0 or step == args.steps - 1:
            log["valid_steps"].append(step)
            log["valid_loss"].append(validation_loss())
            # 0.8M tokens is little data for this size: keep the weights with the best validation loss
            # (early stopping) rather than the last, memorising ones.
            if log["valid_loss"][-1] < best_valid:
                best_valid, best_step = log["valid_loss"][-1], step
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            print(f"step {step:5d}  loss {loss.item():.3f}  valid {log['valid_loss'][-1]:.3f}  "
                  f"{time.time() - start:.0f}s", flush=True)
    log["seconds"] = time.time() - start
    log["best_step"], log["best_valid_loss"] = best_step, best_valid
    model.load_state_dict(best_state)
    print(f"keeping step {best_step}: validation loss {best_valid:.3f}")
    log["parameters"] = parameters
    log["tokens_seen"] = args.steps * args.batch * args.context
    log["train_tokens"] = int(train_stream.numel())

    args.out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(args.out, safe_serialization=True)
    shutil.copy(args.data / "tokenizer.model", args.out / "tokenizer.model")
    with open(args.out / "training_log.json", "w") as f:
        json.dump(log, f)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.figure(figsize=(6, 4))
    plt.plot(log["steps"], log["loss"], label="train (batch)")
    plt.plot(log["valid_steps"], log["valid_loss"], "o-", label="validation")
    plt.axvline(best_step, color="gray", linestyle="--", label=f"kept (step {best_step})")
    plt.xlabel("step")
    plt.ylabel("cross-entropy (nats/token)")
    plt.title(f"default model: {parameters / 1e6:.1f}M params on fortunes")
    plt.legend()
    plt.grid(alpha=0.3)
    plt.tight_layout()
    plt.savefig(args.out / "loss_curve.png", dpi=100)

    model.eval()
    for prompt in ["The meaning of life is", "A computer", "Q: Why"]:
        ids = torch.tensor([[sp.bos_id()] + sp.encode(prompt)], device=device)
        out = model.generate(ids, max_new_tokens=48, do_sample=False)
        print(repr(sp.decode(out[0, 1:].tolist())))


if __name__ == "__main__":
    main()
