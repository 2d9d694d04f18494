"""Supermask (edge-popup) layers for Federated Rank Learning: weights stay frozen, only per-edge scores learn.

The forward pass keeps the top-k fraction of |score| per layer; the backward pass is straight-through to |S|
(autograd's abs then gives sign(S)·g), exactly as the FRL reference (spec §5.2). Models built by name through
`build_supermask_model(name, seed=...)` are bit-identical on every party that uses the same seed, which is
what lets clients and server exchange rankings instead of weights.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pollen.errors import ConfigError, ModelError
from pollen.registry import Registry

ScoreInit = Literal["kaiming", "magnitude"]


def kept_count(n: int, k: float) -> int:
    """Edges a layer of n keeps: the reference zeroes int((1-k)·n); the epsilon stops 0.1·10 → 0.999… → 0."""
    return n - int((1.0 - k) * n + 1e-9)


class _TopAbsMask(torch.autograd.Function):
    """0/1 mask of the `kept_count` largest entries; identity gradient (straight-through)."""

    @staticmethod
    def forward(ctx: object, abs_scores: Tensor, k: float) -> Tensor:  # type: ignore[override]
        flat = abs_scores.detach().flatten()
        mask = torch.zeros_like(flat)
        keep = kept_count(flat.numel(), k)
        if keep > 0:
            mask[torch.topk(flat, keep, sorted=False).indices] = 1.0
        return mask.view_as(abs_scores)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


def _check_k(k: float) -> float:
    if not 0.0 < k <= 1.0:
        raise ConfigError(f"supermask kept fraction k must be in (0, 1], got {k}")
    return float(k)


def signed_kaiming_constant_(weight: Tensor) -> None:
    """W = sign(W0)·gain/√fan_in (ReLU gain, fan_in mode); a zero W0 (measure-zero) counts as positive."""
    fan_in = nn.init._calculate_correct_fan(weight, "fan_in")
    std = nn.init.calculate_gain("relu") / math.sqrt(fan_in)
    with torch.no_grad():
        weight.copy_(torch.where(weight < 0, -std, std))


class SupermaskMixin:
    """Shared mask logic; subclasses own `weight` (frozen), `scores` (trainable) and `k` (kept fraction)."""

    weight: Tensor
    scores: nn.Parameter
    k: float

    def mask(self) -> Tensor:
        """Current 0/1 mask: top-k of |S|, gradients straight through to |S|."""
        return _TopAbsMask.apply(self.scores.abs(), self.k)

    def masked_weight(self) -> Tensor:
        return self.weight * self.mask().to(self.weight.dtype)

    def _init_scores(self, how: ScoreInit) -> None:
        with torch.no_grad():
            if how == "kaiming":
                nn.init.kaiming_uniform_(self.scores, a=math.sqrt(5))
            elif how == "magnitude":
                # Rank-preserving rescale of |W| to the mean |S| of the Kaiming-uniform init, so the paper's
                # score learning rate keeps its meaning; the initial mask is magnitude pruning of W.
                absw = self.weight.detach().abs().float()
                target = 0.5 / math.sqrt(nn.init._calculate_correct_fan(self.scores, "fan_in"))
                self.scores.copy_(absw * (target / absw.mean().clamp_min(1e-12)))
            else:
                raise ConfigError(f"supermask score_init must be 'kaiming' or 'magnitude', got {how!r}")


class SupermaskConv2d(SupermaskMixin, nn.Conv2d):
    """Conv2d with frozen signed-constant weights, no bias, and a learned top-k |score| mask."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, *, k: float = 0.5) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.k = _check_k(k)
        signed_kaiming_constant_(self.weight)
        self.weight.requires_grad_(False)
        self.scores = nn.Parameter(torch.empty_like(self.weight))
        self._init_scores("kaiming")

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.masked_weight(), None)


class SupermaskLinear(SupermaskMixin, nn.Linear):
    """Linear with frozen weights (signed-constant, or pretrained via `from_linear`) and a learned mask."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = False, k: float = 0.5) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.k = _check_k(k)
        signed_kaiming_constant_(self.weight)
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.scores = nn.Parameter(torch.empty_like(self.weight, dtype=torch.float32))
        self._init_scores("kaiming")

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, k: float, score_init: ScoreInit = "magnitude"
                    ) -> SupermaskLinear:
        """Wrap a pretrained Linear: its weight and bias are reused (shared storage) and frozen."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.k = _check_k(k)
        layer.weight = nn.Parameter(linear.weight.detach(), requires_grad=False)
        bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)
        layer.register_parameter("bias", bias)
        layer.scores = nn.Parameter(torch.empty_like(linear.weight, dtype=torch.float32))
        layer._init_scores(score_init)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.masked_weight(), self.bias)


def wrap_linear_with_supermask(module: nn.Module, target: Callable[[str, nn.Linear], bool], *,
                               k: float = 0.9, score_init: ScoreInit = "magnitude") -> list[str]:
    """Replace the selected nn.Linear layers of a pretrained model by supermask linears, in place.

    Every parameter of `module` is frozen (FRL only communicates rankings, so nothing else could be
    aggregated); only the new scores train. Defaults keep the pretrained function: scores start at |W| so the
    initial mask is magnitude pruning, and k=0.9 keeps 90% of each layer (k=0.5 as for random networks
    removes half of every matrix and badly damages a pretrained transformer). Returns the wrapped names.
    """
    _check_k(k)
    for p in module.parameters():
        p.requires_grad_(False)
    chosen = [(name, m) for name, m in module.named_modules()
              if isinstance(m, nn.Linear) and not isinstance(m, SupermaskMixin) and target(name, m)]
    if not chosen:
        raise ModelError("wrap_linear_with_supermask: the target selected no nn.Linear layer")
    for name, lin in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, SupermaskLinear.from_linear(lin, k=k, score_init=score_init))
    return [name for name, _ in chosen]


def supermask_layers(model: nn.Module) -> dict[str, SupermaskMixin]:
    """Supermask layers by module name, in module order: the layer keys of rankings and server state."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SupermaskMixin)}


def get_scores(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies of every layer's scores."""
    return {name: m.scores.detach().clone() for name, m in supermask_layers(model).items()}


def set_scores(model: nn.Module, scores: dict[str, Tensor]) -> None:
    """Load per-layer scores (e.g. the global scores from the vote); names and sizes must match exactly."""
    layers = supermask_layers(model)
    if set(scores) != set(layers):
        raise ModelError(f"scores name layers {sorted(set(scores) ^ set(layers))} the model does not match")
    with torch.no_grad():
        for name, layer in layers.items():
            s = scores[name]
            if s.numel() != layer.scores.numel():
                raise ModelError(f"scores for {name!r} have {s.numel()} entries, layer has "
                                 f"{layer.scores.numel()}")
            layer.scores.copy_(s.reshape(layer.scores.shape))


def layer_sizes(model: nn.Module) -> dict[str, int]:
    """Number of mask-able edges per layer (the expected ranking lengths)."""
    return {name: m.scores.numel() for name, m in supermask_layers(model).items()}


SUPERMASK_MODELS: Registry[Callable[..., nn.Module]] = Registry("supermask model")


@SUPERMASK_MODELS.register("conv4-supermask")
def conv4_supermask(*, num_classes: int = 10, k: float = 0.5) -> nn.Module:
    """Small Conv-family net for 28×28×1 images: 870,176 mask-able weights, cheap on CPU."""
    return nn.Sequential(OrderedDict([
        ("conv1", SupermaskConv2d(1, 32, 3, padding=1, k=k)), ("relu1", nn.ReLU()),
        ("conv2", SupermaskConv2d(32, 32, 3, padding=1, k=k)), ("relu2", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv3", SupermaskConv2d(32, 64, 3, padding=1, k=k)), ("relu3", nn.ReLU()),
        ("conv4", SupermaskConv2d(64, 64, 3, padding=1, k=k)), ("relu4", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", SupermaskLinear(64 * 7 * 7, 256, k=k)), ("relu5", nn.ReLU()),
        ("fc2", SupermaskLinear(256, num_classes, k=k)),
    ]))


@SUPERMASK_MODELS.register("lenet-supermask")
def lenet_supermask(*, num_classes: int = 10, k: float = 0.5) -> nn.Module:
    """FRL's MNIST LeNet (spec §5.2): conv 32, conv 64, maxpool, linear 12544→128→10; 1,625,632 weights."""
    return nn.Sequential(OrderedDict([
        ("conv1", SupermaskConv2d(1, 32, 3, padding=1, k=k)), ("relu1", nn.ReLU()),
        ("conv2", SupermaskConv2d(32, 64, 3, padding=1, k=k)), ("relu2", nn.ReLU()),
        ("pool", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", SupermaskLinear(64 * 14 * 14, 128, k=k)), ("relu3", nn.ReLU()),
        ("fc2", SupermaskLinear(128, num_classes, k=k)),
    ]))


def build_supermask_model(name: str, *, seed: int, num_classes: int = 10, k: float = 0.5) -> nn.Module:
    """Build a registered model with W and S⁰ drawn from `seed` only (global RNG state is left untouched)."""
    builder = SUPERMASK_MODELS.get(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder(num_classes=num_classes, k=k)
