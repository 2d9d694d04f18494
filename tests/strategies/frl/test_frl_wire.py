"""FRL ranking wire format (pollen.v1 ClientRanking / GlobalRanking): ⌈log₂ n⌉-bit round trips, and
every malformed or hostile payload is one PayloadError, never a crash or an oversized allocation."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pollen.compression._proto.pollen.v1 import frl_pb2 as pb
from pollen.errors import PayloadError
from pollen.strategies.frl.wire import (
    _pack,
    bits_for,
    decode_rankings,
    encode_rankings,
    encoded_size,
)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=70_000), min_size=1, max_size=4),
       seed=st.integers(0, 2**31 - 1), direction=st.sampled_from(["up", "down"]))
def test_round_trip_random_permutations(sizes: list[int], seed: int, direction: str) -> None:
    g = torch.Generator().manual_seed(seed)
    rankings = {f"layer{i}.scores": torch.randperm(n, generator=g) for i, n in enumerate(sizes)}
    expected = {k: v.numel() for k, v in rankings.items()}
    blob = encode_rankings(rankings, direction)  # type: ignore[arg-type]
    assert len(blob) == encoded_size(expected)
    out = decode_rankings(blob, expected, client="c1", direction=direction)  # type: ignore[arg-type]
    assert list(out) == list(expected)
    for k, v in rankings.items():
        assert out[k].dtype == torch.int64 and torch.equal(out[k], v)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 255, 256, 257, 65536, 65537])
def test_bits_per_id_is_ceil_log2(n: int) -> None:
    assert bits_for(n) == (math.ceil(math.log2(n)) if n > 1 else 0)
    r = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    blob = encode_rankings({"x": r})
    msg = pb.ClientRanking.FromString(blob)
    assert msg.format_version == pb.FRL_FORMAT_VERSION_1
    assert (msg.layers[0].size, msg.layers[0].id_bits) == (n, bits_for(n))
    assert len(msg.layers[0].ids) == (n * bits_for(n) + 7) // 8
    assert torch.equal(decode_rankings(blob, {"x": n})["x"], r)


def test_the_protobuf_is_readable_without_pollen() -> None:
    """An edge client reads the ids with the .proto and plain bit unpacking, nothing Pollen-specific."""
    r = torch.randperm(300, generator=torch.Generator().manual_seed(3))
    layer = pb.GlobalRanking.FromString(encode_rankings({"fc.scores": r}, "down")).layers[0]
    bits = np.unpackbits(np.frombuffer(layer.ids, np.uint8))[: layer.size * layer.id_bits]
    ids = bits.reshape(-1, layer.id_bits) @ (1 << np.arange(layer.id_bits)[::-1])
    assert layer.name == "fc.scores" and np.array_equal(ids, r.numpy())


def _blob(layers: list[tuple[str, int, int, bytes]], version: int = 1, direction: str = "up") -> bytes:
    """A hand-built message: (name, size, id_bits, ids) per layer."""
    msg = pb.ClientRanking(format_version=version) if direction == "up" else \
        pb.GlobalRanking(format_version=version)
    for name, size, bits, ids in layers:
        msg.layers.add(name=name, size=size, id_bits=bits, ids=ids)
    return msg.SerializeToString()


def test_rejects_non_permutations() -> None:
    n = 100  # 7 bits per id: values up to 127 fit, so out-of-range ids are representable
    dup = np.arange(n)
    dup[5] = 6
    with pytest.raises(PayloadError, match=r"client 7.*'fc'.*permutation"):
        decode_rankings(_blob([("fc", n, 7, _pack(dup, 7))]), {"fc": n}, client=7)
    oob = np.arange(n)
    oob[0] = 120
    with pytest.raises(PayloadError, match="outside"):
        decode_rankings(_blob([("fc", n, 7, _pack(oob, 7))]), {"fc": n}, client=7)
    with pytest.raises(PayloadError, match="permutation"):
        encode_rankings({"fc": torch.zeros(n, dtype=torch.int64)})


def test_rejects_wrong_lengths_layers_versions_and_directions() -> None:
    r = {"a": torch.randperm(50), "b": torch.randperm(9)}
    sizes = {"a": 50, "b": 9}
    blob = encode_rankings(r)
    with pytest.raises(PayloadError, match=r"field 'a'.*length 50"):
        decode_rankings(blob, {"a": 51, "b": 9}, client=1)
    with pytest.raises(PayloadError, match="2 layers, expected 3"):
        decode_rankings(blob, {"a": 50, "b": 9, "c": 4})
    with pytest.raises(PayloadError, match="unexpected layer"):
        decode_rankings(blob, {"a": 50, "z": 9})
    ids = _pack(np.random.default_rng(0).permutation(50), 6)
    with pytest.raises(PayloadError, match="twice"):
        decode_rankings(_blob([("a", 50, 6, ids), ("a", 50, 6, ids)]), {"a": 50, "b": 50})
    with pytest.raises(PayloadError, match=r"'a'.*\(5 bits\), expected 50 \(6 bits\)"):
        decode_rankings(_blob([("a", 50, 5, ids[:-6])]), {"a": 50})
    with pytest.raises(PayloadError, match=r"'a'.*truncated: 37 bytes of ids"):
        decode_rankings(_blob([("a", 50, 6, ids[:-1])]), {"a": 50})
    with pytest.raises(PayloadError, match="version 2 unsupported"):
        decode_rankings(_blob([("a", 50, 6, ids)], version=2), {"a": 50})
    with pytest.raises(PayloadError, match="version 0 unsupported"):
        decode_rankings(_blob([("a", 50, 6, ids)], version=0), {"a": 50})
    for cut in (1, 5, 12, len(blob) - 1):
        with pytest.raises(PayloadError):
            decode_rankings(blob[:cut], sizes)
    with pytest.raises(PayloadError, match="unknown field number 0"):
        decode_rankings(blob + b"\x00", sizes)
    with pytest.raises(PayloadError, match="oversized"):
        decode_rankings(blob + b"\x00" * 2000, sizes)
    with pytest.raises(PayloadError, match="GlobalRanking"):  # a client's reply is not a broadcast
        decode_rankings(blob, sizes, direction="down")
    with pytest.raises(PayloadError, match="ClientRanking"):
        decode_rankings(encode_rankings(r, "down"), sizes)
    with pytest.raises(PayloadError, match="must be bytes"):
        decode_rankings("text", sizes)  # type: ignore[arg-type]


def test_hostile_headers_are_refused_before_allocating() -> None:
    """A header that claims a huge layer, many layers, a long name or an unknown field is refused by
    the length bound or the field budget, before upb or numpy allocate anything for it."""
    sizes = {"a": 50}
    bound = encoded_size(sizes)
    with pytest.raises(PayloadError, match="oversized"):
        decode_rankings(_blob([("a", 50, 6, b"")] * 1000), sizes)
    with pytest.raises(PayloadError, match="oversized"):
        decode_rankings(_blob([("a" * 5000, 50, 6, b"")]), sizes)
    tiny_layers = b"\x12\x00" * (bound // 2)  # empty LayerRanking entries, within the length bound
    with pytest.raises(PayloadError, match="layers.*limit 1"):
        decode_rankings(tiny_layers, sizes)
    with pytest.raises(PayloadError, match=r"length 1099511627776 \(40 bits\)"):
        decode_rankings(_blob([("a", 1 << 40, 40, b"")]), sizes)
    with pytest.raises(PayloadError, match="unknown field number 9"):
        decode_rankings(b"\x08\x01\x48\x01", sizes)
    with pytest.raises(PayloadError, match="wire type"):
        decode_rankings(b"\x0a\x01\x00", sizes)  # format_version as bytes
    with pytest.raises(PayloadError, match="truncated"):
        decode_rankings(b"\x12\x7f\x00", sizes)  # a layer claims 127 bytes, 1 follows


def test_fuzzed_bytes_give_payload_errors_only() -> None:
    """Random mutations of valid payloads (both directions): decoding returns a valid permutation of
    every layer or raises PayloadError; nothing else escapes."""
    rnd = random.Random(0)
    sizes = {"conv.scores": 300, "fc.scores": 7, "one.scores": 1}
    g = torch.Generator().manual_seed(0)
    seeds = {d: encode_rankings({k: torch.randperm(n, generator=g) for k, n in sizes.items()}, d)
             for d in ("up", "down")}
    outcomes = {"ok": 0, "error": 0}
    for i in range(1500):
        direction = "up" if i % 2 else "down"
        b = bytearray(seeds[direction])
        for _ in range(rnd.randint(1, 4)):
            op, pos = rnd.random(), rnd.randrange(len(b))
            if op < 0.5:
                b[pos] = rnd.randrange(256)
            elif op < 0.7:
                del b[pos: pos + rnd.randint(1, 8)]
            elif op < 0.85:
                b[pos:pos] = rnd.randbytes(rnd.randint(1, 8))
            else:
                b = b[:pos]
            if not b:
                b = bytearray(b"\x00")
        try:
            out = decode_rankings(bytes(b), sizes, client="fuzz", direction=direction)  # type: ignore[arg-type]
        except PayloadError:
            outcomes["error"] += 1
            continue
        outcomes["ok"] += 1
        for k, n in sizes.items():
            assert torch.equal(torch.sort(out[k]).values, torch.arange(n))
    assert outcomes["error"] > 1000  # the rest flipped only bits that still decode to a permutation


def test_wire_is_smaller_than_int64_and_fp32() -> None:
    n = 802_816  # conv4-supermask fc1
    size = encoded_size({"fc1": n})
    assert size < n * 4 * 0.65 and size >= n * 20 // 8
