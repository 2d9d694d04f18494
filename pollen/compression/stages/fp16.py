"""``fp16`` — round present values to IEEE half precision (a cheap 2× with ~1e-3 relative error).

Values beyond ±65504 saturate instead of becoming Inf. Codes are the raw 16-bit patterns.
"""

from __future__ import annotations

import numpy as np

from pollen.compression.batch import Batch, tensor_of
from pollen.compression.stage import Kind, Stage, WireError, register

F16_MAX = float(np.finfo(np.float16).max)


@register
class Fp16(Stage):
    name = "fp16"
    kind = Kind.QUANTIZE

    def encode(self, batch: Batch) -> None:
        assert batch.values is not None
        half = np.clip(batch.values, -F16_MAX, F16_MAX).astype(np.float16)
        batch.codes, batch.code_bits, batch.values = half.view(np.uint16), 16, None

    def decode(self, batch: Batch) -> None:
        if batch.codes is None or batch.code_bits != 16:
            raise WireError("fp16 needs 16-bit codes", "code_bits")
        vals = batch.codes.astype(np.uint16).view(np.float16)
        bad = np.flatnonzero(~np.isfinite(vals))
        if len(bad):
            raise WireError("values hold NaN or Inf", "values", tensor_of(batch.counts(), bad[0]))
        batch.values, batch.codes = vals.astype(np.float32), None
