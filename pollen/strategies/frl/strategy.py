"""FRL as a Flower strategy: broadcast the global ranking, collect rankings, Borda vote (spec §5.3).

The ArrayRecord that Flower's `Strategy.start` threads through the rounds holds the global ranking per
layer (int64 edge ids, least to most important); it never travels. What travels is the compact
`frl/wire.py` encoding (⌈log₂ n⌉ bits per edge; pollen.v1 GlobalRanking down, ClientRanking up) as
bytes in a ConfigRecord. Clients rebuild the global scores exactly from it and the seed-derived score
multiset. Every reply is untrusted: a ranking that does not decode to valid permutations of the right sizes is logged and left out of the vote, and
the round completes with the rest (with none left, the global ranking stays as it was).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from pollen.errors import ConfigError, ModelError, PayloadError
from pollen.strategies.frl.config import FRLParams
from pollen.strategies.frl.core import FRLServerState
from pollen.strategies.frl.wire import RANKING, RECORD, decode_rankings, encode_rankings
from pollen.strategies.registry import STRATEGIES, StrategyContext, sampling_kwargs, typed_params

log = logging.getLogger("pollen.frl")


def ranking_blob(content: RecordDict, client: int | str | None = None) -> bytes:
    """The ranking bytes of a message, or PayloadError when the record is missing or mistyped."""
    try:
        blob = content[RECORD][RANKING]  # type: ignore[index]
    except (KeyError, TypeError):
        raise PayloadError(f"message has no {RECORD}.{RANKING} record", client=client) from None
    if not isinstance(blob, bytes):
        raise PayloadError(f"{RECORD}.{RANKING} must be bytes, got {type(blob).__name__}", client=client)
    return blob


class FRLStrategy(Strategy):
    """Federated Rank Learning; unweighted Borda vote by default ("every vote counts")."""

    def __init__(self, state: FRLServerState, *, lr: float, lr_decay: float, local_epochs: int,
                 fraction_train: float = 1.0, min_train_nodes: int = 1, min_available_nodes: int = 1,
                 seed: int = 0, weighted: bool = False) -> None:
        self.state = state
        self.lr, self.lr_decay, self.local_epochs = lr, lr_decay, local_epochs
        self.fraction_train, self.min_train_nodes = fraction_train, min_train_nodes
        self.min_available_nodes = min_available_nodes
        self.seed, self.weighted = seed, weighted

    # -- state <-> the ArrayRecord Flower carries between rounds ------------------------------------
    def initial_arrays(self) -> ArrayRecord:
        return self._to_arrays()

    def _to_arrays(self) -> ArrayRecord:
        return ArrayRecord({k: Array(r.numpy().copy()) for k, r in self.state.rankings.items()})

    def _load_arrays(self, arrays: ArrayRecord) -> None:
        rankings = {k: torch.from_numpy(np.asarray(arrays[k].numpy(), dtype=np.int64))
                    for k in self.state.shapes}
        self.state = FRLServerState(self.state.shapes, self.state.sorted_scores, rankings)

    # -- checkpoint (pollen/server/checkpoint.py) -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The vote state: per layer its shape, the fixed score multiset and the global ranking.

        Nothing else needs saving: node sampling, the round's lr and the clients' seeds are functions
        of (run.seed, round), and the runner checkpoints the round and the global RNGs itself.
        """
        return {**self.state.state_dict(), "weighted": self.weighted}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; a score multiset other than this run's (another seed or model) is refused."""
        state = dict(state)
        if bool(state.pop("weighted", self.weighted)) != self.weighted:
            raise ConfigError("--resume: the checkpoint's FRL vote weighting differs from this run's")
        restored = FRLServerState(self.state.shapes, self.state.sorted_scores, self.state.rankings)
        try:
            restored.load_state_dict(state)
        except ModelError as e:
            raise ConfigError(f"--resume: {e}") from None
        for k, s in restored.sorted_scores.items():
            if not torch.equal(s.to(self.state.sorted_scores[k].dtype), self.state.sorted_scores[k]):
                raise ConfigError(f"--resume: the checkpoint's score multiset of layer {k!r} is not the "
                                  "one this run's seed and model give")
        self.state = restored

    def round_lr(self, server_round: int) -> float:
        """Reference schedule lr·decay^e with e counted from 0 (Flower round 1 → e = 0)."""
        return self.lr * self.lr_decay ** (server_round - 1)

    # -- Flower hooks -------------------------------------------------------------------------------
    def summary(self) -> None:
        log.info("FRL: %d layers, %d edges; lr %g·%g^(round-1), %d local epoch(s), %s vote",
                 len(self.state.shapes), sum(self.state.layer_sizes().values()), self.lr,
                 self.lr_decay, self.local_epochs, "sample-weighted" if self.weighted else "unweighted")

    def _sample(self, grid: Grid, server_round: int) -> list[int]:
        """Seeded sampling (Flower's `sample_nodes` uses the unseeded global `random`)."""
        while len(nodes := sorted(grid.get_node_ids())) < self.min_available_nodes:
            log.info("waiting for nodes: %d connected, %d needed", len(nodes), self.min_available_nodes)
            time.sleep(1)
        size = min(len(nodes), max(int(len(nodes) * self.fraction_train), self.min_train_nodes))
        # Draw positions, not ids: node ids are uint64 and would not survive a numpy round trip.
        picked = np.random.default_rng([self.seed, server_round]).choice(len(nodes), size=size, replace=False)
        return [nodes[int(i)] for i in sorted(picked)]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._load_arrays(arrays)
        conf = ConfigRecord(dict(config))
        conf["server-round"] = server_round
        conf["lr"] = self.round_lr(server_round)
        conf["local-epochs"] = self.local_epochs
        down = encode_rankings(self.state.rankings, "down")
        content = RecordDict({RECORD: ConfigRecord({RANKING: down}),
                              "config": conf})
        return [Message(content=content, message_type=MessageType.TRAIN, dst_node_id=n)
                for n in self._sample(grid, server_round)]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        expected = self.state.layer_sizes()
        votes, weights, stats = [], [], []
        failed = rejected = 0
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                failed += 1
                log.warning("round %d: node %d failed: %s", server_round, node, msg.error.reason)
                continue
            try:
                rankings = decode_rankings(ranking_blob(msg.content, node), expected, client=node)
                n_ex = _metric(msg.content, "num-examples")
                if self.weighted and not (n_ex is not None and n_ex >= 0):
                    raise PayloadError("weighted vote needs a non-negative num-examples", client=node)
            except PayloadError as e:
                rejected += 1
                log.warning("round %d: dropped a ranking from the vote: %s", server_round, e)
                continue
            votes.append(rankings)
            weights.append(float(n_ex or 0.0))
            stats.append((n_ex, _metric(msg.content, "train_loss"), _metric(msg.content, "train_accuracy")))
        counts: dict[str, Any] = {"accepted": len(votes), "rejected": rejected, "failed": failed}
        if not votes:
            log.warning("round %d: no valid ranking (%d rejected, %d failed); the global ranking stays",
                        server_round, rejected, failed)
            return None, MetricRecord(counts)
        self.state.update(votes, weights if self.weighted else None)
        return self._to_arrays(), MetricRecord({**counts, **_weighted_means(stats)})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return []  # evaluation is central, on the server

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None


def _metric(content: RecordDict, key: str) -> float | None:
    """A finite float from the reply's metrics, or None (metrics are informational and untrusted)."""
    try:
        v = float(content["metrics"][key])  # type: ignore[index, arg-type]
    except (KeyError, TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _weighted_means(stats: list[tuple[float | None, float | None, float | None]]) -> dict[str, float]:
    """Example-weighted train loss/accuracy over the accepted replies that reported them."""
    out: dict[str, float] = {}
    total = sum(n for n, _, _ in stats if n)
    out["num-examples"] = float(total)
    for i, name in ((1, "train_loss"), (2, "train_accuracy")):
        pairs = [(s[0], s[i]) for s in stats if s[0] and s[i] is not None]
        if pairs:
            out[name] = sum(n * v for n, v in pairs) / sum(n for n, _ in pairs)  # type: ignore[operator]
    return out


@STRATEGIES.register("frl")
def build(ctx: StrategyContext) -> FRLStrategy:
    from pollen.strategies.frl.runtime import frl_runtime

    cfg = ctx.cfg
    p = typed_params(cfg, FRLParams)
    kw = sampling_kwargs(cfg)
    state = FRLServerState.from_scores(frl_runtime(cfg).initial_scores)
    return FRLStrategy(state, lr=cfg.frl.lr, lr_decay=cfg.frl.lr_decay, local_epochs=cfg.frl.local_epochs,
                       fraction_train=kw["fraction_train"], min_train_nodes=kw["min_train_nodes"],
                       min_available_nodes=kw["min_available_nodes"], seed=cfg.run.seed,
                       weighted=p.weighted)

