"""FedKSeed's messages in the versioned pollen.v1 protobuf formats (protos/pollen/v1/fedkseed.proto).

Up-link, `SeedPairs`: a client's per-step (seed index, g) pairs, in step order (Pro needs each |g|).
200 steps at K <= 65,536: 400 B of uint16 indices + 800 B of float32 + ~10 B of header.
Down-link, `SeedDownlink`: how a client brings its accumulator A from base_version to version, as
the per-round log, the changed entries' new values (`set`) or A entirely (`dense`, 4·K bytes);
`encode_downlink_smallest` sends whichever encodes smallest. Seed probabilities (Pro):
`SeedProbabilities`, K float32.

Every decoder treats its input as hostile, with the rules of the update message
(pollen/compression/wire.py): the wire bytes are scanned against a field budget before the
protobuf parser allocates anything (pollen/compression/wirescan.py), array lengths are checked
against K and the declared counts, indices must be in [0, K) (and strictly increasing where the
format says so), versions consecutive and within the run, values finite. Anything else raises a
one-line PayloadError naming the client and the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from pollen.compression._proto.pollen.v1 import fedkseed_pb2 as pb
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
from pollen.strategies.fedkseed.state import Downlink, SeedDelta, validate_pairs

FORMAT = pb.SEED_FORMAT_1
_F32 = np.dtype("<f4")
MAX_VERSION = 1 << 20  # versions grow by one per round; a receiver that knows the run passes its own
_HEAD = {1: Field("format_version", (VARINT,)), 2: Field("k", (VARINT,))}


def index_dtype(k: int) -> np.dtype:
    """uint16 indices when K <= 65,536, else uint32 (both sides know K)."""
    return np.dtype("<u2") if k <= 65536 else np.dtype("<u4")


# ---- budgets (wirescan) -------------------------------------------------------------------------
def _pairs_schema(k: int, max_pairs: int) -> dict[int, Field]:
    isz = index_dtype(k).itemsize
    return {**_HEAD, 3: Field("indices", (LEN,), max_len=isz * max_pairs),
            4: Field("values", (LEN,), max_len=4 * max_pairs)}


def _downlink_schema(k: int, max_rounds: int) -> dict[int, Field]:
    isz = index_dtype(k).itemsize
    arrays = {1: Field("indices", (LEN,), max_len=isz * k), 2: Field("values", (LEN,), max_len=4 * k)}
    round_ = {1: Field("version", (VARINT,)), 2: Field("indices", (LEN,), max_len=isz * k),
              3: Field("values", (LEN,), max_len=4 * k)}
    return {**_HEAD, 3: Field("base_version", (VARINT,)), 4: Field("version", (VARINT,)),
            5: Field("log", (LEN,), message={1: Field("rounds", (LEN,), max_count=max_rounds,
                                                      message=round_)}),
            6: Field("set", (LEN,), message=arrays),
            7: Field("dense", (LEN,), message={1: Field("values", (LEN,), max_len=4 * k)})}


def _probs_schema(k: int) -> dict[int, Field]:
    return {**_HEAD, 3: Field("values", (LEN,), max_len=4 * k)}


# ---- shared checks ------------------------------------------------------------------------------
def _parse(blob: object, msg: Any, schema: dict[int, Field], what: str,
           client: str | int | None) -> None:
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise PayloadError(f"payload must be bytes, got {type(blob).__name__}", client=client,
                           field="payload")
    try:
        scan(blob, schema)
    except ScanError as exc:
        raise PayloadError(f"not a pollen.v1 {what} within its limits ({exc})", client=client,
                           field=exc.path or "payload") from None
    try:
        msg.ParseFromString(bytes(blob))
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise PayloadError(f"not a pollen.v1 {what} ({exc})", client=client, field="payload") from None
    if msg.format_version != FORMAT:
        raise PayloadError(f"format version {msg.format_version} unsupported (this build reads "
                           f"{FORMAT})", client=client, field="format_version")


def _check_k(got: int, k: int, client: str | int | None) -> None:
    if got != k:
        raise PayloadError(f"message is for K={got}, this run has K={k}", client=client, field="k")


def _array(raw: bytes, dt: np.dtype, field: str, client: str | int | None) -> np.ndarray:
    if len(raw) % dt.itemsize:
        raise PayloadError(f"{len(raw)} bytes is not a whole number of {dt.itemsize}-byte entries",
                           client=client, field=field)
    return np.frombuffer(raw, dt)


def _indices(raw: bytes, k: int, field: str, client: str | int | None, *,
             increasing: bool) -> np.ndarray:
    idx = _array(raw, index_dtype(k), field, client).astype(np.int64)
    if idx.size and idx.max() >= k:
        raise PayloadError(f"seed index {int(idx.max())} >= K={k}", client=client, field=field)
    if increasing and idx.size > 1 and np.any(np.diff(idx) <= 0):
        raise PayloadError("indices must be strictly increasing", client=client, field=field)
    return idx


def _values(raw: bytes, n: int | None, field: str, client: str | int | None) -> np.ndarray:
    val = _array(raw, _F32, field, client)
    if n is not None and val.size != n:
        raise PayloadError(f"{val.size} values for {n} indices", client=client, field=field)
    if not np.all(np.isfinite(val)):
        raise PayloadError("non-finite value (NaN or Inf)", client=client, field=field)
    return val.astype(np.float32)


def _f32(values: np.ndarray, what: str) -> bytes:
    with np.errstate(over="ignore"):
        v = np.asarray(values, dtype=np.float64).astype(_F32)
    if not np.all(np.isfinite(v)):
        raise PayloadError(f"non-finite {what} (NaN, Inf or float32 overflow)", client="self",
                           field=what)
    return v.tobytes()


# ---- up-link: pairs -----------------------------------------------------------------------------
def encode_pairs(pairs: Sequence[tuple[int, float]], k: int) -> bytes:
    """Client -> server: the (seed index, g) pairs of one round (g rounded to float32)."""
    idx, val = validate_pairs(pairs, k, None, client="self")
    return pb.SeedPairs(format_version=FORMAT, k=k, indices=idx.astype(index_dtype(k)).tobytes(),
                        values=_f32(val, "value")).SerializeToString()


def decode_pairs(blob: bytes, k: int, max_pairs: int, client: str | int | None = None
                 ) -> list[tuple[int, float]]:
    """Server side: parse and validate one client's pairs (at most max_pairs = its local steps).

    Both arrays are bounded by max_pairs in the scan, before the parser allocates them.
    """
    msg = pb.SeedPairs()
    _parse(blob, msg, _pairs_schema(k, max_pairs), "SeedPairs", client)
    _check_k(msg.k, k, client)
    idx = _indices(msg.indices, k, "indices", client, increasing=False)
    val = _values(msg.values, idx.size, "values", client)
    return list(zip(idx.tolist(), val.astype(np.float64).tolist(), strict=True))


# ---- down-link ----------------------------------------------------------------------------------
def encode_downlink(down: Downlink, k: int) -> bytes:
    """Server -> client: one Downlink in the pollen.v1 SeedDownlink format."""
    idt = index_dtype(k)
    msg = pb.SeedDownlink(format_version=FORMAT, k=k, base_version=down.base_version,
                          version=down.version)
    if down.kind == "dense":
        assert down.values is not None and np.size(down.values) == k
        msg.dense.values = _f32(down.values, "values")
    elif down.kind == "set":
        assert down.indices is not None and down.values is not None
        msg.set.SetInParent()  # present even when nothing changed
        msg.set.indices = np.asarray(down.indices).astype(idt).tobytes()
        msg.set.values = _f32(down.values, "values")
    elif down.kind == "log":
        msg.log.SetInParent()
        for d in down.rounds:
            msg.log.rounds.add(version=d.version, indices=np.asarray(d.indices).astype(idt).tobytes(),
                               values=_f32(d.values, "values"))
    else:
        raise ValueError(f"unknown downlink kind {down.kind!r}")
    return msg.SerializeToString()


def encode_downlink_smallest(options: Sequence[Downlink], k: int) -> tuple[bytes, str]:
    """The smallest encoding among equivalent downlinks (e.g. SeedAccumulator.downlinks), and its kind."""
    blobs = [(encode_downlink(d, k), d.kind) for d in options]
    return min(blobs, key=lambda b: len(b[0]))


def decode_downlink(blob: bytes, k: int, client: str | int | None = "server",
                    max_version: int = MAX_VERSION) -> Downlink:
    """Client side: parse and validate a SeedDownlink.

    `max_version` (the run's rounds: the version grows by one per aggregated round) bounds every
    version and the number of logged rounds in the scan; every array is bounded by K, so memory
    stays within a constant times the message.
    """
    msg = pb.SeedDownlink()
    _parse(blob, msg, _downlink_schema(k, max_version), "SeedDownlink", client)
    _check_k(msg.k, k, client)
    base, version = int(msg.base_version), int(msg.version)
    if not base <= version <= max_version:
        raise PayloadError(f"versions {base}->{version} are not ordered within [0, {max_version}]",
                           client=client, field="version")
    kind = msg.WhichOneof("body")
    if kind == "dense":
        if base != 0:
            raise PayloadError(f"a dense accumulator has base_version 0, got {base}", client=client,
                               field="base_version")
        vals = _values(msg.dense.values, k, "dense.values", client)
        return Downlink("dense", 0, version, values=vals)
    if kind == "set":
        idx = _indices(msg.set.indices, k, "set.indices", client, increasing=True)
        return Downlink("set", base, version, indices=idx,
                        values=_values(msg.set.values, idx.size, "set.values", client))
    if kind == "log":
        rounds, at = [], base
        for i, r in enumerate(msg.log.rounds):
            where = f"log.rounds[{i}]"
            if r.version != at + 1:
                raise PayloadError(f"round version {r.version} does not follow {at}", client=client,
                                   field=f"{where}.version")
            idx = _indices(r.indices, k, f"{where}.indices", client, increasing=True)
            val = _values(r.values, idx.size, f"{where}.values", client)
            rounds.append(SeedDelta(at, at + 1, idx, val))
            at += 1
        if at != version:
            raise PayloadError(f"log ends at version {at}, message says {version}", client=client,
                               field="log")
        return Downlink("log", base, version, rounds=tuple(rounds))
    raise PayloadError("no body (log, set or dense)", client=client, field="body")


# ---- seed probabilities (Pro) -------------------------------------------------------------------
def encode_probabilities(p: np.ndarray) -> bytes:
    p = np.asarray(p, dtype=_F32).reshape(-1)
    return pb.SeedProbabilities(format_version=FORMAT, k=p.size, values=p.tobytes()).SerializeToString()


def decode_probabilities(blob: bytes, k: int, client: str | int | None = "server") -> np.ndarray:
    """Pro sampling distribution: K finite non-negative float32 summing to ~1."""
    msg = pb.SeedProbabilities()
    _parse(blob, msg, _probs_schema(k), "SeedProbabilities", client)
    _check_k(msg.k, k, client)
    p = _values(msg.values, k, "probs", client).astype(np.float64)
    if np.any(p < 0) or abs(p.sum() - 1.0) > 1e-3:
        raise PayloadError("probabilities must be >= 0 and sum to 1", client=client, field="probs")
    return p / p.sum()


# The reply contract the server screens every train reply against (pollen/server/inbound.py).
ZO_SEEDS: Contracts = {"train": ReplyContract(
    records={"fedkseed": Configs({"pairs": "bytes"}),
             "metrics": Metrics({"num-examples": COUNT, "model-version": INT, **CLIENT_TIMING},
                                optional={"partition-id": INT, "train_loss": NUMBER,
                                          "skipped": INT})})}


def reply_contract(cfg: Any) -> Contracts:
    return ZO_SEEDS
