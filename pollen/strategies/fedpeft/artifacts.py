"""The run's final outputs: the adapter (loadable with peft's PeftModel.from_pretrained)."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from pollen.io_utils import atomic_write_json
from pollen.strategies.fedpeft.runtime import Runtime


def save_final(rt: Runtime, out: Path) -> Path:
    """PEFT models save as peft adapters; BitFit saves its trainable tensors + a JSON manifest."""
    target = out / "adapter"
    target.mkdir(parents=True, exist_ok=True)
    if hasattr(rt.model, "peft_config"):
        rt.model.save_pretrained(target)
    else:
        tensors = {n: p.detach().contiguous() for n, p in rt.model.named_parameters() if p.requires_grad}
        save_file(tensors, str(target / "trainable.safetensors"))
        atomic_write_json(target / "pollen_adapter.json", {
            "method": rt.cfg.model.peft, "model": rt.cfg.model.name, "tensors": sorted(tensors)})
    return target
