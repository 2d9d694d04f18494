"""Built-in codec stages; importing a module registers it in `STAGES` (one line per stage)."""

from pollen.compression.stages import fp16, kmeans, quantize_uniform, ternary, topz, zstd

__all__ = ["fp16", "kmeans", "quantize_uniform", "ternary", "topz", "zstd"]
