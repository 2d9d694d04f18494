"""Fashion-MNIST from Debian's `dataset-fashion-mnist` package, parsed from IDX files with numpy (no torchvision).

The package installs `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz` under /usr/share/datasets/fashion-mnist;
uncompressed copies (no `.gz`) in another directory work too (`POLLEN_FASHION_MNIST_DIR` or `root=`).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pollen.errors import DataError

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu)"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
# Pixel statistics of the training set, for `normalize`.
MEAN, STD = 72.94 / 255.0, 90.02 / 255.0


@dataclass(frozen=True)
class FashionMNIST:
    """uint8 images (N, 28, 28) and uint8 labels (N,) for the 60k train and 10k test splits."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def _open(root: Path, stem: str) -> bytes:
    for path, opener in ((root / f"{stem}.gz", gzip.open), (root / stem, open)):
        if path.is_file():
            try:
                with opener(path, "rb") as f:
                    return f.read()
            except (OSError, EOFError) as e:
                raise DataError(f"cannot read {path}: {e}; reinstall: {INSTALL_HINT}") from None
    raise DataError(f"Fashion-MNIST file {stem}(.gz) not found in {root}; {INSTALL_HINT}")


def parse_idx(raw: bytes, *, ndim: int, name: str = "IDX data") -> np.ndarray:
    """Parse an unsigned-byte IDX array (magic 0x0000 08 ndim, big-endian u32 dims, then the data)."""
    if len(raw) < 4 + 4 * ndim or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise DataError(f"{name}: not a {ndim}-d uint8 IDX file (header {raw[:4]!r})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise DataError(f"{name}: dims {dims} need {int(np.prod(dims))} bytes, file has {len(body)}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims).copy()


@lru_cache(maxsize=2)
def _load(root: str) -> FashionMNIST:
    r = Path(root)
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = parse_idx(_open(r, f"{prefix}-images-idx3-ubyte"), ndim=3, name=f"{split} images")
        labels = parse_idx(_open(r, f"{prefix}-labels-idx1-ubyte"), ndim=1, name=f"{split} labels")
        if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
            raise DataError(f"Fashion-MNIST {split}: {images.shape} images vs {labels.shape} labels")
        if labels.size and int(labels.max()) >= len(CLASSES):
            raise DataError(f"Fashion-MNIST {split}: label {int(labels.max())} out of range 0..9")
        parts[f"{split}_images"], parts[f"{split}_labels"] = images, labels
    return FashionMNIST(**parts)


def default_root() -> Path:
    return Path(os.environ.get("POLLEN_FASHION_MNIST_DIR", DEFAULT_ROOT))


def is_available(root: str | Path | None = None) -> bool:
    """True when all four files are present (cheap; does not parse them)."""
    r = Path(root) if root is not None else default_root()
    return all((r / f"{p}-{k}-ubyte.gz").is_file() or (r / f"{p}-{k}-ubyte").is_file()
               for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1"))


def load_fashion_mnist(root: str | Path | None = None) -> FashionMNIST:
    """Load both splits (cached per root); raises DataError with the install command when absent."""
    r = Path(root) if root is not None else default_root()
    if not r.is_dir():
        raise DataError(f"Fashion-MNIST not found: {r} does not exist; {INSTALL_HINT}")
    return _load(str(r.resolve()))


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) → float32 (N, 1, 28, 28), standardised with the training-set mean and std."""
    return ((images.astype(np.float32) / 255.0 - MEAN) / STD)[:, None, :, :]
