"""Compact byte formats of FedKSeed messages, with validation of everything that arrives.

Up-link, a client's per-step pairs (kept individually and in step order: Pro needs each |g|):
    header "<BBI": format 1, flags, count; then count indices (uint16 if K <= 65536 else uint32),
    then count values (float32, or float16 on request). 200 steps: 6 + 200 * 6 = 1206 bytes.
Down-link, accumulator deltas (one merged delta, or several per-round deltas for exact replay):
    header "<BBH": format 1, flags, sections; per section "<III" base_version, version, count, then
    indices (strictly increasing) and values (float32 or float64).
Seed probabilities (Pro): header "<BI": format 1, K; then K float32.
flags: bit 0 = 32-bit indices; bits 1-2 = value type (0 float32, 1 float16, 2 float64).
Anything malformed raises PayloadError naming the client and the field.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from pollen.errors import PayloadError
from pollen.protocol.contracts import COUNT, INT, NUMBER, Configs, Contracts, Metrics, ReplyContract
from pollen.strategies.fedkseed.state import SeedDelta, validate_pairs

FORMAT = 1
_VALUE_TYPES = {"float32": (0, np.dtype("<f4")), "float16": (1, np.dtype("<f2")),
                "float64": (2, np.dtype("<f8"))}
_BY_CODE = {code: dt for code, dt in _VALUE_TYPES.values()}
_PAIRS_HDR, _DELTA_HDR, _SECTION, _PROBS_HDR = (struct.Struct(f) for f in ("<BBI", "<BBH", "<III", "<BI"))


def _index_dtype(k: int) -> np.dtype:
    return np.dtype("<u2") if k <= 65536 else np.dtype("<u4")


def _flags(k: int, value_dtype: str) -> tuple[int, np.dtype, np.dtype]:
    if value_dtype not in _VALUE_TYPES:
        raise ValueError(f"value_dtype must be one of {sorted(_VALUE_TYPES)}, got {value_dtype!r}")
    code, vdt = _VALUE_TYPES[value_dtype]
    idt = _index_dtype(k)
    return (1 if idt.itemsize == 4 else 0) | (code << 1), idt, vdt


def _read_flags(flags: int, k: int, client: str | int | None) -> tuple[np.dtype, np.dtype]:
    idt = _index_dtype(k)
    if (flags & 1) != (idt.itemsize == 4) or (flags >> 1) not in _BY_CODE:
        raise PayloadError(f"flags {flags:#x} do not match K={k} or name an unknown value type",
                           client=client, field="flags")
    return idt, _BY_CODE[flags >> 1]


def _bytes(blob: object, client: str | int | None) -> None:
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise PayloadError(f"payload must be bytes, got {type(blob).__name__}", client=client,
                           field="payload")


def _finite(values: np.ndarray, what: str, client: str | int | None) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):  # refused just below
        out = values.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise PayloadError(f"non-finite {what} (NaN, Inf or float16 overflow)", client=client,
                           field=what)
    return out


def encode_pairs(pairs: Sequence[tuple[int, float]], k: int, *, value_dtype: str = "float32") -> bytes:
    """Client -> server: the (seed index, g) pairs of one round."""
    flags, idt, vdt = _flags(k, value_dtype)
    idx, val = validate_pairs(pairs, k, None, client="self")
    with np.errstate(over="ignore"):
        v = val.astype(vdt)
    _finite(v, "value", "self")
    return _PAIRS_HDR.pack(FORMAT, flags, idx.size) + idx.astype(idt).tobytes() + v.tobytes()


def decode_pairs(blob: bytes, k: int, max_pairs: int, client: str | int | None = None
                 ) -> list[tuple[int, float]]:
    """Server side: parse and validate one client's pairs (at most max_pairs = its local steps).

    The count is checked against max_pairs and the exact byte length before anything is read.
    """
    _bytes(blob, client)
    if len(blob) < _PAIRS_HDR.size:
        raise PayloadError(f"{len(blob)} bytes is shorter than the header", client=client,
                           field="header")
    fmt, flags, count = _PAIRS_HDR.unpack_from(blob)
    if fmt != FORMAT:
        raise PayloadError(f"unknown format {fmt}", client=client, field="format")
    idt, vdt = _read_flags(flags, k, client)
    if count > max_pairs:
        raise PayloadError(f"{count} pairs for at most {max_pairs} local steps", client=client,
                           field="count")
    need = _PAIRS_HDR.size + count * (idt.itemsize + vdt.itemsize)
    if len(blob) != need:
        raise PayloadError(f"{len(blob)} bytes, expected {need} for {count} pairs", client=client,
                           field="length")
    idx = np.frombuffer(blob, idt, count, _PAIRS_HDR.size).astype(np.int64)
    val = _finite(np.frombuffer(blob, vdt, count, _PAIRS_HDR.size + count * idt.itemsize),
                  "value", client)
    if count and idx.max() >= k:
        raise PayloadError(f"seed index {int(idx.max())} >= K={k}", client=client, field="seed_index")
    return list(zip(idx.tolist(), val.tolist(), strict=True))


def encode_deltas(deltas: Sequence[SeedDelta], k: int, *, value_dtype: str = "float32") -> bytes:
    """Server -> client: consecutive accumulator deltas (per-round ones are float32, so exact)."""
    flags, idt, vdt = _flags(k, value_dtype)
    parts = [_DELTA_HDR.pack(FORMAT, flags, len(deltas))]
    for d in deltas:
        parts += [_SECTION.pack(d.base_version, d.version, d.indices.size),
                  np.asarray(d.indices).astype(idt).tobytes(), np.asarray(d.values).astype(vdt).tobytes()]
    return b"".join(parts)


def decode_deltas(blob: bytes, k: int, client: str | int | None = "server",
                  max_version: int | None = None) -> list[SeedDelta]:
    """Client side: parse deltas; checks ranges, ordering, finiteness and version continuity.

    `max_version` (the run's rounds: the version grows by one per aggregated round) bounds the
    section count and every version before any section is read; each section's count is at most
    K and must fit the message, so memory stays within a constant times the message.
    """
    _bytes(blob, client)
    if len(blob) < _DELTA_HDR.size:
        raise PayloadError("message shorter than its header", client=client, field="header")
    fmt, flags, n_sections = _DELTA_HDR.unpack_from(blob)
    if fmt != FORMAT:
        raise PayloadError(f"unknown format {fmt}", client=client, field="format")
    idt, vdt = _read_flags(flags, k, client)
    if max_version is not None and n_sections > max_version:
        raise PayloadError(f"{n_sections} sections, but versions stop at {max_version}",
                           client=client, field="sections")
    pos, out = _DELTA_HDR.size, []
    for s in range(n_sections):
        if len(blob) < pos + _SECTION.size:
            raise PayloadError(f"truncated in section {s} header", client=client, field="length")
        base, version, count = _SECTION.unpack_from(blob, pos)
        pos += _SECTION.size
        end = pos + count * (idt.itemsize + vdt.itemsize)
        if count > k or len(blob) < end:
            raise PayloadError(f"section {s}: {count} entries do not fit K={k} or the message",
                               client=client, field="length")
        if max_version is not None and version > max_version:
            raise PayloadError(f"section {s}: version {version} beyond {max_version}",
                               client=client, field="version")
        if base >= version or (out and out[-1].version != base):
            raise PayloadError(f"section {s}: versions {base}->{version} are not consecutive",
                               client=client, field="version")
        idx = np.frombuffer(blob, idt, count, pos).astype(np.int64)
        val = _finite(np.frombuffer(blob, vdt, count, pos + count * idt.itemsize), "value", client)
        if count and (idx.max() >= k or np.any(np.diff(idx) <= 0)):
            raise PayloadError(f"section {s}: indices must be increasing and < K={k}", client=client,
                               field="seed_index")
        out.append(SeedDelta(base, version, idx, val.astype(np.float64 if vdt.itemsize == 8 else np.float32)))
        pos = end
    if pos != len(blob):
        raise PayloadError(f"{len(blob) - pos} trailing bytes", client=client, field="length")
    return out


def encode_accumulator_delta(indices: np.ndarray, values: np.ndarray, k: int, *, base_version: int,
                             version: int, value_dtype: str = "float32") -> bytes:
    """One merged delta (e.g. SeedAccumulator.delta_since) as a one-section message."""
    d = SeedDelta(base_version, version, np.asarray(indices, np.int64), np.asarray(values))
    return encode_deltas([d], k, value_dtype=value_dtype)


def encode_probabilities(p: np.ndarray) -> bytes:
    p = np.asarray(p, dtype="<f4").reshape(-1)
    return _PROBS_HDR.pack(FORMAT, p.size) + p.tobytes()


def decode_probabilities(blob: bytes, k: int, client: str | int | None = "server") -> np.ndarray:
    """Pro sampling distribution: K finite non-negative float32 summing to ~1."""
    _bytes(blob, client)
    if len(blob) != _PROBS_HDR.size + 4 * k or _PROBS_HDR.unpack_from(blob) != (FORMAT, k):
        raise PayloadError(f"expected format {FORMAT} with K={k} probabilities", client=client,
                           field="probs")
    with np.errstate(invalid="ignore"):  # NaN payload bits; refused just below
        p = np.frombuffer(blob, "<f4", k, _PROBS_HDR.size).astype(np.float64)
    if not np.all(np.isfinite(p)) or np.any(p < 0) or abs(p.sum() - 1.0) > 1e-3:
        raise PayloadError("probabilities must be finite, >= 0 and sum to 1", client=client,
                           field="probs")
    return p / p.sum()


# The reply contract the server screens every train reply against (pollen/server/inbound.py).
ZO_SEEDS: Contracts = {"train": ReplyContract(
    records={"fedkseed": Configs({"pairs": "bytes"}),
             "metrics": Metrics({"num-examples": COUNT, "model-version": INT},
                                optional={"partition-id": INT, "train_loss": NUMBER,
                                          "skipped": INT})})}


def reply_contract(cfg: Any) -> Contracts:
    return ZO_SEEDS
