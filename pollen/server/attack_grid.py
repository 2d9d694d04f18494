"""AttackGrid: plays the configured Byzantine clients on the server side of a simulation.

Why server-side: Flower runs every client in its own process (Ray actor), but the strongest attacks
of spec §8 (ALIE, IPM, Min-Max/Min-Sum) need the round's benign updates. Threat model, as in the
literature (NDSS'21, Baruch et al., Xie et al.): the attackers collude and see every benign update
of the round before sending theirs (full knowledge); they do not control the server or the other
clients. So the attackers train honestly like everyone else; once the round's replies are in, this
Grid replaces each attacker's arrays with global + Δ_mal, where Δ_mal is computed by
`ATTACKS.get(name)` from the attacker's own honest update and the benign updates. The strategy
only ever sees the poisoned round, exactly as if the attackers had sent it.

Attackers are the partitions `select_attackers(clients, attack.fraction, attack.seed)`; replies
declare their partition (pollen.protocol.identity). Noise attacks draw from a generator seeded by
(attack.seed, round, partition), so a run is reproducible. Data-side attacks (labelflip) happen on
the client (pollen.attacks.poison); for them this Grid passes replies through.

Order in the ServerApp: Flower's Grid → MeteredGrid (bytes, screening) → AttackGrid → strategy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import Message
from flwr.serverapp import Grid

from pollen.attacks import check_attack, select_attackers
from pollen.config import PollenConfig
from pollen.errors import ConfigError
from pollen.protocol.delegating_grid import DelegatingGrid
from pollen.protocol.flat import Layout
from pollen.protocol.identity import reply_partition
from pollen.server.inbound import is_train

LOG = logging.getLogger("pollen.attack")


@dataclass
class RoundAttack:
    """What the AttackGrid did in one train round (for logs and tests)."""

    server_round: int
    replaced: list[int] = field(default_factory=list)  # partition ids whose arrays were replaced
    benign: list[int] = field(default_factory=list)  # partition ids of the benign replies seen


class AttackGrid(DelegatingGrid):
    """Delegates to `inner`; rewrites the attackers' train replies (see module docstring)."""

    def __init__(self, inner: Grid, cfg: PollenConfig, *, log: logging.Logger = LOG) -> None:
        attack = check_attack(cfg)
        if attack is None:
            raise ConfigError("AttackGrid needs attack.name to be set")
        super().__init__(inner)
        self.attack = attack
        self.attackers = frozenset(select_attackers(cfg.federation.clients, cfg.attack.fraction,
                                                    cfg.attack.seed))
        self.params = {k: v for k, v in cfg.attack.params.items() if k != "base"}
        self.base_is_global = attack.name == "scaling" and "base" in cfg.attack.params
        self.seed = cfg.attack.seed
        self.log = log
        self.history: list[RoundAttack] = []
        self._rounds = 0
        # A warning on purpose: this run's results are deliberately poisoned.
        log.warning("simulated attack %r: partitions %s of %d are Byzantine (attack.seed=%d)",
                    attack.name, sorted(self.attackers), cfg.federation.clients, self.seed)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        messages = list(messages)
        replies = list(self._inner.send_and_receive(messages, timeout=timeout))
        if messages and all(is_train(m) for m in messages) and not self.attack.data_side:
            self._rounds += 1
            self.poison(messages, replies)
        return replies

    def poison(self, sent: list[Message], replies: list[Message]) -> RoundAttack:
        """Replace the attackers' arrays in `replies` in place; returns what was done."""
        server_round = _server_round(sent, self._rounds)
        done = RoundAttack(server_round)
        self.history.append(done)
        by_node = {m.metadata.dst_node_id: m for m in sent}
        entries = []  # (partition, reply, key, layout, global vector, delta)
        for reply in replies:
            pid = reply_partition(reply)
            src = by_node.get(reply.metadata.src_node_id)
            if pid is None or src is None or not src.has_content():
                continue
            key = next((k for k in src.content.array_records if k in reply.content.array_records), None)
            if key is None:
                continue
            layout = Layout.of(src.content.array_records[key])
            if layout.mismatch(reply.content.array_records[key]) is not None:
                continue
            glob = layout.flatten(src.content.array_records[key])
            local = layout.flatten(reply.content.array_records[key])
            entries.append((pid, reply, key, layout, glob, local - glob))
        if replies and not entries:
            self.log.warning("attack %s, round %d: no reply declares its partition id; nothing was "
                             "poisoned (clients must run pollen.client.app)", self.attack.name,
                             server_round)
        entries.sort(key=lambda e: e[0])
        bad = [e for e in entries if e[0] in self.attackers]
        good = [e for e in entries if e[0] not in self.attackers]
        done.benign = [e[0] for e in good]
        if not bad:
            return done
        d, dtype = bad[0][5].size, bad[0][5].dtype
        benign = torch.from_numpy(np.stack([e[5] for e in good]) if good else np.zeros((0, d), dtype))
        n_total, n_bad = len(entries), len(bad)
        shared = None
        for pid, reply, key, layout, glob, delta in bad:
            if shared is None or not self.attack.collusive:
                shared = self._malicious(torch.from_numpy(delta), benign, glob, n_total, n_bad,
                                         server_round, pid)
            reply.content[key] = layout.unflatten(glob + shared.astype(glob.dtype))
            done.replaced.append(pid)
        self.log.info("attack %s, round %d: replaced the updates of partitions %s (%d benign seen)",
                      self.attack.name, server_round, done.replaced, len(good))
        return done

    def _malicious(self, own: torch.Tensor, benign: torch.Tensor, glob: np.ndarray, n_total: int,
                   n_bad: int, server_round: int, pid: int) -> np.ndarray:
        rng = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, server_round, pid]).generate_state(1)[0]))
        params = dict(self.params)
        if self.base_is_global:
            params["base"] = torch.from_numpy(glob)
        mal = self.attack(own, benign, n_total, n_bad, rng, **params)
        out = mal.detach().cpu().numpy()
        if not np.isfinite(out).all():
            raise ConfigError(f"attack {self.attack.name!r} produced non-finite values; check "
                              f"attack.params {self.params}")
        return out


def _server_round(sent: list[Message], fallback: int) -> int:
    for m in sent:
        if m.has_content() and "config" in m.content.config_records:
            value = m.content.config_records["config"].get("server-round")
            if isinstance(value, int):
                return value
    return fallback
