"""Attack type, the name registry, and the helpers every attack shares (statistics, attacker choice)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pollen.errors import ConfigError
from pollen.registry import Registry

AttackFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Attack:
    """A named poisoning rule: `attack(own, benign, n_total, n_attackers, rng, **params) -> Δ_mal`.

    data_side: the client must train on poisoned data (e.g. flipped labels) and then send `own`;
    needs_own: the rule transforms the attacker's honest update; collusive: every attacker sends the
    same vector computed from the round's benign statistics (rng unused).
    """

    name: str
    fn: AttackFn
    data_side: bool = False
    needs_own: bool = False
    collusive: bool = False

    def param_names(self) -> list[str]:
        sig = inspect.signature(self.fn)
        return [p for p in sig.parameters if p not in ("own", "benign", "n_total", "n_attackers", "rng")]

    def __call__(
        self,
        own: torch.Tensor | None,
        benign: torch.Tensor,
        n_total: int,
        n_attackers: int,
        rng: torch.Generator,
        **params: Any,
    ) -> torch.Tensor:
        unknown = sorted(set(params) - set(self.param_names()))
        if unknown:
            raise ConfigError(f"attack {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                              f"accepted: {', '.join(self.param_names()) or '(none)'}")
        benign = torch.as_tensor(benign)
        if benign.ndim != 2:
            raise ConfigError(f"attack {self.name!r}: benign updates must be (n_benign, d), "
                              f"got shape {tuple(benign.shape)}")
        if own is not None and (own.ndim != 1 or own.shape[0] != benign.shape[1]):
            raise ConfigError(f"attack {self.name!r}: own update must have shape ({benign.shape[1]},), "
                              f"got {tuple(own.shape)}")
        if self.needs_own and own is None:
            raise ConfigError(f"attack {self.name!r} transforms the attacker's own honest update; "
                              f"pass own=")
        if own is None and benign.shape[0] == 0:
            raise ConfigError(f"attack {self.name!r} needs the benign updates or the own update")
        if not 0 <= n_attackers <= n_total:
            raise ConfigError(f"attack {self.name!r}: need 0 <= n_attackers <= n_total "
                              f"(got {n_attackers}, {n_total})")
        return self.fn(own, benign, n_total, n_attackers, rng, **params)


ATTACKS: Registry[Attack] = Registry("attack")


def register(name: str, *, data_side: bool = False, needs_own: bool = False,
             collusive: bool = False) -> Callable[[AttackFn], AttackFn]:
    """Decorator: wrap a rule in an `Attack` and add it to `ATTACKS` under `name`."""

    def deco(fn: AttackFn) -> AttackFn:
        ATTACKS.add(name, Attack(name, fn, data_side, needs_own, collusive))
        return fn

    return deco


def reference_set(own: torch.Tensor | None, benign: torch.Tensor) -> torch.Tensor:
    """The updates the attacker estimates statistics from: benign, or its own one if none are seen."""
    if benign.shape[0] > 0:
        return benign
    assert own is not None
    return own[None, :]


def benign_mean(own: torch.Tensor | None, benign: torch.Tensor) -> torch.Tensor:
    return reference_set(own, benign).to(torch.float64).mean(0)


def benign_std(own: torch.Tensor | None, benign: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise (unbiased) std; never NaN.

    With a single benign update the attacker adds its own honest update as the second sample (it is
    one more draw from the honest distribution); with nothing to compare against the std is zero.
    """
    sample = benign.to(torch.float64)
    if sample.shape[0] < 2 and own is not None:
        sample = torch.cat([sample, own.to(torch.float64)[None, :]])
    if sample.shape[0] < 2:
        return torch.zeros(sample.shape[1], dtype=torch.float64, device=sample.device)
    return sample.std(0, unbiased=True)


def like(x: torch.Tensor, ref_own: torch.Tensor | None, benign: torch.Tensor) -> torch.Tensor:
    """Cast a float64 result back to the dtype/device of the honest updates."""
    ref = ref_own if ref_own is not None else benign
    return x.to(device=ref.device, dtype=ref.dtype)


def flip_labels(labels: torch.Tensor | np.ndarray, num_classes: int) -> torch.Tensor | np.ndarray:
    """All-to-all label flip y' = C−1−y (spec §8), same type as the input."""
    if num_classes < 2:
        raise ConfigError(f"label flipping needs num_classes >= 2, got {num_classes}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ConfigError(f"labels must lie in [0, {num_classes - 1}], found [{lo}, {hi}]")
    return (num_classes - 1) - labels


def select_attackers(n_clients: int, fraction: float, seed: int) -> list[int]:
    """Deterministic, sorted attacker ids: floor(fraction·n) clients drawn without replacement."""
    if n_clients < 0 or not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"need n_clients >= 0 and 0 <= fraction <= 1 (got {n_clients}, {fraction})")
    k = math.floor(round(fraction * n_clients, 9))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_clients, size=k, replace=False))
