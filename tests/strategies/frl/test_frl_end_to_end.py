"""Fashion-MNIST IDX loading, and one real FRL round: 3 clients train conv4-supermask, the server votes."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from pollen.data.fashion_mnist import is_available, load_fashion_mnist, normalize, parse_idx
from pollen.errors import ConfigError, DataError, ModelError
from pollen.models.supermask import build_supermask_model, get_scores, layer_sizes, set_scores
from pollen.strategies.frl.core import FRLServerState, rank_scores
from pollen.strategies.frl.train import TensorBatches, evaluate, round_lr, train_scores
from pollen.strategies.frl.wire import decode_rankings, encode_rankings, encoded_size

needs_data = pytest.mark.skipif(
    not is_available(), reason="Fashion-MNIST absent: sudo apt-get install dataset-fashion-mnist")


def _idx(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return head + arr.astype(np.uint8).tobytes()


def test_idx_parser_and_missing_data_message(tmp_path: Path) -> None:
    imgs = np.arange(2 * 28 * 28, dtype=np.uint64).reshape(2, 28, 28) % 251
    assert np.array_equal(parse_idx(_idx(imgs), ndim=3), imgs)
    with pytest.raises(DataError, match="dims"):
        parse_idx(_idx(imgs)[:-1], ndim=3)
    with pytest.raises(DataError, match="IDX"):
        parse_idx(_idx(imgs), ndim=1)
    with pytest.raises(DataError, match="sudo apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        arr = imgs if "images" in stem else np.array([1, 2], dtype=np.uint8)
        (tmp_path / f"{stem}.gz").write_bytes(gzip.compress(_idx(arr)))
    assert not is_available(tmp_path)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*apt-get install"):
        load_fashion_mnist(tmp_path)


def test_trainer_guards() -> None:
    model = build_supermask_model("conv4-supermask", seed=0)
    batches = TensorBatches(torch.zeros(4, 1, 28, 28), torch.zeros(4), 2)
    with pytest.raises(ConfigError):
        train_scores(model, batches, epochs=0, lr=0.1)
    model.fc1.weight.requires_grad_(True)
    with pytest.raises(ModelError, match="fc1.weight"):
        train_scores(model, batches, epochs=1, lr=0.1)
    assert round_lr(0.4, 0) == 0.4 and abs(round_lr(0.4, 10) - 0.4 * 0.999**10) < 1e-12


@needs_data
def test_one_frl_round_on_fashion_mnist_learns() -> None:
    torch.manual_seed(0)
    data = load_fashion_mnist()
    rng = np.random.default_rng(0)
    order = rng.permutation(data.train_labels.size)[:1800]
    test_x, test_y = normalize(data.test_images[:1000]), data.test_labels[:1000]
    test_batches = TensorBatches(test_x, test_y, 500, shuffle=False)

    server_model = build_supermask_model("conv4-supermask", seed=0)
    state = FRLServerState.from_scores(get_scores(server_model))
    _, acc0 = evaluate(server_model, test_batches)
    sizes = layer_sizes(server_model)
    rankings, upload_bytes = [], []
    for c in range(3):
        local = build_supermask_model("conv4-supermask", seed=0)
        set_scores(local, state.global_scores())
        part = order[c * 600:(c + 1) * 600]
        metrics = train_scores(local, TensorBatches(normalize(data.train_images[part]),
                                                    data.train_labels[part], 32, seed=c), epochs=1, lr=0.4)
        assert metrics["examples"] == 600
        blob = encode_rankings({k: rank_scores(v) for k, v in get_scores(local).items()})
        upload_bytes.append(len(blob))
        rankings.append(decode_rankings(blob, state.layer_sizes(), client=c))
    state.update(rankings)
    set_scores(server_model, state.global_scores())
    _, acc = evaluate(server_model, test_batches)
    assert acc0 < 0.2 and acc > 0.3, (acc0, acc)  # chance is 0.1; one round reaches ~0.5

    dense_fp32 = 4 * sum(sizes.values())
    assert upload_bytes == [encoded_size(sizes)] * 3
    assert upload_bytes[0] < 0.62 * dense_fp32  # ⌈log₂ n⌉ bits/edge vs 32 bits/weight
