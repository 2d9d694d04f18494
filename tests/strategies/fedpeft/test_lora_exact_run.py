"""`lora_aggregation = "exact"` end to end on a tiny LLaMA: the real client, server runner and ledger.

The server's evaluated (and saved) model must be base + Σ wᵢ·(the clients' trained models), the
residual must reach the clients' frozen weights, be metered down, checkpointed, and reload from the
saved artifacts. Also: a hostile residual record is one clear PayloadError.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Context, Message

from pollen.config import PollenConfig
from pollen.errors import PayloadError
from pollen.protocol.grid import InProcessGrid
from pollen.protocol.records import CONFIG_KEY, config_from_context, from_arrays, payload_bytes
from pollen.strategies.fedpeft.lora_exact import (
    RESIDUAL_FILE,
    RESIDUAL_RECORD,
    add_residual,
    apply_residual,
    lora_pairs,
    residual_key,
    residual_matrix,
    residual_of,
)
from pollen.strategies.fedpeft.runtime import runtime


def _cfg(out: Path, model: Path, data: Path) -> PollenConfig:
    return PollenConfig.load(None, {
        "run.rounds": 2, "run.out": str(out), "model.name": str(model), "model.max_length": 24,
        "data.name": str(data), "data.eval_size": 4, "data.partition": "natural",
        "federation.clients": 3, "train.local_steps": 2, "train.batch_size": 2, "train.lr": 0.05,
        "strategy.lora_aggregation": "exact"})


def _layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """LoRA layers by residual key."""
    names = [n for n, _ in model.named_parameters()]
    return {residual_key(a): model.get_submodule(a.split(".lora_A.")[0]) for a, _ in lora_pairs(names)}


def test_server_model_is_base_plus_mean_of_client_products(tmp_path: Path, tiny_model_dir: Path,
                                                           tiny_data: Path) -> None:
    import pollen.client.app as client_app
    from pollen.server.app import run_server
    from pollen.server.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    cfg = _cfg(tmp_path / "out", tiny_model_dir, tiny_data)
    layers = _layers(runtime(cfg).model)
    w0 = {k: m.base_layer.weight.detach().double().clone() for k, m in layers.items()}
    scale = {k: float(m.scaling["default"]) for k, m in layers.items()}
    a_of = {residual_key(a): (a, b) for a, b in lora_pairs(list(runtime(cfg).initial_state()))}

    def effective(adapter: dict, residual: dict, key: str) -> np.ndarray:
        a, b = a_of[key]
        r = residual_matrix(residual_of(residual, key)) if residual else 0.0
        return w0[key].numpy() + scale[key] * (r + adapter[b].astype(np.float64) @ adapter[a])

    clients: dict[int, list[tuple[dict[str, np.ndarray], int]]] = {}
    received: dict[int, list[dict[str, np.ndarray]]] = {}
    down: dict[int, int] = {}

    def handler(msg: Message, ctx: Context) -> Message:
        rnd = int(msg.content["config"]["server-round"])
        glob = from_arrays(msg.content["arrays"])
        res = from_arrays(msg.content[RESIDUAL_RECORD]) if RESIDUAL_RECORD in msg.content else {}
        received.setdefault(rnd, []).append({k: effective(glob, res, k) for k in layers})
        down[rnd] = down.get(rnd, 0) + payload_bytes(msg.content)
        reply = client_app.train(msg, ctx)
        model = runtime(config_from_context(ctx)).model  # the client trained on base + s·R
        for k, m in _layers(model).items():
            want = w0[k].numpy() + scale[k] * (residual_matrix(residual_of(res, k)) if res else 0.0)
            np.testing.assert_allclose(m.base_layer.weight.detach().double().numpy(), want, atol=1e-6)
        local = from_arrays(reply.content["arrays"])
        clients.setdefault(rnd, []).append(({k: effective(local, res, k) for k in layers},
                                            int(reply.content["metrics"]["num-examples"])))
        return reply

    run_server(InProcessGrid(3, handler, {CONFIG_KEY: cfg.to_json()}), cfg, tmp_path / "out")

    def mean(rnd: int) -> dict[str, np.ndarray]:
        total = sum(n for _, n in clients[rnd])
        return {k: sum(n * e[k] for e, n in clients[rnd]) / total for k in layers}

    def close(got: np.ndarray, want: np.ndarray, key: str) -> None:
        # relative to the update (effective − base), the part aggregation decides
        err = np.linalg.norm(got - want) / np.linalg.norm(want - w0[key].numpy())
        assert err < 1e-5, (key, err)

    for seen in received[2]:  # round 2 started from the round-1 global: the exact mean
        for k in layers:
            close(seen[k], mean(1)[k], k)
    model = runtime(cfg).model  # the server's model after the final save
    final = mean(2)
    for k, m in _layers(model).items():
        a, b = m.lora_A["default"].weight.detach().double(), m.lora_B["default"].weight.detach().double()
        close((m.base_layer.weight.detach().double() + scale[k] * b @ a).numpy(), final[k], k)

    rows = json.loads((tmp_path / "out" / "metrics.json").read_text())["rounds"]
    assert [r["bytes_down"] for r in rows[1:]] == [down[1], down[2]] and down[2] > down[1]
    ckpt = load_checkpoint(tmp_path / "out", cfg)
    assert {residual_key(a_of[k][0]) for k in layers} <= {k.rpartition(".")[0] for k in ckpt.arrays}

    # The saved artifacts rebuild the global model: base + residual file, then the peft adapter.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    add_residual(base, tmp_path / "out" / "adapter" / RESIDUAL_FILE)
    loaded = PeftModel.from_pretrained(base, tmp_path / "out" / "adapter")
    ids = torch.tensor([[1, 5, 9, 200, 7]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5)


def test_a_hostile_residual_is_one_clear_error_and_changes_nothing(tiny_model_dir: Path,
                                                                   tiny_data: Path,
                                                                   tmp_path: Path) -> None:
    model = runtime(_cfg(tmp_path, tiny_model_dir, tiny_data)).model
    key, layer = next(iter(_layers(model).items()))
    d_out, d_in = layer.base_layer.weight.shape
    before = layer.base_layer.weight.detach().clone()
    ok = np.zeros((d_out, d_in), np.float32)
    bad = {
        "wrong shape": ({f"{key}.W": np.zeros((d_out, d_in + 1), np.float32)}, "shape"),
        "NaN": ({f"{key}.W": np.full((d_out, d_in), np.nan, np.float32)}, "finite"),
        "unknown layer": ({"lora-residual/model.nope.default.W": ok}, "no LoRA layer"),
        "unknown adapter": ({key.rpartition(".")[0] + ".other.W": ok}, "no LoRA adapter"),
        "half a factor pair": ({f"{key}.A": np.zeros((2, d_in), np.float32)}, "needs .A and .B"),
        "rank too high": ({f"{key}.A": np.zeros((d_in + 1, d_in), np.float32),
                           f"{key}.B": np.zeros((d_out, d_in + 1), np.float32)}, "rank"),
        "unknown part": ({f"{key}.W": ok, f"{key}.X": ok}, "unknown residual part"),
        "not a residual": ({"model.x.W": ok}, "not a residual"),
    }
    for name, (residual, why) in bad.items():
        with pytest.raises(PayloadError, match=why):
            apply_residual(model, residual)
        assert torch.equal(layer.base_layer.weight, before), name


def test_resume_keeps_the_residual(tmp_path: Path, tiny_model_dir: Path, tiny_data: Path) -> None:
    """Stop after round 1, resume to round 2: the adapter and the residual equal an uninterrupted run's."""
    import dataclasses

    from safetensors.numpy import load_file

    import pollen.client.app as client_app
    from pollen.server.app import run_server

    torch.set_num_threads(1)

    def run(out: Path, rounds: int, resume: bool = False) -> None:
        cfg = _cfg(out, tiny_model_dir, tiny_data)
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, rounds=rounds))
        run_server(InProcessGrid(3, client_app.train, {CONFIG_KEY: cfg.to_json()}), cfg, out,
                   resume=resume)

    run(tmp_path / "a", 2)
    run(tmp_path / "b", 1)
    run(tmp_path / "b", 2, resume=True)
    for name in (RESIDUAL_FILE, "adapter_model.safetensors"):
        a, b = (load_file(str(tmp_path / d / "adapter" / name)) for d in ("a", "b"))
        assert set(a) == set(b) and a
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-7, err_msg=f"{name}:{k}")
