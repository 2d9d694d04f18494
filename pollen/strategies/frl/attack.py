"""FRL's colluding rank-reversal attack (spec §5.6), simulated on the server side of a run.

The attacker clients (`select_attackers(clients, attack.fraction, attack.seed)`, by partition id) train
honestly and their rankings arrive as usual; this Grid wrapper then swaps each of their replies for the
attackers' collective ranking reversed: R_mal = argsort(Σ_a P_a, descending), P_a = positions of
attacker a's edges. Every attacker of the round sends that same R_mal, as in the reference. Deviations:
the collective is built from the attackers sampled in this round (the reference trains 25 attacker models
per round whatever the sample), and rounds are not resampled to keep attackers under half of the round.
Simulation only: it trusts the `partition-id` the clients report in their metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from torch import Tensor

from pollen.errors import PayloadError
from pollen.protocol.delegating_grid import DelegatingGrid
from pollen.strategies.frl.core import borda_sums
from pollen.strategies.frl.strategy import ranking_blob
from pollen.strategies.frl.wire import RANKING, RECORD, decode_rankings, encode_rankings

log = logging.getLogger("pollen.attack")


def reverse_collective(rankings: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Per layer, the attackers' Borda ranking reversed: their most important edges go last.

    Same result as `frl/core.py: rank_reversal` on the scores the rankings came from, since a ranking is
    `rank_scores(S)`; here the server only ever sees rankings.
    """
    if not rankings:
        raise PayloadError("rank reversal needs at least one attacker ranking")
    return {k: torch.argsort(-borda_sums([r[k] for r in rankings]), stable=True).to(torch.int64)
            for k in rankings[0]}


def _partition_id(msg: Message) -> int | None:
    try:
        return int(msg.content["metrics"]["partition-id"])  # type: ignore[index, arg-type]
    except (KeyError, TypeError, ValueError):
        return None


class RankReversalGrid(DelegatingGrid):
    """Delegates to the real Grid; rewrites the attackers' replies after each round's receive."""

    def __init__(self, inner: Grid, attackers: Iterable[int], layer_sizes: Mapping[str, int]) -> None:
        super().__init__(inner)
        self.attackers = frozenset(int(a) for a in attackers)
        self._sizes = dict(layer_sizes)
        self.replaced = 0

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        replies = list(self._inner.send_and_receive(messages, timeout=timeout))
        malicious, honest = [], []
        for msg in replies:
            if msg.has_error() or _partition_id(msg) not in self.attackers:
                continue
            try:  # the attacker's own, honestly trained ranking
                honest.append(decode_rankings(ranking_blob(msg.content), self._sizes))
                malicious.append(msg)
            except PayloadError:
                continue  # a broken reply stays broken; the strategy drops it
        if malicious:
            blob = encode_rankings(reverse_collective(honest))
            for msg in malicious:
                content = RecordDict({**msg.content})
                content[RECORD] = ConfigRecord({RANKING: blob})
                msg.content = content
            self.replaced += len(malicious)
            log.info("rank-reversal: %d of %d replies replaced by the reversed collective ranking",
                     len(malicious), len(replies))
        return replies
