import numpy as np
import pytest

from pollen.data import partition
from pollen.errors import DataError, UnknownNameError

GROUPS = np.repeat(np.arange(6), [50, 40, 30, 20, 10, 5])


def _check_cover(parts, n):
    allidx = np.concatenate(parts)
    assert len(allidx) == n and len(np.unique(allidx)) == n  # disjoint and complete
    assert all(len(p) > 0 for p in parts)


@pytest.mark.parametrize("name", ["iid", "dirichlet", "natural"])
def test_partitions_are_disjoint_complete_nonempty_and_seeded(name):
    a = partition(name, GROUPS, 4, seed=3, alpha=0.5)
    b = partition(name, GROUPS, 4, seed=3, alpha=0.5)
    _check_cover(a, len(GROUPS))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_natural_gives_each_category_to_one_client():
    parts = partition("natural", GROUPS, 3, seed=0, alpha=0)
    owners = [{int(g) for g in GROUPS[p]} for p in parts]
    assert sum(len(o) for o in owners) == 6  # no category split across clients


def test_dirichlet_small_alpha_is_skewed_large_alpha_is_balanced():
    def skew(alpha):
        parts = partition("dirichlet", GROUPS, 4, seed=1, alpha=alpha)
        hist = np.array([np.bincount(GROUPS[p], minlength=6) / len(p) for p in parts])
        return np.abs(hist - np.bincount(GROUPS) / len(GROUPS)).sum()
    assert skew(0.1) > 2 * skew(100.0)


def test_too_many_clients_is_a_clear_error():
    with pytest.raises(DataError, match="only 6 categories"):
        partition("natural", GROUPS, 7, seed=0, alpha=0)
    with pytest.raises(DataError, match="only 155 training examples"):
        partition("iid", GROUPS, 156, seed=0, alpha=0)
    with pytest.raises(UnknownNameError, match="choose one of"):
        partition("bogus", GROUPS, 2, seed=0, alpha=0)
