"""Byte formats: sizes, exact round trips, and rejection of malformed messages."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from pollen.errors import PayloadError
from pollen.strategies.fedkseed import wire as W
from pollen.strategies.fedkseed.state import SeedAccumulator


def _pairs(n: int, k: int, seed: int = 0) -> list[tuple[int, float]]:
    rng = np.random.default_rng(seed)
    vals = rng.normal(size=n).astype(np.float32)  # clients report float32-representable g
    return list(zip(rng.integers(0, k, n).tolist(), vals.tolist(), strict=True))


def test_pairs_round_trip_and_size():
    pairs = _pairs(200, 4096)
    blob = W.encode_pairs(pairs, 4096)
    assert len(blob) == 6 + 200 * (2 + 4) == 1206
    assert W.decode_pairs(blob, 4096, max_pairs=200, client=7) == pairs  # exact, order kept
    big = W.encode_pairs(pairs, 100_000)
    assert len(big) == 6 + 200 * (4 + 4)
    assert W.decode_pairs(big, 100_000, 200) == pairs
    assert W.decode_pairs(W.encode_pairs([], 16), 16, 0) == []


def test_float16_values_opt_in():
    pairs = _pairs(50, 64)
    blob = W.encode_pairs(pairs, 64, value_dtype="float16")
    assert len(blob) == 6 + 50 * 4
    got = W.decode_pairs(blob, 64, 50)
    assert [j for j, _ in got] == [j for j, _ in pairs]
    assert np.allclose([g for _, g in got], [g for _, g in pairs], rtol=1e-3, atol=1e-4)
    with pytest.raises(PayloadError, match="float16 overflow"):
        W.encode_pairs([(1, 1e6)], 64, value_dtype="float16")


def _bad(blob: bytes, match: str, k: int = 64, max_pairs: int = 10) -> None:
    with pytest.raises(PayloadError, match=match):
        W.decode_pairs(blob, k, max_pairs, client="c9")


def test_pairs_rejections_name_client_and_field():
    good = W.encode_pairs([(1, 0.5), (2, -1.0)], 64)
    _bad(good[:3], r"client c9.*header")
    _bad(b"\x02" + good[1:], "format")
    _bad(good[:-1], "length")
    _bad(good + b"\x00", "length")
    _bad(good, "count", max_pairs=1)
    _bad(W.encode_pairs([(1, 0.5)], 100_000), "flags")  # 32-bit indices where K needs 16
    hdr = struct.pack("<BBI", 1, 0, 1)
    _bad(hdr + struct.pack("<H", 64) + struct.pack("<f", 1.0), "seed_index")
    _bad(hdr + struct.pack("<H", 3) + struct.pack("<f", float("nan")), "value")
    _bad(hdr + struct.pack("<H", 3) + struct.pack("<f", float("inf")), "value")


def test_deltas_round_trip_exact_and_merged():
    rng = np.random.default_rng(0)
    acc = SeedAccumulator(256, 3, 1e-3)
    for _ in range(3):
        acc.aggregate([(_pairs(30, 256, int(rng.integers(1000))), int(rng.integers(1, 9)))])
    deltas = acc.deltas_since(0)
    got = W.decode_deltas(W.encode_deltas(deltas, 256), 256)
    assert [(d.base_version, d.version) for d in got] == [(0, 1), (1, 2), (2, 3)]
    for a, b in zip(got, deltas, strict=True):
        assert np.array_equal(a.indices, b.indices) and np.array_equal(a.values, b.values)
        assert a.values.dtype == np.float32
    idx, val = acc.delta_since(1)
    blob = W.encode_accumulator_delta(idx, val, 256, base_version=1, version=3, value_dtype="float64")
    (m,) = W.decode_deltas(blob, 256)
    assert np.array_equal(m.indices, idx) and np.array_equal(m.values, val)
    assert len(blob) == 4 + 12 + idx.size * (2 + 8)


def _bad_delta(blob: bytes, match: str) -> None:
    with pytest.raises(PayloadError, match=match):
        W.decode_deltas(blob, 64, client="server")


def test_delta_rejections():
    def section(base, ver, idx, vals):
        return struct.pack("<III", base, ver, len(idx)) + np.array(idx, "<u2").tobytes() + \
            np.array(vals, "<f4").tobytes()

    ok = section(0, 1, [1, 5], [0.5, 1.0])
    assert len(W.decode_deltas(struct.pack("<BBH", 1, 0, 1) + ok, 64)) == 1
    _bad_delta(struct.pack("<BBH", 1, 0, 1) + section(0, 1, [5, 1], [0.5, 1.0]), "seed_index")
    _bad_delta(struct.pack("<BBH", 1, 0, 1) + section(0, 1, [1, 1], [0.5, 1.0]), "seed_index")
    _bad_delta(struct.pack("<BBH", 1, 0, 1) + section(0, 1, [64], [0.5]), "seed_index")
    _bad_delta(struct.pack("<BBH", 1, 0, 1) + section(0, 1, [2], [np.nan]), "value")
    _bad_delta(struct.pack("<BBH", 1, 0, 2) + ok + section(2, 3, [2], [1.0]), "version")
    _bad_delta(struct.pack("<BBH", 1, 0, 1) + section(1, 1, [2], [1.0]), "version")
    _bad_delta(struct.pack("<BBH", 1, 0, 1) + ok + b"\x00", "trailing")
    _bad_delta(struct.pack("<BBH", 1, 0, 2) + ok, "truncated")
    _bad_delta(struct.pack("<BBH", 1, 6, 1) + ok, "flags")


def test_probabilities_round_trip_and_rejection():
    p = SeedAccumulator(32, 1, 1e-3, pro=True).probabilities()
    assert np.allclose(W.decode_probabilities(W.encode_probabilities(p), 32), p)
    with pytest.raises(PayloadError, match="probs"):
        W.decode_probabilities(W.encode_probabilities(p), 33)
    with pytest.raises(PayloadError, match="probs"):
        W.decode_probabilities(W.encode_probabilities(p * 2), 32)
