"""chatterbot-corpus English conversations: 2,377 question/answer pairs (1,243 distinct) in 21 categories."""

from __future__ import annotations

import itertools

import numpy as np
import yaml

from pollen.data.registry import DATASETS, TextDataset
from pollen.errors import DataError
from pollen.models.registry import package_dir

HINT = "pip install --no-deps chatterbot-corpus==1.3.3"


@DATASETS.register("chatterbot")
def load() -> tuple[TextDataset, int, list[str], int]:
    root = package_dir("chatterbot_corpus", HINT) / "data" / "english"
    files = sorted(root.glob("*.yml"))
    if not files:
        raise DataError(f"no conversations under {root}; reinstall with: {HINT}")
    prompts, responses, groups, names = [], [], [], []
    seen: set[tuple[str, str]] = set()
    for gid, path in enumerate(files):
        names.append(path.stem)
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conv in doc.get("conversations") or []:
            turns = [str(t).strip() for t in conv if t is not None and str(t).strip()]
            # Every consecutive pair of turns is one instruction/response example.
            for q, a in itertools.pairwise(turns):
                # The corpus repeats some pairs >100 times (tech_support); keep one so the
                # held-out split does not leak into training.
                if (q, a) in seen:
                    continue
                seen.add((q, a))
                prompts.append(q)
                responses.append(a)
                groups.append(gid)
    ds = TextDataset(task="causal-lm", prompts=prompts, responses=responses,
                     groups=np.asarray(groups, dtype=np.int64), group_names=names)
    return ds, 0, [], 64
