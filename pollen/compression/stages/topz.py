"""``topz:FRACTION[:SCOPE]`` — keep the largest-magnitude entries (FedZip step 1, ComPEFT's top-k).

Exactly ``k = ceil(FRACTION * d)`` entries are kept (d = entries of the tensor, or of the whole
update for scope ``global``); at least one when d > 0. Ties at the threshold are broken towards
the lower position (in update order for ``global``), so the count is exact and deterministic,
unlike the reference ``|x| >= t`` masks that may keep more (spec §9). Tensors of equal size are
selected together with one row-wise partition.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from pollen.compression.batch import Batch
from pollen.compression.stage import Kind, Param, Stage, WireError, register


def keep_count(fraction: float, d: int) -> int:
    """ceil(fraction·d) computed exactly on the decimal fraction (0.05·4600 is 230, not 231)."""
    return min(d, math.ceil(Fraction(repr(fraction)) * d))


def keep_counts(fraction: float, sizes: np.ndarray) -> np.ndarray:
    """`keep_count` for many sizes at once (exact Python integers: no int64 overflow)."""
    f = Fraction(repr(fraction))
    num, den = f.numerator, f.denominator
    return np.array([min(d, -(-d * num // den)) for d in sizes.tolist()], dtype=np.int64)


def top_rows(mag: np.ndarray, k: int) -> np.ndarray:
    """Flat (row-major) positions of the k largest entries of every row of 2-D `mag`, ties to
    the lower column."""
    d = mag.shape[1]
    if k >= d:
        return np.arange(mag.size)
    thr = np.partition(mag, d - k, axis=1)[:, d - k : d - k + 1]
    keep = mag >= thr
    extra = np.count_nonzero(keep, axis=1) - k
    for row in np.flatnonzero(extra):  # ties at the threshold: drop the highest positions
        tied = np.flatnonzero(mag[row] == thr[row])
        keep[row, tied[len(tied) - extra[row] :]] = False
    return np.flatnonzero(keep)


@register
class TopZ(Stage):
    name = "topz"
    kind = Kind.SPARSIFY
    params = (
        Param("fraction", float, lo=0.0, hi=1.0, lo_open=True),
        Param("scope", str, "tensor", choices=("tensor", "global")),
    )
    fraction: float
    scope: str

    def encode(self, batch: Batch) -> None:
        assert batch.values is not None and batch.positions is None
        if self.fraction == 1.0:
            return  # everything kept: stay dense, no positions to send
        values = batch.values
        if self.scope == "global":
            pos = top_rows(np.abs(values).reshape(1, -1), keep_count(self.fraction, batch.total))
        else:  # tensors of one size together: one row-wise partition per distinct size
            parts = []
            for size in np.unique(batch.sizes[batch.sizes > 0]).tolist():
                firsts = batch.starts[:-1][batch.sizes == size]
                rows = np.stack([values[f : f + size] for f in firsts.tolist()])
                flat = top_rows(np.abs(rows, out=rows), keep_count(self.fraction, size))
                parts.append(firsts[flat // size] + flat % size)
            pos = np.sort(np.concatenate(parts)) if len(parts) > 1 else (
                parts[0] if parts else np.zeros(0, np.int64))
        batch.positions = pos.astype(np.int64, copy=False)
        batch.values = batch.values[batch.positions]

    def decode(self, batch: Batch) -> None:
        if self.scope == "global" or batch.positions is None:
            return
        counts, limit = batch.counts(), keep_counts(self.fraction, batch.sizes)
        for t in np.flatnonzero(counts > limit):
            raise WireError(f"{counts[t]} entries but topz:{self.fraction} keeps at most "
                            f"{limit[t]} of {batch.sizes[t]}", "nnz", int(t))
