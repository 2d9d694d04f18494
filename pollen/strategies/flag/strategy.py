"""Flag Aggregator as a Flower strategy: FedAvg's sampling and messages, a robust aggregate_train.

Each reply's update Δ_i = local − global (all tensors flattened in the global's name order) goes to
`flag_aggregate`; the new global model is global + server_lr · v with v = aggregate, or, with
`server_momentum` β > 0, v ← β·v + aggregate (the reference trains with server SGD, momentum 0.9;
spec §4.3 step 7). Clients still send their full local state, so the strategy works with Pollen's
ordinary ClientApp. Parameters ([strategy.params]): m, lam, max_iters, tol, scale, combine,
dedup_tol, server_lr, server_momentum, weighted. The paper's aggregator is combine = "unit",
dedup_tol = 0; the default dedup_tol = 0.01 (near-copies share one vote) is flag/weights.py's
measured improvement, combine = "clipped" an option against tiny updates that are not copies.

Design decisions (see also flag/core.py's docstring for the deviations from the reference code):
- Unweighted by default (`weighted = false`): `num-examples` is self-reported, and one attacker
  claiming a huge count would dominate a weighted objective and projected sum, undoing the
  robustness. The paper's aggregator is unweighted too. `weighted = true` opts into
  sample-count weights for trusted federations with very unequal data.
- m defaults to ⌈n/2⌉ (the paper's rule of thumb) of the updates that survive validation in each
  round; an explicit m is capped at that count (with a log line) so a round with dropped clients
  still completes. A configured m larger than the sampled clients is a ConfigError up front.
- server_lr: with scale = "median_norm" the step has the median client-update norm, which is
  larger than the norm of a mean of disagreeing (non-IID) updates; server_lr < 1 compensates.
- Every reply is checked here as well (missing or unexpected tensor names, shapes, NaN/Inf in
  the update, including overflow in local − global); a bad reply is dropped with one log line
  naming the node and the reason, and the round goes on with the rest.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from pollen.protocol.flat import Layout
from pollen.strategies.flag.config import FlagParams
from pollen.strategies.flag.core import (
    FlagResult,
    flag_aggregate,
    validate_updates,
)
from pollen.strategies.registry import (
    STRATEGIES,
    StrategyContext,
    sampled_clients,
    sampling_kwargs,
    typed_params,
)

log = logging.getLogger("pollen.server")


class FlagAggregator(FedAvg):
    """Byzantine-robust aggregation of client updates with the Flag Aggregator (Almasi et al. 2024)."""

    def __init__(self, *, m: int | None = None, lam: float = 0.0, max_iters: int = 50,
                 tol: float = 1e-6, scale: str = "median_norm", combine: str = "unit",
                 dedup_tol: float = 0.01, server_lr: float = 1.0, server_momentum: float = 0.0,
                 weighted: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.m, self.lam, self.max_iters, self.tol = m, lam, max_iters, tol
        self.combine, self.dedup_tol = combine, dedup_tol
        self.scale, self.server_lr, self.weighted = scale, server_lr, weighted
        self.server_momentum = server_momentum
        self.velocity: np.ndarray | None = None  # server momentum buffer (flat, layout order)
        self.last: FlagResult | None = None  # diagnostics of the latest round
        self._global: ArrayRecord | None = None
        self._layout: Layout | None = None
        self._global_vec: np.ndarray | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._global, self._layout = arrays, Layout.of(arrays)
        self._global_vec = self._layout.flatten(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self._layout is None or self._global_vec is None:
            raise RuntimeError("aggregate_train before configure_train: no global model to diff against")
        replies = list(replies)
        usable, deltas = self._deltas(server_round, replies)
        if not usable:
            log.warning("flag, round %d: no usable update; the global model stays as it is", server_round)
            return None, None
        errors = [r for r in replies if r.has_error()]
        valid, _ = self._check_and_log_replies(errors + usable, is_train=True)  # valid == usable
        n = len(deltas)
        m = self.m if self.m is not None else math.ceil(n / 2)
        if m > n:
            log.warning("flag, round %d: m=%d but only %d usable updates; using m=%d",
                        server_round, m, n, n)
            m = n
        weights = None
        if self.weighted:
            weights = [float(r.content["metrics"][self.weighted_by_key]) for r in valid]
        res = flag_aggregate(torch.from_numpy(np.stack(deltas)), m=m, lam=self.lam,
                             max_iters=self.max_iters, tol=self.tol, weights=weights,
                             scale=self.scale, combine=self.combine, dedup_tol=self.dedup_tol)
        self.last = res
        log.info("flag, round %d: %d updates, m=%d, rank %d, %d IRLS steps, sines %s, weights %s",
                 server_round, n, m, res.rank, res.iters, np.round(res.sines.numpy(), 3).tolist(),
                 np.round(res.weights.numpy(), 2).tolist())
        step = res.aggregate.numpy().astype(self._global_vec.dtype)
        if self.server_momentum > 0:
            if self.velocity is None or self.velocity.shape != step.shape:
                self.velocity = np.zeros_like(step)
            self.velocity = self.server_momentum * self.velocity + step
            step = self.velocity
        new = self._global_vec + self.server_lr * step
        metrics = self.train_metrics_aggr_fn([r.content for r in valid], self.weighted_by_key)
        return self._layout.unflatten(new), metrics

    def _deltas(self, server_round: int, replies: list[Message]) -> tuple[list[Message], list[np.ndarray]]:
        """Replies whose update can be aggregated, and their updates; the rest are logged and dropped."""
        assert self._layout is not None and self._global_vec is not None
        candidates: list[Message] = []
        deltas: list[np.ndarray] = []
        for reply in replies:
            if reply.has_error():
                continue  # Flower's own reply check logs these
            record = reply.content.array_records.get(self.arrayrecord_key)
            why = (f"no ArrayRecord {self.arrayrecord_key!r}" if record is None
                   else self._layout.mismatch(record))
            if why is not None:
                _drop(server_round, reply, why)
                continue
            with np.errstate(over="ignore", invalid="ignore"):
                deltas.append(self._layout.flatten(record) - self._global_vec)
            candidates.append(reply)
        kept, reasons = validate_updates(deltas, self._layout.size)
        for i, why in reasons.items():
            _drop(server_round, candidates[i], f"update Δ = local − global: {why}")
        return [candidates[i] for i in kept], [deltas[i] for i in kept]


def _drop(server_round: int, reply: Message, why: str) -> None:
    log.warning("flag, round %d: dropping reply from node %d: %s (the round continues without it)",
                server_round, reply.metadata.src_node_id, why)


@STRATEGIES.register("flag")
def build(ctx: StrategyContext) -> FlagAggregator:
    p = typed_params(ctx.cfg, FlagParams)
    p.check_sampled(sampled_clients(ctx.cfg))
    return FlagAggregator(**dataclasses.asdict(p), **sampling_kwargs(ctx.cfg))
