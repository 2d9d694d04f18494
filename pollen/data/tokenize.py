"""Tokenisation and batching. Causal LM: chat-formatted prompt, loss on response tokens only."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pollen.data.registry import TextDataset

IGNORE = -100
SYSTEM = "You are a helpful assistant."


@dataclass
class Encoded:
    input_ids: list[list[int]]
    labels: list[list[int]] | np.ndarray  # per-token labels (causal-lm) or class ids (seq-cls)
    task: str

    def __len__(self) -> int:
        return len(self.input_ids)


def _prompt_ids(tok: Any, prompt: str) -> list[int]:
    if getattr(tok, "chat_template", None):
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        out = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        return list(out["input_ids"] if hasattr(out, "keys") else out)
    return tok(f"Question: {prompt}\nAnswer: ", add_special_tokens=True)["input_ids"]


def encode(ds: TextDataset, tok: Any, max_length: int) -> Encoded:
    if ds.task == "seq-cls":
        ids = tok(ds.prompts, truncation=True, max_length=max_length)["input_ids"]
        return Encoded(input_ids=ids, labels=np.asarray(ds.labels), task=ds.task)
    eos = tok.eos_token or ""
    all_ids, all_labels = [], []
    for prompt, response in zip(ds.prompts, ds.responses):
        p = _prompt_ids(tok, prompt)
        r = tok(response + eos, add_special_tokens=False)["input_ids"]
        # Keep at least a few response tokens: truncate the prompt from the left if needed.
        keep_p = max(0, min(len(p), max_length - min(len(r), max_length // 2)))
        p = p[len(p) - keep_p:]
        ids = (p + r)[:max_length]
        labels = ([IGNORE] * len(p) + r)[:max_length]
        all_ids.append(ids)
        all_labels.append(labels)
    return Encoded(input_ids=all_ids, labels=all_labels, task=ds.task)


def collate(enc: Encoded, idx: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    seqs = [enc.input_ids[i] for i in idx]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s)
        mask[row, : len(s)] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if enc.task == "seq-cls":
        batch["labels"] = torch.as_tensor(np.asarray(enc.labels)[idx], dtype=torch.long)
    else:
        lab = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
        for row, i in enumerate(idx):
            lab[row, : len(enc.labels[i])] = torch.tensor(enc.labels[i])
        batch["labels"] = lab
    return batch


def batches(enc: Encoded, batch_size: int, pad_id: int, *, seed: int, shuffle: bool = True,
            steps: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Shuffled epochs until `steps` batches were yielded (or one pass when steps is None)."""
    rng = np.random.default_rng(seed)
    n, done = len(enc), 0
    while True:
        order = rng.permutation(n) if shuffle else np.arange(n)
        for start in range(0, n, batch_size):
            yield collate(enc, order[start : start + batch_size], pad_id)
            done += 1
            if steps is not None and done >= steps:
                return
        if steps is None:
            return
