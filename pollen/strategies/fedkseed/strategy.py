"""FedKSeed / FedKSeed-Pro as a Flower strategy: scalars on the wire, a K-vector on the server.

Per round, each sampled node gets ONE message of its own (ConfigRecord "config"): ``server-round``,
``downlink`` (a pollen.v1 SeedDownlink taking the accumulator from b, the version the node last
reported or 0, to the global version V: the per-round log, the entries changed since b, or A_V
entirely (4·K bytes), whichever encodes smallest; all three give the same A_V bits) and, for Pro,
``probs``.
It replies with ``fedkseed.pairs`` (its (seed index, g) pairs) and metrics ``num-examples``,
``model-version`` (the version it trained from) and ``train_loss``.

Catch-up protocol (see pollen.strategies.fedkseed.client for the client half):
- The server tracks each node's synced version from its replies, so a node that skipped rounds
  receives what changed since; its A_V, hence its model rebuilt from w_0, is bit-for-bit the one
  of a node that never skipped. The message never exceeds 4·K bytes plus a header.
- A node that cannot reach V from what it holds (its stored log was lost) trains nothing and reports
  the version it does hold; its reply is dropped and the next message starts from that version.
- Replies are validated: wrong version, missing fields, garbage bytes, seed index >= K, NaN values,
  more pairs than local steps, bad sample counts. A bad reply is dropped with a log line naming the
  node and the reason; the round aggregates the others (weighted by num-examples, or equally).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from pollen.errors import PayloadError
from pollen.protocol.records import to_arrays
from pollen.strategies.fedkseed.config import FedKSeedParams
from pollen.strategies.fedkseed.state import SeedAccumulator
from pollen.strategies.fedkseed.wire import (
    decode_pairs,
    encode_downlink_smallest,
    encode_probabilities,
)
from pollen.strategies.registry import STRATEGIES, StrategyContext, sampling_kwargs, typed_params

# A child of Flower's logger: its lines land in the run's log next to Flower's own round lines.
log = logging.getLogger("flwr.pollen.fedkseed")

REPLY_KEY = "fedkseed"  # ConfigRecord of the reply holding the "pairs" bytes


class FedKSeed(Strategy):
    """Holds the SeedAccumulator; sends each node the deltas it lacks; aggregates scalar pairs."""

    def __init__(self, acc: SeedAccumulator, *, local_steps: int, fraction_train: float = 1.0,
                 min_train_nodes: int = 1, min_available_nodes: int = 1, seed: int = 0,
                 **_unused: Any) -> None:
        self.acc = acc
        self.seed = seed
        self.local_steps = local_steps
        self.fraction_train = fraction_train
        self.min_train_nodes = min_train_nodes
        self.min_available_nodes = min_available_nodes
        self.synced: dict[int, int] = {}  # node id -> version it last reported
        # Last round's replies that were not aggregated, and why: invalid content / error replies.
        self.dropped: dict[int, str] = {}
        self.failed: dict[int, str] = {}

    # -- Flower's Strategy interface ---------------------------------------------------------------
    def summary(self) -> None:
        log.info("\t├──> FedKSeed%s: K=%d, lr=%g, local steps=%d, weights=%s", "-Pro" if self.acc.pro
                 else "", self.acc.k, self.acc.lr, self.local_steps,
                 "equal" if self.acc.equal_weight else "num-examples")
        log.info("\t└──> Sampling: fraction %.2f, min train nodes %d, min available %d",
                 self.fraction_train, self.min_train_nodes, self.min_available_nodes)

    def initial_arrays(self) -> ArrayRecord:
        """The server-side state Flower threads through `start`: A and its version (never sent)."""
        return to_arrays({"A": self.acc.A.copy(), "version": np.array([self.acc.version], np.int64)})

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        node_ids = self._sample(grid, server_round)
        version = self.acc.version
        probs = encode_probabilities(self.acc.probabilities()) if self.acc.pro else None
        messages = []
        for node in node_ids:
            base = min(self.synced.get(node, 0), version)
            down, _ = encode_downlink_smallest(self.acc.downlinks(base), self.acc.k)
            rec = ConfigRecord({**dict(config.items()), "server-round": server_round, "downlink": down})
            if probs is not None:
                rec["probs"] = probs
            messages.append(Message(content=RecordDict({"config": rec}), dst_node_id=node,
                                    message_type=MessageType.TRAIN))
        log.info("configure_train: round %d, version %d, %d nodes", server_round, version, len(messages))
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self.dropped, self.failed = {}, {}
        accepted: list[tuple[list[tuple[int, float]], int, float]] = []
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            if msg.has_error():
                self.failed[node] = str(msg.error.reason)
                log.warning("round %d: node %d replied with an error: %s", server_round, node,
                            msg.error.reason)
                continue
            try:
                accepted.append(self._parse(msg, node))
            except PayloadError as e:
                self._drop(server_round, node, str(e))
        if not accepted:
            log.warning("round %d: no valid FedKSeed reply; the global model stays at version %d",
                        server_round, self.acc.version)
            return None, None
        delta = self.acc.aggregate([(pairs, n) for pairs, n, _ in accepted])
        total = sum(n for _, n, _ in accepted)
        losses = [(loss, n) for _, n, loss in accepted if math.isfinite(loss)]
        metrics = {"num-examples": total, "clients": len(accepted), "version": self.acc.version,
                   "pairs": sum(len(p) for p, _, _ in accepted), "seeds-touched": int(delta.indices.size)}
        if losses:
            metrics["train_loss"] = sum(x * n for x, n in losses) / sum(n for _, n in losses)
        return self.initial_arrays(), MetricRecord(metrics)

    # -- checkpoints (pollen server --resume) ------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The accumulator: A, its version, the per-round log and the Pro |g| statistics (hence the
        seed probabilities). Sampling needs no state (seeded by run seed and round).

        Nodes' synced versions are deliberately not kept: after a server restart the nodes hold
        nothing for the new run (Flower's context.state is per run, node ids are new), so every
        node's first message after a resume is the full A (<= 4·K bytes), which any node can apply.
        """
        return {f"acc/{k}": v for k, v in self.acc.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.acc.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("acc/")})
        self.synced = {}

    def _sample(self, grid: Grid, server_round: int) -> list[int]:
        """Flower's `sample_nodes` waits for enough nodes; the pick itself is seeded by (seed, round)
        so runs repeat (Flower draws from the unseeded global `random`)."""
        available = len(list(grid.get_node_ids()))
        size = max(int(available * self.fraction_train), self.min_train_nodes)
        _, nodes = sample_nodes(grid, self.min_available_nodes, size)
        nodes = sorted(nodes)
        pick = np.random.default_rng([self.seed, server_round]).choice(len(nodes), size=size,
                                                                        replace=False)
        return [nodes[i] for i in sorted(pick)]

    # Evaluation is centralised on the server (the runner's evaluate_fn).
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None

    # -- reply validation --------------------------------------------------------------------------
    def _drop(self, server_round: int, node: int, reason: str) -> None:
        self.dropped[node] = reason
        log.warning("round %d: dropped the reply of node %d: %s", server_round, node, reason)

    def _parse(self, msg: Message, node: int) -> tuple[list[tuple[int, float]], int, float]:
        content = msg.content
        metrics = content.get("metrics") if "metrics" in content else None
        if not isinstance(metrics, MetricRecord):
            raise PayloadError("reply has no 'metrics' MetricRecord", client=node, field="metrics")
        version = metrics.get("model-version")
        if not isinstance(version, int) or not 0 <= version <= self.acc.version:
            raise PayloadError(f"model-version must be an int in [0, {self.acc.version}], got {version!r}",
                               client=node, field="model-version")
        self.synced[node] = version  # where the node's model is, whatever else is wrong
        if version != self.acc.version:
            raise PayloadError(f"node is at version {version}, not {self.acc.version}: it could not "
                               f"catch up and trained nothing; it gets the history from {version} next "
                               "time", client=node, field="model-version")
        n = metrics.get("num-examples")
        if not isinstance(n, int) or n <= 0:
            raise PayloadError(f"num-examples must be a positive int, got {n!r}", client=node,
                               field="num-examples")
        rec = content.get(REPLY_KEY) if REPLY_KEY in content else None
        blob = rec.get("pairs") if isinstance(rec, ConfigRecord) else None
        if not isinstance(blob, bytes):
            raise PayloadError(f"reply has no '{REPLY_KEY}.pairs' bytes", client=node, field="pairs")
        pairs = decode_pairs(blob, self.acc.k, max_pairs=self.local_steps, client=node)
        loss = metrics.get("train_loss", math.nan)
        return pairs, n, float(loss) if isinstance(loss, int | float) else math.nan


def _build(ctx: StrategyContext, pro: bool) -> FedKSeed:
    typed_params(ctx.cfg, FedKSeedParams)
    fk = ctx.cfg.fedkseed
    acc = SeedAccumulator(fk.k, master_seed=ctx.cfg.run.seed, lr=fk.lr, pro=pro or fk.pro,
                          clip=fk.pro_clip, equal_weight=fk.equal_weight)
    return FedKSeed(acc, local_steps=fk.local_steps, seed=ctx.cfg.run.seed, **sampling_kwargs(ctx.cfg))


@STRATEGIES.register("fedkseed")
def fedkseed(ctx: StrategyContext) -> FedKSeed:
    """FedKSeed; `[fedkseed] pro = true` makes it FedKSeed-Pro."""
    return _build(ctx, pro=False)


@STRATEGIES.register("fedkseed-pro")
def fedkseed_pro(ctx: StrategyContext) -> FedKSeed:
    """FedKSeed-Pro: seeds sampled by their historical |g| (whatever `[fedkseed] pro` says)."""
    return _build(ctx, pro=True)

