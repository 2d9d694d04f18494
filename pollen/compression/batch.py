"""The in-memory form of one update while it passes through the codec stages.

All tensors are handled together as one flat float32 concatenation (LoRA updates are ~100
small tensors; per-tensor numpy calls would cost more than the arithmetic). A sparsifier sets
`positions` (sorted, into the concatenation) and `values`; a quantizer swaps `values` for `codes`
plus per-tensor codebooks (`codebook`, `book_sizes`) or `scale`/`offset`. Decoding fills the same fields from the wire
and runs the stages backwards. Stages never see protobuf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16", "float64")


@dataclass
class Batch:
    """Every tensor of one update: dense or sparse, float `values` or integer `codes`."""

    names: list[str]
    shapes: list[tuple[int, ...]]
    dtypes: list[str]
    dense: np.ndarray | None = None  # flat float32 input (encode side), for statistics such as σ
    positions: np.ndarray | None = None  # sorted unique int64 into the concatenation; None = all
    values: np.ndarray | None = None  # float32, one per present entry
    codes: np.ndarray | None = None  # unsigned ints replacing `values` after a quantizer
    code_bits: int = 0
    codebook: np.ndarray | None = None  # float32 lookup tables of all tensors, concatenated
    book_sizes: np.ndarray | None = None  # entries of each tensor's table in `codebook`
    scale: np.ndarray | None = None  # per tensor float32 (uniform step, ternary magnitude)
    offset: np.ndarray | None = None  # per tensor float32 (uniform minimum)
    shuffle: bool = False  # ask the packer to byte-shuffle float values (helps an entropy coder)
    sizes: np.ndarray = field(init=False)
    starts: np.ndarray = field(init=False)  # T+1 cumulative offsets of the tensors

    def __post_init__(self) -> None:
        self.sizes = np.array([math.prod(s) for s in self.shapes], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)

    @property
    def total(self) -> int:
        return int(self.starts[-1])

    def counts(self) -> np.ndarray:
        """Entries present per tensor."""
        if self.positions is None:
            return self.sizes
        return np.diff(np.searchsorted(self.positions, self.starts))

    def segment_ids(self, counts: np.ndarray | None = None) -> np.ndarray:
        """Tensor number of every present entry."""
        counts = self.counts() if counts is None else counts
        return np.repeat(np.arange(len(self.names)), counts)

    def to_flat(self) -> np.ndarray:
        """Scatter `values` into a zero concatenation (float32, writable; never the input)."""
        assert self.values is not None, "codes must be dequantized first"
        if self.positions is None:
            if self.values is self.dense or not self.values.flags.writeable:
                return np.array(self.values, dtype=np.float32, copy=True)
            return self.values.astype(np.float32, copy=False)
        out = np.zeros(self.total, dtype=np.float32)
        out[self.positions] = self.values
        return out

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Per-tensor views of a flat concatenation, in their shapes."""
        return {name: flat[a:b].reshape(shape) for name, shape, a, b in
                zip(self.names, self.shapes, self.starts[:-1], self.starts[1:], strict=True)}


def segment_reduce(ufunc: np.ufunc, x: np.ndarray, counts: np.ndarray, empty: float,
                   dtype: type | None = None) -> np.ndarray:
    """`ufunc` over consecutive segments of `x` of lengths `counts`; `empty` for empty ones."""
    out = np.full(len(counts), empty, dtype=dtype or x.dtype)
    live = counts > 0
    if live.any():
        starts = (np.cumsum(counts) - counts)[live]
        out[live] = ufunc.reduceat(x, starts, dtype=dtype)
    return out


def tensor_of(counts: np.ndarray, entry: int) -> int:
    """Tensor number holding present entry number `entry`."""
    return int(np.searchsorted(np.cumsum(counts), entry, side="right"))
