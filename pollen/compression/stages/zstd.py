"""``zstd[:LEVEL]`` — Zstandard over the whole serialized tensor list (names, headers, sections).

One frame per update compresses better than one per tensor: LoRA tensors are small and their
names repeat. Float value sections are byte-shuffled first (exponent bytes together). Decoding is
bounded: the frame's declared size must match, and at most `size` bytes are ever produced.
"""

from __future__ import annotations

import zstandard

from pollen.compression.batch import Batch
from pollen.compression.stage import Kind, Param, Stage, register


@register
class Zstd(Stage):
    name = "zstd"
    kind = Kind.LOSSLESS
    params = (Param("level", int, 1, lo=-7, hi=22),)
    level: int

    def encode(self, batch: Batch) -> None:
        batch.shuffle = True

    def compress(self, body: bytes) -> bytes:
        return zstandard.ZstdCompressor(level=self.level).compress(body)

    def decompress(self, data: bytes, size: int) -> bytes:
        try:
            declared = zstandard.get_frame_parameters(data).content_size
        except zstandard.ZstdError as exc:
            raise ValueError(f"not a zstd frame ({exc})") from None
        if declared not in (size, zstandard.CONTENTSIZE_UNKNOWN):
            raise ValueError(f"zstd frame declares {declared} bytes, body_size says {size}")
        try:
            with zstandard.ZstdDecompressor().stream_reader(data) as reader:
                out = reader.read(size + 1)
        except zstandard.ZstdError as exc:
            raise ValueError(f"corrupt zstd data ({exc})") from None
        if len(out) != size:
            raise ValueError(f"zstd data expands to {'more than ' if len(out) > size else ''}"
                             f"{min(len(out), size)} bytes, body_size says {size}")
        return out
