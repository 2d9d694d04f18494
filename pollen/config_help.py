"""One line of help per config key, for `pollen config` and the starter TOML it writes.

Kept apart from `pollen/config.py` so the dataclasses stay readable; `tests/test_config.py` fails
when a key has no line here, so the listing can never fall behind the configuration.
"""

from __future__ import annotations

import dataclasses
from typing import Any, get_type_hints

from pollen.config import PollenConfig

HELP: dict[str, str] = {
    "run.out": "output directory (metrics.json, adapter/, checkpoint/, logs/)",
    "run.seed": "seed for data splits, client sampling and initialisation",
    "run.rounds": "federated rounds",
    "run.round_timeout": "seconds the server waits for a round's replies before aggregating what arrived",
    "run.allow_empty_rounds": "let a round that aggregates no update pass instead of failing the run",
    "model.name": "registered model name, a local Hugging Face directory, or a hub id",
    "model.peft": "PEFT method: lora, ia3, prompt or bias",
    "model.lora_r": "LoRA rank",
    "model.lora_alpha": "LoRA scaling numerator (scale = alpha / r)",
    "model.lora_dropout": "dropout on the LoRA branch, in [0, 1)",
    "model.target_modules": "modules to adapt (empty: the model's defaults for the PEFT method)",
    "model.prompt_tokens": "virtual tokens for prompt tuning",
    "model.max_length": "tokens per example after truncation",
    "data.name": "registered dataset, a local .json/.jsonl/.csv file, or hf:NAME[:split]",
    "data.partition": "auto, iid, dirichlet or natural (auto: natural where the data has categories)",
    "data.alpha": "Dirichlet concentration (smaller: more skewed clients)",
    "data.eval_size": "held-out examples the server evaluates the global model on",
    "data.max_client_examples": "cap on training examples per simulated client (0: no cap)",
    "federation.clients": "number of clients (simulated, or expected to connect)",
    "federation.fraction": "fraction of clients sampled for training each round",
    "federation.min_clients": "fewest replies a round needs to aggregate (0: every sampled client)",
    "federation.max_client_examples": "largest num-examples (aggregation weight) one reply may claim",
    "train.local_steps": "local optimiser steps per round (first-order methods)",
    "train.batch_size": "local batch size",
    "train.lr": "local learning rate",
    "train.weight_decay": "local AdamW weight decay",
    "strategy.name": "aggregation strategy: fedpeft, fedkseed, fedkseed-pro, flag, frl or a Flower baseline",
    "strategy.lora_aggregation": "how LoRA factors are merged (see docs/strategies)",
    "strategy.params": "strategy-specific extras as a table, validated by the strategy",
    "compression.codec": 'client update codec chain, e.g. "ternary:0.9:tensor > zstd" ("": raw fp32)',
    "compression.error_feedback": "carry each client's compression error into its next update",
    "compression.max_payload_bytes": "largest payload the server accepts from one client",
    "fedkseed.k": "number of shared candidate seeds K",
    "fedkseed.eps": "zeroth-order perturbation scale",
    "fedkseed.lr": "zeroth-order learning rate",
    "fedkseed.local_steps": "zeroth-order steps per client per round",
    "fedkseed.batch_size": "examples per zeroth-order step",
    "fedkseed.pro": "FedKSeed-Pro: sample seeds by their estimated importance",
    "fedkseed.pro_clip": "FedKSeed-Pro: clip on the scalar gradients used for seed importance",
    "fedkseed.weight_decay": "decoupled weight decay per zeroth-order step",
    "fedkseed.grad_clip": "clip on each scalar gradient (0: none)",
    "fedkseed.equal_weight": "weight clients equally instead of by examples",
    "fedkseed.rng": "random family for the perturbations: torch or philox",
    "fedkseed.params": "regex over parameter names to tune (empty: all parameters)",
    "frl.k": "fraction of each layer's edges the supermask keeps",
    "frl.lr": "score learning rate",
    "frl.lr_decay": "score learning-rate decay per round",
    "frl.local_epochs": "local epochs per round",
    "frl.batch_size": "local batch size",
    "frl.momentum": "SGD momentum on the scores",
    "frl.weight_decay": "weight decay on the scores",
    "frl.pretrained_k": "kept fraction for supermasks over frozen pretrained layers",
    "frl.score_init": "initial scores: magnitude or kaiming",
    "attack.name": "Byzantine attack for robustness studies (simulation only; empty: none)",
    "attack.fraction": "fraction of clients that attack, in [0, 1)",
    "attack.seed": "seed choosing the attackers",
    "attack.params": "attack-specific parameters as a table",
    "simulation.client_cpus": "CPUs Ray reserves per simulated client",
}


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    key: str
    type: str
    default: Any
    help: str


def _type_name(typ: Any) -> str:
    origin = getattr(typ, "__origin__", None)
    if origin is not None:
        return {list: "list", dict: "table"}.get(origin, str(typ))
    return getattr(typ, "__name__", str(typ))


def describe(cfg: PollenConfig | None = None) -> list[KeyInfo]:
    """Every key with its type, its value in `cfg` (default: the built-in defaults) and its help."""
    cfg = cfg or PollenConfig()
    rows = []
    for sec in dataclasses.fields(cfg):
        obj = getattr(cfg, sec.name)
        hints = get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            key = f"{sec.name}.{f.name}"
            rows.append(KeyInfo(key, _type_name(hints[f.name]), getattr(obj, f.name), HELP.get(key, "")))
    return rows


def starter_toml(cfg: PollenConfig | None = None) -> str:
    """A TOML file with every key commented by its help, ready to edit and pass with --config."""
    import tomli_w

    cfg = cfg or PollenConfig()
    lines = ["# Pollen run configuration. Every key is optional; `pollen config` lists them.", ""]
    rows = describe(cfg)
    for sec in dataclasses.fields(cfg):
        lines.append(f"[{sec.name}]")
        for r in rows:
            if r.key.partition(".")[0] != sec.name:
                continue
            name = r.key.partition(".")[2]
            lines.append(f"# {r.help}")
            if isinstance(r.default, dict):  # a table value: inline, so the section stays flat
                inner = ", ".join(tomli_w.dumps({k: v}).strip() for k, v in r.default.items())
                lines.append(f"{name} = {{{inner}}}" if inner else f"{name} = {{}}")
            else:
                lines.append(tomli_w.dumps({name: r.default}).strip())
        lines.append("")
    return "\n".join(lines)
