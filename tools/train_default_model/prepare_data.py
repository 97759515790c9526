#!/usr/bin/env python3
"""Builds the training corpus and the sentencepiece tokenizer for the default model.

Reads Debian's `fortunes` package (/usr/share/games/fortunes: one quotation per record, records separated
by lines holding a single '%'), keeps the plain-text records, and writes:
  OUT/corpus.txt       one record per line, inner newlines folded to spaces (sentencepiece trains on lines)
  OUT/records.jsonl    the records with their newlines kept: the model's training text (the tokenizer's
                       byte fallback encodes a newline as the byte token <0x0A>)
  OUT/tokenizer.model  a sentencepiece BPE model trained on the corpus with Debian's spm_train
"""
import argparse
import json
import pathlib
import random
import subprocess

FORTUNE_DIR = pathlib.Path("/usr/share/games/fortunes")


def read_records(directory: pathlib.Path) -> list[str]:
    records = []
    for path in sorted(directory.iterdir()):
        # The .dat files are binary indexes and the .u8 names are symlinks to the same text.
        if path.suffix in (".dat", ".u8") or path.is_symlink() or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for record in text.split("\n%\n"):
            record = record.strip("\n")
            # Skip ASCII art and very long records: they teach layout, not language.
            if not record or len(record) > 1200 or path.name in ("ascii-art", "art"):
                continue
            records.append(record)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--vocab-size", type=int, default=4096)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    records = read_records(FORTUNE_DIR)
    random.Random(0).shuffle(records)
    with open(args.out / "records.jsonl", "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    with open(args.out / "corpus.txt", "w", encoding="utf-8") as f:
        for record in records:
            f.write(" ".join(record.split()) + "\n")
    print(f"{len(records)} records, {sum(map(len, records))} characters")

    subprocess.run(
        [
            "spm_train",
            f"--input={args.out / 'corpus.txt'}",
            f"--model_prefix={args.out / 'tokenizer'}",
            f"--vocab_size={args.vocab_size}",
            "--model_type=bpe",
            "--character_coverage=1.0",
            "--byte_fallback=true",  # any UTF-8 input stays encodable
            "--unk_id=0", "--bos_id=1", "--eos_id=2", "--pad_id=-1",
            "--max_sentence_length=4096",
            # Keep newlines and runs of spaces: fortunes are laid out in lines (poems, "-- Author").
            "--normalization_rule_name=identity",
            "--remove_extra_whitespaces=false",
            "--num_threads=2",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


if __name__ == "__main__":
    main()
