"""Bit packing and position coding: exact inverses, sizes near the entropy bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pollen.compression.lossless import (
    BITMAP,
    RAW_U32,
    RICE,
    decode_indices,
    encode_indices,
    pack_codes,
    pack_floats,
    unpack_codes,
    unpack_floats,
)


@pytest.mark.parametrize("bits", range(17))
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1001])
def test_codes_roundtrip_every_width(bits: int, n: int) -> None:
    codes = np.random.default_rng(bits * 100 + n).integers(0, 2**bits, n).astype(np.uint16)
    buf = pack_codes(codes, bits)
    assert len(buf) == math.ceil(n * bits / 8)
    np.testing.assert_array_equal(unpack_codes(buf, n, bits), codes)


def test_codes_are_msb_first() -> None:
    assert pack_codes(np.array([1, 2, 3]), 2) == bytes([0b01101100])
    assert pack_codes(np.array([5, 1]), 3) == bytes([0b10100100])


@pytest.mark.parametrize("shuffle", [False, True])
def test_floats_roundtrip(shuffle: bool) -> None:
    x = np.random.default_rng(0).standard_normal(33).astype(np.float32)
    np.testing.assert_array_equal(unpack_floats(pack_floats(x, shuffle), 33, shuffle), x)


@pytest.mark.parametrize("density", [0.0, 0.001, 0.05, 0.3, 0.9, 1.0])
def test_positions_roundtrip_and_pick_the_smaller_code(density: float) -> None:
    numel = 20_000
    rng = np.random.default_rng(int(density * 1000))
    idx = np.flatnonzero(rng.random(numel) < density)
    coding, data, k = encode_indices(idx, numel)
    np.testing.assert_array_equal(decode_indices(coding, data, len(idx), numel, k), idx)
    assert len(data) <= math.ceil(numel / 8)  # never worse than a bitmap
    assert coding == (BITMAP if density >= 0.5 else RICE)
    if 0 < density < 0.3:  # Rice is within 5% of the entropy of a random mask
        p = len(idx) / numel
        entropy_bytes = numel * (-(p * math.log2(p)) - (1 - p) * math.log2(1 - p)) / 8
        assert len(data) < 1.05 * entropy_bytes + 8


def test_raw_positions_accepted() -> None:
    idx = np.array([3, 7, 11])
    got = decode_indices(RAW_U32, idx.astype("<u4").tobytes(), 3, 12, 0)
    np.testing.assert_array_equal(got, idx)


def test_large_rice_parameter() -> None:
    numel = 1 << 40
    idx = np.array([5, 1 << 30, (1 << 39) + 17, numel - 1])
    coding, data, k = encode_indices(idx, numel)
    assert coding == RICE and k > 16
    np.testing.assert_array_equal(decode_indices(coding, data, 4, numel, k), idx)
