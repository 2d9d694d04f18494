"""The run configuration: one typed object, loaded from TOML, overridable from the CLI, saved with every run."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import tomli_w

from pollen.errors import ConfigError, did_you_mean


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config {key}: {msg}")


@dataclass
class RunSection:
    out: str = "runs/latest"
    seed: int = 0
    rounds: int = 3
    # Seconds the server waits for a round's replies before it aggregates what arrived.
    round_timeout: float = 600.0
    # A round that aggregates no client update fails the run unless this is true.
    allow_empty_rounds: bool = False
    # Evaluate the global model after every k-th round (round 0 included) and the last; 0: the last only.
    eval_every: int = 1
    # Adapters of the last N rounds in OUT/rounds/, peft format (0: none, -1: every round).
    keep_round_adapters: int = 3

    def validate(self) -> None:
        _check(bool(self.out.strip()), "run.out", "must name a directory, got an empty string")
        _check(self.rounds >= 1, "run.rounds", f"must be >= 1, got {self.rounds}")
        _check(self.round_timeout > 0, "run.round_timeout", "must be > 0")
        _check(isinstance(self.allow_empty_rounds, bool), "run.allow_empty_rounds",
               f"must be true or false, got {self.allow_empty_rounds!r}")
        _check(self.eval_every >= 0, "run.eval_every", f"must be >= 0, got {self.eval_every}")
        _check(self.keep_round_adapters >= -1, "run.keep_round_adapters",
               f"must be -1 (all), 0 (none) or a positive count, got {self.keep_round_adapters}")


@dataclass
class ModelSection:
    name: str = "smollm2-135m"
    # PEFT method: lora | bias | ia3 | prompt (see pollen.models.peft_methods)
    peft: str = "lora"
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    # Empty: the model's default targets for the chosen method.
    target_modules: list[str] = field(default_factory=list)
    prompt_tokens: int = 8
    max_length: int = 64

    def validate(self) -> None:
        _check(self.lora_r >= 1, "model.lora_r", f"must be >= 1, got {self.lora_r}")
        _check(self.lora_alpha > 0, "model.lora_alpha", "must be > 0")
        _check(0 <= self.lora_dropout < 1, "model.lora_dropout", "must be in [0, 1)")
        _check(self.prompt_tokens >= 1, "model.prompt_tokens", "must be >= 1")
        _check(8 <= self.max_length <= 4096, "model.max_length", "must be in [8, 4096]")


@dataclass
class DataSection:
    name: str = "chatterbot"
    # auto | iid | dirichlet | natural ("auto": natural where the dataset has categories, else dirichlet)
    partition: str = "auto"
    alpha: float = 0.5
    # Held-out examples the server evaluates the global model on each round.
    eval_size: int = 64
    # Cap on training examples per client (0 = no cap); keeps CPU rounds short.
    max_client_examples: int = 0

    def validate(self) -> None:
        _check(self.partition in ("auto", "iid", "dirichlet", "natural")
               or self.partition.startswith("flwr-"), "data.partition",
               f"must be auto, iid, dirichlet, natural or a Flower Datasets partitioner "
               f"(flwr-iid, flwr-dirichlet, flwr-natural, ...), got {self.partition!r}")
        _check(self.alpha > 0, "data.alpha", f"must be > 0, got {self.alpha}")
        _check(self.eval_size >= 1, "data.eval_size", "must be >= 1")
        _check(self.max_client_examples >= 0, "data.max_client_examples", "must be >= 0")


@dataclass
class FederationSection:
    clients: int = 4
    # Fraction of clients sampled for training each round.
    fraction: float = 1.0
    # Fewest replies a round needs to aggregate (0 = every sampled client).
    min_clients: int = 0
    # Ceiling on the `num-examples` one reply may claim (its aggregation weight); larger claims
    # count as this value. `pollen simulate` lowers it to the largest partition it created.
    # (data.max_client_examples is different: it caps the data a simulated client trains on.)
    max_client_examples: int = 1_000_000

    def validate(self) -> None:
        _check(self.clients >= 1, "federation.clients", f"must be >= 1, got {self.clients}")
        _check(0 < self.fraction <= 1, "federation.fraction", "must be in (0, 1]")
        _check(0 <= self.min_clients <= self.clients, "federation.min_clients",
               f"must be in [0, clients={self.clients}]")
        _check(1 <= self.max_client_examples <= 1 << 40, "federation.max_client_examples",
               f"must be in [1, 2^40], got {self.max_client_examples}")


@dataclass
class TrainSection:
    local_steps: int = 6
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 0.0
    # Keep only each layer's input for the backward pass and recompute the rest: activation memory
    # falls from ~450 MB to a few MB per client on the default task, for ~1/3 more compute.
    gradient_checkpointing: bool = False

    def validate(self) -> None:
        _check(isinstance(self.gradient_checkpointing, bool), "train.gradient_checkpointing",
               f"must be true or false, got {self.gradient_checkpointing!r}")
        _check(self.local_steps >= 1, "train.local_steps", "must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")


@dataclass
class StrategySection:
    name: str = "fedpeft"
    # LoRA aggregation: "factors" (FedAvg of A and B, paper-faithful), "svd" (mean of BA truncated to
    # rank r) or "exact" (FedEx-LoRA: mean of BA, the residual folded into the base weights). Until
    # issue 13 "exact" meant today's "svd".
    lora_aggregation: str = "factors"
    # Strategy-specific extras, validated by the strategy's factory.
    params: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        _check(self.lora_aggregation in ("factors", "svd", "exact"), "strategy.lora_aggregation",
               f"must be 'factors', 'svd' or 'exact', got {self.lora_aggregation!r}")


@dataclass
class CompressionSection:
    """How clients compress their updates (see pollen.compression for the stage syntax)."""

    # "" / "none" = raw float32; e.g. "topz:0.05 > kmeans:16 > zstd".
    codec: str = ""
    error_feedback: bool = True
    # Largest payload the server accepts from one client, in bytes.
    max_payload_bytes: int = 256 * 1024 * 1024
    # Down-link (server -> client) codec of the PEFT family, same grammar; "" = the full global state
    # every round. With one, clients keep the state they hold and receive compressed deltas
    # (pollen/strategies/fedpeft/downlink.py; docs/compression.md).
    codec_down: str = ""
    # Deltas the server keeps for clients that missed rounds; further behind: the full state.
    down_history: int = 8

    def validate(self) -> None:
        _check(self.max_payload_bytes >= 1024, "compression.max_payload_bytes", "must be >= 1024")
        _check(isinstance(self.codec_down, str), "compression.codec_down", "must be a codec string")
        _check(1 <= self.down_history <= 1024, "compression.down_history",
               f"must be in [1, 1024], got {self.down_history}")


@dataclass
class FedKSeedSection:
    """Zeroth-order full-parameter tuning with K shared seeds (FedKSeed / FedKSeed-Pro).

    Defaults are a CPU demo (eval loss falls within 3 rounds in minutes). The paper's recipe:
    k = 1024 (4096 argparse), eps = 5e-4, lr = 3e-7 (1.3B fp16 model), local_steps = 200,
    batch_size = 1, params = "" (all parameters); see docs/fedkseed.md.
    """

    k: int = 1024
    eps: float = 1e-3
    lr: float = 5e-5
    local_steps: int = 25
    batch_size: int = 1
    pro: bool = False
    pro_clip: float = 1000.0
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    equal_weight: bool = False
    # "torch" (portable CPU generator) or "philox" (counter-based; the CUDA kernel's family).
    rng: str = "torch"
    # Regex (re.search) over parameter names to tune; empty = all parameters. The demo default
    # tunes the normalisation weights (35K of SmolLM2's 135M) and a classification head.
    params: str = r"norm|^(classifier|score)\."

    def validate(self) -> None:
        _check(1 <= self.k <= 1 << 20, "fedkseed.k", f"must be in [1, 2^20], got {self.k}")
        _check(self.eps > 0, "fedkseed.eps", "must be > 0")
        _check(self.lr > 0, "fedkseed.lr", "must be > 0")
        _check(self.local_steps >= 1, "fedkseed.local_steps", "must be >= 1")
        _check(self.batch_size >= 1, "fedkseed.batch_size", "must be >= 1")
        _check(self.rng in ("torch", "philox"), "fedkseed.rng", "must be 'torch' or 'philox'")


@dataclass
class FRLSection:
    """Federated Rank Learning: supermask scores ranked by clients, aggregated by vote."""

    # Fraction of each layer's edges kept by the mask.
    k: float = 0.5
    lr: float = 0.4
    lr_decay: float = 0.999
    local_epochs: int = 1
    batch_size: int = 32
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # Pretrained layers (supermask on a frozen transformer): kept fraction and score init.
    pretrained_k: float = 0.9
    score_init: str = "magnitude"

    def validate(self) -> None:
        _check(0 < self.k <= 1, "frl.k", "must be in (0, 1]")
        _check(0 < self.pretrained_k <= 1, "frl.pretrained_k", "must be in (0, 1]")
        _check(self.lr > 0, "frl.lr", "must be > 0")
        _check(0 < self.lr_decay <= 1, "frl.lr_decay", "must be in (0, 1]")
        _check(self.local_epochs >= 1, "frl.local_epochs", "must be >= 1")
        _check(self.batch_size >= 1, "frl.batch_size", "must be >= 1")
        _check(self.score_init in ("magnitude", "kaiming"), "frl.score_init",
               "must be 'magnitude' or 'kaiming'")


@dataclass
class AttackSection:
    """Byzantine clients for robustness studies (simulation only)."""

    # "" = no attack; otherwise a name from pollen.attacks.ATTACKS.
    name: str = ""
    fraction: float = 0.0
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        _check(0 <= self.fraction < 1, "attack.fraction", f"must be in [0, 1), got {self.fraction}")
        _check(not self.name or self.fraction > 0, "attack.fraction",
               f"attack {self.name!r} needs a fraction > 0")


@dataclass
class SimulationSection:
    # CPUs Ray reserves per client (= its torch threads); 0: sized from the machine so clients
    # train concurrently whenever memory allows (pollen/deploy/simulate.py plan_actors).
    client_cpus: float = 0.0

    def validate(self) -> None:
        _check(self.client_cpus >= 0, "simulation.client_cpus", "must be >= 0 (0: auto)")


@dataclass
class TrackingSection:
    """Where each round's row goes besides metrics.json (pollen/server/tracking.py)."""

    tensorboard: bool = True
    mlflow: bool = False
    # "" = a SQLite store OUT/mlflow.db; or a tracking server / another store URI.
    mlflow_uri: str = ""
    wandb: bool = False
    # MLflow experiment / W&B project name.
    project: str = "pollen"

    def validate(self) -> None:
        for key in ("tensorboard", "mlflow", "wandb"):
            _check(isinstance(getattr(self, key), bool), f"tracking.{key}",
                   f"must be true or false, got {getattr(self, key)!r}")
        _check(bool(self.project.strip()), "tracking.project", "must not be empty")


@dataclass
class PollenConfig:
    run: RunSection = field(default_factory=RunSection)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    federation: FederationSection = field(default_factory=FederationSection)
    train: TrainSection = field(default_factory=TrainSection)
    strategy: StrategySection = field(default_factory=StrategySection)
    compression: CompressionSection = field(default_factory=CompressionSection)
    fedkseed: FedKSeedSection = field(default_factory=FedKSeedSection)
    frl: FRLSection = field(default_factory=FRLSection)
    attack: AttackSection = field(default_factory=AttackSection)
    simulation: SimulationSection = field(default_factory=SimulationSection)
    tracking: TrackingSection = field(default_factory=TrackingSection)

    def validate(self) -> PollenConfig:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()
        # The compressed down-link diffs the adapter only; exact LoRA's residual travels beside it.
        _check(not (self.compression.codec_down.strip().lower() not in ("", "none") and self.strategy.lora_aggregation == "exact"),
               "compression.codec_down", "cannot be combined with strategy.lora_aggregation = 'exact' "
               "yet (its residual is sent whole each round); use factors or svd, or no codec_down")
        return self

    # -- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PollenConfig:
        cfg = cls()
        for section, values in data.items():
            apply_section(cfg, section, values)
        return cfg.validate()

    @classmethod
    def from_json(cls, text: str) -> PollenConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path | None, overrides: dict[str, Any] | None = None) -> PollenConfig:
        """Defaults, the model's recipe, then the TOML file (if any), then overrides, then validation.

        A model's recipe (e.g. a higher learning rate for a fresh classification head) only fills
        keys the user did not set in the file or on the command line.
        """
        explicit = _explicit_keys(path, overrides)
        cfg = cls._load(path, overrides)
        from pollen.models.registry import recipe_for

        for key, value in recipe_for(cfg.model.name).items():
            if key not in explicit:
                set_key(cfg, key, value)
        return cfg.validate()

    @classmethod
    def _load(cls, path: str | Path | None, overrides: dict[str, Any] | None) -> PollenConfig:
        cfg = cls()
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"config file {str(p)!r} does not exist")
            try:
                data = tomllib.loads(p.read_text())
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"config file {str(p)!r} is not valid TOML: {e}") from None
            for section, values in data.items():
                apply_section(cfg, section, values)
        for key, value in (overrides or {}).items():
            set_key(cfg, key, value)
        return cfg

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_toml())


def _explicit_keys(path: str | Path | None, overrides: dict[str, Any] | None) -> set[str]:
    keys = set(overrides or {})
    if path is not None and Path(path).is_file():
        try:
            data = tomllib.loads(Path(path).read_text())
        except tomllib.TOMLDecodeError:
            return keys  # _load reports it
        for section, values in data.items():
            if isinstance(values, dict):
                keys |= {f"{section}.{k}" for k in values}
    return keys


def apply_section(cfg: PollenConfig, section: str, values: Any) -> None:
    if not hasattr(cfg, section) or not dataclasses.is_dataclass(getattr(cfg, section)):
        names = [f.name for f in dataclasses.fields(cfg)]
        raise ConfigError(f"unknown config section [{section}]{did_you_mean(section, names)}; "
                          f"sections are: {', '.join(names)}")
    if not isinstance(values, dict):
        raise ConfigError(f"config section [{section}] must be a table")
    for key, value in values.items():
        set_key(cfg, f"{section}.{key}", value)


def all_keys(cfg: PollenConfig) -> list[str]:
    """Every dotted key, in declaration order (what `pollen config` lists)."""
    return [f"{s.name}.{f.name}" for s in dataclasses.fields(cfg)
            for f in dataclasses.fields(getattr(cfg, s.name))]


def set_key(cfg: PollenConfig, dotted: str, value: Any) -> None:
    """Set `section.key` with type checking, so a typo or a wrong type fails loudly and early."""
    section, _, key = dotted.partition(".")
    obj = getattr(cfg, section, None)
    if obj is None or not dataclasses.is_dataclass(obj) or not key:
        raise ConfigError(f"unknown config key {dotted!r}{did_you_mean(dotted, all_keys(cfg))}")
    hints = get_type_hints(type(obj))
    if key not in hints:
        known = ", ".join(f.name for f in dataclasses.fields(obj))
        hint = did_you_mean(dotted, [f"{section}.{k}" for k in hints])
        raise ConfigError(f"unknown config key {dotted!r}{hint}; "
                          f"[{section}] has: {known}")
    setattr(obj, key, _coerce(dotted, hints[key], value))


def _coerce(key: str, typ: Any, value: Any) -> Any:
    origin = getattr(typ, "__origin__", None)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            v = float(value)
        elif isinstance(value, str):
            try:
                v = float(value)
            except ValueError:
                v = None
        else:
            v = None
        if v is not None:
            if not math.isfinite(v):
                raise ConfigError(f"config {key}: must be a finite number, got {value!r}")
            return v
    elif typ is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    else:  # pragma: no cover - every field type is listed above
        return value
    raise ConfigError(f"config {key}: expected {getattr(typ, '__name__', typ)}, got {value!r}")


# -- one line of help per key: `pollen config` and its starter TOML ---------------------------------
# tests/test_cli.py fails when a key has no line here, so the listing never falls behind the dataclasses.
HELP: dict[str, str] = {
    "run.out": "output directory (metrics.json, adapter/, checkpoint/, logs/)",
    "run.seed": "seed for data splits, client sampling and initialisation",
    "run.rounds": "federated rounds",
    "run.round_timeout": "seconds the server waits for a round's replies before aggregating what arrived",
    "run.allow_empty_rounds": "let a round that aggregates no update pass instead of failing the run",
    "run.eval_every": "evaluate centrally after every k-th round (0 included) and the last; 0: last only",
    "run.keep_round_adapters": "peft-format adapters of the last N rounds in OUT/rounds/ (0: none, -1: all)",
    "model.name": "registered model name, a local Hugging Face directory, or a hub id",
    "model.peft": "PEFT method: lora, ia3, prompt or bias",
    "model.lora_r": "LoRA rank",
    "model.lora_alpha": "LoRA scaling numerator (scale = alpha / r)",
    "model.lora_dropout": "dropout on the LoRA branch, in [0, 1)",
    "model.target_modules": "modules to adapt (empty: the model's defaults for the PEFT method)",
    "model.prompt_tokens": "virtual tokens for prompt tuning",
    "model.max_length": "tokens per example after truncation",
    "data.name": "registered dataset, a local .json/.jsonl/.csv file, or hf:NAME[:split]",
    "data.partition": "auto, iid, dirichlet, natural (auto: natural where the data has categories), or "
                      "flwr-iid, flwr-dirichlet, flwr-natural, flwr-pathological, flwr-shard, "
                      "flwr-linear, flwr-square, flwr-exponential (Flower Datasets)",
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
    "train.gradient_checkpointing": "recompute activations in the backward pass: far less memory per client, ~1/3 more compute",
    "strategy.name": "fedpeft, fedkseed, fedkseed-pro, flag, frl, a Flower baseline, or module:factory "
                     "(your own Flower strategy, docs/plugins.md)",
    "strategy.lora_aggregation": ("LoRA merging: factors (mean B, mean A), svd (mean BA truncated to "
                                  "rank r) or exact (FedEx-LoRA, mean BA; see docs/lora.md)"),
    "strategy.params": "strategy-specific extras as a table, validated by the strategy",
    "compression.codec": 'client update codec chain, e.g. "ternary:0.9:tensor > zstd" ("": raw fp32)',
    "compression.error_feedback": "carry each client's compression error into its next update",
    "compression.max_payload_bytes": "largest payload the server accepts from one client",
    "compression.codec_down": 'down-link codec chain (PEFT family), e.g. "kmeans:4 > zstd" ("": full state)',
    "compression.down_history": "down-link deltas kept for clients that missed rounds",
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
    "simulation.client_cpus": "CPUs (torch threads) per simulated client; 0: sized from cores and memory",
    "tracking.tensorboard": "write every round's row as TensorBoard scalars to OUT/tensorboard",
    "tracking.mlflow": "log params and every round to MLflow (pip install 'pollen-fl[mlflow]')",
    "tracking.mlflow_uri": 'MLflow tracking URI ("": a SQLite store OUT/mlflow.db, offline)',
    "tracking.wandb": "log to Weights & Biases, offline in OUT/wandb unless WANDB_MODE says otherwise",
    "tracking.project": "MLflow experiment / W&B project name",
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
