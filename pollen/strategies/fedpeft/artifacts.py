"""The run's final outputs: the adapter (loadable with peft's PeftModel.from_pretrained)."""

from __future__ import annotations

import json
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
    rt.tokenizer.save_pretrained(target)
    (target / CARD).write_text(model_card(rt.cfg, rows or [], method=method))
    return target
