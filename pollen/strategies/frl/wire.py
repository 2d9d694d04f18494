"""Compact, validated wire format for FRL rankings: ⌈log₂ n⌉ bits per edge id instead of int64.

Layout (all integers big-endian):
    b"PFRL" | version u8 (=1) | n_layers u32
    per layer: name_len u16 | name utf-8 | n u64 | bits u8
    per layer, same order: ceil(n·bits / 8) bytes of MSB-first packed ids
Packing is byte-aligned per layer. A permutation could be coded in log₂(n!) bits (≈1.4 bits/edge less at
n ≈ 10⁶), but fixed-width ids decode with two numpy calls and are what spec §5.5 accounts for.
Anything received is untrusted: `decode_rankings` checks layout, sizes, ranges and the permutation property.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pollen.errors import PayloadError
from pollen.protocol.contracts import COUNT, INT, NUMBER, Configs, Contracts, Metrics, ReplyContract

MAGIC = b"PFRL"
# Where a ranking blob travels inside a Flower message: content[RECORD] is a ConfigRecord, [RANKING] bytes.
RECORD = "frl"
RANKING = "ranking"
VERSION = 1
_HEAD = struct.Struct(">4sBI")
_LAYER_FIXED = struct.Struct(">QB")


def bits_for(n: int) -> int:
    """Bits per id for a layer of n edges: ⌈log₂ n⌉ (0 for n = 1, whose only ranking is [0])."""
    return max(int(n) - 1, 0).bit_length()


_CHUNK = 1 << 16  # ids per packing step (a multiple of 8, so chunks stay byte-aligned); bounds scratch memory


def _pack(values: np.ndarray, bits: int) -> bytes:
    """MSB-first fixed-width packing: each id as 64 big-endian bits, keep the low `bits`, pack."""
    if bits == 0:
        return b""
    out = []
    for start in range(0, values.size, _CHUNK):
        words = values[start:start + _CHUNK].astype(">u8").view(np.uint8).reshape(-1, 8)
        out.append(np.packbits(np.unpackbits(words, axis=1)[:, 64 - bits:], axis=None).tobytes())
    return b"".join(out)


def _unpack(buf: bytes, n: int, bits: int) -> np.ndarray:
    """Inverse of `_pack`: left-pad each `bits`-wide field to 64 bits and view as big-endian u64."""
    if bits == 0:
        return np.zeros(n, dtype=np.int64)
    raw = np.frombuffer(buf, dtype=np.uint8)
    out = np.empty(n, dtype=np.int64)
    step = _CHUNK * bits // 8
    for c, start in enumerate(range(0, n, _CHUNK)):
        m = min(_CHUNK, n - start)
        fields = np.unpackbits(raw[c * step: c * step + (m * bits + 7) // 8], count=m * bits)
        padded = np.zeros((m, 64), dtype=np.uint8)
        padded[:, 64 - bits:] = fields.reshape(m, bits)
        out[start:start + m] = np.packbits(padded, axis=1).view(">u8").ravel().astype(np.int64)
    return out


def _check_permutation(ids: np.ndarray, n: int, client: str | int | None, layer: str) -> None:
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= n):
        raise PayloadError(f"ranking has ids outside 0..{n - 1}", client=client, field=layer)
    if ids.size != n or not bool((np.bincount(ids, minlength=n) == 1).all()):
        raise PayloadError("ranking is not a permutation (repeated or missing edge ids)",
                           client=client, field=layer)


def encode_rankings(rankings: Mapping[str, Tensor]) -> bytes:
    """Serialise per-layer rankings (permutations of 0..n-1) in the dict's order."""
    head = [_HEAD.pack(MAGIC, VERSION, len(rankings))]
    body: list[bytes] = []
    for name, r in rankings.items():
        ids = r.detach().cpu().flatten().to(torch.int64).numpy()
        n = ids.size
        _check_permutation(ids, n, None, name)
        raw = name.encode("utf-8")
        if len(raw) > 0xFFFF:
            raise PayloadError("layer name longer than 65535 bytes", field=name[:40])
        head.append(struct.pack(">H", len(raw)) + raw + _LAYER_FIXED.pack(n, bits_for(n)))
        body.append(_pack(ids, bits_for(n)))
    return b"".join(head + body)


def encoded_size(sizes: Mapping[str, int]) -> int:
    """Exact byte length `encode_rankings` produces for these layer names and sizes (no encoding needed)."""
    total = _HEAD.size
    for name, n in sizes.items():
        total += 2 + len(name.encode("utf-8")) + _LAYER_FIXED.size + (n * bits_for(n) + 7) // 8
    return total


def decode_rankings(blob: bytes, expected: Mapping[str, int], client: str | int | None = None
                    ) -> dict[str, Tensor]:
    """Parse and validate one client's rankings; any defect raises PayloadError naming client and layer.

    Memory: the layer count, every layer's length and the total byte length are checked against
    `expected` before a single id is unpacked (in fixed-size chunks), so a hostile header cannot
    make the receiver allocate more than the expected rankings need.
    """
    def fail(msg: str, layer: str | None = None) -> PayloadError:
        return PayloadError(msg, client=client, field=layer)

    if not isinstance(blob, bytes | bytearray | memoryview):
        raise fail(f"FRL payload must be bytes, got {type(blob).__name__}")
    view = memoryview(blob)
    if len(view) < _HEAD.size:
        raise fail(f"FRL payload truncated: {len(view)} bytes, header needs {_HEAD.size}")
    magic, version, n_layers = _HEAD.unpack_from(view, 0)
    if magic != MAGIC:
        raise fail(f"not an FRL ranking payload (magic {bytes(magic)!r})")
    if version != VERSION:
        raise fail(f"FRL payload version {version} unsupported (this build reads {VERSION})")
    if n_layers != len(expected):
        raise fail(f"FRL payload has {n_layers} layers, expected {len(expected)}")
    off, layers = _HEAD.size, []
    for _ in range(n_layers):
        if off + 2 > len(view):
            raise fail("FRL payload truncated inside the layer table")
        (name_len,) = struct.unpack_from(">H", view, off)
        end = off + 2 + name_len + _LAYER_FIXED.size
        if end > len(view):
            raise fail("FRL payload truncated inside the layer table")
        try:
            name = bytes(view[off + 2: off + 2 + name_len]).decode("utf-8")
        except UnicodeDecodeError:
            raise fail("FRL layer name is not valid UTF-8") from None
        n, bits = _LAYER_FIXED.unpack_from(view, off + 2 + name_len)
        if name not in expected:
            raise fail("unexpected layer in FRL payload", name[:80])
        if any(name == seen for seen, _, _ in layers):
            raise fail("layer appears twice in FRL payload", name)
        if n != expected[name] or bits != bits_for(n):
            raise fail(f"ranking length {n} ({bits} bits), expected {expected[name]} "
                       f"({bits_for(expected[name])} bits)", name)
        layers.append((name, n, bits))
        off = end
    need = off + sum((n * b + 7) // 8 for _, n, b in layers)
    if len(view) != need:
        word = "truncated" if len(view) < need else "oversized"
        raise fail(f"FRL payload {word}: {len(view)} bytes, layout needs {need}")
    out: dict[str, Tensor] = {}
    for name, n, bits in layers:
        nbytes = (n * bits + 7) // 8
        ids = _unpack(bytes(view[off: off + nbytes]), n, bits)
        off += nbytes
        _check_permutation(ids, n, client, name)
        out[name] = torch.from_numpy(ids)
    return {name: out[name] for name in expected}


# The reply contract the server screens every train reply against (pollen/server/inbound.py).
SUPERMASK: Contracts = {"train": ReplyContract(
    records={"frl": Configs({"ranking": "bytes"}),
             "metrics": Metrics({"num-examples": COUNT},
                                optional={"train_loss": NUMBER, "train_accuracy": NUMBER,
                                          "partition-id": INT})})}


def reply_contract(cfg: Any) -> Contracts:
    return SUPERMASK
