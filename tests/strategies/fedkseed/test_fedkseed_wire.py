"""pollen.v1 FedKSeed messages: sizes, exact round trips, and refusal of malformed or hostile bytes."""

from __future__ import annotations

import numpy as np
import pytest

from pollen.compression._proto.pollen.v1 import fedkseed_pb2 as pb
from pollen.errors import PayloadError
from pollen.strategies.fedkseed import wire as W
from pollen.strategies.fedkseed.state import Downlink, SeedAccumulator, apply_downlink


def _pairs(n: int, k: int, seed: int = 0) -> list[tuple[int, float]]:
    rng = np.random.default_rng(seed)
    vals = rng.normal(size=n).astype(np.float32)  # clients report float32-representable g
    return list(zip(rng.integers(0, k, n).tolist(), vals.tolist(), strict=True))


def test_pairs_round_trip_and_size():
    pairs = _pairs(200, 4096)
    blob = W.encode_pairs(pairs, 4096)
    assert 1200 < len(blob) <= 1215  # 400 B uint16 + 800 B float32 + header
    assert W.decode_pairs(blob, 4096, max_pairs=200, client=7) == pairs  # exact, order kept
    big = W.encode_pairs(pairs, 100_000)
    assert 1600 < len(big) <= 1615  # uint32 indices above K = 65,536
    assert W.decode_pairs(big, 100_000, 200) == pairs
    assert W.decode_pairs(W.encode_pairs([], 16), 16, 0) == []


def _bad(blob: bytes, match: str, k: int = 64, max_pairs: int = 10) -> None:
    with pytest.raises(PayloadError, match=match):
        W.decode_pairs(blob, k, max_pairs, client="c9")


def _raw_pairs(idx, val, k=64, fmt=1, idt="<u2") -> bytes:
    return pb.SeedPairs(format_version=fmt, k=k, indices=np.array(idx, idt).tobytes(),
                        values=np.array(val, "<f4").tobytes()).SerializeToString()


def test_pairs_rejections_name_client_and_field():
    good = W.encode_pairs([(1, 0.5), (2, -1.0)], 64)
    _bad(good[:-1], r"client c9.*SeedPairs")  # truncated
    _bad(b"\xff" * 7, "SeedPairs")
    _bad(_raw_pairs([1], [0.5], fmt=2), "format_version")
    _bad(_raw_pairs([1], [0.5], k=65), "K=65")
    _bad(_raw_pairs([1, 2], [0.5]), "1 values for 2 indices")
    _bad(_raw_pairs([1], [0.5], idt="<u1"), "whole number")
    _bad(good, "over its limit", max_pairs=1)  # counted in the scan, before parsing
    _bad(_raw_pairs([64], [1.0]), "seed index 64")
    _bad(_raw_pairs([3], [float("nan")]), "non-finite")
    _bad(_raw_pairs([3], [float("inf")]), "non-finite")
    _bad(good + b"\x58\x01", "unknown field")  # field 11
    _bad(W.encode_pairs([(1, 0.5)], 100_000), "K=100000")
    with pytest.raises(PayloadError, match="overflow"):
        W.encode_pairs([(1, 1e39)], 64)


def _acc(k: int = 256, rounds: int = 3, seed: int = 0) -> SeedAccumulator:
    rng = np.random.default_rng(seed)
    acc = SeedAccumulator(k, 3, 1e-3)
    for _ in range(rounds):
        acc.aggregate([(_pairs(30, k, int(rng.integers(1000))), int(rng.integers(1, 9)))])
    return acc


def test_downlink_forms_round_trip_and_reach_the_same_bits():
    acc = _acc()
    a1 = SeedAccumulator(256, 3, 1e-3)
    a1.load_state_dict(acc.state_dict())
    held = {0: np.zeros(256, np.float32)}
    # A at version 1, as a client that trained in round 2 would hold it.
    held[1] = apply_downlink(held[0], 0, Downlink("log", 0, 1, rounds=tuple(acc.deltas_since(0)[:1])))
    for base in (0, 1, 2, 3):
        forms = acc.downlinks(base)
        assert {d.kind for d in forms} == ({"dense", "set"} if base == 0 else {"dense", "set", "log"})
        for d in forms:
            got = W.decode_downlink(W.encode_downlink(d, 256), 256, max_version=3)
            assert (got.kind, got.base_version, got.version) == (d.kind, d.base_version, d.version)
            if base in held:
                a = apply_downlink(held[base], base, got)
                assert a is not None and a.dtype == np.float32 and np.array_equal(a, acc.A)
    dense = W.encode_downlink(acc.downlinks(0)[0], 256)
    assert 4 * 256 < len(dense) <= 4 * 256 + 16
    blob, kind = W.encode_downlink_smallest(acc.downlinks(2), 256)
    assert kind in ("set", "log") and len(blob) == min(len(W.encode_downlink(d, 256))
                                                       for d in acc.downlinks(2))
    up_to_date, kind = W.encode_downlink_smallest(acc.downlinks(3), 256)
    assert kind == "set" and len(up_to_date) < 16


def test_smallest_downlink_is_bounded_by_dense_whatever_the_staleness():
    k = 512
    acc = SeedAccumulator(k, 1, 1e-3, keep_rounds=5)
    sizes = []
    for r in range(12):
        acc.aggregate([(_pairs(200, k, r), 10)])
        sizes.append(len(W.encode_downlink_smallest(acc.downlinks(0), k)[0]))
    assert max(sizes) <= 4 * k + 16
    # Log trimmed past the client's version: only the dense form is possible, still bounded.
    assert [d.kind for d in acc.downlinks(1)] == ["dense"]
    assert len(W.encode_downlink_smallest(acc.downlinks(1), k)[0]) <= 4 * k + 16


def _bad_down(msg: pb.SeedDownlink, match: str, k: int = 64, max_version: int = 10) -> None:
    with pytest.raises(PayloadError, match=match):
        W.decode_downlink(msg.SerializeToString(), k, client="server", max_version=max_version)


def _u16(x) -> bytes:
    return np.array(x, "<u2").tobytes()


def _f32(x) -> bytes:
    return np.array(x, "<f4").tobytes()


def test_downlink_rejections():
    def msg(**kw) -> pb.SeedDownlink:
        return pb.SeedDownlink(format_version=1, k=64, **kw)

    ok = msg(base_version=0, version=1, set=pb.SeedSet(indices=_u16([1, 5]), values=_f32([0.5, 1.0])))
    assert W.decode_downlink(ok.SerializeToString(), 64).kind == "set"
    _bad_down(msg(version=1), "no body")
    _bad_down(msg(version=1, set=pb.SeedSet(indices=_u16([5, 1]), values=_f32([0.5, 1]))), "increasing")
    _bad_down(msg(version=1, set=pb.SeedSet(indices=_u16([1, 1]), values=_f32([0.5, 1]))), "increasing")
    _bad_down(msg(version=1, set=pb.SeedSet(indices=_u16([64]), values=_f32([0.5]))), "seed index")
    _bad_down(msg(version=1, set=pb.SeedSet(indices=_u16([2]), values=_f32([np.nan]))), "non-finite")
    _bad_down(msg(version=1, set=pb.SeedSet(indices=_u16([2]), values=_f32([1, 2]))), "2 values for 1")
    _bad_down(msg(base_version=3, version=2, set=pb.SeedSet()), "not ordered")
    _bad_down(msg(version=11, set=pb.SeedSet()), "not ordered")  # beyond the run's rounds
    _bad_down(msg(base_version=1, version=2, dense=pb.SeedDense(values=_f32(np.zeros(64)))),
              "base_version 0")
    _bad_down(msg(version=2, dense=pb.SeedDense(values=_f32(np.zeros(63)))), "63 values for 64")
    _bad_down(msg(version=2, dense=pb.SeedDense(values=_f32(np.zeros(65)))), "over its limit")
    r = [pb.SeedRound(version=2, indices=_u16([1]), values=_f32([1.0])),
         pb.SeedRound(version=4, indices=_u16([1]), values=_f32([1.0]))]
    _bad_down(msg(base_version=1, version=3, log=pb.SeedLog(rounds=r)), r"rounds\[1\].version")
    _bad_down(msg(base_version=1, version=3, log=pb.SeedLog(rounds=r[:1])), "ends at version 2")
    many = [pb.SeedRound(version=v + 1) for v in range(4)]
    _bad_down(msg(base_version=0, version=4, log=pb.SeedLog(rounds=many)), "more often than its limit",
              max_version=3)
    _bad_down(pb.SeedDownlink(format_version=0, k=64, version=1, set=pb.SeedSet()), "format_version")
    _bad_down(pb.SeedDownlink(format_version=1, k=65, version=1, set=pb.SeedSet()), "K=65")


def test_decoders_refuse_hostile_bytes_with_payload_error_only():
    """Fuzz: random bytes and mutations of valid messages are refused with PayloadError or decode
    into values that satisfy every invariant the consumers rely on."""
    rng = np.random.default_rng(1)
    k, steps = 64, 8
    acc = _acc(k, 4, seed=2)
    corpus = [("pairs", W.encode_pairs(_pairs(steps, k, 5), k)),
              *[("down", W.encode_downlink(d, k)) for base in (0, 2) for d in acc.downlinks(base)],
              ("probs", W.encode_probabilities(np.full(k, 1 / k)))]

    def decode(kind: str, blob: bytes) -> None:
        if kind == "pairs":
            out = W.decode_pairs(blob, k, steps, client="fuzz")
            assert len(out) <= steps and all(0 <= j < k and np.isfinite(g) for j, g in out)
        elif kind == "down":
            d = W.decode_downlink(blob, k, max_version=8)
            assert 0 <= d.base_version <= d.version <= 8
            arrays = [(d.indices, d.values)] if d.kind != "log" else [(r.indices, r.values)
                                                                      for r in d.rounds]
            for idx, val in arrays:
                if idx is not None:
                    assert idx.size == val.size and (idx.size == 0 or (idx.max() < k and idx.min() >= 0))
                    assert np.all(np.diff(idx) > 0)
                assert np.all(np.isfinite(val))
            if d.kind == "dense":
                assert d.values.size == k
        else:
            p = W.decode_probabilities(blob, k)
            assert p.size == k and np.all(p >= 0)

    n_ok = 0
    for trial in range(3000):
        kind, blob = corpus[trial % len(corpus)]
        b = bytearray(blob)
        op = trial % 5
        if op == 0:
            b = bytearray(rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8).tobytes())
        elif op == 1 and b:
            for _ in range(int(rng.integers(1, 4))):
                i = int(rng.integers(len(b)))
                b[i] ^= 1 << int(rng.integers(8))
        elif op == 2:
            b = b[: int(rng.integers(len(b) + 1))]
        elif op == 3 and b:
            i = int(rng.integers(len(b)))
            b[i:i] = bytes([0xFF] * int(rng.integers(1, 10)))  # huge varints / lengths
        elif op == 4 and b:
            i = int(rng.integers(len(b)))
            b[i : i + 1] = b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"
        try:
            decode(kind, bytes(b))
            n_ok += 1
        except PayloadError:
            pass
    assert n_ok > 0  # some mutations (in values) are legitimately well-formed
    for kind, blob in corpus:  # unmutated payloads decode
        decode(kind, blob)


def test_probabilities_round_trip_and_rejection():
    p = SeedAccumulator(32, 1, 1e-3, pro=True).probabilities()
    assert np.allclose(W.decode_probabilities(W.encode_probabilities(p), 32), p)
    with pytest.raises(PayloadError, match="K=32"):
        W.decode_probabilities(W.encode_probabilities(p), 33)
    with pytest.raises(PayloadError, match="probs"):
        W.decode_probabilities(W.encode_probabilities(p * 2), 32)
    with pytest.raises(PayloadError, match="bytes"):
        W.decode_probabilities("not bytes", 32)  # type: ignore[arg-type]


def test_set_from_version_0_reaches_a_from_any_held_version_even_back_to_zero():
    """A server that never heard a node's reply sends it a set from version 0 (A's nonzero
    entries); a node that did train since must still land on A, also where A returned to 0."""
    acc = SeedAccumulator(8, 1, 1e-3)
    acc.aggregate([([(3, 1.0), (5, 2.0)], 1)])
    held = acc.A.copy()
    acc.aggregate([([(3, -1.0)], 1)])
    assert acc.A[3] == 0.0 and held[3] == 1.0
    (_dense, sparse) = acc.downlinks(0)
    assert sparse.kind == "set" and sparse.indices.tolist() == [5]
    got = apply_downlink(held, 1, W.decode_downlink(W.encode_downlink(sparse, 8), 8))
    assert got is not None and np.array_equal(got, acc.A)
