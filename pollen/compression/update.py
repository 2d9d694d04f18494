"""Client side of compressed updates: Δ = local − global, error feedback, pollen.v1 bytes.

The error-feedback residual lives in Flower's per-node `context.state`, so it survives across
rounds whichever process (Ray actor or fresh `flwr-clientapp`) runs the next round.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context

from pollen.compression import Codec, ErrorFeedback
from pollen.config import PollenConfig
from pollen.protocol.records import UPDATE_KEY, from_arrays, to_arrays

RESIDUAL_KEY = "pollen-ef-residual"


def uses_codec(cfg: PollenConfig) -> bool:
    return cfg.compression.codec.strip().lower() not in ("", "none")


def compress_update(cfg: PollenConfig, context: Context, global_state: dict[str, np.ndarray],
                    local_state: dict[str, np.ndarray]) -> ConfigRecord:
    """Encode the update and carry the residual the codec could not send to the next round."""
    codec = Codec.parse(cfg.compression.codec)
    delta = {k: local_state[k].astype(np.float32) - global_state[k].astype(np.float32)
             for k in local_state}
    if cfg.compression.error_feedback and codec.lossy:
        ef = ErrorFeedback(codec)
        if RESIDUAL_KEY in context.state:
            ef.load_state_dict(from_arrays(context.state[RESIDUAL_KEY]))  # type: ignore[arg-type]
        blob = ef.encode(delta)
        context.state[RESIDUAL_KEY] = to_arrays(ef.state_dict())
    else:
        blob = codec.encode(delta)
    return ConfigRecord({"blob": blob, "codec": codec.spec})


__all__ = ["UPDATE_KEY", "ArrayRecord", "compress_update", "uses_codec"]
