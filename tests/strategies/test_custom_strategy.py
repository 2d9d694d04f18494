"""`strategy.name = "module:factory"`: a user's own Flower strategy, with screening and the ledger intact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message

from pollen.config import PollenConfig
from pollen.errors import ConfigError
from pollen.strategies import StrategyContext, build_strategy, method_for
from tests.strategies import user_strategy


@pytest.mark.parametrize("name, fragment", [
    ("no_such_module_xyz:make", "cannot import module 'no_such_module_xyz'"),
    ("tests.strategies.user_strategy:nope", "has no 'nope'"),
    ("tests.strategies.user_strategy:not_a_strategy", "returned int, not a Flower"),
])
def test_bad_plugins_are_one_clear_error(name, fragment):
    cfg = PollenConfig.load(None, {"strategy.name": name})
    with pytest.raises(ConfigError, match=fragment):
        method_for(cfg)
        build_strategy(StrategyContext(cfg=cfg, tensor_names=[]))


def test_flower_classes_take_their_arguments_from_strategy_params():
    from flwr.serverapp.strategy import FedProx

    cfg = PollenConfig.load(None, {"strategy.name": "flwr.serverapp.strategy:FedProx"})
    cfg.strategy.params = {"proximal_mu": 0.25}
    s = build_strategy(StrategyContext(cfg=cfg, tensor_names=[]))
    assert isinstance(s, FedProx) and s.proximal_mu == 0.25 and s.min_available_nodes == 4
    cfg.strategy.params = {"proximal_muu": 0.25}
    with pytest.raises(ConfigError, match="proximal_muu.*strategy.params"):
        build_strategy(StrategyContext(cfg=cfg, tensor_names=[]))


def test_a_user_strategy_runs_behind_screening_and_the_ledger(tmp_path: Path, tiny_model_dir: Path,
                                                              tiny_data: Path) -> None:
    import pollen.client.app as client_app
    from pollen.protocol.grid import InProcessGrid
    from pollen.protocol.records import CONFIG_KEY
    from pollen.server.app import run_server

    torch.set_num_threads(1)
    cfg = PollenConfig.load(None, {
        "run.rounds": 1, "run.out": str(tmp_path), "model.name": str(tiny_model_dir),
        "model.max_length": 24, "data.name": str(tiny_data), "data.eval_size": 4,
        "data.partition": "iid", "federation.clients": 3, "train.local_steps": 1,
        "train.batch_size": 2, "tracking.tensorboard": False,
        "strategy.name": "tests.strategies.user_strategy:make"})

    def handler(msg: Message, ctx) -> Message:  # type: ignore[no-untyped-def]
        reply = client_app.train(msg, ctx)
        if int(ctx.node_config["partition-id"]) == 2:  # a hostile client: NaN update
            arrays = reply.content["arrays"]
            reply.content["arrays"] = ArrayRecord(
                {k: Array(np.full(arrays[k].shape, np.nan, np.float32)) for k in arrays})
        return reply

    user_strategy.SEEN.clear()
    run_server(InProcessGrid(3, handler, {CONFIG_KEY: cfg.to_json()}), cfg, tmp_path)
    assert user_strategy.SEEN == [2]  # the NaN reply never reached the user's strategy
    rows = json.loads((tmp_path / "metrics.json").read_text())["rounds"]
    assert rows[1]["sampled"] == 3 and rows[1]["dropped"] == 1 and rows[1]["aggregated"] == 2
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
