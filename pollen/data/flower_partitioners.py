"""Flower Datasets' partitioners under `flwr-*` names, for users who already split data with them.

Pollen's own partitioners (`iid`, `dirichlet`, `natural`) stay the default and need nothing extra;
these need `pip install 'pollen-fl[partitioners]'` (flwr-datasets) and are imported only when used.
Each sees the training pool as a Hugging Face `Dataset` whose `group` column is the dataset's split
key (`partition_by`): the label for classification data, the category for conversations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pollen.data.partition import PARTITIONERS
from pollen.errors import DataError

PARTITION_BY = "group"
# name -> (Flower Datasets class, whether it takes partition_by, extra keyword arguments)
_FLOWER: dict[str, tuple[str, bool, dict[str, Any]]] = {
    "flwr-iid": ("IidPartitioner", False, {}),
    "flwr-dirichlet": ("DirichletPartitioner", True, {"min_partition_size": 1}),
    "flwr-natural": ("NaturalIdPartitioner", True, {}),
    "flwr-pathological": ("PathologicalPartitioner", True, {"num_classes_per_partition": 2}),
    "flwr-shard": ("ShardPartitioner", True, {"num_shards_per_partition": 2}),
    "flwr-linear": ("LinearPartitioner", False, {}),
    "flwr-square": ("SquarePartitioner", False, {}),
    "flwr-exponential": ("ExponentialPartitioner", False, {}),
}
NAMES = tuple(_FLOWER)


def _build(name: str, n_clients: int, seed: int, alpha: float) -> Any:
    try:
        from flwr_datasets import partitioner as fp
    except ImportError:
        raise DataError(f"data.partition = {name!r} needs Flower Datasets: "
                        "pip install 'pollen-fl[partitioners]' (or use iid, dirichlet, natural)") from None
    cls_name, by, extra = _FLOWER[name]
    cls = getattr(fp, cls_name)
    kwargs: dict[str, Any] = dict(extra)
    if by:
        kwargs["partition_by"] = PARTITION_BY
    if name != "flwr-natural":
        kwargs["num_partitions"] = n_clients
    if name == "flwr-dirichlet":
        kwargs["alpha"] = alpha
    if name in ("flwr-dirichlet", "flwr-pathological", "flwr-shard"):
        kwargs["seed"] = seed
    return cls(**kwargs)


def _flower(name: str) -> Callable[..., list[np.ndarray]]:
    def split(groups: np.ndarray, n_clients: int, *, seed: int = 0, alpha: float = 0.5) -> list[np.ndarray]:
        if n_clients > len(groups):
            raise DataError(f"{n_clients} clients but only {len(groups)} training examples: use fewer clients")
        part = _build(name, n_clients, seed, alpha)  # a clear DataError without Flower Datasets
        from datasets import Dataset  # Flower Datasets' own dependency

        part.dataset = Dataset.from_dict({PARTITION_BY: np.asarray(groups).tolist(),
                                          "index": np.arange(len(groups)).tolist()})
        try:
            if part.num_partitions != n_clients:
                raise DataError(f"{name}: the data has {part.num_partitions} {PARTITION_BY}s, so "
                                f"{part.num_partitions} partitions, but federation.clients = {n_clients}")
            out = [np.sort(np.asarray(part.load_partition(i)["index"], dtype=np.int64))
                   for i in range(n_clients)]
        except DataError:
            raise
        except (ValueError, KeyError) as e:  # Flower Datasets' own checks: one line, its words
            raise DataError(f"{name} cannot split {len(groups)} examples over {n_clients} clients: "
                            f"{' '.join(str(e).split())}") from None
        empty = [i for i, p in enumerate(out) if len(p) == 0]
        if empty:
            raise DataError(f"{name} left clients {empty[:5]} without data: use fewer clients")
        return out

    split.__doc__ = f"Flower Datasets' {_FLOWER[name][0]} over the `{PARTITION_BY}` column."
    return split


for _name in NAMES:
    PARTITIONERS.add(_name, _flower(_name))
