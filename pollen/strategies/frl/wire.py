"""FRL rankings on the wire: `pollen.v1.ClientRanking` up, `pollen.v1.GlobalRanking` down (protos/pollen/v1/frl.proto).

Each layer's ranking is a permutation of 0..n-1 sent as ⌈log₂ n⌉-bit ids, MSB-first, byte-aligned per
layer, inside a versioned protobuf that also states every layer's name, length and id width. A
permutation could be coded in log₂(n!) bits (≈1.4 bits/edge less at n ≈ 10⁶), but fixed-width ids
decode with two numpy calls and are what spec §5.5 accounts for.

Anything received is untrusted, and `decode_rankings` applies the update message's rules
(pollen/compression/wire.py): the payload length is bounded by what the expected layers need
before anything is parsed, the protobuf is scanned against a field budget before upb allocates,
every layer's name, length and width must match the expected ones before a single id is unpacked,
and each ranking must be a permutation (range check + one boolean "seen" pass). Any defect is one
PayloadError naming the client and the layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from google.protobuf.message import DecodeError
from torch import Tensor

from pollen.compression._proto.pollen.v1 import frl_pb2 as pb
from pollen.compression.wirescan import LEN, VARINT, Field, ScanError, scan
from pollen.errors import PayloadError
from pollen.protocol.contracts import (
    CLIENT_TIMING,
    COUNT,
    INT,
    NUMBER,
    Configs,
    Contracts,
    Metrics,
    ReplyContract,
)

# Where a ranking blob travels inside a Flower message: content[RECORD] is a ConfigRecord, [RANKING] bytes.
RECORD = "frl"
RANKING = "ranking"
VERSION = pb.FRL_FORMAT_VERSION_1
MAX_NAME = 4096  # bytes of a layer name (as for tensor names in pollen/compression/wire.py)

# up: a client's ranking (ClientRanking); down: the server's global ranking (GlobalRanking).
Direction = Literal["up", "down"]
_MESSAGES = {"up": (pb.ClientRanking, 2), "down": (pb.GlobalRanking, 3)}  # message, `layers` field number
_WHAT = {"up": "client ranking", "down": "global ranking"}


def bits_for(n: int) -> int:
    """Bits per id for a layer of n edges: ⌈log₂ n⌉ (0 for n = 1, whose only ranking is [0])."""
    return max(int(n) - 1, 0).bit_length()


def _id_bytes(n: int) -> int:
    return (n * bits_for(n) + 7) // 8


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
    """ids is a permutation of 0..n-1: n entries, all in range, every id seen (n bytes of scratch)."""
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= n):
        raise PayloadError(f"ranking has ids outside 0..{n - 1}", client=client, field=layer)
    seen = np.zeros(n, dtype=bool)
    seen[ids] = True
    if ids.size != n or not bool(seen.all()):
        raise PayloadError("ranking is not a permutation (repeated or missing edge ids)",
                           client=client, field=layer)


def encode_rankings(rankings: Mapping[str, Tensor], direction: Direction = "up") -> bytes:
    """Serialise per-layer rankings (permutations of 0..n-1) in the dict's order.

    direction "up" writes a ClientRanking (a client's reply), "down" a GlobalRanking (the broadcast).
    """
    cls, _ = _MESSAGES[direction]
    msg = cls(format_version=VERSION)
    for name, r in rankings.items():
        ids = r.detach().cpu().flatten().to(torch.int64).numpy()
        n = ids.size
        _check_permutation(ids, n, None, name)
        if len(name.encode("utf-8")) > MAX_NAME:
            raise PayloadError(f"layer name longer than {MAX_NAME} bytes", field=name[:40])
        msg.layers.add(name=name, size=n, id_bits=bits_for(n), ids=_pack(ids, bits_for(n)))
    return msg.SerializeToString()


def _varint_len(v: int) -> int:
    return max(1, (int(v).bit_length() + 6) // 7)


def _field_len(payload: int) -> int:
    """Bytes of one length-delimited field with a 1-byte tag and `payload` bytes."""
    return 1 + _varint_len(payload) + payload


def _layer_len(name: str, n: int) -> int:
    """Serialized LayerRanking size (proto3 omits zero scalars and empty strings/bytes)."""
    size = len(name.encode("utf-8"))
    total = _field_len(size) if size else 0
    total += 1 + _varint_len(n) if n else 0
    total += 1 + _varint_len(bits_for(n)) if bits_for(n) else 0
    total += _field_len(_id_bytes(n)) if _id_bytes(n) else 0
    return total


def encoded_size(sizes: Mapping[str, int]) -> int:
    """Exact byte length `encode_rankings` produces for these layer names and sizes (no encoding needed).

    The same in both directions: both messages use one-byte tags.
    """
    return 2 + sum(_field_len(_layer_len(name, n)) for name, n in sizes.items())


# Bytes a payload may exceed the expected size by and still be parsed, so that a layer a little off
# (e.g. one id too many) is reported by name; past the per-layer checks the size is exact anyway.
_SLACK = 1024


def _layer_schema(max_ids: int) -> dict[int, Field]:
    return {1: Field("name", (LEN,), max_len=MAX_NAME), 2: Field("size", (VARINT,)),
            3: Field("id_bits", (VARINT,)), 4: Field("ids", (LEN,), max_len=max_ids)}


def decode_rankings(blob: bytes, expected: Mapping[str, int], client: str | int | None = None,
                    direction: Direction = "up") -> dict[str, Tensor]:
    """Parse and validate one ClientRanking ("up") or GlobalRanking ("down"); any defect is a PayloadError.

    Memory: the payload length is checked against the size the expected layers encode to (plus a
    small slack), the protobuf against a field budget (at most one entry per expected layer, no
    field longer than the largest expected layer), and every layer's length and id width against
    `expected`, all before a single id is unpacked (in fixed-size chunks). A hostile payload
    therefore cannot make the receiver allocate more than the expected rankings need.
    """
    what = _WHAT[direction]

    def fail(msg: str, layer: str | None = None) -> PayloadError:
        return PayloadError(msg, client=client, field=layer)

    if not isinstance(blob, bytes | bytearray | memoryview):
        raise fail(f"FRL payload must be bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    need = encoded_size(expected)
    if len(blob) > need + _SLACK:
        raise fail(f"FRL payload oversized: {len(blob)} bytes, the expected {what} needs {need}")
    cls, layers_field = _MESSAGES[direction]
    schema = {1: Field("format_version", (VARINT,)),
              layers_field: Field("layers", (LEN,), max_count=len(expected),
                                  message=_layer_schema(_SLACK + max((_id_bytes(n) for n in
                                                                      expected.values()), default=0)))}
    try:
        scan(blob, schema)
    except ScanError as exc:
        raise fail(f"not a pollen.v1 {cls.__name__} ({exc})", exc.path or None) from None
    msg = cls()
    try:
        msg.ParseFromString(blob)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise fail(f"not a pollen.v1 {cls.__name__} ({exc})") from None
    if msg.format_version != VERSION:
        raise fail(f"FRL payload version {msg.format_version} unsupported (this build reads {VERSION})")
    if len(msg.layers) != len(expected):
        raise fail(f"FRL payload has {len(msg.layers)} layers, expected {len(expected)}")
    seen: set[str] = set()
    for layer in msg.layers:
        name = layer.name
        if name not in expected:
            raise fail("unexpected layer in FRL payload", name[:80])
        if name in seen:
            raise fail("layer appears twice in FRL payload", name)
        seen.add(name)
        n = expected[name]
        if layer.size != n or layer.id_bits != bits_for(n):
            raise fail(f"ranking length {layer.size} ({layer.id_bits} bits), expected {n} "
                       f"({bits_for(n)} bits)", name)
        if len(layer.ids) != _id_bytes(n):
            word = "truncated" if len(layer.ids) < _id_bytes(n) else "oversized"
            raise fail(f"FRL ranking {word}: {len(layer.ids)} bytes of ids, {n} ids of {bits_for(n)} "
                       f"bits need {_id_bytes(n)}", name)
    out: dict[str, Tensor] = {}
    for layer in msg.layers:
        n = expected[layer.name]
        ids = _unpack(layer.ids, n, bits_for(n))
        _check_permutation(ids, n, client, layer.name)
        out[layer.name] = torch.from_numpy(ids)
    return {name: out[name] for name in expected}


# The reply contract the server screens every train reply against (pollen/server/inbound.py).
SUPERMASK: Contracts = {"train": ReplyContract(
    records={"frl": Configs({"ranking": "bytes"}),
             "metrics": Metrics({"num-examples": COUNT, **CLIENT_TIMING},
                                optional={"train_loss": NUMBER, "train_accuracy": NUMBER,
                                          "partition-id": INT})})}


def reply_contract(cfg: Any) -> Contracts:
    return SUPERMASK
