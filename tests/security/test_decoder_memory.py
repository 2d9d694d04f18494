"""Tiny hostile payloads must not make a decoder allocate much (issue 10, part 5).

Each payload is decoded in a fresh process (peak RSS is process-wide and never goes down), after a
warm-up decode, and must be refused with a PayloadError naming the field while the peak RSS grows
by less than 20 MB. Before the fix the same payloads grew it by 287 MB (rice_bomb, 239 bytes),
98 MB (many_tensors, 222 bytes), 56 MB (stage_args) and 34 MB (packed_shape), against a model of
2^19 entries (2 MB of float32): see docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from pollen.compression import Codec
from pollen.protocol.records import to_arrays
from pollen.server.decode import decode_replies
from tests.security import hostile
from tests.strategies import helpers  # noqa: F401  (sets Flower's task identity)
from tests.strategies.helpers import TIMING

ROOT = Path(__file__).resolve().parents[2]
LIMIT_MB = 20.0
FIELDS = {
    "rice_bomb": "indices", "zstd_declared_huge": "body_size", "zstd_lying_header": "body",
    "zstd_understated": "body", "zstd_big_window": "body", "many_tensors": "tensors",
    "packed_shape": "tensors.shape", "stage_args": "compression.args",
    "fedkseed_pairs_count": "indices", "fedkseed_deltas_sections": "log.rounds", "frl_layers": "layers",
    "frl_ids": "fc1.weight",
}


def _measure(name: str, tmp_path: Path) -> dict:
    build, _ = hostile.CONTROL if name == "legit_big" else hostile.AMPLIFIERS[name]
    path = tmp_path / name
    path.write_bytes(build())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "tests.security.hostile", name, str(path)],
                         check=False, capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_amplifier_has_an_expected_field() -> None:
    assert set(FIELDS) == set(hostile.AMPLIFIERS)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_amplification_payload_refused_within_memory_bound(name: str, tmp_path: Path) -> None:
    res = _measure(name, tmp_path)
    assert res["error"] == "PayloadError", res
    assert res["field"] == FIELDS[name], res
    assert res["growth_mb"] < LIMIT_MB, res
    if name not in ("stage_args",):
        assert res["bytes"] < 10_000, res  # these really are tiny


def test_measurement_sees_an_honest_decode(tmp_path: Path) -> None:
    """Control: decoding an honest full-size update does show up (>= its 2 MB float32 output),
    so a small growth above is a real bound, not a blind instrument."""
    res = _measure("legit_big", tmp_path)
    assert res["error"] is None, res
    assert res["growth_mb"] >= 1.5, res


# ---- the server refuses payloads for a codec the run does not use ------------------------------
SHAPES = {"a.lora_A": (4, 16), "a.lora_B": (16, 4)}


def _round(blob: bytes, spec: str) -> tuple[list[Message], list[Message]]:
    rng = np.random.default_rng(1)
    g = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    sent = [Message(content=RecordDict({"arrays": to_arrays(g)}), dst_node_id=7,
                    message_type=MessageType.TRAIN)]
    content = RecordDict({"update": ConfigRecord({"blob": blob, "codec": spec}),
                          "metrics": MetricRecord({**TIMING, "num-examples": 5})})
    return sent, [Message(content=content, reply_to=sent[0])]


def _delta() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    return {k: (rng.normal(size=s) * 0.01).astype(np.float32) for k, s in SHAPES.items()}


@pytest.mark.parametrize("run_codec", ["", "none", None])
def test_run_without_codec_refuses_update_records(run_codec: str | None) -> None:
    blob = Codec.parse("zstd").encode(_delta())
    sent, replies = _round(blob, "zstd")
    kept, dropped = decode_replies(sent, replies, max_bytes=1 << 20, codec=run_codec)
    assert kept == [] and len(dropped) == 1
    assert "no codec" in dropped[0] and "'update'" in dropped[0]


@pytest.mark.parametrize("sender,run", [
    ("topz:0.5 > uniform:4 > zstd", "topz:0.5 > kmeans:16 > zstd"),  # other quantizer
    ("topz:0.25 > kmeans:16 > zstd", "topz:0.5 > kmeans:16 > zstd"),  # other argument
    ("topz:0.5 > kmeans:16", "topz:0.5 > kmeans:16 > zstd"),  # lossless stage missing
    ("zstd", "topz:0.5 > zstd"),  # sparsifier missing
    ("topz:0.5 > zstd", "zstd"),  # extra sparsifier
])
def test_foreign_stage_chain_refused(sender: str, run: str) -> None:
    sent, replies = _round(Codec.parse(sender).encode(_delta()), sender)
    kept, dropped = decode_replies(sent, replies, max_bytes=1 << 20, codec=run)
    assert kept == [] and len(dropped) == 1
    assert "this run's codec uses" in dropped[0], dropped[0]


def test_the_run_codec_itself_is_accepted() -> None:
    spec = "topz:0.5 > kmeans:16 > zstd"
    sent, replies = _round(Codec.parse(spec).encode(_delta()), spec)
    kept, dropped = decode_replies(sent, replies, max_bytes=1 << 20, codec=spec)
    assert dropped == [] and len(kept) == 1 and "arrays" in kept[0].content
