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
        """At most `size` bytes out, and no more than a `size`-sized window in the decoder.

        Checked before any decompression: the frame's declared content size and window, and the
        compressed length against zstd's own worst case for `size` bytes. Then one bounded call
        (`max_output_size`, trailing data refused).
        """
        if len(data) > compress_bound(size):
            raise ValueError(f"{len(data)} compressed bytes for a body of {size} bytes (zstd "
                             f"never needs more than {compress_bound(size)})")
        try:
            params = zstandard.get_frame_parameters(data)
        except zstandard.ZstdError as exc:
            raise ValueError(f"not a zstd frame ({exc})") from None
        declared = params.content_size
        if declared not in (size, zstandard.CONTENTSIZE_UNKNOWN):
            raise ValueError(f"zstd frame declares {declared} bytes, body_size says {size}")
        window = max(MIN_WINDOW, 1 << max(size - 1, 0).bit_length())
        if params.window_size > window:
            raise ValueError(f"zstd frame asks for a {params.window_size}-byte window, more than "
                             f"{size} bytes of body_size can need ({window})")
        if size == 0:
            if declared != 0:
                raise ValueError("zstd data expands to more than 0 bytes, body_size says 0")
            return b""
        try:
            out = zstandard.ZstdDecompressor(max_window_size=window).decompress(
                data, max_output_size=size, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            if "did not decompress full frame" in str(exc):
                raise ValueError(f"zstd data expands to more than {size} bytes, body_size says "
                                 f"{size}") from None
            raise ValueError(f"corrupt zstd data ({exc})") from None
        if len(out) != size:
            raise ValueError(f"zstd data expands to {len(out)} bytes, body_size says {size}")
        return out


MIN_WINDOW = 1 << 10  # zstd's smallest window


def compress_bound(size: int) -> int:
    """ZSTD_COMPRESSBOUND: the largest frame zstd ever writes for `size` input bytes."""
    small = ((128 << 10) - size) >> 11 if size < (128 << 10) else 0
    return size + (size >> 8) + small + 64  # + frame header, block headers and checksum slack
