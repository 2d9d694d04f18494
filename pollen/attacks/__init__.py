"""Poisoning attacks for robustness studies (spec §8), looked up by name in `ATTACKS`.

Threat model: attackers collude and see the round's benign updates (full knowledge, the strongest
setting of NDSS'21); with no benign update visible they estimate from their own honest update. Update
attacks are called as `ATTACKS.get(name)(own, benign, n_total, n_attackers, rng, **params)` and return
the vector the attacker sends. `Attack.data_side` marks attacks (labelflip) where the client must
first train on `flip_labels(y, C)` and then send its resulting update unchanged. Collusive attacks
(alie, ipm, minmax, minsum) give every attacker the same vector; the others use `own` and/or `rng`.
"""

from pollen.attacks import ndss, simple
from pollen.attacks.base import ATTACKS, Attack, flip_labels, select_attackers
from pollen.attacks.ndss import deviation_vector, ndss_gamma
from pollen.attacks.simple import alie_z
from pollen.config import PollenConfig
from pollen.errors import ConfigError

__all__ = [
    "ATTACKS",
    "Attack",
    "alie_z",
    "deviation_vector",
    "flip_labels",
    "ndss",
    "ndss_gamma",
    "select_attackers",
    "simple",
]


def check_attack(cfg: PollenConfig) -> Attack | None:
    """Validate [attack] before anything starts: name, parameters, and that someone attacks."""
    if not cfg.attack.name:
        return None
    attack = ATTACKS.get(cfg.attack.name)
    accepted = set(attack.param_names()) | ({"base"} if attack.name == "scaling" else set())
    unknown = sorted(set(cfg.attack.params) - accepted)
    if unknown:
        raise ConfigError(f"attack {attack.name!r} has no parameter(s) {', '.join(unknown)}; "
                          f"accepted: {', '.join(sorted(accepted)) or '(none)'}")
    if attack.name == "scaling" and cfg.attack.params.get("base", "global") != "global":
        raise ConfigError("attack.params.base for 'scaling' can only be \"global\" (θ_global, FRL's "
                          "FedAvg attack); leave it out to scale the attacker's own update")
    if not select_attackers(cfg.federation.clients, cfg.attack.fraction, cfg.attack.seed):
        raise ConfigError(f"attack.fraction = {cfg.attack.fraction} of {cfg.federation.clients} "
                          f"clients selects no attacker; raise the fraction or the client count")
    return attack
