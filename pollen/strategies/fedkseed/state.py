"""FedKSeed / FedKSeed-Pro server state, free of Flower: the K-vector accumulator and its history.

The global model is never sent: w_v = w_0 - lr * sum_j A_v[j] z(s_j), and it is *defined* by that
formula evaluated one way only: ``rebuild(params, w_0, A_v, ...)`` (one `apply_seeds` call over the
nonzero entries of the float32 A_v, in index order, from a kept copy of w_0). Every party (clients,
the server's evaluation, the final save) builds its model with that call from the same A_v bits, so
**parties that hold the same A_v hold the same model, bit for bit**, however they came by A_v, and
nobody's model can drift from anybody else's over rounds.

A_v itself is float32 and exact everywhere: the server adds each round's float32 delta into it
(`aggregate`), and a client reaches the same bits either by the same float32 adds (the per-round
log) or by receiving A_v's values outright (`SeedSet`: the entries changed since its version;
`dense`: all K). `plan_downlink` picks whichever is smallest, so a message is never larger than
4·K bytes plus a header however long the client was away (weight decay does not enter the global
update: it acts inside a client's local steps only, so no per-round factor is needed).

``advance(params, deltas, ...)`` (incremental replay, fewer regenerations) remains for checks: it
equals ``rebuild`` up to float rounding only, so it is not the model any party serves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pollen.errors import ConfigError, PayloadError, PollenError
from pollen.strategies.fedkseed.seeds import apply_seeds, candidate_seeds


class StaleVersionError(PollenError):
    """The per-round log no longer reaches back to the client's version; send delta_since(0) instead."""


@dataclass(frozen=True)
class SeedDelta:
    """A[indices] += values takes the accumulator from base_version to version."""

    base_version: int
    version: int
    indices: np.ndarray  # int64, strictly increasing, in [0, K)
    values: np.ndarray  # float32


@dataclass(frozen=True)
class Downlink:
    """What the server sends a client: how to take A from base_version to version.

    kind "log": `rounds`, the per-round deltas (A[idx] += values, float32, in order);
    kind "set": A_version's values at `indices` (every entry changed after base_version; from
    base_version 0, every nonzero entry, the others being 0);
    kind "dense": `values` is A_version entirely (base_version 0).
    """

    kind: str
    base_version: int
    version: int
    rounds: tuple[SeedDelta, ...] = ()
    indices: np.ndarray | None = None
    values: np.ndarray | None = None


def apply_downlink(held: np.ndarray | None, held_version: int, down: Downlink) -> np.ndarray | None:
    """The receiver's A at down.version (float32, new array), or None when it cannot get there
    (it holds a version older than down.base_version: its state was lost)."""
    if down.kind == "dense":
        assert down.values is not None
        return np.asarray(down.values, np.float32).copy()
    if held is None or held_version < down.base_version or held_version > down.version:
        return None
    a = np.asarray(held, np.float32).copy()
    if down.kind == "set":
        assert down.indices is not None and down.values is not None
        if down.base_version == 0:  # from version 0 the set lists A's nonzero entries: the rest are 0
            a[:] = 0.0
        a[down.indices] = down.values
        return a
    for d in down.rounds:
        if d.base_version >= held_version:
            a[d.indices] += np.asarray(d.values, np.float32)
    return a


def validate_pairs(pairs: Sequence[tuple[int, float]] | np.ndarray, k: int, max_pairs: int | None,
                   *, client: str | int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Check a client's (seed index, g) list; return (indices int64, values float64) arrays."""
    arr = list(pairs)
    if max_pairs is not None and len(arr) > max_pairs:
        raise PayloadError(f"{len(arr)} pairs for at most {max_pairs} local steps", client=client,
                           field="pairs")
    try:
        idx = np.array([int(p[0]) for p in arr], dtype=np.int64)
        val = np.array([float(p[1]) for p in arr], dtype=np.float64)
    except (TypeError, ValueError, IndexError, OverflowError) as exc:
        raise PayloadError(f"pairs must be (int, float) tuples ({exc})", client=client,
                           field="pairs") from None
    if idx.size and (idx.min() < 0 or idx.max() >= k):
        raise PayloadError(f"seed index out of range [0, {k}): {int(idx[(idx < 0) | (idx >= k)][0])}",
                           client=client, field="seed_index")
    if not np.all(np.isfinite(val)):
        raise PayloadError("non-finite scalar gradient (NaN or Inf)", client=client, field="value")
    return idx, val


class SeedAccumulator:
    """A in R^K, the per-round delta log, and (Pro) the per-seed |g| statistics."""

    def __init__(self, k: int, master_seed: int, lr: float, pro: bool = False, clip: float = 1000.0,
                 *, equal_weight: bool = False, keep_rounds: int | None = None) -> None:
        if k < 1 or not lr > 0 or not clip > 0 or (keep_rounds is not None and keep_rounds < 1):
            raise ConfigError(f"fedkseed: need k >= 1, lr > 0, clip > 0, keep_rounds >= 1 or None; "
                              f"got k={k}, lr={lr}, clip={clip}, keep_rounds={keep_rounds}")
        self.k, self.master_seed, self.lr, self.pro, self.clip = k, master_seed, lr, pro, clip
        self.equal_weight, self.keep_rounds = equal_weight, keep_rounds
        self.seeds = candidate_seeds(k, master_seed)
        self.A = np.zeros(k, dtype=np.float32)  # float32: what every party holds, bit for bit
        self.version = 0
        self.log: list[SeedDelta] = []
        # History H_j starts as [0.0] (reference grad_initial): sum 0, count 1.
        self.abs_sum = np.zeros(k, dtype=np.float64)
        self.count = np.ones(k, dtype=np.int64)

    def aggregate(self, client_pairs: Sequence[tuple[Sequence[tuple[int, float]], int]]) -> SeedDelta:
        """One round: A[j] += sum_i w_i G_i[j] with w_i proportional to n_i (or equal); logs the delta."""
        checked = []
        for i, (pairs, n) in enumerate(client_pairs):
            if not (isinstance(n, int | np.integer) and n > 0):
                raise PayloadError(f"n_samples must be a positive int, got {n!r}", client=i,
                                   field="n_samples")
            checked.append((*validate_pairs(pairs, self.k, None, client=i), float(n)))
        total = sum(1.0 if self.equal_weight else n for _, _, n in checked)
        dense = np.zeros(self.k, dtype=np.float64)
        for idx, val, n in checked:
            w = (1.0 if self.equal_weight else n) / total
            dense += np.bincount(idx, weights=val * w, minlength=self.k)
            if self.pro:
                np.add.at(self.abs_sum, idx, np.abs(np.clip(val, -self.clip, self.clip)))
                np.add.at(self.count, idx, 1)
        d32 = dense.astype(np.float32)
        nz = np.flatnonzero(d32)
        delta = SeedDelta(self.version, self.version + 1, nz, d32[nz])
        self.A[nz] += d32[nz]
        self.version += 1
        self.log.append(delta)
        if self.keep_rounds is not None and len(self.log) > self.keep_rounds:
            del self.log[: len(self.log) - self.keep_rounds]
        return delta

    def probabilities(self) -> np.ndarray:
        """Seed sampling distribution (spec §3.2): softmax of min-max-scaled mean |clip(g)|."""
        if not self.pro:
            return np.full(self.k, 1.0 / self.k)
        psi = self.abs_sum / self.count
        scaled = (psi - psi.min()) / (psi.max() - psi.min() + 1e-10)
        p = np.exp(scaled - scaled.max())
        return p / p.sum()

    def _check_version(self, version: int) -> None:
        if not (isinstance(version, int | np.integer) and 0 <= version <= self.version):
            raise PayloadError(f"version must be in [0, {self.version}], got {version!r}",
                               field="version")

    def deltas_since(self, version: int) -> list[SeedDelta]:
        """The logged per-round deltas after `version`, oldest first (for exact replay)."""
        self._check_version(version)
        out = [d for d in self.log if d.base_version >= version]
        if version < self.version and (not out or out[0].base_version != version):
            raise StaleVersionError(f"per-round log starts at version {self.log[0].base_version}, "
                                    f"client is at {version}; send delta_since(0) and rebuild")
        return out

    def delta_since(self, version: int) -> tuple[np.ndarray, np.ndarray]:
        """Merged A_now - A_version as sparse (indices, float64 values); version 0 gives A itself."""
        self._check_version(version)
        if version == 0:
            nz = np.flatnonzero(self.A)
            return nz, self.A[nz].astype(np.float64)
        dense = np.zeros(self.k, dtype=np.float64)
        for d in self.deltas_since(version):
            dense[d.indices] += d.values.astype(np.float64)
        nz = np.flatnonzero(dense)
        return nz, dense[nz]

    def changed_since(self, version: int) -> np.ndarray | None:
        """Indices touched after `version` (sorted), or None if the log no longer reaches back."""
        self._check_version(version)
        if version == 0:
            return np.flatnonzero(self.A)
        try:
            ds = self.deltas_since(version)
        except StaleVersionError:
            return None
        if not ds:
            return np.zeros(0, np.int64)
        return np.unique(np.concatenate([d.indices for d in ds]))

    def downlinks(self, version: int) -> list[Downlink]:
        """Every form that takes a client at `version` to the current A (the caller sends the
        smallest): the per-round log and the changed entries when the log reaches back, always
        the dense vector."""
        out = [Downlink("dense", 0, self.version, values=self.A.copy())]
        changed = self.changed_since(version)
        if changed is not None:
            out.append(Downlink("set", version, self.version, indices=changed,
                                values=self.A[changed].copy()))
            if version > 0:
                out.append(Downlink("log", version, self.version, rounds=tuple(self.deltas_since(version))))
        return out

    def state_dict(self) -> dict[str, Any]:
        """numpy arrays + JSON-able scalars, for checkpoints."""
        lens = [d.indices.size for d in self.log]
        return {
            "k": self.k, "master_seed": self.master_seed, "lr": self.lr, "pro": self.pro,
            "clip": self.clip, "equal_weight": self.equal_weight, "keep_rounds": self.keep_rounds,
            "version": self.version, "A": self.A.copy(), "abs_sum": self.abs_sum.copy(),
            "count": self.count.copy(),
            "log_versions": np.array([d.version for d in self.log], dtype=np.int64),
            "log_offsets": np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
            "log_indices": np.concatenate([d.indices for d in self.log] or [np.zeros(0, np.int64)]),
            "log_values": np.concatenate([d.values for d in self.log] or [np.zeros(0, np.float32)]),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("k", "master_seed", "lr", "pro"):
            if state[key] != getattr(self, key):
                raise ConfigError(f"checkpoint has fedkseed {key}={state[key]!r}, run has "
                                  f"{getattr(self, key)!r}")
        state = {k: np.asarray(v) if hasattr(v, "__array__") else v for k, v in state.items()}
        if np.shape(state["A"]) != (self.k,) or np.asarray(state["A"]).dtype != np.float32:
            raise ConfigError(f"checkpoint accumulator must be ({self.k},) float32, got "
                              f"{np.shape(state['A'])} {np.asarray(state['A']).dtype}")
        self.version = int(state["version"])
        self.A = np.asarray(state["A"], dtype=np.float32).copy()
        self.abs_sum = np.asarray(state["abs_sum"], dtype=np.float64).copy()
        self.count = np.asarray(state["count"], dtype=np.int64).copy()
        off, idx, val = state["log_offsets"], state["log_indices"], state["log_values"]
        self.log = [SeedDelta(int(v) - 1, int(v), np.asarray(idx[a:b], dtype=np.int64),
                              np.asarray(val[a:b], dtype=np.float32))
                    for v, a, b in zip(state["log_versions"], off[:-1], off[1:], strict=True)]


def advance(params: Sequence[torch.Tensor], deltas: Sequence[SeedDelta], seeds: np.ndarray, lr: float,
            *, rng: str = "torch", threads: int | None = None) -> None:
    """In place: replay deltas in order, w <- w - lr * sum_j delta_j z(s_j)."""
    for d in deltas:
        coeffs = [-lr * float(v) for v in d.values]
        apply_seeds(params, seeds[d.indices], coeffs, rng=rng, threads=threads)


def rebuild(params: Sequence[torch.Tensor], params0: Sequence[torch.Tensor], a: np.ndarray,
            seeds: np.ndarray, lr: float, *, rng: str = "torch", threads: int | None = None) -> None:
    """In place: params = w_0 - lr * sum_j A[j] z(s_j), THE definition of the global model.

    One apply_seeds call over A's nonzero entries in index order (deterministic and independent of
    the thread count), so equal A bits give equal model bits on every party.
    """
    a = np.asarray(a, np.float32)
    nz = np.flatnonzero(a)
    coeffs = [-lr * float(x) for x in a[nz]]
    if not all(math.isfinite(c) for c in coeffs):
        raise ConfigError("accumulator holds non-finite values")
    apply_seeds(params, seeds[nz], coeffs, rng=rng, src=params0, threads=threads)


def reconstruct(params0: Sequence[torch.Tensor], acc: SeedAccumulator, *, rng: str = "torch",
                threads: int | None = None) -> list[torch.Tensor]:
    """w_0 - lr * sum_j A_j z(s_j) as new tensors (`rebuild` into fresh copies)."""
    out = [p.detach().clone() for p in params0]
    rebuild(out, params0, acc.A, acc.seeds, acc.lr, rng=rng, threads=threads)
    return out
