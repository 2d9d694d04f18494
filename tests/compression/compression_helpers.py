"""Helpers shared by the compression tests: small seeded LoRA-like updates and payload surgery."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import zstandard

from pollen.compression._proto.pollen.v1 import update_pb2 as pb


def lora_update(seed: int = 0, layers: int = 2, width: int = 96) -> dict[str, np.ndarray]:
    """Heavy-tailed updates shaped like LoRA A/B factors (r=8; small, so tests stay fast)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(layers):
        out[f"layers.{i}.q.lora_A"] = (1e-3 * rng.standard_t(3, (8, width))).astype(np.float32)
        out[f"layers.{i}.q.lora_B"] = (3e-4 * rng.standard_t(3, (width, 8))).astype(np.float32)
        out[f"layers.{i}.v.lora_B"] = (3e-4 * rng.standard_t(3, (width // 3, 8))).astype(
            np.float32)
    return out


def expected_of(update: dict[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (np.shape(v), np.asarray(v).dtype.name) for k, v in update.items()}


def tamper(blob: bytes, body: Callable[[pb.TensorList], None] | None = None,
           envelope: Callable[[pb.Update], None] | None = None) -> bytes:
    """Re-serialize `blob` after editing its TensorList (stored uncompressed) and/or envelope."""
    msg = pb.Update.FromString(blob)
    if body is not None:
        raw = msg.body
        if msg.HasField("compression"):
            raw = zstandard.ZstdDecompressor().decompress(raw)
            msg.ClearField("compression")
        tl = pb.TensorList.FromString(raw)
        body(tl)
        msg.body = tl.SerializeToString()
        msg.body_size = len(msg.body)
    if envelope is not None:
        envelope(msg)
    return msg.SerializeToString()
