"""Dense FedAvg baseline for the FRL comparison: the same conv4 network with ordinary trainable weights.

Runs Flower's own `FedAvg` strategy object over `InProcessGrid` (no Flower processes), on the same client
split as the FRL run (`pollen.strategies.frl.runtime.client_indices`), with the scaling attack of the FRL paper's
FedAvg experiments (spec §5.6/§8): every attacker's update is Δ_mal = 1e5·θ_global, i.e. it replies with
the model θ_global + 1e5·θ_global (FedAvg here averages models, so that is the same as adding Δ_mal).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from torch import nn

from pollen.attacks import select_attackers
from pollen.config import PollenConfig
from pollen.data.fashion_mnist import load_fashion_mnist, normalize
from pollen.protocol.grid import InProcessGrid
from pollen.strategies.frl.runtime import client_indices
from pollen.strategies.frl.train import TensorBatches, evaluate


def conv4_dense(num_classes: int = 10) -> nn.Module:
    """`conv4-supermask`'s architecture (no biases) with trainable, Kaiming-normal (ReLU, fan_in) weights.

    The scale matches FRL's signed Kaiming constant. PyTorch's default init (gain ≈ 0.58) shrinks the signal
    through six bias-free layers so much that FedAvg barely leaves chance level in 10 rounds.
    """
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 32, 3, padding=1, bias=False)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(32, 32, 3, padding=1, bias=False)), ("relu2", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv3", nn.Conv2d(32, 64, 3, padding=1, bias=False)), ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(64, 64, 3, padding=1, bias=False)), ("relu4", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(64 * 7 * 7, 256, bias=False)), ("relu5", nn.ReLU()),
        ("fc2", nn.Linear(256, num_classes, bias=False)),
    ]))
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    return net


class DenseClient:
    """A ClientApp-style handler: load θ_global, SGD for `epochs` over the client's split, reply θ_local."""

    def __init__(self, cfg: PollenConfig, lr: float, epochs: int) -> None:
        self.cfg, self.lr, self.epochs = cfg, lr, epochs
        self.model = conv4_dense()
        self.data = load_fashion_mnist()

    def __call__(self, msg: Message, ctx: Context) -> Message:
        pid, n = int(ctx.node_config["partition-id"]), int(ctx.node_config["num-partitions"])
        rnd = int(msg.content["config"]["server-round"])
        self.model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        idx = client_indices(self.cfg, pid, n)
        batches = TensorBatches(normalize(self.data.train_images[idx]), self.data.train_labels[idx],
                                self.cfg.frl.batch_size, seed=self.cfg.run.seed * 7919 + rnd * 31 + pid)
        opt = torch.optim.SGD(self.model.parameters(), lr=self.lr * 0.999 ** (rnd - 1), momentum=0.9,
                              weight_decay=1e-4)
        self.model.train()
        total, seen = 0.0, 0
        for _ in range(self.epochs):
            for x, y in batches:
                loss = F.cross_entropy(self.model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, seen = total + float(loss.detach()) * len(y), seen + len(y)
        return Message(content=RecordDict({
            "arrays": ArrayRecord(self.model.state_dict()),
            "metrics": MetricRecord({"num-examples": len(idx), "train_loss": total / seen, "partition-id": pid}),
        }), reply_to=msg)


class ScalingGrid(InProcessGrid):
    """Attackers (by partition id) reply θ_g + factor·θ_g, θ_g being the model the server just sent them."""

    def __init__(self, n: int, handler: Any, attackers: Iterable[int], factor: float = 1e5) -> None:
        super().__init__(n, handler)
        self.attackers, self.factor = set(attackers), factor

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        messages = list(messages)
        replies = list(super().send_and_receive(messages, timeout=timeout))
        for ins, rep in zip(messages, replies):
            pid = int(self.contexts[ins.metadata.dst_node_id].node_config["partition-id"])
            if pid in self.attackers and not rep.has_error():
                g = ins.content["arrays"].to_torch_state_dict()
                rep.content["arrays"] = ArrayRecord({k: v + self.factor * v for k, v in g.items()})
        return replies


def run_fedavg(cfg: PollenConfig, *, lr: float, attack_fraction: float, log: Any = print
               ) -> dict[str, Any]:
    """Dense FedAvg rounds with central evaluation on the first 2000 test images, then the full test set."""
    data = load_fashion_mnist()
    model = conv4_dense()
    test = (normalize(data.test_images), data.test_labels.astype(np.int64))
    n = cfg.federation.clients
    handler = DenseClient(cfg, lr, cfg.frl.local_epochs)
    attackers = select_attackers(n, attack_fraction, cfg.attack.seed) if attack_fraction else []
    grid: Grid = ScalingGrid(n, handler, attackers) if attackers else InProcessGrid(n, handler)
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(model, TensorBatches(test[0][:2000], test[1][:2000], 500, shuffle=False))
        loss = loss if np.isfinite(loss) else float("nan")
        rows.append({"round": server_round, "eval_loss": loss, "eval_accuracy": acc,
                     "seconds": round(time.monotonic() - t0, 1)})
        log(f"fedavg round {server_round}: acc {acc:.4f} loss {loss:.3f}")
        return MetricRecord({"eval_accuracy": acc})

    torch.manual_seed(cfg.run.seed)
    init = ArrayRecord(conv4_dense().state_dict())
    strategy = FedAvg(fraction_train=cfg.federation.fraction, fraction_evaluate=0.0, min_train_nodes=1,
                      min_available_nodes=n)
    result = strategy.start(grid=grid, initial_arrays=init, num_rounds=cfg.run.rounds, timeout=3600,
                            train_config=ConfigRecord(), evaluate_fn=central)
    model.load_state_dict(result.arrays.to_torch_state_dict())
    loss, acc = evaluate(model, TensorBatches(test[0], test[1], 500, shuffle=False))
    dense_bytes = sum(v.numel() * 4 for v in model.state_dict().values())
    return {"rounds": rows, "test": {"examples": len(test[1]), "loss": loss, "accuracy": acc},
            "attackers": attackers, "dense_fp32_bytes_per_client": dense_bytes,
            "seconds": round(time.monotonic() - t0, 1)}
