"""``kmeans:K[:PRECISION[:ITERS]]`` — 1-D k-means of each tensor's present values into at most K
centroids (FedZip step 2).

Paper-intended variant, not the reference code (spec §6.3 (b), §9 FedZip 1-3): exact zeros get a
pinned 0.0 centroid and stay zero; only non-zero values are clustered (into K-1 centroids when a
zero is present). Empty clusters keep their centroid and are dropped from the codebook at the
end, never divided by. Centroids start at quantiles of density^(1/3) (the reference's
linspace(min, max) and plain quantiles converge to worse optima on heavy tails); Lloyd iterates
on sorted values with prefix sums, every tensor at once, one searchsorted per step; the default
5 steps end within 1% of the converged error on LoRA-like updates.
Codebooks travel as bfloat16 by default (PRECISION ``f32`` for float32): a 0.2% centroid shift
is far below the clustering error, and 16 float32s per tensor were 20% of a LoRA payload.
"""

from __future__ import annotations

import numpy as np

from pollen.compression.batch import Batch, tensor_of
from pollen.compression.stage import Kind, Param, Stage, WireError, register


def _init(s: np.ndarray, first: np.ndarray, k: np.ndarray, kmax: int) -> np.ndarray:
    """Initial centroids at quantiles of density^(1/3) (the asymptotically optimal point
    density for squared error, Panter & Dite 1951), estimated from sorted gaps: on heavy-tailed
    updates Lloyd then converges in ~5 steps to a 40% lower error than from plain quantiles."""
    n_seg = len(k)
    if not len(s):
        return np.zeros((n_seg, kmax))
    gaps = np.diff(s)
    w = np.cbrt(gaps * gaps)
    inner = first[1:-1]
    w[inner[(inner > 0) & (inner < len(s))] - 1] = 0.0  # no mass across tensor boundaries
    mass = np.concatenate([[0.0], np.cumsum(w)])
    lo_i = np.minimum(first[:-1], len(s) - 1)
    hi_i = np.maximum(first[1:] - 1, lo_i)
    j = np.minimum(np.arange(kmax)[None, :], np.maximum(k[:, None] - 1, 0))
    frac = (j + 0.5) / np.maximum(k[:, None], 1)
    target = mass[lo_i, None] + frac * (mass[hi_i] - mass[lo_i])[:, None]
    at = np.clip(np.searchsorted(mass, target.ravel()).reshape(n_seg, kmax),
                 lo_i[:, None], hi_i[:, None])
    return s[at]


def segmented_kmeans(v: np.ndarray, seg: np.ndarray, n_seg: int, k: np.ndarray,
                     iters: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster non-zero `v` (tensor `seg`) into k[s] <= K centroids per tensor.

    Returns (centroids (n_seg, K) float64 ascending per row, cluster of each value). Values are
    moved to disjoint bands key = v + seg·band so that one sorted array serves every tensor.
    """
    kmax = int(k.max()) if len(k) else 1
    span = float(np.abs(v).max()) if len(v) else 0.0
    band = 4.0 * span if span > 0 else 1.0
    rows = np.arange(n_seg)
    key = v.astype(np.float64) + seg * band
    order = np.argsort(key)
    s = key[order]
    counts = np.bincount(seg, minlength=n_seg)
    first = np.concatenate([[0], np.cumsum(counts)])
    csum = np.concatenate([[0.0], np.cumsum(s)])
    cent = _init(s, first, k, kmax)
    cent = np.where(counts[:, None] > 0, cent, rows[:, None] * band)
    # Boundaries past a tensor's own k[s] sit above all its values: those clusters stay empty.
    dead = np.arange(kmax - 1)[None, :] >= k[:, None] - 1
    top = (rows * band + 2.0 * span)[:, None]
    edges = np.empty((n_seg, kmax + 1), np.int64)
    edges[:, 0], edges[:, -1] = first[:-1], first[1:]
    prev = None
    settled = len(s) // 1000  # stop once fewer than 0.1% of the values change cluster
    for step in range(iters + 1):
        mids = np.where(dead, top, (cent[:, :-1] + cent[:, 1:]) * 0.5)
        cut = np.searchsorted(s, mids.ravel(), side="right")
        if step == iters or (prev is not None and np.abs(cut - prev).sum() <= settled):
            break
        edges[:, 1:-1] = cut.reshape(n_seg, kmax - 1)
        n = np.diff(edges, axis=1)
        cent = np.where(n > 0, np.diff(csum[edges], axis=1) / np.maximum(n, 1), cent)
        prev = cut
    edges[:, 1:-1] = cut.reshape(n_seg, kmax - 1)
    cluster = np.empty(len(v), np.int64)
    cluster[order] = np.repeat(np.tile(np.arange(kmax), n_seg), np.diff(edges, axis=1).ravel())
    return cent - rows[:, None] * band, cluster


def to_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 to the nearest bfloat16-representable float32 (ties to even)."""
    bits = np.clip(x, -3.0e38, 3.0e38).astype(np.float32).view(np.uint32)
    bits = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return bits.view(np.float32)


@register
class KMeans(Stage):
    name = "kmeans"
    kind = Kind.QUANTIZE
    params = (
        Param("k", int, lo=2, hi=4096),
        Param("precision", str, "bf16", choices=("bf16", "f32")),
        Param("iters", int, 5, lo=0, hi=1000),
    )
    k: int
    precision: str
    iters: int

    def encode(self, batch: Batch) -> None:
        v = batch.values
        assert v is not None
        n_seg = len(batch.names)
        seg = batch.segment_ids()
        nonzero = v != 0
        has_zero = np.bincount(seg[~nonzero], minlength=n_seg) > 0
        k_eff = np.where(has_zero, self.k - 1, self.k)
        cent, cluster = segmented_kmeans(v[nonzero], seg[nonzero], n_seg, k_eff, self.iters)
        # Codebook per tensor: used clusters only, then the pinned zero.
        used = np.zeros(cent.shape, bool)
        used[seg[nonzero], cluster] = True
        rank = np.cumsum(used, axis=1) - 1
        codes = np.empty(len(v), np.uint16)
        codes[nonzero] = rank[seg[nonzero], cluster]
        n_used = used.sum(axis=1)
        codes[~nonzero] = n_used[seg[~nonzero]]
        book = cent.astype(np.float32)
        if self.precision == "bf16":
            book = to_bf16(book)
        # Per tensor: its used centroids (ascending), then the pinned zero if it has one.
        keep = np.concatenate([used, has_zero[:, None]], axis=1)
        book = np.concatenate([book, np.zeros((n_seg, 1), np.float32)], axis=1)
        batch.codebook, batch.book_sizes = book[keep], keep.sum(axis=1)
        batch.codes, batch.values = codes, None
        batch.code_bits = (self.k - 1).bit_length()

    def decode(self, batch: Batch) -> None:
        book, sizes = batch.codebook, batch.book_sizes
        if batch.codes is None or book is None or sizes is None:
            raise WireError("kmeans needs codes and codebooks", "values")
        for t in np.flatnonzero(sizes > self.k):
            raise WireError(f"codebook has {sizes[t]} entries for kmeans:{self.k}", "codebook",
                            int(t))
        bad = np.flatnonzero(~np.isfinite(book))
        if len(bad):
            raise WireError("codebook holds NaN or Inf", "codebook", tensor_of(sizes, bad[0]))
        seg = batch.segment_ids()
        codes = batch.codes.astype(np.int64)
        over = np.flatnonzero(codes >= sizes[seg])
        if len(over):
            t = int(seg[over[0]])
            raise WireError(f"code {codes[over[0]]} outside the {sizes[t]}-entry codebook",
                            "codebook", t)
        batch.values = book[(np.cumsum(sizes) - sizes)[seg] + codes]
        batch.codes = None
