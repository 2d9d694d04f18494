"""What one process needs for an FRL run: the supermask model, the shared score multiset, and its data.

Every party rebuilds the same frozen network and initial scores S⁰ from `run.seed`, so only rankings ever
travel: the server's global scores are S⁰'s sorted values reassigned along the global ranking, and a
client recomputes them bit-for-bit from the ranking (`frl/core.py: scores_from_ranking`).

Two kinds of run share this module:
- images: `conv4-supermask` / `lenet-supermask` (random signed-constant weights, spec §5.2) on
  `fashion-mnist`; the server evaluates on the first EVAL_IMAGES test images every round;
- text (beyond the paper): a registered Hugging Face classifier (`minilm-l6`) whose pretrained linears
  (`model.target_modules` suffixes, or all of them) get supermask scores (`frl.pretrained_k`,
  `frl.score_init`), on a seq-cls dataset (`tweets`), evaluated on the held-out `data.eval_size`.
Built once per process and config (Ray actors and the server live across rounds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pollen.compression.update import uses_codec
from pollen.config import PollenConfig
from pollen.data.partition import partition
from pollen.errors import ConfigError, DataError, ModelError
from pollen.models.supermask import (
    SUPERMASK_MODELS,
    build_supermask_model,
    get_scores,
    layer_sizes,
    wrap_linear_with_supermask,
)
from pollen.protocol.seeding import cap_indices
from pollen.registry import process_cache

IMAGE_DATASETS = ("fashion-mnist",)
# Per-round central evaluation uses this fixed slice of the 10k test images, for speed;
# `frl/server.py: evaluate_saved` evaluates a finished run on all of them.
EVAL_IMAGES = 2000
SUPPORTED_ATTACKS = ("rank-reversal",)


def text_model_names() -> list[str]:
    from pollen.models.registry import MODELS

    return [n for n in MODELS.names() if "seq-cls" in MODELS.get(n).tasks]


def model_names() -> list[str]:
    return SUPERMASK_MODELS.names() + text_model_names()


def dataset_names() -> list[str]:
    from pollen.data import chatterbot, tweets  # noqa: F401  (register the built-ins)
    from pollen.data.registry import DATASETS

    return sorted(IMAGE_DATASETS) + DATASETS.names()


def kind_of(cfg: PollenConfig) -> str:
    """'image' or 'text'; unknown or mismatched names are a clear ConfigError before anything loads."""
    model, data = cfg.model.name, cfg.data.name
    if model not in model_names():
        raise ConfigError(f"unknown model {model!r} for strategy 'frl' (supermask models); "
                          f"choose one of: {', '.join(model_names())}")
    if data not in dataset_names():
        raise ConfigError(f"unknown dataset {data!r} for strategy 'frl'; "
                          f"choose one of: {', '.join(dataset_names())}")
    image_model, image_data = model in SUPERMASK_MODELS, data in IMAGE_DATASETS
    if image_model != image_data:
        want = "an image dataset (" + ", ".join(IMAGE_DATASETS) + ")" if image_model else \
            "a text classification dataset (e.g. tweets)"
        raise ConfigError(f"model {model!r} needs {want}, got dataset {data!r}")
    return "image" if image_model else "text"


class SeqClsLogits(nn.Module):
    """(B, 2, L) int64 [input_ids; attention_mask] → logits, so the score trainer sees (x, y) batches."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(input_ids=x[:, 0], attention_mask=x[:, 1]).logits


@dataclass
class Split:
    """A training pool (inputs and labels), its held-out evaluation set, and the label groups."""

    train_x: np.ndarray  # uint8 images (N, 28, 28) or texts (N,) as an object array
    train_y: np.ndarray
    eval_x: np.ndarray
    eval_y: np.ndarray
    num_classes: int
    image: bool


@dataclass
class FRLRuntime:
    cfg: PollenConfig
    model: nn.Module
    # S⁰ sorted ascending per layer: the fixed multiset every party shares.
    sorted_scores: dict[str, Tensor]
    initial_scores: dict[str, Tensor]
    sizes: dict[str, int]
    split: Split
    device: torch.device
    tokens: Tokens | None = None

    def inputs(self, x: np.ndarray) -> Tensor:
        """Model inputs from stored examples (standardised / tokenised lazily, per client)."""
        if self.tokens is not None:
            return torch.from_numpy(self.tokens(x))
        from pollen.data.fashion_mnist import normalize

        return torch.from_numpy(normalize(x))


class Tokens:
    """Texts → (N, 2, L) int64 [input_ids; attention_mask], padded to model.max_length; done lazily per
    client, so a run never tokenises the whole pool."""

    def __init__(self, tokenizer: Any, width: int) -> None:
        self.tokenizer, self.width = tokenizer, width
        self.pad = int(tokenizer.pad_token_id)

    def __call__(self, texts: np.ndarray) -> np.ndarray:
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.width)["input_ids"]
        out = np.zeros((len(ids), 2, self.width), dtype=np.int64)
        out[:, 0, :] = self.pad
        for i, row in enumerate(ids):
            out[i, 0, :len(row)] = row
            out[i, 1, :len(row)] = 1
        return out


def _text_model_and_split(cfg: PollenConfig) -> tuple[nn.Module, Split, Tokens]:
    from pollen.data import load_dataset
    from pollen.models import load_model

    data = load_dataset(cfg.data.name, eval_size=cfg.data.eval_size, seed=cfg.run.seed)
    if data.train.task != "seq-cls" or not data.num_labels:
        raise ConfigError(f"FRL on text needs a classification dataset; {cfg.data.name!r} is "
                          f"{data.train.task}")
    lm = load_model(cfg.model.name, "seq-cls", num_labels=data.num_labels, seed=cfg.run.seed)
    suffixes = tuple(cfg.model.target_modules)
    wrap_linear_with_supermask(lm.model, lambda name, _: not suffixes or name.endswith(suffixes),
                               k=cfg.frl.pretrained_k, score_init=cfg.frl.score_init)  # type: ignore[arg-type]
    def texts(ds: Any) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(ds.prompts, dtype=object), np.asarray(ds.labels, dtype=np.int64)

    split = Split(*texts(data.train), *texts(data.eval), data.num_labels, image=False)
    return SeqClsLogits(lm.model), split, Tokens(lm.tokenizer, cfg.model.max_length)


def _image_split(cfg: PollenConfig) -> Split:
    from pollen.data.fashion_mnist import CLASSES, load_fashion_mnist

    d = load_fashion_mnist()
    return Split(d.train_images, d.train_labels.astype(np.int64), d.test_images[:EVAL_IMAGES],
                 d.test_labels[:EVAL_IMAGES].astype(np.int64), len(CLASSES), image=True)


@process_cache(maxsize=1)
def _runtime(cfg_json: str) -> FRLRuntime:
    cfg = PollenConfig.from_json(cfg_json)
    tokens = None
    if kind_of(cfg) == "image":
        split = _image_split(cfg)
        model = build_supermask_model(cfg.model.name, seed=cfg.run.seed, num_classes=split.num_classes,
                                      k=cfg.frl.k)
    else:
        model, split, tokens = _text_model_and_split(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    initial = {k: v.cpu() for k, v in get_scores(model).items()}
    return FRLRuntime(cfg=cfg, model=model,
                      sorted_scores={k: torch.sort(v.flatten()).values for k, v in initial.items()},
                      initial_scores=initial, sizes=layer_sizes(model), split=split, device=device,
                      tokens=tokens)


def frl_runtime(cfg: PollenConfig) -> FRLRuntime:
    return _runtime(cfg.to_json())


@process_cache(maxsize=2)
def _parts(cfg_json: str, n_clients: int) -> tuple[np.ndarray, ...]:
    cfg = PollenConfig.from_json(cfg_json)
    labels = _runtime(cfg_json).split.train_y
    scheme = "dirichlet" if cfg.data.partition == "auto" else cfg.data.partition
    parts = partition(scheme, labels, n_clients, seed=cfg.run.seed, alpha=cfg.data.alpha)
    return tuple(cap_indices(idx, cfg.data.max_client_examples, cfg.run.seed, pid)
                 for pid, idx in enumerate(parts))


def client_indices(cfg: PollenConfig, partition_id: int, num_partitions: int) -> np.ndarray:
    """Seeded split of the training pool ("auto" = Dirichlet(data.alpha) over labels), capped per client."""
    if not 0 <= partition_id < num_partitions:
        raise ConfigError(f"partition id {partition_id} outside [0, {num_partitions})")
    return _parts(cfg.to_json(), num_partitions)[partition_id]


def partition_sizes(cfg: PollenConfig) -> list[int]:
    """Training examples of every client's partition (each client claims its own)."""
    n = cfg.federation.clients
    return [len(client_indices(cfg, pid, n)) for pid in range(n)]


def client_examples(cfg: PollenConfig, partition_id: int, num_partitions: int) -> tuple[Tensor, Tensor]:
    rt = frl_runtime(cfg)
    idx = client_indices(cfg, partition_id, num_partitions)
    return rt.inputs(rt.split.train_x[idx]), torch.from_numpy(rt.split.train_y[idx])


def preflight(cfg: PollenConfig) -> None:
    """Names, attack and codec settings, data availability (with the install hint) and a non-empty split."""
    kind = kind_of(cfg)
    if cfg.attack.name and cfg.attack.name not in SUPPORTED_ATTACKS:
        raise ConfigError(f"attack {cfg.attack.name!r} does not apply to FRL (clients send rankings, not "
                          f"updates); FRL supports: {', '.join(SUPPORTED_ATTACKS)}")
    if uses_codec(cfg):
        raise ConfigError("FRL already sends ⌈log₂ n⌉-bit rankings; compression.codec does not apply "
                          "(leave it empty)")
    if kind == "image":
        from pollen.data.fashion_mnist import load_fashion_mnist

        load_fashion_mnist()  # DataError with the apt-get hint when absent
    try:
        rt = frl_runtime(cfg)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot build the FRL model {cfg.model.name!r}: {e}") from None
    n = cfg.federation.clients
    if n > len(rt.split.train_y):
        raise DataError(f"{n} clients but only {len(rt.split.train_y)} training examples: use fewer clients")
    for pid in range(n):
        if len(client_indices(cfg, pid, n)) == 0:
            raise DataError(f"client {pid} would get no data; use fewer clients or a larger data.alpha")
