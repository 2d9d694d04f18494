"""Users' own data: local JSON/JSONL/CSV files or Hugging Face datasets (`hf:NAME[:split]`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from pollen.data.registry import TextDataset
from pollen.errors import DataError

PROMPT_KEYS = ("prompt", "instruction", "question", "input")
RESPONSE_KEYS = ("response", "output", "answer", "completion")


def _rows(name: str) -> list[dict[str, Any]]:
    if name.startswith("hf:"):
        try:
            import datasets
        except ImportError:
            raise DataError("Hugging Face datasets need `pip install datasets`") from None
        spec = name[3:].split(":")
        try:
            return list(datasets.load_dataset(spec[0], split=spec[1] if len(spec) > 1 else "train"))
        except Exception as e:  # noqa: BLE001 - datasets raises many types; the message is what matters
            raise DataError(f"cannot load Hugging Face dataset {spec[0]!r}: {e}") from None
    path = Path(name)
    if not path.is_file():
        raise DataError(f"data file {name!r} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".csv":
            return list(csv.DictReader(text.splitlines()))
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except (json.JSONDecodeError, csv.Error) as e:
        raise DataError(f"cannot parse {name!r}: {e}") from None
    if not isinstance(data, list):
        raise DataError(f"{name!r} must hold a list of records")
    return data


def _key(row: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if k in row), None)


def load_table(name: str) -> tuple[TextDataset, int, list[str], int]:
    """Instruction data (prompt/response columns) or classification data (text/label columns)."""
    rows = _rows(name)
    if not rows or not isinstance(rows[0], dict):
        raise DataError(f"{name!r} has no records")
    first = rows[0]
    groups_key = "category" if "category" in first else None
    if "text" in first and "label" in first:
        names = sorted({str(r["label"]) for r in rows})
        y = np.asarray([names.index(str(r["label"])) for r in rows], dtype=np.int64)
        ds = TextDataset("seq-cls", [str(r["text"]) for r in rows], labels=y, groups=y.copy(),
                         group_names=names)
        return ds, len(names), names, min(512, len(rows) // 5)
    pk, rk = _key(first, PROMPT_KEYS), _key(first, RESPONSE_KEYS)
    if pk is None or rk is None:
        raise DataError(f"{name!r}: need columns text+label (classification) or one of "
                        f"{PROMPT_KEYS} plus one of {RESPONSE_KEYS} (instruction tuning); "
                        f"found {sorted(first)}")
    cats = [str(r.get(groups_key, "")) for r in rows] if groups_key else [""] * len(rows)
    names = sorted(set(cats))
    ds = TextDataset("causal-lm", [str(r[pk]) for r in rows], [str(r[rk]) for r in rows],
                     groups=np.asarray([names.index(c) for c in cats], dtype=np.int64),
                     group_names=names)
    return ds, 0, [], min(64, len(rows) // 5)
