"""`[strategy.params]` of Flower's baselines, one typed dataclass per strategy that takes any."""

from __future__ import annotations

from dataclasses import dataclass

from pollen.errors import ConfigError


@dataclass(frozen=True)
class NoParams:
    """fedavg and median accept no parameters."""


@dataclass(frozen=True)
class TrimmedMeanParams:
    beta: float = 0.2  # fraction trimmed at each end, per coordinate


@dataclass(frozen=True)
class KrumParams:
    num_malicious_nodes: int = 0  # f, the attackers Krum tolerates


@dataclass(frozen=True)
class MultiKrumParams:
    num_malicious_nodes: int = 0
    num_nodes_to_select: int = 1  # m, the lowest-scoring updates averaged


@dataclass(frozen=True)
class BulyanParams:
    num_malicious_nodes: int = 0

    def check_sampled(self, n: int) -> None:
        """Bulyan needs n >= 4f+3 replies; Flower would silently skip every round otherwise."""
        f = self.num_malicious_nodes
        if f < 0 or n < 4 * f + 3:
            raise ConfigError(f"bulyan with num_malicious_nodes = {f} needs at least 4·f+3 = {4 * f + 3} "
                              f"clients per round, but {n} are sampled; add clients, raise "
                              f"federation.fraction or lower strategy.params.num_malicious_nodes")
