"""Hostile inputs for every Pollen decoder: amplification payloads, valid corpora, mutations.

Shared by tests/security (memory and fuzz tests) and bench/fuzz_decoders.py (the long run).
`python -m tests.security.hostile NAME FILE` decodes FILE as amplification case NAME in a fresh
process and prints JSON: the exception type, its field and the peak RSS growth in MB.
"""

from __future__ import annotations

import json
import math
import random
import resource
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from pollen.compression import Codec, decode_update
from pollen.compression._proto.pollen.v1 import frl_pb2
from pollen.compression._proto.pollen.v1 import update_pb2 as pb
from pollen.compression.lossless import RICE
from pollen.errors import PayloadError

# ---- amplification payloads (sized against a 2 MB float32 model: 2^19 entries) ----------------
BIG = {"layers.0.q.lora_A": ((8, 1 << 15), "float32"), "layers.0.q.lora_B": ((1 << 15, 8), "float32")}
BIG_CODEC = Codec.parse("topz:0.5 > zstd")
BIG_N = sum(math.prod(s) for s, _ in BIG.values())
K, LOCAL_STEPS, ROUNDS = 4096, 200, 10
FRL_SIZES = {"fc1.weight": 1 << 20, "fc2.weight": 1000}


def _envelope(body: bytes, *, compress: bool = True, body_size: int | None = None,
              level: int = 19) -> bytes:
    msg = pb.Update(format_version=1, codec=BIG_CODEC.spec)
    msg.body_size = len(body) if body_size is None else body_size
    if compress:
        msg.compression.name = "zstd"
        msg.body = zstandard.ZstdCompressor(level=level).compress(body)
    else:
        msg.body = body
    return msg.SerializeToString()


def _headers(tl: pb.TensorList, nnz_total: int) -> None:
    for i, (name, (shape, _)) in enumerate(BIG.items()):
        tl.tensors.add(name=name, dtype=1, shape=shape, nnz=nnz_total // 2 if i == 0 else
                       nnz_total - nnz_total // 2)
    tl.stages.add(name="topz", args=["0.5"])


def rice_bomb() -> bytes:
    """The reported attack: a few hundred bytes whose Rice unary section (all zero bits inside
    zstd) is as large as the body bound allows; each zero bit was one int64 stop."""
    tl = pb.TensorList(index_coding=RICE, rice_k=0, value_coding=pb.VALUE_CODING_FLOAT32_SHUFFLED)
    _headers(tl, BIG_N // 2)
    tl.indices = bytes(7 * BIG_N)
    return _envelope(tl.SerializeToString())


def _frame_declaring(size: int) -> bytes:
    """A hand-made zstd frame: header with an 8-byte content size `size`, 1 KB window, then one
    empty last raw block (so every byte after the header is honest zstd)."""
    return b"\x28\xb5\x2f\xfd" + bytes([0xC0, 0x00]) + struct.pack("<Q", size) + b"\x01\x00\x00"


def zstd_declared_huge() -> bytes:
    """A zstd frame and a body_size both declaring 1 TB."""
    msg = pb.Update(format_version=1, body_size=1 << 40, body=_frame_declaring(1 << 40))
    msg.compression.name = "zstd"
    return msg.SerializeToString()


def zstd_lying_header() -> bytes:
    """A legitimate body_size (1 MB) around a frame declaring 1 TB."""
    msg = pb.Update(format_version=1, body_size=1 << 20, body=_frame_declaring(1 << 40))
    msg.compression.name = "zstd"
    return msg.SerializeToString()


def zstd_understated() -> bytes:
    """A frame without a content size (window 2 MB) that expands to 256 MB while body_size
    claims 4 MB, within the bound of the expected tensors."""
    cobj = zstandard.ZstdCompressor(level=3, write_content_size=False).compressobj()
    chunk = bytes(1 << 20)
    frame = b"".join(cobj.compress(chunk) for _ in range(256)) + cobj.flush()
    msg = pb.Update(format_version=1, body_size=8 * BIG_N, body=frame)
    msg.compression.name = "zstd"
    return msg.SerializeToString()


def zstd_big_window() -> bytes:
    """A hand-made frame asking for a 128 MB window (no content size) around a 4 KB RLE block."""
    block = ((4096 << 3) | (1 << 1) | 1).to_bytes(3, "little") + b"\x00"  # last, RLE
    frame = b"\x28\xb5\x2f\xfd" + bytes([0x00, 17 << 3]) + block
    msg = pb.Update(format_version=1, body_size=4096, body=frame)
    msg.compression.name = "zstd"
    return msg.SerializeToString()


def many_tensors() -> bytes:
    """A body of empty `tensors` entries (2 bytes each; upb spent ~96 bytes on each)."""
    return _envelope(b"\x0a\x00" * (2 * BIG_N))


def packed_shape() -> bytes:
    """One tensor whose packed `shape` holds millions of 1-byte varints (8 bytes each parsed)."""
    inner = b"\x01" * (4 * BIG_N)
    shape = b"\x1a" + _varint(len(inner)) + inner
    return _envelope(b"\x0a" + _varint(len(shape)) + shape)


def stage_args() -> bytes:
    """An envelope whose compression stage carries a million empty args."""
    args = b"\x12\x00" * (1 << 20)
    stage = b"\x0a\x04zstd" + args
    return b"\x08\x01\x1a" + _varint(len(stage)) + stage


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def fedkseed_pairs_count() -> bytes:
    """A SeedPairs whose `indices` field claims 2^62 bytes (a 14-byte message)."""
    return bytes([0x08, 0x01, 0x1A]) + _varint(1 << 62)


def fedkseed_deltas_sections() -> bytes:
    """A SeedDownlink log of 4,000 empty rounds (2 bytes each on the wire, an object each once
    parsed) where the run has ROUNDS rounds."""
    rounds = b"\x0a\x00" * 4000
    return bytes([0x08, 0x01, 0x2A]) + _varint(len(rounds)) + rounds


def frl_layers() -> bytes:
    """1000 empty layer entries (2 bytes each) in a ClientRanking that expects 2: upb would allocate
    a message object per entry; the field budget scan refuses the count first."""
    return b"\x08\x01" + b"\x12\x00" * 1000


def frl_ids() -> bytes:
    """The right layers, one claiming 2^64-1 edges of 64 bits (and no ids at all)."""
    msg = frl_pb2.ClientRanking(format_version=frl_pb2.FRL_FORMAT_VERSION_1)
    for i, name in enumerate(FRL_SIZES):
        n = (1 << 64) - 1 if i == 0 else FRL_SIZES[name]
        msg.layers.add(name=name, size=n, id_bits=64)
    return msg.SerializeToString()


def legit_big() -> bytes:
    """Control: an honest update of the full 2 MB model (the measurement must see its output)."""
    rng = np.random.default_rng(0)
    return BIG_CODEC.encode({k: rng.normal(size=s).astype(np.float32) for k, (s, _) in BIG.items()})


def _decode_pairs(blob: bytes) -> object:
    from pollen.strategies.fedkseed.wire import (
        decode_pairs,  # imports Flower and torch: only when needed
    )

    return decode_pairs(blob, K, LOCAL_STEPS, client="attacker")


def _decode_deltas(blob: bytes) -> object:
    from pollen.strategies.fedkseed.wire import decode_downlink

    return decode_downlink(blob, K, max_version=ROUNDS)


def _decode_frl(blob: bytes) -> object:
    from pollen.strategies.frl.wire import decode_rankings  # imports torch: only when needed

    return decode_rankings(blob, FRL_SIZES, client="attacker")


def _decode_big(blob: bytes) -> object:
    return decode_update(blob, expected=BIG, client="attacker", stages=BIG_CODEC.stages)


CONTROL = (legit_big, _decode_big)
AMPLIFIERS: dict[str, tuple[Callable[[], bytes], Callable[[bytes], object]]] = {
    "rice_bomb": (rice_bomb, _decode_big),
    "zstd_declared_huge": (zstd_declared_huge, _decode_big),
    "zstd_lying_header": (zstd_lying_header, _decode_big),
    "zstd_understated": (zstd_understated, _decode_big),
    "zstd_big_window": (zstd_big_window, _decode_big),
    "many_tensors": (many_tensors, _decode_big),
    "packed_shape": (packed_shape, _decode_big),
    "stage_args": (stage_args, _decode_big),
    "fedkseed_pairs_count": (fedkseed_pairs_count, _decode_pairs),
    "fedkseed_deltas_sections": (fedkseed_deltas_sections, _decode_deltas),
    "frl_layers": (frl_layers, _decode_frl),
    "frl_ids": (frl_ids, _decode_frl),
}


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        return _status_kb("VmHWM") / 1024
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak_rss() -> float:
    """Reset the peak to the current RSS (Linux clear_refs 5) and return the current RSS in MB.

    Without the reset, memory freed earlier (imports, the warm-up) hides later growth below the
    old high-water mark; growth is then measured from the current RSS, an upper bound."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmRSS") / 1024
    except (OSError, KeyError):
        return peak_rss_mb()


def measure(name: str, path: str) -> dict[str, Any]:
    """In this (fresh) process: warm the decoder up, then decode the payload at `path`."""
    _, decode = CONTROL if name == "legit_big" else AMPLIFIERS[name]
    warm = Codec.parse("topz:0.5 > zstd").encode({"w": np.ones(64, np.float32)})
    decode_update(warm, expected={"w": ((64,), "float32")})
    try:
        decode(b"")  # lazy imports (Flower, torch) happen here, not in the measurement
    except PayloadError:
        pass
    with open(path, "rb") as f:
        blob = f.read()
    before = reset_peak_rss()
    result: dict[str, Any] = {"bytes": len(blob)}
    try:
        decode(blob)
        result["error"] = None
    except PayloadError as exc:
        result.update(error="PayloadError", field=exc.field, message=str(exc))
    except Exception as exc:  # noqa: BLE001  (reported, and the test fails on it)
        result.update(error=type(exc).__name__, message=str(exc))
    result["growth_mb"] = round(peak_rss_mb() - before, 2)
    return result


# ---- valid corpora and the validity each decoder promises ---------------------------------------
SMALL = {"a.lora_A": ((4, 24), "float32"), "a.lora_B": ((24, 4), "float32"),
         "b.bias": ((7,), "float32")}
CODECS = ["none", "zstd", "fp16", "uniform:3", "topz:0.2 > kmeans:8 > zstd",
          "topz:0.1:global > uniform:5:stochastic > zstd", "ternary:1.5", "topz:0.3 > ternary:2:tensor",
          "topz:0.5 > fp16 > zstd", "kmeans:4:f32"]
SMALL_K, SMALL_STEPS, SMALL_ROUNDS = 300, 16, 6
SMALL_FRL = {"l1": 40, "l2": 1, "l3": 300}


@dataclass
class Target:
    """One decoder under fuzz: how to decode, and what any accepted value must satisfy."""

    name: str
    decode: Callable[[bytes], Any]
    valid: Callable[[Any], bool]
    corpus: list[tuple[bytes, Any]]  # (payload, what it must decode to)


def _small_update(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {k: (rng.standard_t(3, s) * 1e-2).astype(np.float32) for k, (s, _) in SMALL.items()}


def _update_ok(out: Any) -> bool:
    return (isinstance(out, dict) and set(out) == set(SMALL)
            and all(isinstance(v, np.ndarray) and v.dtype == np.float32
                    and v.shape == SMALL[k][0] and bool(np.isfinite(v).all())
                    for k, v in out.items()))


def _pairs_ok(out: Any) -> bool:
    return (isinstance(out, list) and len(out) <= SMALL_STEPS
            and all(0 <= i < SMALL_K and math.isfinite(g) for i, g in out))


def _downlink_view(d: Any) -> tuple:
    """A Downlink as plain (kind, base, version, [(indices, values) per section]) for comparison."""
    if d.kind == "log":
        sections = [(np.asarray(r.indices), np.asarray(r.values)) for r in d.rounds]
    elif d.kind == "set":
        sections = [(np.asarray(d.indices), np.asarray(d.values))]
    else:
        sections = [(np.arange(SMALL_K), np.asarray(d.values))]
    return (d.kind, d.base_version, d.version, sections)


def _downlink_ok(out: Any) -> bool:
    kind, base, version, sections = out
    if kind not in ("log", "set", "dense") or not 0 <= base <= version <= SMALL_ROUNDS:
        return False
    if kind == "dense" and (base != 0 or sections[0][1].shape != (SMALL_K,)):
        return False
    if kind == "log" and len(sections) != version - base:
        return False
    for idx, val in sections:
        if idx.shape != val.shape or val.dtype != np.float32 or not np.isfinite(val).all():
            return False
        if idx.size and (idx.min() < 0 or idx.max() >= SMALL_K or (np.diff(idx) <= 0).any()):
            return False
    return True


def _probs_ok(out: Any) -> bool:
    return (out.shape == (SMALL_K,) and bool(np.isfinite(out).all()) and bool((out >= 0).all())
            and abs(float(out.sum()) - 1.0) < 1e-6)


def _rankings_ok(out: Any) -> bool:
    return (list(out) == list(SMALL_FRL) and all(
        sorted(out[k].tolist()) == list(range(n)) for k, n in SMALL_FRL.items()))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "base_version"):  # a SeedDelta
        return (a.base_version, a.version) == (b.base_version, b.version) and _same(
            np.asarray(a.indices), np.asarray(b.indices)) and _same(np.asarray(a.values),
                                                                     np.asarray(b.values))
    if isinstance(a, tuple):
        return _same(list(a), list(b))
    if hasattr(a, "numpy"):
        a = a.numpy()
    if hasattr(b, "numpy"):
        b = b.numpy()
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def targets(seed: int = 0) -> list[Target]:
    """Every decoder with a small seeded corpus of valid payloads and their decoded values."""
    import torch

    from pollen.strategies.fedkseed.state import SeedAccumulator
    from pollen.strategies.fedkseed.wire import (
        decode_downlink,
        decode_pairs,
        decode_probabilities,
        encode_downlink,
        encode_pairs,
        encode_probabilities,
    )
    from pollen.strategies.frl.wire import decode_rankings, encode_rankings

    rng = np.random.default_rng(seed)
    out = []
    for spec in CODECS:
        codec = Codec.parse(spec)
        corpus = []
        for _ in range(3):
            blob, recon = codec.encode_with_reconstruction(_small_update(rng))
            corpus.append((blob, recon))

        def dec(b: bytes, stages: list = codec.stages) -> Any:
            return decode_update(b, expected=SMALL, max_bytes=1 << 20, client="fuzz",
                                 stages=stages)

        out.append(Target(f"update[{spec}]", dec, _update_ok, corpus))
    pairs = []
    for n in (0, 1, 2, SMALL_STEPS):
        p = [(int(i), float(g)) for i, g in zip(rng.integers(0, SMALL_K, n),
                                               rng.normal(size=n).astype(np.float32), strict=True)]
        pairs.append((encode_pairs(p, SMALL_K), p))
    out.append(Target("fedkseed.pairs", lambda b: decode_pairs(b, SMALL_K, SMALL_STEPS, "fuzz"),
                      _pairs_ok, pairs))
    downs = []
    acc = SeedAccumulator(SMALL_K, 1, 1e-3)
    for r in range(4):
        acc.aggregate([([(int(i), float(g)) for i, g in zip(
            rng.integers(0, SMALL_K, SMALL_STEPS), rng.normal(size=SMALL_STEPS), strict=True)], 3)])
        for base in sorted({0, max(0, acc.version - 2)}):
            for d in acc.downlinks(base):
                downs.append((encode_downlink(d, SMALL_K), _downlink_view(d)))
    out.append(Target("fedkseed.downlink",
                      lambda b: _downlink_view(decode_downlink(b, SMALL_K, "fuzz",
                                                               max_version=SMALL_ROUNDS)),
                      _downlink_ok, downs))
    probs = []
    for _ in range(3):
        p = rng.random(SMALL_K).astype(np.float32)
        p = (p / p.sum()).astype(np.float32)
        probs.append((encode_probabilities(p), p.astype(np.float64) / p.astype(np.float64).sum()))
    out.append(Target("fedkseed.probs", lambda b: decode_probabilities(b, SMALL_K, "fuzz"),
                      _probs_ok, probs))
    ranks = []
    for _ in range(3):
        r = {k: torch.from_numpy(rng.permutation(n)) for k, n in SMALL_FRL.items()}
        ranks.append((encode_rankings(r), r))
    out.append(Target("frl.rankings", lambda b: decode_rankings(b, SMALL_FRL, "fuzz"),
                      _rankings_ok, ranks))
    return out


def same(a: Any, b: Any) -> bool:
    """Decoded value equality (arrays exactly, dicts/lists/deltas element-wise)."""
    if isinstance(b, np.ndarray) and not isinstance(a, np.ndarray):
        return False
    return _same(a, b)


# ---- mutations ----------------------------------------------------------------------------------
def _bitflip(r: random.Random, b: bytes) -> bytes:
    if not b:
        return b"\x00"
    out = bytearray(b)
    for _ in range(r.randint(1, 8)):
        i = r.randrange(len(out))
        out[i] ^= 1 << r.randrange(8)
    return bytes(out)


def _truncate(r: random.Random, b: bytes) -> bytes:
    return b[: r.randrange(len(b))] if b else b


def _overwrite(r: random.Random, b: bytes) -> bytes:
    """Overwrite 1-8 bytes with random, 0x00 or 0xFF (length and count fields included)."""
    if not b:
        return bytes([r.randrange(256)])
    out = bytearray(b)
    i = r.randrange(len(out))
    n = r.randint(1, 8)
    fill = r.choice([lambda: r.randrange(256), lambda: 0, lambda: 0xFF])
    for j in range(i, min(len(out), i + n)):
        out[j] = fill()
    return bytes(out)


def _insert_delete(r: random.Random, b: bytes) -> bytes:
    i = r.randrange(len(b) + 1)
    if r.random() < 0.5 and b:
        return b[:i] + b[i + r.randint(1, 16):]
    return b[:i] + bytes(r.randrange(256) for _ in range(r.randint(1, 16))) + b[i:]


def _length_edit(r: random.Random, b: bytes) -> bytes:
    """Replace a byte run with a big integer in each of the encodings these formats use
    (protobuf varint, little/big-endian 16/32/64-bit)."""
    if not b:
        return b
    i = r.randrange(len(b))
    value = r.choice([0, 1, 2**7, 2**16 - 1, 2**31, 2**32 - 1, 2**40, 2**63, 2**64 - 1,
                      r.randrange(2**64)])
    enc = r.choice([_varint(value), struct.pack("<Q", value), struct.pack(">Q", value),
                    struct.pack("<I", value & 0xFFFFFFFF), struct.pack(">I", value & 0xFFFFFFFF),
                    struct.pack(">H", value & 0xFFFF), struct.pack("<H", value & 0xFFFF)])
    keep = len(enc) if r.random() < 0.7 else r.randint(0, len(enc))
    return b[:i] + enc + b[i + keep:]


def _splice(r: random.Random, b: bytes, other: bytes) -> bytes:
    return b[: r.randrange(len(b) + 1)] + other[r.randrange(len(other) + 1):]


def _inner(r: random.Random, b: bytes) -> bytes:
    """Mutate the TensorList inside an Update and re-wrap it with a correct body_size (and
    recompression), so mutations reach the section decoders instead of dying in zstd."""
    try:
        msg = pb.Update.FromString(b)
        raw = msg.body
        if msg.HasField("compression"):
            raw = zstandard.ZstdDecompressor().decompress(raw)
    except Exception:  # noqa: BLE001  (not an Update: mutate it as it is)
        return _bitflip(r, b)
    raw = r.choice([_bitflip, _overwrite, _length_edit, _insert_delete, _truncate])(r, raw)
    msg.body_size = len(raw)
    msg.body = zstandard.ZstdCompressor().compress(raw) if msg.HasField("compression") else raw
    return msg.SerializeToString()


MUTATIONS = {"bitflip": _bitflip, "truncate": _truncate, "overwrite": _overwrite,
             "insert_delete": _insert_delete, "length_edit": _length_edit}


def mutate(r: random.Random, target: Target) -> tuple[str, bytes]:
    """One mutated payload of `target` (kind, bytes); may by chance equal a valid payload."""
    blob, _ = r.choice(target.corpus)
    roll = r.random()
    if roll < 0.08:
        return "random", bytes(r.randrange(256) for _ in range(r.randint(0, 300)))
    if roll < 0.18:
        other, _ = r.choice(target.corpus)
        return "splice", _splice(r, blob, other)
    if target.name.startswith("update") and roll < 0.5:
        return "inner", _inner(r, blob)
    kind = r.choice(list(MUTATIONS))
    out = MUTATIONS[kind](r, blob)
    if r.random() < 0.2:  # stack a second mutation now and then
        out = MUTATIONS[r.choice(list(MUTATIONS))](r, out)
    return kind, out


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], sys.argv[2])))
