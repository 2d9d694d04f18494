"""Named datasets that ship inside pip packages, plus HF datasets and local JSON/CSV files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pollen.errors import DataError
from pollen.registry import Registry


@dataclass
class TextDataset:
    """Raw examples. causal-lm: prompt/response; seq-cls: text/label. `groups` drive non-IID splits."""

    task: str
    prompts: list[str]
    responses: list[str] = field(default_factory=list)  # causal-lm only
    labels: np.ndarray | None = None  # seq-cls only
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    group_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, idx: np.ndarray) -> TextDataset:
        idx = np.asarray(idx, dtype=np.int64)
        return TextDataset(
            task=self.task,
            prompts=[self.prompts[i] for i in idx],
            responses=[self.responses[i] for i in idx] if self.responses else [],
            labels=None if self.labels is None else self.labels[idx],
            groups=self.groups[idx],
            group_names=self.group_names,
        )


@dataclass
class FederatedData:
    """A training pool to split across clients and a held-out set the server evaluates on."""

    train: TextDataset
    eval: TextDataset
    num_labels: int = 0
    label_names: list[str] = field(default_factory=list)
    default_eval_size: int = 64
    # True when groups are real categories (a natural split); False when they are just labels.
    natural_groups: bool = False


# A loader returns (examples, num_labels, label_names, default held-out size).
Loader = Callable[[], tuple[TextDataset, int, list[str], int]]
DATASETS: Registry[Loader] = Registry("dataset")


def holdout_split(ds: TextDataset, eval_size: int, seed: int) -> tuple[TextDataset, TextDataset]:
    if eval_size >= len(ds):
        raise DataError(f"eval_size {eval_size} leaves no training data ({len(ds)} examples)")
    perm = np.random.default_rng(seed).permutation(len(ds))
    return ds.subset(np.sort(perm[eval_size:])), ds.subset(np.sort(perm[:eval_size]))
