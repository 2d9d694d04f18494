"""Seed-replayed Gaussian perturbations, shared by FedKSeed clients and server.

A seed s names a direction z(s) over a list of parameters. Both sides must produce it identically, so
the two *families* below are defined exactly:

``rng="torch"`` (default, portable CPU): ``g = torch.Generator("cpu").manual_seed(s)``; then for each
parameter in list order, ``torch.randn(p.numel(), generator=g, dtype=float32)`` reshaped to p.
CPU and CUDA generators give different streams, so this family is always generated on the CPU (and
copied to the parameter's device). The stream depends on torch's CPU normal kernel: pin one torch
version across the federation (the SIMD path may also differ in the last bits across CPU families).
Fast path: chunks whose lengths are multiples of 16, last chunk >= 16, reproduce one ``randn(n)``
call bit for bit (torch fills 16-wide Box-Muller blocks), so we generate in cache-sized chunks.

``rng="philox"`` (counter-based, same numbers on CPU and GPU up to float rounding): for parameter
number t (list position) and flat element e, with q = e // 4 and lane = e % 4,
``(x0, x1, x2, x3) = Philox4x32-10(counter=(q mod 2^32, q >> 32, t, 0), key=(s mod 2^32, s >> 32))``,
``u1 = (2^24 - (x0 >> 8)) * 2^-24`` (in (0, 1]), ``u2 = (x1 >> 8) * 2^-24``,
``r = sqrt(-2 ln u1)``, ``th = 2pi u2`` (all float32); lanes 0/1 are ``r cos th, r sin th``, lanes 2/3
the same from (x2, x3). The CPU reference is vectorised numpy; on CUDA a Triton kernel regenerates the
K directions in registers and writes each parameter once. They agree to ~1e-6 absolute per number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise, repeat

import numpy as np
import torch

from pollen.errors import ConfigError

try:  # optional GPU path
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is absent on CPU installs
    triton = None

RNG_FAMILIES = ("torch", "philox")
# Multiple of 16 and, with the <= 15 merged tail, below ATen's 32768 grain size: elementwise ops on one
# chunk never fork intra-op threads (our own threads parallelise across seed groups instead).
CHUNK = 32752
# The seed list is cut into this many contiguous groups whatever the thread count, and the groups'
# partial sums are added in order: results do not depend on how many threads ran.
SEED_GROUPS = 8
_M32 = 0xFFFFFFFF
_PHILOX_M = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)


def candidate_seeds(k: int, master_seed: int) -> np.ndarray:
    """K distinct int64 seeds in [1, 2^63) derived from a master seed (Philox, not numpy streams,
    so the list never changes with a numpy upgrade); nobody has to send the list."""
    if k < 1 or not 0 <= master_seed < 2**64:
        raise ConfigError(f"need k >= 1 and 0 <= master_seed < 2^64, got k={k}, master_seed={master_seed}")
    out = np.zeros(k, dtype=np.int64)
    todo = np.arange(k, dtype=np.uint64)
    attempt = 0
    while todo.size:
        x0, x1, _, _ = philox4x32(todo, np.uint64(attempt), np.uint64(0x5EED), np.uint64(0),
                                  master_seed & _M32, master_seed >> 32)
        out[todo.astype(np.int64)] = (((x1 << np.uint64(32)) | x0) >> np.uint64(1)).astype(np.int64)
        _, first = np.unique(out, return_index=True)
        bad = np.ones(k, dtype=bool)
        bad[first] = False
        bad |= out == 0
        todo, attempt = np.flatnonzero(bad).astype(np.uint64), attempt + 1
    return out


def philox4x32(c0, c1, c2, c3, k0: int, k1: int) -> tuple[np.ndarray, ...]:
    """Philox4x32-10 (Salmon et al. 2011) on uint64 numpy arrays holding 32-bit words."""
    c = [np.asarray(x, dtype=np.uint64) for x in (c0, c1, c2, c3)]
    k0, k1 = int(k0) & _M32, int(k1) & _M32
    for _ in range(10):
        p0, p1 = c[0] * _PHILOX_M[0], c[2] * _PHILOX_M[1]  # exact: both factors < 2^32
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0), p1 & np.uint64(_M32),
             (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1), p0 & np.uint64(_M32)]
        k0, k1 = (k0 + _PHILOX_W[0]) & _M32, (k1 + _PHILOX_W[1]) & _M32
    return tuple(c)


def _box_muller(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u1 = (np.uint64(1 << 24) - (a >> np.uint64(8))).astype(np.float32) * np.float32(2.0**-24)
    u2 = (b >> np.uint64(8)).astype(np.float32) * np.float32(2.0**-24)
    r = np.sqrt(np.float32(-2.0) * np.log(u1))
    th = np.float32(6.283185307179586) * u2
    return r * np.cos(th), r * np.sin(th)


def philox_normals(seed: int, t: int, lo: int, hi: int) -> np.ndarray:
    """Elements [lo, hi) of the philox-family direction of seed for parameter number t (float32)."""
    q0, q1 = lo // 4, (hi + 3) // 4
    q = np.arange(q0, q1, dtype=np.uint64)
    s = int(seed) % 2**64
    x = philox4x32(q & np.uint64(_M32), q >> np.uint64(32), np.uint64(t), np.uint64(0), s, s >> 32)
    z = np.empty((q1 - q0, 4), dtype=np.float32)
    z[:, 0], z[:, 1] = _box_muller(x[0], x[1])
    z[:, 2], z[:, 3] = _box_muller(x[2], x[3])
    off = lo - 4 * q0
    return z.reshape(-1)[off : off + hi - lo]


def perturbation(seed: int, params: Sequence[torch.Tensor], rng: str = "torch") -> list[torch.Tensor]:
    """z(seed) materialised as float32 CPU tensors shaped like params (reference; tests and debugging)."""
    _check_rng(rng)
    if rng == "philox":
        return [torch.from_numpy(philox_normals(seed, t, 0, p.numel()).copy()).view(p.shape)
                for t, p in enumerate(params)]
    g = torch.Generator().manual_seed(int(seed))
    return [torch.randn(p.numel(), generator=g).view(p.shape) for p in params]


def apply_seeds_naive(params: Sequence[torch.Tensor], seeds: Sequence[int], coeffs: Sequence[float],
                      *, rng: str = "torch") -> None:
    """params += sum_j c_j z(s_j), one fresh full-size z per seed and parameter (the baseline)."""
    for s, c in zip(seeds, coeffs, strict=True):
        if c != 0.0:
            for p, z in zip(params, perturbation(int(s), params, rng), strict=True):
                p.add_(z.to(p.device), alpha=float(c))


def apply_seeds(params: Sequence[torch.Tensor], seeds: Sequence[int], coeffs: Sequence[float], *,
                rng: str = "torch", src: Sequence[torch.Tensor] | None = None,
                threads: int | None = None) -> None:
    """In place: params = (src or params) + sum_j c_j z(s_j); zero coefficients are skipped.

    Never materialises z: chunk by chunk, each seed group's sum is built in a cache-resident buffer
    and added once. Coefficients act in float32. Deterministic for a given (seeds, coeffs) list and
    independent of ``threads`` (default: torch's thread count); CUDA + philox + Triton takes the kernel.
    """
    _check_rng(rng)
    src = params if src is None else src
    if len(src) != len(params) or any(a.shape != b.shape for a, b in zip(src, params, strict=True)):
        raise ValueError("src and params must have the same shapes")
    c = np.asarray(coeffs, dtype=np.float64).reshape(-1)
    s = np.asarray(seeds, dtype=np.int64).reshape(-1)
    if c.shape != s.shape or not np.all(np.isfinite(c)):
        raise ValueError(f"need one finite coefficient per seed; got {s.size} seeds, {c.size} coeffs")
    keep = c != 0.0
    s, c = s[keep], c[keep]
    if s.size == 0:
        for d, x in zip(params, src, strict=True):
            if d is not x:
                d.copy_(x)
        return
    if (rng == "philox" and triton is not None and params and all(p.is_cuda for p in params)
            and all(x.is_cuda for x in src)):
        _philox_apply_cuda(params, src, s, c)
        return
    fill = _torch_fill(s) if rng == "torch" else _philox_fill(s)
    _apply_chunked(params, src, c.tolist(), fill, threads or torch.get_num_threads())


def _check_rng(rng: str) -> None:
    if rng not in RNG_FAMILIES:
        raise ConfigError(f"unknown rng family {rng!r}; choose one of: {', '.join(RNG_FAMILIES)}")


Fill = Callable[[int, int, int, int, torch.Tensor], None]


def _torch_fill(seeds: np.ndarray) -> Fill:
    # One generator per seed: chunk-outer traversal visits every stream in order, so each continues.
    gens = [torch.Generator().manual_seed(int(x)) for x in seeds]

    def fill(j: int, t: int, lo: int, hi: int, out: torch.Tensor) -> None:
        torch.randn(hi - lo, generator=gens[j], out=out)

    return fill


def _philox_fill(seeds: np.ndarray) -> Fill:
    def fill(j: int, t: int, lo: int, hi: int, out: torch.Tensor) -> None:
        out.copy_(torch.from_numpy(philox_normals(int(seeds[j]), t, lo, hi)))

    return fill


def _pieces(n: int) -> list[tuple[int, int]]:
    """Chunk bounds: all but the last are CHUNK long, a tail under 16 is merged into its neighbour."""
    bounds = [*range(0, n, CHUNK), n]
    if len(bounds) > 2 and n - bounds[-2] < 16:
        del bounds[-2]
    return list(pairwise(bounds))


def _apply_chunked(dsts: Sequence[torch.Tensor], srcs: Sequence[torch.Tensor], coeffs: list[float],
                   fill: Fill, threads: int) -> None:
    groups = np.array_split(np.arange(len(coeffs)), min(SEED_GROUPS, len(coeffs)))
    size = min(CHUNK + 16, max((d.numel() for d in dsts), default=0))
    bufs = [(torch.empty(size), torch.empty(size)) for _ in groups]
    tmp = torch.empty(size)

    def group_sum(gi: int, t: int, lo: int, hi: int) -> tuple[torch.Tensor, float]:
        """(v, a) with v * a = this group's sum; a one-seed group returns (z, c) so that the caller's
        add_(z, alpha=c) is the very operation of the naive path (bit-identical up to 8 seeds)."""
        z, acc = bufs[gi][0][: hi - lo], bufs[gi][1][: hi - lo]
        idx = groups[gi].tolist()
        for n, j in enumerate(idx):
            fill(j, t, lo, hi, z)
            if len(idx) == 1:
                return z, coeffs[j]
            if n == 0:
                torch.mul(z, coeffs[j], out=acc)
            else:
                acc.add_(z, alpha=coeffs[j])
        return acc, 1.0

    workers = min(threads, len(groups))
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        for t, (dst, src) in enumerate(zip(dsts, srcs, strict=True)):
            d, x = dst.view(-1), src.view(-1)
            inplace = dst is src and dst.dtype == torch.float32 and dst.device.type == "cpu"
            for lo, hi in _pieces(d.numel()):
                if pool is not None:
                    n_g = len(groups)
                    accs = list(pool.map(group_sum, range(n_g), repeat(t, n_g), repeat(lo, n_g),
                                         repeat(hi, n_g)))
                out = d[lo:hi] if inplace else tmp[: hi - lo].copy_(x[lo:hi])
                for gi in range(len(groups)):
                    v, a = accs[gi] if pool is not None else group_sum(gi, t, lo, hi)
                    out.add_(v, alpha=a)
                if not inplace:
                    d[lo:hi].copy_(out)
    finally:
        if pool is not None:
            pool.shutdown()


def _philox_apply_cuda(dsts: Sequence[torch.Tensor], srcs: Sequence[torch.Tensor], seeds: np.ndarray,
                       coeffs: np.ndarray) -> None:
    dev = dsts[0].device
    u = seeds.view(np.uint64)
    klo = torch.from_numpy((u & np.uint64(_M32)).astype(np.uint32).view(np.int32)).to(dev)
    khi = torch.from_numpy((u >> np.uint64(32)).astype(np.uint32).view(np.int32)).to(dev)
    c = torch.from_numpy(coeffs.astype(np.float32)).to(dev)
    for t, (dst, src) in enumerate(zip(dsts, srcs, strict=True)):
        n = dst.numel()
        grid = (triton.cdiv(triton.cdiv(n, 4), _BLOCK_Q),)
        _philox_kernel[grid](src.view(-1), dst.view(-1), n, t, klo, khi, c, len(seeds), BLOCK=_BLOCK_Q)


_BLOCK_Q = 256  # quads (4 elements) per Triton program

if triton is not None:  # pragma: no cover - needs CUDA + Triton

    @triton.jit
    def _philox10(c0, c1, c2, c3, k0, k1):
        for _ in tl.static_range(10):
            hi0, lo0 = tl.umulhi(c0, 0xD2511F53), c0 * 0xD2511F53
            hi1, lo1 = tl.umulhi(c2, 0xCD9E8D57), c2 * 0xCD9E8D57
            c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
            k0 = k0 + 0x9E3779B9
            k1 = k1 + 0xBB67AE85
        return c0, c1, c2, c3

    @triton.jit
    def _bm(a, b):
        u1 = (16777216 - (a >> 8)).to(tl.float32) * 5.9604644775390625e-08
        u2 = (b >> 8).to(tl.float32) * 5.9604644775390625e-08
        r = tl.sqrt(-2.0 * tl.log(u1))
        th = 6.283185307179586 * u2
        return r * tl.cos(th), r * tl.sin(th)

    @triton.jit
    def _lane(src_ptr, dst_ptr, idx, n, acc):
        m = idx < n
        p = tl.load(src_ptr + idx, mask=m, other=0.0).to(tl.float32)
        tl.store(dst_ptr + idx, (p + acc).to(dst_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _philox_kernel(src_ptr, dst_ptr, n, t, klo_ptr, khi_ptr, c_ptr, n_seeds, BLOCK: tl.constexpr):
        q = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        q_lo, q_hi = (q & 0xFFFFFFFF).to(tl.uint32), (q >> 32).to(tl.uint32)
        tt = (tl.zeros([BLOCK], dtype=tl.int32) + t).to(tl.uint32, bitcast=True)
        zero = tl.zeros([BLOCK], dtype=tl.uint32)
        a0 = tl.zeros([BLOCK], dtype=tl.float32)
        a1, a2, a3 = a0, a0, a0
        for j in range(n_seeds):  # all K directions regenerated in registers; one write per element
            k0 = tl.load(klo_ptr + j).to(tl.uint32, bitcast=True)
            k1 = tl.load(khi_ptr + j).to(tl.uint32, bitcast=True)
            c = tl.load(c_ptr + j)
            x0, x1, x2, x3 = _philox10(q_lo, q_hi, tt, zero, k0, k1)
            z0, z1 = _bm(x0, x1)
            z2, z3 = _bm(x2, x3)
            a0, a1, a2, a3 = a0 + c * z0, a1 + c * z1, a2 + c * z2, a3 + c * z3
        e = q * 4
        _lane(src_ptr, dst_ptr, e, n, a0)
        _lane(src_ptr, dst_ptr, e + 1, n, a1)
        _lane(src_ptr, dst_ptr, e + 2, n, a2)
        _lane(src_ptr, dst_ptr, e + 3, n, a3)
