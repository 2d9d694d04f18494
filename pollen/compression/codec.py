"""A codec: an ordered, validated composition of stages, configured by name.

Composition rules (checked at parse time, ConfigError otherwise; decoders re-check them):
  [sparsifier] > [quantizer] > [lossless]  — each kind at most once, in this order.
  sparsifier  topz            dense tensor -> positions + float values (exactly ceil(z·d) kept)
  quantizer   uniform|kmeans|ternary|fp16   present values -> integer codes + per-tensor
              codebook or offset/scale; kmeans keeps exact zeros zero, ternary drops them
  lossless    zstd            compresses the whole serialized tensor list
The empty codec ("" or "none") sends raw float32, still as a valid pollen.v1 message. Positions
(Rice-coded gaps or a bitmap) and codes (bit-packed) are always packed: that is the wire format,
not a stage. A quantizer or ternary without topz works on every entry of the tensor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import pollen.compression.stages  # noqa: F401  (registers the built-in stages)
from pollen.compression import wire
from pollen.compression.batch import DTYPES, Batch
from pollen.compression.stage import Kind, Stage, build_stages, check_composition
from pollen.errors import ConfigError, PayloadError

Update = Mapping[str, Any]
CodecSpec = str | Sequence[str | Mapping[str, Any]] | Mapping[str, Any] | None


_NP_NAMES = {np.dtype(n): n for n in DTYPES if n != "bfloat16"}


def _as_array(name: str, x: Any) -> tuple[np.ndarray, str]:
    """(array, sender dtype name); torch tensors (incl. bfloat16) are converted on the CPU."""
    torch_like = hasattr(x, "detach")  # torch.Tensor, without importing torch
    dtype = str(x.dtype).removeprefix("torch.") if torch_like else None
    if not torch_like:
        x = np.asarray(x)
        dtype = _NP_NAMES.get(x.dtype, x.dtype.name)
    if dtype not in DTYPES:
        raise ConfigError(f"update tensor {name!r} has dtype {dtype}; expected one of "
                          f"{', '.join(DTYPES)}")
    if torch_like:
        x = x.detach().to("cpu").float().numpy()
    return x, dtype


class Codec:
    """Encodes update dicts into self-describing pollen.v1 bytes; decoding needs no codec."""

    def __init__(self, stages: Sequence[Stage] = ()) -> None:
        self.stages = list(stages)
        check_composition(self.stages, f"codec {self.spec!r}")
        self._tensor_stages = [s for s in self.stages if s.kind != Kind.LOSSLESS]
        self._lossless = next((s for s in self.stages if s.kind == Kind.LOSSLESS), None)

    @classmethod
    def parse(cls, spec: CodecSpec) -> Codec:
        """From ``"topz:0.05 > kmeans:16 > zstd"``, ``""``/``"none"``, a list, or a TOML table."""
        if isinstance(spec, Codec):
            return spec
        return cls(build_stages(spec))

    @property
    def spec(self) -> str:
        """Canonical spec string (defaults omitted); ``Codec.parse(c.spec) == c``."""
        return " > ".join(s.spec() for s in self.stages) or "none"

    @property
    def lossy(self) -> bool:
        return bool(self._tensor_stages)

    def __repr__(self) -> str:
        return f"Codec({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    def _encode_batch(self, update: Update) -> Batch:
        if not isinstance(update, Mapping):
            raise ConfigError(f"an update must be a dict of name -> array, got {type(update)}")
        names, shapes, dtypes, arrays = [], [], [], []
        for name, x in update.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"update tensor names must be non-empty strings, got {name!r}")
            arr, dtype = _as_array(name, x)
            names.append(name)
            shapes.append(arr.shape)
            dtypes.append(dtype)
            arrays.append(arr)
        dense = np.concatenate(arrays, axis=None, dtype=np.float32) if arrays else np.zeros(
            0, np.float32)
        batch = Batch(names, shapes, dtypes, dense=dense, values=dense)
        bad = np.flatnonzero(~np.isfinite(dense))
        if len(bad):
            name = names[int(np.searchsorted(batch.starts, bad[0], side="right")) - 1]
            raise PayloadError("update holds NaN or Inf; refusing to send it", field=name)
        for stage in self.stages:
            stage.encode(batch)
        return batch

    def encode(self, update: Update) -> bytes:
        """Serialized pollen.v1 Update of `update` (float arrays, name -> tensor)."""
        batch = self._encode_batch(update)
        return wire.pack_update(batch, self._tensor_stages, self.spec, self._lossless)

    def encode_with_reconstruction(self, update: Update) -> tuple[bytes, dict[str, np.ndarray]]:
        """Bytes plus exactly what the receiver will decode (for error feedback), without a
        decode round trip: the stages' own decoders run on the in-memory codes."""
        batch = self._encode_batch(update)
        blob = wire.pack_update(batch, self._tensor_stages, self.spec, self._lossless)
        for stage in reversed(self._tensor_stages):
            stage.decode(batch)
        return blob, batch.split(batch.to_flat())

    def decode(self, blob: bytes, **kwargs: Any) -> dict[str, np.ndarray]:
        """Same as `decode_update` (the codec's own stages are not needed)."""
        return wire.decode_update(blob, **kwargs)
