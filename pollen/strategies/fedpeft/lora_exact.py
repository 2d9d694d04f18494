"""Exact LoRA aggregation: average the products ΔW_i = B_i A_i, then re-factorise at rank r.

Averaging A and B separately is not the average of BA. Here mean(ΔW) is formed implicitly as
[w_1 B_1 … w_n B_n] · [A_1; …; A_n] and factorised through QR of both sides plus an SVD of the
small (n·r × n·r) core, so nothing of size d_out × d_in is ever built.
"""

from __future__ import annotations

import numpy as np


def lora_pairs(names: list[str]) -> list[tuple[str, str]]:
    """(A name, B name) pairs as peft names them (`...lora_A.<adapter>.weight`)."""
    pairs = []
    for a in names:
        if ".lora_A." in a:
            b = a.replace(".lora_A.", ".lora_B.")
            if b in names:
                pairs.append((a, b))
    return pairs


def merge_exact(As: list[np.ndarray], Bs: list[np.ndarray], weights: np.ndarray,
                rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Best rank-`rank` factors (A: r×d_in, B: d_out×r) of Σ w_i B_i A_i (Eckart–Young)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    B_cat = np.concatenate([wi * b.astype(np.float64) for wi, b in zip(w, Bs)], axis=1)  # d_out×nr
    A_cat = np.concatenate([a.astype(np.float64) for a in As], axis=0)  # nr×d_in
    qb, rb = np.linalg.qr(B_cat)
    qa, ra = np.linalg.qr(A_cat.T)
    u, s, vt = np.linalg.svd(rb @ ra.T)
    k = min(rank, len(s))
    root = np.sqrt(s[:k])
    B = (qb @ u[:, :k]) * root
    A = (root[:, None] * vt[:k]) @ qa.T
    if k < rank:  # keep the configured shape; the extra directions carry zero weight
        B = np.pad(B, ((0, 0), (0, rank - k)))
        A = np.pad(A, ((0, rank - k), (0, 0)))
    return A.astype(As[0].dtype), B.astype(Bs[0].dtype)
