"""`[strategy.params]` of the `flag` strategy: one typed, documented, validated dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from pollen.errors import ConfigError
from pollen.strategies.flag.core import COMBINES, SCALES


@dataclass(frozen=True)
class FlagParams:
    """The Flag Aggregator's knobs (defaults follow the paper, except dedup_tol; see flag/strategy.py)."""

    m: int | None = None  # subspace dimension; None = ⌈n/2⌉ of the round's usable updates
    lam: float = 0.0  # λ of the paper's pairwise regulariser (0: plain flag median)
    max_iters: int = 50  # IRLS steps
    tol: float = 1e-6  # IRLS stops when the objective moves less than this
    scale: str = "median_norm"  # how the unit-norm aggregate is scaled back (one of SCALES)
    combine: str = "unit"  # how updates are combined in the subspace (one of COMBINES)
    dedup_tol: float = 0.01  # near-copies closer than this share one vote; 0 disables
    server_lr: float = 1.0  # step size of the aggregate on the global model
    server_momentum: float = 0.0  # heavy-ball momentum of the server step, in [0, 1)
    weighted: bool = False  # weigh clients by their example counts

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ConfigError(f"strategy.params.scale = {self.scale!r}; choose one of: {', '.join(SCALES)}")
        if self.combine not in COMBINES:
            raise ConfigError(f"strategy.params.combine = {self.combine!r}; choose one of: "
                              f"{', '.join(COMBINES)}")
        if not 0.0 <= self.dedup_tol < 1.0:
            raise ConfigError(f"strategy.params.dedup_tol must be in [0, 1) (0 disables), got "
                              f"{self.dedup_tol}")
        if self.lam < 0 or self.max_iters < 0 or self.tol < 0:
            raise ConfigError("strategy.params: flag needs lam >= 0, max_iters >= 0 and tol >= 0")
        if self.server_lr <= 0:
            raise ConfigError(f"strategy.params.server_lr must be > 0, got {self.server_lr}")
        if not 0 <= self.server_momentum < 1:
            raise ConfigError(f"strategy.params.server_momentum must be in [0, 1), got "
                              f"{self.server_momentum}")

    def check_sampled(self, n: int) -> None:
        """m must fit the clients sampled per round (known only with the federation)."""
        if self.m is not None and not 1 <= self.m <= n:
            raise ConfigError(f"strategy.params.m = {self.m}, but only {n} clients are sampled per round "
                              f"(federation.clients × fraction); use 1 <= m <= {n} or leave m out "
                              f"(default ⌈n/2⌉)")
