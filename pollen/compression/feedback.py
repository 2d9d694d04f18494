"""Error feedback: carry what compression dropped into the next round's update.

Each round the client encodes u + r (r = residual) and keeps r ← (u + r) − decoded. The sum of
what the server received then equals the sum of true updates minus the current residual, so
aggressive sparsity delays information instead of losing it (Stich et al. 2018; Karimireddy et
al. 2019). ComPEFT has no error feedback; using it with ``ternary`` is our extension.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pollen.compression.codec import Codec, CodecSpec, Update
from pollen.errors import ConfigError


class ErrorFeedback:
    """Client-side residual store around a codec; state is a plain ``dict[str, np.ndarray]``."""

    def __init__(self, codec: Codec | CodecSpec) -> None:
        self.codec = Codec.parse(codec)
        self._residual: dict[str, np.ndarray] = {}

    def encode(self, update: Update) -> bytes:
        """Encode update + residual and update the residual with what was not sent."""
        if not self.codec.lossy:
            return self.codec.encode(update)
        corrected: dict[str, np.ndarray] = {}
        for name, x in update.items():
            arr = np.array(x.detach().to("cpu").float().numpy() if hasattr(x, "detach") else x,
                           dtype=np.float32)  # a copy: it becomes the residual below
            res = self._residual.get(name)
            if res is not None:
                if res.shape != arr.shape:
                    raise ConfigError(f"error feedback: tensor {name!r} changed shape from "
                                      f"{res.shape} to {arr.shape}; reset the residual")
                arr += res
            corrected[name] = arr
        blob, sent = self.codec.encode_with_reconstruction(corrected)
        for name, arr in corrected.items():
            np.subtract(arr, sent[name], out=arr)
            self._residual[name] = arr
        return blob

    def residual_norm(self) -> float:
        return float(np.sqrt(sum(float(np.dot(r.ravel(), r.ravel())) for r in
                                 self._residual.values())))

    def reset(self) -> None:
        self._residual.clear()

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the residuals (float32), e.g. for Flower's Context state."""
        return {k: v.copy() for k, v in self._residual.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        residual = {}
        for name, arr in state.items():
            a = np.array(arr, dtype=np.float32)
            if not np.isfinite(a).all():
                raise ConfigError(f"error feedback state for {name!r} holds NaN or Inf")
            residual[str(name)] = a
        self._residual = residual
