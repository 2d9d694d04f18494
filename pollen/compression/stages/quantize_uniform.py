"""``uniform:BITS[:ROUNDING[:SEED]]`` — affine quantisation of the present values to 2**BITS levels.

Per tensor, codes c = round((v - min) / step) with step = (max - min) / (2**BITS - 1); decoded
v̂ = min + c·step in float32. Nearest rounding errs by at most step/2; ``stochastic`` rounding
(floor(u + U[0,1)), seeded) errs by less than step and is unbiased, which matters when many
clients' quantised updates are averaged. Exact zeros are not preserved (use topz first).
"""

from __future__ import annotations

import numpy as np

from pollen.compression.batch import Batch, segment_reduce
from pollen.compression.stage import Kind, Param, Stage, WireError, register

F32_MAX = float(np.finfo(np.float32).max)


def dequantize_affine(codes: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The one formula both the encoder's reconstruction and the decoder use (bit-identical).
    Overflow (hostile offset/scale) gives Inf, which the wire layer rejects afterwards."""
    with np.errstate(over="ignore", invalid="ignore"):
        return offset + codes.astype(np.float32) * scale


@register
class Uniform(Stage):
    name = "uniform"
    kind = Kind.QUANTIZE
    params = (
        Param("bits", int, lo=1, hi=16),
        Param("rounding", str, "nearest", choices=("nearest", "stochastic")),
        Param("seed", int, 0, lo=0),
    )
    bits: int
    rounding: str
    seed: int

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._rng = np.random.default_rng(self.seed)

    def encode(self, batch: Batch) -> None:
        v = batch.values
        assert v is not None
        levels = (1 << self.bits) - 1
        counts = batch.counts()
        lo = segment_reduce(np.minimum, v, counts, 0.0)
        hi = segment_reduce(np.maximum, v, counts, 0.0)
        step = np.minimum((hi.astype(np.float64) - lo) / levels, F32_MAX).astype(np.float32)
        seg = batch.segment_ids(counts)
        inv = np.divide(1.0, step, out=np.zeros_like(step), where=step > 0)
        u = (v - lo[seg]) * inv[seg]
        if self.rounding == "stochastic":
            u += self._rng.random(len(u), dtype=np.float32)
            np.floor(u, out=u)
        else:
            np.rint(u, out=u)
        np.clip(u, 0, levels, out=u)
        batch.codes = u.astype(np.uint8 if self.bits <= 8 else np.uint16)
        batch.values, batch.code_bits, batch.offset, batch.scale = None, self.bits, lo, step

    def decode(self, batch: Batch) -> None:
        if batch.codes is None or batch.code_bits != self.bits:
            raise WireError(f"uniform:{self.bits} needs {self.bits}-bit codes", "code_bits")
        offset, scale = batch.offset, batch.scale
        assert offset is not None and scale is not None
        for name, arr in (("offset", offset), ("scale", scale)):
            bad = np.flatnonzero(~np.isfinite(arr) | ((arr < 0) if name == "scale" else False))
            if len(bad):
                raise WireError(f"{name} {arr[bad[0]]} must be finite"
                                f"{' and >= 0' if name == 'scale' else ''}", name, int(bad[0]))
        seg = batch.segment_ids()
        batch.values = dequantize_affine(batch.codes, offset[seg], scale[seg])
        batch.codes = None
