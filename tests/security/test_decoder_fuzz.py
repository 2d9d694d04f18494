"""Property-based fuzz of every decoder that reads bytes from another party (issue 10, part 5).

Decoders: the pollen.v1 update wire (one target per codec, decoded with that codec's stage chain
configured, as the server does), FedKSeed pairs (server side), FedKSeed down-link and seed
probabilities (client side), FRL rankings (both sides). Inputs: random bytes, and mutations of
valid payloads (bit flips, truncation, byte overwrites, insertions/deletions, big integers written
over length and count fields, splices of two payloads, and for updates edits of the TensorList
inside the envelope, re-wrapped with a correct size and recompressed so they reach the section
decoders).

The property: every input is either refused with PayloadError or accepted; nothing else is ever
raised, and no input takes longer than the deadline. What "accepted" may legitimately mean:
none of these formats carries a checksum or MAC (integrity is TLS's job), so a mutation that
lands in a value (a float, a codebook entry, a sign bit, an id swapped within a permutation)
yields a different payload that is exactly as well-formed as an honest one; no decoder can or
should tell them apart. So an accepted mutated input must decode to values that pass every
invariant the consumer relies on: the expected names, shapes, float32 dtype and finiteness for
updates; count <= local steps, ids < K and finite values for pairs; consecutive versions within
the run, increasing ids < K and finite float32 values for the down-link; K finite non-negative
probabilities summing to 1;
a permutation of the right size per expected layer for rankings. Unmutated valid payloads must be
accepted and decode to exactly what was encoded (the codec's reconstruction for updates).
CI runs 200 examples per decoder and property; bench/fuzz_decoders.py runs 100,000+.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pollen.errors import PayloadError
from tests.security import hostile

TARGETS = {t.name: t for t in hostile.targets(seed=0)}
FUZZ = settings(max_examples=200, deadline=2000, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def _decode(target: hostile.Target, blob: bytes) -> tuple[bool, object]:
    try:
        return True, target.decode(blob)
    except PayloadError:
        return False, None


def test_every_decoder_is_fuzzed() -> None:
    names = set(TARGETS)
    assert {"fedkseed.pairs", "fedkseed.downlink", "fedkseed.probs", "frl.rankings"} <= names
    assert sum(n.startswith("update[") for n in names) == len(hostile.CODECS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_valid_payloads_round_trip(name: str) -> None:
    target = TARGETS[name]
    for blob, want in target.corpus:
        ok, got = _decode(target, blob)
        assert ok, name
        assert target.valid(got) and hostile.same(got, want), name


@pytest.mark.parametrize("name", sorted(TARGETS))
@FUZZ
@given(blob=st.binary(max_size=400))
def test_random_bytes_refused_or_valid(name: str, blob: bytes) -> None:
    target = TARGETS[name]
    ok, got = _decode(target, blob)
    assert not ok or target.valid(got)


@pytest.mark.parametrize("name", sorted(TARGETS))
@FUZZ
@given(seed=st.integers(0, 2**63))
def test_mutated_payloads_refused_or_valid(name: str, seed: int) -> None:
    target = TARGETS[name]
    _, blob = hostile.mutate(random.Random(seed), target)
    ok, got = _decode(target, blob)
    assert not ok or target.valid(got)
    originals = [b for b, _ in target.corpus]
    if ok and blob in originals:  # a mutation that undid itself must decode to the original
        assert hostile.same(got, target.corpus[originals.index(blob)][1])
