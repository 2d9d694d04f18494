"""Flower Datasets' partitioners by name: every example lands in exactly one client, as Flower splits it."""

from __future__ import annotations

import numpy as np
import pytest

from pollen.config import PollenConfig
from pollen.data import partition
from pollen.data.flower_partitioners import NAMES
from pollen.errors import ConfigError, DataError

GROUPS = np.repeat(np.arange(5), [40, 30, 20, 20, 10])  # 120 examples in 5 groups


def test_names_are_known_to_the_config():
    for name in NAMES:
        assert PollenConfig.load(None, {"data.partition": name}).data.partition == name
    with pytest.raises(ConfigError, match="flwr-dirichlet"):
        PollenConfig.load(None, {"data.partition": "dirichlett"})


@pytest.mark.parametrize("name", [n for n in NAMES if n != "flwr-natural"])
def test_every_example_in_exactly_one_client(name):
    pytest.importorskip("flwr_datasets")
    parts = partition(name, GROUPS, 4, seed=3, alpha=0.5)
    assert len(parts) == 4 and all(len(p) for p in parts)
    allidx = np.concatenate(parts)
    assert len(allidx) == len(np.unique(allidx)) and set(allidx) <= set(range(len(GROUPS)))
    if name in ("flwr-iid", "flwr-linear", "flwr-square", "flwr-exponential", "flwr-dirichlet"):
        assert len(allidx) == len(GROUPS)  # these split everything
    again = partition(name, GROUPS, 4, seed=3, alpha=0.5)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))  # seeded


def test_flower_dirichlet_matches_flower_datasets_itself():
    fds = pytest.importorskip("flwr_datasets.partitioner")
    from datasets import Dataset

    ours = partition("flwr-dirichlet", GROUPS, 3, seed=7, alpha=0.3)
    ref = fds.DirichletPartitioner(num_partitions=3, partition_by="group", alpha=0.3, seed=7,
                                   min_partition_size=1)
    ref.dataset = Dataset.from_dict({"group": GROUPS.tolist(), "index": list(range(len(GROUPS)))})
    for i in range(3):
        assert np.array_equal(ours[i], np.sort(ref.load_partition(i)["index"]))
    # Non-IID indeed: some client's group mix differs from the pool's.
    shares = [np.bincount(GROUPS[p], minlength=5) / len(p) for p in ours]
    assert max(np.abs(s - np.bincount(GROUPS) / len(GROUPS)).max() for s in shares) > 0.1


def test_natural_id_needs_one_client_per_group():
    pytest.importorskip("flwr_datasets")
    parts = partition("flwr-natural", GROUPS, 5, seed=0, alpha=0.5)
    assert sorted(len(p) for p in parts) == [10, 20, 20, 30, 40]
    assert all(len(np.unique(GROUPS[p])) == 1 for p in parts)
    with pytest.raises(DataError, match="5 partitions, but federation.clients = 4"):
        partition("flwr-natural", GROUPS, 4, seed=0, alpha=0.5)


def test_too_many_clients_is_a_data_error():
    with pytest.raises(DataError, match="only 120 training examples"):
        partition("flwr-iid", GROUPS, 500, seed=0, alpha=0.5)


def test_without_flower_datasets_the_error_says_how_to_install(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_fds(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name.startswith(("flwr_datasets", "datasets")):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_fds)
    with pytest.raises(DataError, match=r"pip install 'pollen-fl\[partitioners\]'"):
        partition("flwr-dirichlet", GROUPS, 4, seed=0, alpha=0.5)
