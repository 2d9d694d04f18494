"""Linear-algebra helpers shared by aggregators and attacks (below both, so neither imports the other)."""

from __future__ import annotations

import numpy as np
import torch

GRAM_CHUNK_ELEMS = 1 << 21  # float64 elements per Gram chunk (16 MiB; cache-friendlier)
# Columns per float32 Gram block: a block's float32 sums run over this many products (error
# ≈ √2048·6e-8 ≈ 3e-6 of ‖u_i‖‖u_j‖ at worst, ~1e-7 measured), and the per-block float64 sums
# keep it there however long the updates are. Larger blocks were no faster (bench/aggregation_cost.py).
GRAM_BLOCK32_COLS = 2048


def gram_matrix(updates: torch.Tensor, chunk_elems: int = GRAM_CHUNK_ELEMS, *,
                blocks: str = "float64") -> torch.Tensor:
    """UᵀU-style Gram (n×n, float64, CPU) of the rows of `updates`, accumulated in column chunks.

    blocks="float64" (default) converts every chunk to float64 first: exact to float64 rounding,
    and what callers that subtract Gram entries (distances between close updates) need.
    blocks="float32" multiplies float32 chunks (a float32 GEMM, ~2× the float64 one on CPU and far
    more on GPUs) and accumulates the chunk products in float64, so the error stays that of one
    chunk's float32 sum (≈1e-7 relative to ‖u_i‖‖u_j‖) however long the updates are; float64
    updates, and CUDA with TF32 matmuls allowed, fall back to float64 chunks. CUDA tensors are
    multiplied on their GPU; CPU ones through numpy's BLAS (see `_gram32`).
    """
    if blocks not in ("float32", "float64"):
        raise ValueError(f"gram_matrix blocks must be 'float32' or 'float64', got {blocks!r}")
    if blocks == "float32" and _float32_blocks_ok(updates):
        return _gram32(updates)
    n, d = updates.shape
    chunk = max(1, chunk_elems // max(n, 1))
    gram = torch.zeros((n, n), dtype=torch.float64, device=updates.device)
    for start in range(0, d, chunk):
        block = updates[:, start : start + chunk].to(torch.float64)
        gram += block @ block.T
    return gram.cpu()


def _float32_blocks_ok(updates: torch.Tensor) -> bool:
    if updates.dtype == torch.float64:
        return False  # the caller chose float64: converting would lose what it paid for
    if updates.device.type == "cuda":
        return not torch.backends.cuda.matmul.allow_tf32  # TF32 keeps 10 mantissa bits: 1e-3
    return True


def _gram32(updates: torch.Tensor, cols: int = GRAM_BLOCK32_COLS) -> torch.Tensor:
    """float32 GEMMs per column block, float64 sums across blocks.

    On CPU the blocks go through numpy, whose matmul turns `b @ b.T` into one BLAS syrk (only one
    triangle is multiplied, the result is exactly symmetric): measured 1.6–1.8× faster than torch's
    `b @ b.T` (a full MKL sgemm) on the 2-core AMD EPYC machine of docs/benchmarks.md. Splitting
    the product into upper row tiles by hand was slower with either library at n = 100.
    """
    n, d = updates.shape
    x = updates.detach()
    if x.device.type == "cuda":
        gram = torch.zeros((n, n), dtype=torch.float64, device=x.device)
        for start in range(0, d, cols):
            block = x[:, start : start + cols].to(torch.float32)
            gram += block @ block.T
        return gram.cpu()
    whole = x.numpy() if x.dtype == torch.float32 else None  # a view: no copy of the updates
    out = np.zeros((n, n), dtype=np.float64)
    for start in range(0, d, cols):
        block = whole[:, start : start + cols] if whole is not None else \
            x[:, start : start + cols].to(torch.float32).numpy()
        out += block @ block.T
    return torch.from_numpy(out)
