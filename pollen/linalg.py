"""Linear-algebra helpers shared by aggregators and attacks (below both, so neither imports the other)."""

from __future__ import annotations

import torch

GRAM_CHUNK_ELEMS = 1 << 21  # float64 elements per Gram chunk (16 MiB; cache-friendlier)


def gram_matrix(updates: torch.Tensor, chunk_elems: int = GRAM_CHUNK_ELEMS) -> torch.Tensor:
    """UᵀU-style Gram (n×n, float64, CPU) of the rows of `updates`, accumulated in column chunks."""
    n, d = updates.shape
    chunk = max(1, chunk_elems // max(n, 1))
    gram = torch.zeros((n, n), dtype=torch.float64, device=updates.device)
    for start in range(0, d, chunk):
        block = updates[:, start : start + chunk].to(torch.float64)
        gram += block @ block.T
    return gram.cpu()
