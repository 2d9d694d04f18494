"""The run's final outputs: the adapter (loadable with peft's PeftModel.from_pretrained)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from pollen.io_utils import atomic_write_json
from pollen.models.finetuned import CARD, base_identity, model_card
from pollen.strategies.fedpeft.runtime import Runtime


def save_final(rt: Runtime, out: Path, rows: list[dict[str, Any]] | None = None,
               method: str = "FedPEFT") -> Path:
    """PEFT models save as peft adapters; BitFit saves its trainable tensors + a JSON manifest.

    Either way the directory is usable on its own: the tokenizer is beside the adapter, the adapter
    names its base by hub id or the user's directory (not this machine's cache path), and the model
    card says how it was trained and how well.
    """
    target = out / "adapter"
    target.mkdir(parents=True, exist_ok=True)
    _write_adapter(rt, target)
    rt.tokenizer.save_pretrained(target)
    (target / CARD).write_text(model_card(rt.cfg, rows or [], method=method))
    return target


ROUNDS_DIR = "rounds"


def save_round_adapter(rt: Runtime, out: Path, server_round: int, *, keep: int) -> Path:
    """OUT/rounds/round-NNNNN: this round's adapter in peft format; only the last `keep` stay (-1: all).

    Written to a temporary directory and renamed, so a reader never sees half an adapter.
    """
    root = out / ROUNDS_DIR
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"round-{server_round:05d}"
    tmp = root / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _write_adapter(rt, tmp)
    (tmp / CARD).unlink(missing_ok=True)  # peft's blank template; the run's card is in adapter/
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    if keep > 0:
        for old in sorted(root.glob("round-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _write_adapter(rt: Runtime, target: Path) -> None:
    if hasattr(rt.model, "peft_config"):
        rt.model.save_pretrained(target)
        conf_path = target / "adapter_config.json"
        conf = json.loads(conf_path.read_text())
        conf["base_model_name_or_path"] = base_identity(rt.cfg.model.name)
        conf_path.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")
    else:
        tensors = {n: p.detach().contiguous() for n, p in rt.model.named_parameters() if p.requires_grad}
        save_file(tensors, str(target / "trainable.safetensors"))
        atomic_write_json(target / "pollen_adapter.json", {
            "method": rt.cfg.model.peft, "model": rt.cfg.model.name,
            "base_model_name_or_path": base_identity(rt.cfg.model.name), "tensors": sorted(tensors)})
