"""pollen.v1 wire format: pack a Batch into an Update message, and decode + validate one.

Decoding treats every byte as hostile: sizes are bounded before anything is allocated or
decompressed, and every failure is a PayloadError naming the client and the offending field
(``tensors[NAME].FIELD`` when it concerns one tensor).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from google.protobuf.message import DecodeError

from pollen.compression import lossless
from pollen.compression._proto.pollen.v1 import update_pb2 as pb
from pollen.compression.batch import DTYPES, Batch, tensor_of
from pollen.compression.stage import STAGES, Kind, Stage, WireError, check_composition
from pollen.compression.wirescan import I32, LEN, VARINT, Field, ScanError, scan
from pollen.errors import ConfigError, PayloadError, UnknownNameError

FORMAT_VERSION = pb.FORMAT_VERSION_1
DEFAULT_MAX_BYTES = 256 << 20  # wire bytes accepted from one client
DEFAULT_MAX_DECODED_BYTES = 1 << 30  # decoded float32 bytes when no expected shapes are given
MAX_NDIM = 32
MAX_CODEBOOK = 4096
MAX_TENSORS = 1 << 16  # without `expected` (with it, exactly the expected names)
_DTYPE_TO_PB = {name: i + 1 for i, name in enumerate(DTYPES)}
_PB_TO_DTYPE = {v: k for k, v in _DTYPE_TO_PB.items()}
MAX_NAME = 4096  # bytes of a tensor name or of the informational codec string
ENVELOPE_SLACK = 1 << 16  # envelope bytes around the body: codec string, stage, sizes

# Field budgets of the schema in protos/pollen/v1/update.proto (see wirescan: upb allocates per
# element, so nothing is parsed before the wire bytes are known to fit these).
_STAGE = {1: Field("name", (LEN,), max_len=64), 2: Field("args", (LEN,), max_count=8, max_len=64)}
_TENSOR = {
    1: Field("name", (LEN,), max_len=MAX_NAME),
    2: Field("dtype", (VARINT,)),
    3: Field("shape", (LEN, VARINT), max_count=MAX_NDIM, max_len=10 * MAX_NDIM),
    4: Field("nnz", (VARINT,)),
    5: Field("codebook", (LEN, I32), max_count=MAX_CODEBOOK, max_len=4 * MAX_CODEBOOK),
    6: Field("scale", (I32,)),
    7: Field("offset", (I32,)),
    8: Field("codebook_bf16", (LEN,), max_len=2 * MAX_CODEBOOK),
}
_UPDATE = {
    1: Field("format_version", (VARINT,)),
    2: Field("codec", (LEN,), max_len=MAX_NAME),
    3: Field("compression", (LEN,), message=_STAGE),
    4: Field("body_size", (VARINT,)),
    5: Field("body", (LEN,)),
}


def _tensor_list_schema(max_tensors: int) -> dict[int, Field]:
    return {
        1: Field("tensors", (LEN,), max_count=max_tensors, message=_TENSOR),
        2: Field("stages", (LEN,), max_count=4, message=_STAGE),
        3: Field("index_coding", (VARINT,)),
        4: Field("rice_k", (VARINT,)),
        5: Field("indices", (LEN,)),
        6: Field("value_coding", (VARINT,)),
        7: Field("code_bits", (VARINT,)),
        8: Field("values", (LEN,)),
    }

Expected = Mapping[str, tuple[Sequence[int], str]]


# ---- encode -----------------------------------------------------------------------------------
def _book_slices(batch: Batch) -> list[bytes] | list[list[float]] | None:
    """Per-tensor codebooks: bfloat16 bytes when every entry is exactly representable."""
    if batch.codebook is None or batch.book_sizes is None:
        return None
    ends = np.cumsum(batch.book_sizes).tolist()
    starts = [0, *ends][:-1]
    bits = batch.codebook.astype(np.float32).view(np.uint32)
    if not (bits & 0xFFFF).any():
        half = (bits >> 16).astype("<u2").tobytes()
        return [half[2 * a : 2 * b] for a, b in zip(starts, ends, strict=True)]
    flat = batch.codebook.tolist()
    return [flat[a:b] for a, b in zip(starts, ends, strict=True)]


def pack_update(batch: Batch, stages: Sequence[Stage], codec_spec: str,
                lossless_stage: Stage | None) -> bytes:
    """Serialize a fully encoded batch (generic: whatever sections the stages set)."""
    body = pb.TensorList(stages=[pb.Stage(name=s.name, args=s.args()) for s in stages])
    counts = batch.counts().tolist()
    scale = batch.scale.tolist() if batch.scale is not None else None
    offset = batch.offset.tolist() if batch.offset is not None else None
    books = _book_slices(batch)
    add = body.tensors.add
    for i, (name, shape, dtype) in enumerate(zip(batch.names, batch.shapes, batch.dtypes,
                                                 strict=True)):
        t = add(name=name, dtype=_DTYPE_TO_PB[dtype], shape=shape, nnz=counts[i])
        if books is not None:
            if isinstance(books[i], bytes):
                t.codebook_bf16 = books[i]
            else:
                t.codebook.extend(books[i])
        if scale is not None:
            t.scale = scale[i]
        if offset is not None:
            t.offset = offset[i]
    if batch.positions is not None:
        body.index_coding, body.indices, body.rice_k = lossless.encode_indices(
            batch.positions, batch.total)
    if batch.codes is not None:
        body.value_coding, body.code_bits = pb.VALUE_CODING_CODES, batch.code_bits
        body.values = lossless.pack_codes(batch.codes, batch.code_bits)
    else:
        assert batch.values is not None
        body.value_coding = (pb.VALUE_CODING_FLOAT32_SHUFFLED if batch.shuffle
                             else pb.VALUE_CODING_FLOAT32)
        body.values = lossless.pack_floats(batch.values, batch.shuffle)
    raw = body.SerializeToString()
    msg = pb.Update(format_version=FORMAT_VERSION, codec=codec_spec, body_size=len(raw))
    if lossless_stage is None:
        msg.body = raw
    else:
        msg.compression.name = lossless_stage.name
        msg.compression.args.extend(lossless_stage.args())
        msg.body = lossless_stage.compress(raw)
    return msg.SerializeToString()


# ---- decode -----------------------------------------------------------------------------------
def decode_update(
    blob: bytes,
    expected: Expected | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_decoded_bytes: int | None = None,
    client: str | int | None = None,
    stages: Sequence[Stage] | None = None,
) -> dict[str, np.ndarray]:
    """Decode one pollen.v1 Update into float32 arrays, or raise PayloadError.

    `expected` maps each tensor name to (shape, dtype name); with it, names, shapes and dtypes
    must match exactly and it also bounds the payload, decompression and every section. Without
    it, decoded tensors may total at most `max_decoded_bytes` of float32 (default 1 GiB; with
    `expected`, no limit unless given). `max_bytes` caps the payload itself. `stages`, when
    given, is the codec the receiver configured (all stages, lossless included): a payload
    produced by any other chain is refused before it is decompressed.

    Memory: nothing is allocated beyond a small constant times the largest legitimate body for
    `expected` (8 bytes per entry: uint32 positions + float32 values, plus codebooks).
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise PayloadError(f"payload must be bytes, got {type(blob).__name__}",
                           client=client, field="payload")
    if len(blob) > max_bytes:
        raise PayloadError(f"payload of {len(blob)} bytes exceeds the limit of {max_bytes}",
                           client=client, field="payload")
    limit = max_decoded_bytes
    if limit is None and expected is None:
        limit = DEFAULT_MAX_DECODED_BYTES
    bound = _body_bound(expected, limit)
    largest = bound + bound // 128 + ENVELOPE_SLACK  # a lossless coder may expand a little
    if expected is not None and len(blob) > largest:
        raise PayloadError(f"payload of {len(blob)} bytes exceeds the {largest} that the expected "
                           "tensors can need", client=client, field="payload")
    max_tensors = len(expected) if expected is not None else MAX_TENSORS
    body = _open(bytes(blob), bound, client, stages, max_tensors)
    batch = _headers(body, expected, limit, client)
    return batch.split(_sections(body, batch, client, stages))


def _fail(message: str, field: str, client: object) -> PayloadError:
    return PayloadError(message, client=client, field=field)  # type: ignore[arg-type]


def _body_bound(expected: Expected | None, limit: int | None) -> int:
    """Largest legitimate TensorList: uint32 positions + float32 values + per-tensor headers."""
    bound = 1 << 62
    if expected is not None:
        bound = sum(8 * math.prod(s) + 4 * MAX_CODEBOOK + len(n) + 64 * len(s) + 128
                    for n, (s, _) in expected.items()) + 4096
    if limit is not None:
        bound = min(bound, 2 * limit + (1 << 20))
    return bound


def _stage_from_wire(name: str, args: Sequence[str], client: object, field: str) -> Stage:
    try:
        return STAGES.get(name)(*args)
    except UnknownNameError:
        raise _fail(f"unknown codec stage {name!r}", field, client) from None
    except ConfigError as exc:
        raise _fail(str(exc), field, client) from None


def _wire_chain(items: Sequence[pb.Stage]) -> list[tuple[str, list[str]]]:
    return [(s.name, list(s.args)) for s in items]


def _chain(stages: Sequence[Stage]) -> list[tuple[str, list[str]]]:
    return [(s.name, s.args()) for s in stages]


def _spec(chain: Sequence[tuple[str, list[str]]]) -> str:
    return " > ".join(":".join([n, *a]) for n, a in chain) or "none"


def _open(blob: bytes, bound: int, client: object, stages: Sequence[Stage] | None,
          max_tensors: int) -> pb.TensorList:
    """Parse the envelope, check the version and decompress the body within `bound` bytes."""
    msg = pb.Update()
    try:
        scan(blob, _UPDATE)
    except ScanError as exc:
        raise _fail(f"not a pollen.v1 Update message ({exc})", exc.path or "payload",
                    client) from None
    try:
        msg.ParseFromString(blob)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise _fail(f"not a pollen.v1 Update message ({exc})", "payload", client) from None
    if msg.format_version != FORMAT_VERSION:
        raise _fail(f"format version {msg.format_version} unsupported (this build reads "
                    f"{FORMAT_VERSION})", "format_version", client)
    if msg.body_size > bound:
        raise _fail(f"declared body of {msg.body_size} bytes exceeds the bound {bound} for the "
                    "expected tensors (decompression bomb?)", "body_size", client)
    body = msg.body
    if stages is not None:
        want = _chain([s for s in stages if s.kind == Kind.LOSSLESS])
        got = _wire_chain([msg.compression] if msg.HasField("compression") else [])
        if got != want:
            raise _fail(f"compressed with {_spec(got)!r}, but this run's codec uses "
                        f"{_spec(want)!r}", "compression", client)
    if msg.HasField("compression"):
        stage = _stage_from_wire(msg.compression.name, msg.compression.args, client,
                                 "compression")
        if stage.kind != Kind.LOSSLESS:
            raise _fail(f"stage {stage.spec()!r} is not a lossless coder", "compression", client)
        try:
            body = stage.decompress(body, msg.body_size)
        except ValueError as exc:
            raise _fail(str(exc), "body", client) from None
    elif len(body) != msg.body_size:
        raise _fail(f"body has {len(body)} bytes, body_size says {msg.body_size}", "body_size",
                    client)
    out = pb.TensorList()
    try:
        scan(body, _tensor_list_schema(max_tensors))
    except ScanError as exc:
        raise _fail(f"body is not a pollen.v1 TensorList within its limits ({exc})",
                    exc.path or "body", client) from None
    try:
        out.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise _fail(f"body is not a pollen.v1 TensorList ({exc})", "body", client) from None
    return out


def _headers(body: pb.TensorList, expected: Expected | None, limit: int | None,
             client: object) -> Batch:
    """Check names, shapes, dtypes and header sizes; a Batch with nothing decoded yet."""
    names, shapes, dtypes = [], [], []
    total = 0
    seen: set[str] = set()
    if expected is None and len(body.tensors) > MAX_TENSORS:
        raise _fail(f"{len(body.tensors)} tensors (limit {MAX_TENSORS})", "tensors", client)
    for t in body.tensors:
        where = f"tensors[{t.name}]"
        if not t.name:
            raise _fail("tensor with an empty name", "tensors", client)
        if t.name in seen:
            raise _fail(f"tensor {t.name!r} appears twice", where, client)
        seen.add(t.name)
        dtype = _PB_TO_DTYPE.get(t.dtype)
        if dtype is None:
            raise _fail(f"unknown dtype {t.dtype}", f"{where}.dtype", client)
        if len(t.shape) > MAX_NDIM:
            raise _fail(f"{len(t.shape)} dimensions (limit {MAX_NDIM})", f"{where}.shape", client)
        shape = tuple(t.shape)
        if expected is not None:
            if t.name not in expected:
                raise _fail(f"unexpected tensor {t.name!r}", where, client)
            want_shape, want_dtype = expected[t.name]
            if shape != tuple(int(s) for s in want_shape):
                raise _fail(f"shape {shape} does not match the model's {tuple(want_shape)}",
                            f"{where}.shape", client)
            if dtype != str(want_dtype).removeprefix("torch."):
                raise _fail(f"dtype {dtype} does not match the model's {want_dtype}",
                            f"{where}.dtype", client)
        if len(t.codebook) > MAX_CODEBOOK or len(t.codebook_bf16) > 2 * MAX_CODEBOOK:
            raise _fail(f"codebook larger than {MAX_CODEBOOK} entries", f"{where}.codebook",
                        client)
        if t.codebook_bf16 and (len(t.codebook) or len(t.codebook_bf16) % 2):
            raise _fail("codebook_bf16 must be whole uint16s and exclude codebook",
                        f"{where}.codebook", client)
        total += math.prod(shape)
        if limit is not None and 4 * total > limit:
            raise _fail(f"tensors total more than {limit} bytes of float32 (the limit)", "tensors",
                        client)
        names.append(t.name)
        shapes.append(shape)
        dtypes.append(dtype)
    if expected is not None and len(seen) != len(expected):
        missing = sorted(set(expected) - seen)
        more = " ..." if len(missing) > 5 else ""
        raise _fail(f"missing tensors: {', '.join(missing[:5])}{more}", "tensors", client)
    return Batch(names, shapes, dtypes)


def _codebooks(tensors: Sequence[pb.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """All codebooks concatenated (float32) and their sizes, from bf16 bytes or floats."""
    half = [t.codebook_bf16 for t in tensors]
    full = [t.codebook for t in tensors]
    sizes = np.array([len(h) // 2 + len(f) for h, f in zip(half, full, strict=True)], np.int64)
    parts = [np.frombuffer(h, "<u2").astype(np.uint32) << 16 if h else
             np.array(f, np.float32).view(np.uint32) for h, f in zip(half, full, strict=True)
             if h or len(f)]
    flat = np.concatenate(parts).view(np.float32) if parts else np.zeros(0, np.float32)
    return flat, sizes


def _sections(body: pb.TensorList, batch: Batch, client: object,
              configured: Sequence[Stage] | None) -> np.ndarray:
    """Unpack positions and values, run the stages backwards, check finiteness; flat float32."""
    def fail(exc: WireError) -> PayloadError:
        where = exc.field if exc.tensor is None else f"tensors[{batch.names[exc.tensor]}].{exc.field}"
        return _fail(str(exc), where, client)

    if configured is not None:
        want = _chain([s for s in configured if s.kind != Kind.LOSSLESS])
        got = _wire_chain(body.stages)
        if got != want:
            raise _fail(f"encoded with stages {_spec(got)!r}, but this run's codec uses "
                        f"{_spec(want)!r}", "stages", client)

    stages = [_stage_from_wire(s.name, s.args, client, f"stages[{i}]")
              for i, s in enumerate(body.stages)]
    try:
        check_composition(stages, "stages")
        if any(s.kind == Kind.LOSSLESS for s in stages):
            raise ConfigError("a lossless stage belongs to Update.compression")
    except ConfigError as exc:
        raise _fail(str(exc), "stages", client) from None
    quantizer = next((s for s in stages if s.kind == Kind.QUANTIZE), None)
    nnz = np.array([t.nnz for t in body.tensors], dtype=np.uint64)
    try:
        if body.index_coding != lossless.DENSE:
            if int(nnz.sum(dtype=np.float64)) > batch.total:
                raise WireError(f"nnz add up to more than the {batch.total} entries", "nnz")
            batch.positions = lossless.decode_indices(body.index_coding, body.indices,
                                                      int(nnz.sum()), batch.total, body.rice_k)
        elif body.indices:
            raise WireError("a dense update carries no indices", "indices")
        counts = batch.counts()
        wrong = np.flatnonzero(counts != nnz)
        if len(wrong):
            t = int(wrong[0])
            raise WireError(f"nnz {nnz[t]} but {counts[t]} entries present", "nnz", t)
    except ValueError as exc:
        raise fail(exc if isinstance(exc, WireError) else WireError(str(exc), "indices")) from None
    n = int(counts.sum())
    try:
        if body.value_coding == pb.VALUE_CODING_CODES:
            if quantizer is None:
                raise ValueError("codes without a quantizer stage to map them back")
            if body.code_bits > 16:
                raise ValueError(f"code_bits {body.code_bits} exceeds 16")
            batch.code_bits = body.code_bits
            batch.codes = lossless.unpack_codes(body.values, n, body.code_bits)
        elif body.value_coding in (pb.VALUE_CODING_FLOAT32, pb.VALUE_CODING_FLOAT32_SHUFFLED):
            if quantizer is not None:
                raise ValueError(f"{quantizer.spec()!r} needs codes, got float values")
            shuffled = body.value_coding == pb.VALUE_CODING_FLOAT32_SHUFFLED
            batch.values = lossless.unpack_floats(body.values, n, shuffled)
        else:
            raise ValueError(f"unknown value coding {body.value_coding}")
    except ValueError as exc:
        raise _fail(str(exc), "values", client) from None
    batch.codebook, batch.book_sizes = _codebooks(body.tensors)
    batch.scale = np.array([t.scale for t in body.tensors], dtype=np.float32)
    batch.offset = np.array([t.offset for t in body.tensors], dtype=np.float32)
    try:
        for stage in reversed(stages):
            stage.decode(batch)
    except WireError as exc:
        raise fail(exc) from None
    assert batch.values is not None
    bad = np.flatnonzero(~np.isfinite(batch.values))
    if len(bad):
        raise fail(WireError("values hold NaN or Inf", "values", tensor_of(counts, bad[0])))
    return batch.to_flat()
