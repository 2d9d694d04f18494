"""Walk protobuf wire bytes against a field budget before the real parser sees them.

Why: upb (the protobuf runtime) allocates per parsed element. A pollen.v1 TensorList of 8 MB
made of empty `tensors` entries (2 bytes each) made it allocate 384 MB; packed `shape` varints
are 1 byte on the wire and 8 in memory. This scan reads only keys and lengths (no objects),
refuses unknown fields, wrong wire types and every field that occurs more often or is longer
than a legitimate encoder ever writes, so that what reaches `ParseFromString` parses into at
most a small constant times its own size. Work is bounded by the budget, not by the input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

VARINT, I64, LEN, I32 = 0, 1, 2, 5


@dataclass(frozen=True)
class Field:
    """One schema field: its name, accepted wire types, how often it may occur, how long it
    may be (LEN), and the schema of its submessage if it is one."""

    name: str
    wire: tuple[int, ...]
    max_count: int = 1
    max_len: int = 1 << 62
    message: Mapping[int, Field] | None = field(default=None, compare=False)


class ScanError(ValueError):
    """Where the scan stopped (a dotted field path) and why."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


def _varint(buf: memoryview, pos: int, end: int, path: str) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end:
            raise ScanError("truncated varint", path)
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise ScanError("varint longer than 10 bytes", path)


def scan(data: bytes | memoryview, schema: Mapping[int, Field], path: str = "") -> None:
    """Raise ScanError unless `data` is a message within `schema`'s budgets."""
    buf = memoryview(data)
    _scan(buf, 0, len(buf), schema, path)


def _scan(buf: memoryview, pos: int, end: int, schema: Mapping[int, Field], path: str) -> None:
    counts: dict[int, int] = {}
    while pos < end:
        key, pos = _varint(buf, pos, end, path)
        number, wire = key >> 3, key & 7
        spec = schema.get(number)
        if spec is None:
            raise ScanError(f"unknown field number {number}", path)
        where = f"{path}.{spec.name}" if path else spec.name
        if wire not in spec.wire:
            raise ScanError(f"wire type {wire} is not allowed here", where)
        counts[number] = n = counts.get(number, 0) + 1
        if n > spec.max_count:
            raise ScanError(f"occurs more often than its limit {spec.max_count}", where)
        if wire == VARINT:
            _, pos = _varint(buf, pos, end, where)
        elif wire == I64:
            pos += 8
        elif wire == I32:
            pos += 4
        else:
            length, pos = _varint(buf, pos, end, where)
            if length > spec.max_len:
                raise ScanError(f"{length} bytes long, over its limit {spec.max_len}", where)
            if pos + length > end:
                raise ScanError("truncated", where)
            if spec.message is not None:
                _scan(buf, pos, pos + length, spec.message, where)
            pos += length
        if pos > end:
            raise ScanError("truncated", where)
