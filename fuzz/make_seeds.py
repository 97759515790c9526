#!/usr/bin/env python3
"""Writes the committed seed corpora in fuzz/corpus/ from the test fixtures.

  python3 fuzz/make_seeds.py     # from the repository root; rewrites the generated seeds

safetensors_header_fuzzer: the real headers of the fixture checkpoints (tensor names, dtypes and
metadata as transformers writes them) with every tensor shrunk to a few elements so that a seed stays
small, plus hand-made valid and near-valid files (each one check away from acceptance).
model_config_fuzzer: every fixture config.json, plus near-valid edits of one.
request_validation_fuzzer: a few byte strings (FuzzedDataProvider input has no structure to seed).
Seeds added by hand for fixed crashes are named regression-* and are never overwritten.
"""
import hashlib
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2}


def write_seed(fuzzer, name, data):
    directory = CORPUS / fuzzer
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (directory / name).write_bytes(data)


def safetensors_file(tensors, metadata=None, pad=True, data=None):
    """tensors: list of (name, dtype, shape); offsets are laid out back to back."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape in tensors:
        count = 1
        for extent in shape:
            count *= extent
        size = count * DTYPE_BYTES.get(dtype, 4)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:  # the format's rule: pad the header with spaces so the data starts 8-byte aligned
        text += b" " * (-len(text) % 8)
    body = data if data is not None else bytes(offset)
    return struct.pack("<Q", len(text)) + text + body


def raw_file(header_text, data_bytes=0):
    text = header_text.encode()
    return struct.pack("<Q", len(text)) + text + bytes(data_bytes)


def safetensors_seeds():
    checkpoints = sorted((ROOT / "tests" / "fixtures" / "hf").glob("*/*.safetensors"))
    checkpoints.append(ROOT / "models" / "default" / "model.safetensors")
    seen = set()
    for path in checkpoints:
        if path.name.startswith("reference"):
            continue
        raw = path.read_bytes()
        (length,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + length])
        metadata = header.pop("__metadata__", None)
        # Shrink each tensor to its shape's rank with extents of 2 (3 for odd positions).
        tensors = [(name, entry["dtype"], [2 + (i % 2) for i, _ in enumerate(entry["shape"])])
                   for name, entry in header.items()]
        seed = safetensors_file(tensors, metadata)
        digest = hashlib.sha1(seed).hexdigest()[:8]
        if digest in seen:
            continue
        seen.add(digest)
        write_seed("safetensors_header_fuzzer", f"fixture-{path.parent.name}-{path.stem}", seed)

    valid = {
        "valid-all-dtypes": safetensors_file(
            [("a", "F32", [2, 2]), ("b", "F16", [3]), ("c", "BF16", [1, 1, 2])], {"format": "pt"}),
        "valid-scalar-and-empty": safetensors_file(
            [("scalar", "F32", []), ("empty", "F16", [0, 4]), ("x", "BF16", [2])]),
        "valid-empty-header": raw_file("{}"),
        "valid-unpadded-header": safetensors_file([("w", "BF16", [3])], pad=False),
    }
    near_valid = {
        "bad-truncated-prefix": b"\x10\x00\x00",
        "bad-length-past-end": struct.pack("<Q", 1 << 40) + b"{}",
        "bad-not-json": raw_file("{\"a\":"),
        "bad-not-object": raw_file("[1,2,3]"),
        "bad-dtype-i8": raw_file('{"a":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}}', 4),
        "bad-negative-dim": raw_file('{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', 4),
        "bad-shape-overflow": raw_file(
            '{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}', 4),
        "bad-byte-count": raw_file('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', 8),
        "bad-begin-after-end": raw_file('{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}', 4),
        "bad-past-data-end": raw_file('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 4),
        "bad-misaligned": raw_file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}', 8),
        "bad-overlap": raw_file('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                                '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', 16),
        "bad-offsets-not-pair": raw_file('{"a":{"dtype":"F16","shape":[1],"data_offsets":[0]}}', 2),
        "bad-entry-not-object": raw_file('{"a":7}'),
        "bad-nested-shape": raw_file('{"a":{"dtype":"F32","shape":[[[[1]]]],"data_offsets":[0,4]}}',
                                     4),
    }
    for name, data in {**valid, **near_valid}.items():
        write_seed("safetensors_header_fuzzer", name, data)


def config_seeds():
    configs = sorted((ROOT / "tests" / "fixtures" / "hf").glob("*/config.json"))
    configs.append(ROOT / "models" / "default" / "config.json")
    for path in configs:
        write_seed("model_config_fuzzer", f"fixture-{path.parent.name}.json", path.read_bytes())

    base = json.loads((ROOT / "tests" / "fixtures" / "hf" / "llama_gqa" / "config.json").read_text())

    def edited(**changes):
        config = dict(base)
        for key, value in changes.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        return json.dumps(config, indent=1)

    seeds = {
        "legacy-rope-scaling-linear.json": edited(
            rope_parameters=None, rope_theta=10000.0,
            rope_scaling={"type": "linear", "factor": 2.0}),
        "rope-parameters-default.json": edited(
            rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
        "eos-list.json": edited(eos_token_id=[1, 2, 3]),
        "no-head-dim.json": edited(head_dim=None),
        "mistral-sliding-window.json": edited(architectures=["MistralForCausalLM"],
                                              sliding_window=128),
        "bad-odd-head-dim.json": edited(head_dim=15),
        "bad-kv-heads.json": edited(num_key_value_heads=3),
        "bad-rope-type.json": edited(rope_parameters={"rope_type": "yarn", "factor": 4.0}),
        "bad-per-layer-rope.json": edited(rope_parameters={"full_attention": {"rope_theta": 1e4}}),
        "bad-bias.json": edited(attention_bias=True),
        "bad-activation.json": edited(hidden_act="gelu"),
        "bad-architecture.json": edited(architectures=["GPT2LMHeadModel"]),
        "bad-eos-outside-vocab.json": edited(eos_token_id=100000),
        "bad-not-object.json": "[]",
        "bad-truncated.json": edited()[:40],
    }
    for name, text in seeds.items():
        write_seed("model_config_fuzzer", name, text)


def request_seeds():
    # Bytes only steer FuzzedDataProvider; a few lengths and patterns are enough to start.
    write_seed("request_validation_fuzzer", "zeros-64", bytes(64))
    write_seed("request_validation_fuzzer", "ones-64", b"\x01" * 64)
    write_seed("request_validation_fuzzer", "ramp-256", bytes(range(256)))
    write_seed("request_validation_fuzzer", "ff-32", b"\xff" * 32)


if __name__ == "__main__":
    safetensors_seeds()
    config_seeds()
    request_seeds()
