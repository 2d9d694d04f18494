"""One flat vector per ArrayRecord, in a fixed tensor-name order: the form robust rules work on.

Robust aggregation and poisoning attacks reason about a client's whole update as one vector
(distances, angles, coordinate statistics). `Layout` pins the tensor names, shapes and dtypes of the
global model the server sent, so every reply is flattened the same way and the result can be put
back into an ArrayRecord that Flower (and the clients) accept unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord


@dataclass(frozen=True)
class Layout:
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]

    @classmethod
    def of(cls, record: ArrayRecord) -> Layout:
        names = tuple(record.keys())
        return cls(names=names,
                   shapes=tuple(tuple(int(s) for s in record[k].shape) for k in names),
                   dtypes=tuple(np.dtype(record[k].dtype) for k in names))

    @property
    def size(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))

    @property
    def flat_dtype(self) -> np.dtype:
        """float64 if any tensor is float64, else float32: no precision is invented or lost."""
        return np.dtype(np.float64) if np.dtype(np.float64) in self.dtypes else np.dtype(np.float32)

    def mismatch(self, record: ArrayRecord) -> str | None:
        """Why `record` cannot be read with this layout (None when it can)."""
        got = set(record.keys())
        missing = [n for n in self.names if n not in got]
        extra = sorted(got - set(self.names))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing tensors {_short(missing)}")
            if extra:
                parts.append(f"unexpected tensors {_short(extra)}")
            return "; ".join(parts)
        for name, shape in zip(self.names, self.shapes):
            arr_shape = tuple(int(s) for s in record[name].shape)
            if arr_shape != shape:
                return f"tensor {name!r} has shape {arr_shape}, expected {shape}"
        return None

    def flatten(self, record: ArrayRecord) -> np.ndarray:
        """Concatenate the tensors in layout order (call `mismatch` first on untrusted records)."""
        out = np.empty(self.size, dtype=self.flat_dtype)
        pos = 0
        for name in self.names:
            arr = np.asarray(record[name].numpy()).reshape(-1)
            out[pos : pos + arr.size] = arr
            pos += arr.size
        return out

    def unflatten(self, vec: np.ndarray) -> ArrayRecord:
        """Split a flat vector back into named tensors with the layout's shapes and dtypes."""
        vec = np.asarray(vec).reshape(-1)
        if vec.size != self.size:
            raise ValueError(f"flat vector has {vec.size} values, layout needs {self.size}")
        arrays: dict[str, Array] = {}
        pos = 0
        for name, shape, dtype in zip(self.names, self.shapes, self.dtypes):
            k = int(np.prod(shape))
            arrays[name] = Array(np.ascontiguousarray(vec[pos : pos + k].reshape(shape).astype(dtype)))
            pos += k
        return ArrayRecord(arrays)


def _short(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")
