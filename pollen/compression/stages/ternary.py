"""``ternary:ALPHA[:SCOPE]`` — ComPEFT: every present non-zero value becomes ±α·σ (spec §7.2).

σ is the unbiased standard deviation (torch.std) of the *dense* update before sparsification,
over the whole update (scope ``global``, the default, as the ComPEFT code does) or per tensor
(``tensor``: LoRA A and B updates can differ in scale). Only positions and one sign bit per entry travel,
plus the float32 magnitude s = α·σ per tensor. Zeros, and tensors with σ = 0, send nothing.
"""

from __future__ import annotations

import numpy as np

from pollen.compression.batch import Batch, segment_reduce
from pollen.compression.stage import Kind, Param, Stage, WireError, register


def unbiased_std(n: np.ndarray, s: np.ndarray, ss: np.ndarray) -> np.ndarray:
    """Unbiased std from counts, sums and sums of squares (0 where n < 2)."""
    var = np.maximum(ss - s * s / np.maximum(n, 1), 0.0) / np.maximum(n - 1, 1)
    return np.where(n > 1, np.sqrt(var), 0.0)


@register
class Ternary(Stage):
    name = "ternary"
    kind = Kind.QUANTIZE
    params = (
        Param("alpha", float, lo=0.0, lo_open=True),
        Param("scope", str, "global", choices=("global", "tensor")),
    )
    alpha: float
    scope: str

    def encode(self, batch: Batch) -> None:
        x, v = batch.dense, batch.values
        assert x is not None and v is not None
        s = segment_reduce(np.add, x, batch.sizes, 0.0, np.float64)
        ss = segment_reduce(np.add, x * x, batch.sizes, 0.0, np.float64)
        n = batch.sizes
        if self.scope == "global":
            sigma = np.full(len(n), unbiased_std(n.sum(keepdims=True), s.sum(keepdims=True),
                                                 ss.sum(keepdims=True))[0])
        else:
            sigma = unbiased_std(n, s, ss)
        mag = (self.alpha * sigma).astype(np.float32)
        mag[~np.isfinite(mag)] = 0.0
        seg = batch.segment_ids()
        keep = np.flatnonzero((v != 0) & (mag[seg] > 0))
        if batch.positions is None:
            batch.positions = keep
        else:
            batch.positions = batch.positions[keep]
        batch.codes = (v[keep] > 0).astype(np.uint8)
        batch.values, batch.code_bits, batch.scale = None, 1, mag

    def decode(self, batch: Batch) -> None:
        if batch.codes is None or batch.code_bits != 1:
            raise WireError("ternary needs 1-bit sign codes", "code_bits")
        mag = batch.scale
        assert mag is not None
        counts = batch.counts()
        bad = np.flatnonzero((counts > 0) & ~(np.isfinite(mag) & (mag > 0)))
        if len(bad):
            raise WireError(f"magnitude {mag[bad[0]]} must be finite and > 0", "scale",
                            int(bad[0]))
        m = np.repeat(mag, counts)
        batch.values = np.where(batch.codes.astype(bool), m, -m)
        batch.codes = None
