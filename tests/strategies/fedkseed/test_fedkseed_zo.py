"""The zeroth-order client trainer: exact restore, reproducibility, skipping, decay, Pro sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pollen.errors import ConfigError, DataError
from pollen.strategies.fedkseed.seeds import apply_seeds, candidate_seeds
from pollen.strategies.fedkseed.train import decays, zo_train

SEEDS = candidate_seeds(16, 7)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.fc2 = torch.nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.norm(self.fc1(x))))


def _setup(seed: int = 0) -> tuple[Net, list[dict]]:
    torch.manual_seed(seed)
    net = Net()
    g = torch.Generator().manual_seed(seed + 100)
    batches = []
    for _ in range(4):
        x = torch.randn(8, 6, generator=g)
        batches.append({"x": x, "y": x.sum(dim=1, keepdim=True)})
    return net, batches


def mse(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    return torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])


def _state(net: Net) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def _train(net, batches, **kw):
    args = {"seeds": SEEDS, "steps": 12, "lr": 1e-2, "eps": 1e-3, "generator_seed": 3}
    args.update(kw)
    return zo_train(net, batches, mse, **args)


def test_lr_zero_restores_bit_exactly_and_restore_flag():
    net, batches = _setup()
    before = _state(net)
    res = _train(net, batches, lr=0.0, weight_decay=0.1)
    assert len(res.pairs) == 12 and any(g != 0.0 for _, g in res.pairs)
    assert all(torch.equal(a, b) for a, b in zip(before, _state(net), strict=True))
    res = _train(net, batches, restore=True)  # trained, then the start is put back
    assert all(torch.equal(a, b) for a, b in zip(before, _state(net), strict=True))
    assert net.training


def test_reproducible_and_local_model_is_replay_of_pairs():
    net_a, batches = _setup()
    net_b, _ = _setup()
    w0 = _state(net_a)
    res_a, res_b = _train(net_a, batches), _train(net_b, batches)
    assert res_a.pairs == res_b.pairs and res_a.losses == res_b.losses
    assert all(torch.equal(a, b) for a, b in zip(_state(net_a), _state(net_b), strict=True))
    assert all(np.float32(g) == g for _, g in res_a.pairs)  # reported = used
    replay = [p.clone() for p in w0]
    for j, g in res_a.pairs:  # the step-by-step update, as the server would replay it
        apply_seeds(replay, [SEEDS[j]], [-1e-2 * g])
    assert all(torch.equal(a, b) for a, b in zip(replay, _state(net_a), strict=True))
    assert res_a.losses[-1] < res_a.losses[0]  # it actually learns something
    assert net_a.training  # mode restored


def test_nan_steps_skipped_nothing_recorded():
    net, batches = _setup()
    calls = {"n": 0}

    def flaky(model, batch):
        calls["n"] += 1
        return torch.tensor(float("nan")) if calls["n"] in (3, 8) else mse(model, batch)

    res = zo_train(net, batches, flaky, seeds=SEEDS, steps=10, lr=1e-2, eps=1e-3, generator_seed=1)
    assert res.skipped == 2 and len(res.pairs) == 8 == len(res.losses)
    assert all(np.isfinite(g) for _, g in res.pairs)
    clipped = _train(_setup()[0], batches, grad_clip=1e-12)  # every |L+ - L-| exceeds it
    assert clipped.skipped == 12 and clipped.pairs == []


def test_weight_decay_skips_bias_and_norm():
    net, batches = _setup()
    before = dict(net.named_parameters())
    before = {n: p.detach().clone() for n, p in before.items()}

    def const(model, batch):  # g == 0: only decay acts
        return torch.tensor(1.0)

    zo_train(net, batches, const, seeds=SEEDS, steps=5, lr=0.1, eps=1e-3, weight_decay=0.5,
             generator_seed=0)
    for name, p in net.named_parameters():
        if decays(name):
            torch.testing.assert_close(p.detach(), before[name] * 0.95**5)
        else:
            assert torch.equal(p.detach(), before[name]), name
    assert not decays("model.norm.weight") and not decays("layers.0.input_layernorm.weight")
    assert decays("model.layers.0.mlp.up_proj.weight")


def test_pro_probabilities_steer_sampling_and_validation():
    net, batches = _setup()
    probs = np.zeros(16)
    probs[[2, 5]] = [1.0, 3.0]
    res = _train(net, batches, probs=probs, steps=40, lr=0.0)
    idx = [j for j, _ in res.pairs]
    assert set(idx) == {2, 5} and idx.count(5) > idx.count(2)
    with pytest.raises(ConfigError):
        _train(net, batches, probs=np.ones(3))
    with pytest.raises(ConfigError):
        _train(net, batches, eps=0.0)


def test_batches_cycle_and_one_shot_source_runs_dry():
    net, batches = _setup()
    assert len(_train(net, batches, steps=9, lr=0.0).pairs) == 9  # 4 batches, re-iterated
    with pytest.raises(DataError, match="ran dry after 4"):
        _train(net, iter(batches), steps=9)


def test_trainable_subset_only():
    net, batches = _setup()
    fc2_before = [p.detach().clone() for p in net.fc2.parameters()]
    subset = list(net.fc1.parameters())
    w_before = [p.detach().clone() for p in subset]
    _train(net, batches, params=subset)
    assert all(torch.equal(a, b) for a, b in zip(fc2_before, net.fc2.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(w_before, subset, strict=True))
