"""`load_dataset`: a registered dataset by name, a local table or a Hugging Face dataset, split for eval.

Importing this module registers the built-in datasets, so the registry itself never imports them.
"""

from __future__ import annotations

from pathlib import Path

from pollen.data import chatterbot, files, tweets  # noqa: F401  (register the built-ins)
from pollen.data.registry import DATASETS, FederatedData, holdout_split
from pollen.errors import DataError, did_you_mean


def load_dataset(name: str, *, eval_size: int = 0, seed: int = 0) -> FederatedData:
    """eval_size 0 takes the dataset's default held-out size."""
    if name in DATASETS:
        full, num_labels, label_names, default_eval = DATASETS.get(name)()
    elif Path(name).suffix in (".json", ".jsonl", ".csv") or name.startswith("hf:"):
        full, num_labels, label_names, default_eval = files.load_table(name)
    else:
        raise DataError(f"unknown dataset {name!r}{did_you_mean(name, DATASETS.names())}; choose one of: {', '.join(DATASETS.names())}, "
                        "a local .json/.jsonl/.csv file, or 'hf:NAME' for a Hugging Face dataset")
    train, held = holdout_split(full, eval_size or default_eval, seed)
    return FederatedData(train=train, eval=held, num_labels=num_labels, label_names=label_names,
                         default_eval_size=default_eval, natural_groups=num_labels == 0)
