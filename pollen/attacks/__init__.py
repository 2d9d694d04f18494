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
