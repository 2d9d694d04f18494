"""Linear-algebra helpers shared by aggregators and attacks (below both, so neither imports the other)."""

from __future__ import annotations

import torch

GRAM_CHUNK_ELEMS = 1 << 21  # float64 elements per Gram chunk (16 MiB; cache-friendlier)
# float32 elements per Gram block: 1 MiB, so a block stays in L2 while the GEMM reuses it, and a
# block's float32 sum runs over few enough columns (≈2,600 at n = 100) to stay near 1e-7 relative.
GRAM_BLOCK32_ELEMS = 1 << 18
# Row tiles of the symmetric Gram: only tiles on or above the diagonal are multiplied (n ≥ 2·TILE).
GRAM_TILE_ROWS = 32


def gram_matrix(updates: torch.Tensor, chunk_elems: int = GRAM_CHUNK_ELEMS, *,
                blocks: str = "float64") -> torch.Tensor:
    """UᵀU-style Gram (n×n, float64, CPU) of the rows of `updates`, accumulated in column chunks.

    blocks="float64" (default) converts every chunk to float64 first: exact to float64 rounding,
    and what callers that subtract Gram entries (distances between close updates) need.
    blocks="float32" multiplies float32 chunks (a float32 GEMM, ~2× the float64 one on CPU and far
    more on GPUs) and accumulates the chunk products in float64, so the error stays that of one
    chunk's float32 sum (≈1e-7 relative to ‖u_i‖‖u_j‖) however long the updates are; float64
    updates, and CUDA with TF32 matmuls allowed, fall back to float64 chunks. It runs on the
    updates' device and multiplies only the row tiles on and above the diagonal.
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


def _gram32(updates: torch.Tensor, block_elems: int = GRAM_BLOCK32_ELEMS,
            tile: int = GRAM_TILE_ROWS) -> torch.Tensor:
    """float32 GEMMs per column block, float64 sums across blocks; upper row tiles only, mirrored."""
    n, d = updates.shape
    x = updates if updates.dtype == torch.float32 else updates.to(torch.float32)
    cols = max(256, block_elems // max(n, 1))
    tiles = [(i, min(i + tile, n)) for i in range(0, n, tile)] if n >= 2 * tile else [(0, n)]
    pairs = [(a, b) for ai, a in enumerate(tiles) for b in tiles[ai:]]
    gram = torch.zeros((n, n), dtype=torch.float64, device=x.device)
    for start in range(0, d, cols):
        block = x[:, start : start + cols]
        for (a0, a1), (b0, b1) in pairs:
            gram[a0:a1, b0:b1] += block[a0:a1] @ block[b0:b1].T
    for ai, (a0, a1) in enumerate(tiles):  # mirror the strictly upper tiles
        for b0, b1 in tiles[ai + 1:]:
            gram[b0:b1, a0:a1] = gram[a0:a1, b0:b1].T
    return (0.5 * (gram + gram.T)).cpu()  # a GEMM's diagonal tile is symmetric only to rounding
