"""FRL ranking wire format: ⌈log₂ n⌉-bit round trips and rejection of every malformed payload."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pollen.errors import PayloadError
from pollen.strategies.frl.wire import bits_for, decode_rankings, encode_rankings, encoded_size


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=70_000), min_size=1, max_size=4),
       seed=st.integers(0, 2**31 - 1))
def test_round_trip_random_permutations(sizes: list[int], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    rankings = {f"layer{i}.scores": torch.randperm(n, generator=g) for i, n in enumerate(sizes)}
    expected = {k: v.numel() for k, v in rankings.items()}
    blob = encode_rankings(rankings)
    assert len(blob) == encoded_size(expected)
    out = decode_rankings(blob, expected, client="c1")
    assert list(out) == list(expected)
    for k, v in rankings.items():
        assert out[k].dtype == torch.int64 and torch.equal(out[k], v)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 255, 256, 257, 65536, 65537])
def test_bits_per_id_is_ceil_log2(n: int) -> None:
    assert bits_for(n) == (math.ceil(math.log2(n)) if n > 1 else 0)
    payload = (n * bits_for(n) + 7) // 8
    assert encoded_size({"x": n}) - encoded_size({"x": 1}) == payload
    r = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    assert torch.equal(decode_rankings(encode_rankings({"x": r}), {"x": n})["x"], r)


def _header_len(names: dict[str, int]) -> int:
    return 9 + sum(2 + len(k) + 9 for k in names)


def _corrupt_ids(blob: bytes, header: int, n: int, values: np.ndarray) -> bytes:
    """Re-pack ids (which need not be a permutation) behind a valid header."""
    bits = bits_for(n)
    words = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    body = np.packbits(np.unpackbits(words, axis=1)[:, 64 - bits:], axis=None).tobytes()
    return blob[:header] + body


def test_rejects_non_permutations() -> None:
    n = 100  # 7 bits per id: values up to 127 fit, so out-of-range ids are representable
    blob = encode_rankings({"fc": torch.arange(n)})
    hl = _header_len({"fc": n})
    dup = np.arange(n)
    dup[5] = 6
    with pytest.raises(PayloadError, match=r"client 7.*'fc'.*permutation"):
        decode_rankings(_corrupt_ids(blob, hl, n, dup), {"fc": n}, client=7)
    oob = np.arange(n)
    oob[0] = 120
    with pytest.raises(PayloadError, match="outside"):
        decode_rankings(_corrupt_ids(blob, hl, n, oob), {"fc": n}, client=7)
    with pytest.raises(PayloadError, match="permutation"):
        encode_rankings({"fc": torch.zeros(n, dtype=torch.int64)})


def test_rejects_wrong_lengths_layers_and_sizes() -> None:
    r = {"a": torch.randperm(50), "b": torch.randperm(9)}
    blob = encode_rankings(r)
    with pytest.raises(PayloadError, match=r"field 'a'.*length 50"):
        decode_rankings(blob, {"a": 51, "b": 9}, client=1)
    with pytest.raises(PayloadError, match="2 layers, expected 3"):
        decode_rankings(blob, {"a": 50, "b": 9, "c": 4})
    with pytest.raises(PayloadError, match="unexpected layer"):
        decode_rankings(blob, {"a": 50, "z": 9})
    twice = encode_rankings({"a": torch.randperm(50)})
    with pytest.raises(PayloadError, match="twice"):
        # hand-built header naming layer "a" twice
        head = struct.pack(">4sBI", b"PFRL", 1, 2) + 2 * (struct.pack(">H", 1) + b"a" + struct.pack(">QB", 50, 6))
        decode_rankings(head + twice[_header_len({"a": 50}):] * 2, {"a": 50, "b": 50})
    for cut in (0, 5, 12, len(blob) - 1):
        with pytest.raises(PayloadError, match="truncated"):
            decode_rankings(blob[:cut], {"a": 50, "b": 9})
    with pytest.raises(PayloadError, match="oversized"):
        decode_rankings(blob + b"\x00", {"a": 50, "b": 9})
    with pytest.raises(PayloadError, match="magic"):
        decode_rankings(b"XXXX" + blob[4:], {"a": 50, "b": 9})
    with pytest.raises(PayloadError, match="version"):
        decode_rankings(blob[:4] + b"\x09" + blob[5:], {"a": 50, "b": 9})


def test_wire_is_smaller_than_int64_and_fp32() -> None:
    n = 802_816  # conv4-supermask fc1
    size = encoded_size({"fc1": n})
    assert size < n * 4 * 0.65 and size >= n * 20 // 8
