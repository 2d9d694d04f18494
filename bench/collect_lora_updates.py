"""Collect real LoRA updates from the default task, for bench/compression.py --updates.

    python bench/collect_lora_updates.py --rounds 4 --out runs/lora-updates

One client (partition 0 of the default natural chatterbot split) trains smollm2-135m + LoRA with the
default config for `--rounds` rounds, starting each round from the previous round's adapter, and
saves each round's update Δ = local − global as `round-K.safetensors`. Real updates, not synthetic.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.numpy import save_file

from pollen.config import PollenConfig
from pollen.data.tokenize import batches
from pollen.models.peft_methods import trainable_state
from pollen.models.train import train_steps
from pollen.strategies.fedpeft.runtime import client_data, runtime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", default="runs/lora-updates")
    ap.add_argument("--config", default=None)
    args = ap.parse_args()
    cfg = PollenConfig.load(args.config)
    rt = runtime(cfg)
    data = client_data(cfg, 0, cfg.federation.clients)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for r in range(1, args.rounds + 1):
        before = trainable_state(rt.model)
        loss, _ = train_steps(rt.model, batches(data, cfg.train.batch_size, rt.pad_id,
                                                steps=cfg.train.local_steps, seed=r), lr=cfg.train.lr)
        after = trainable_state(rt.model)
        save_file({k: after[k] - before[k] for k in after}, str(out / f"round-{r}.safetensors"))
        print(f"round {r}: train_loss {loss:.4f} -> {out / f'round-{r}.safetensors'}")


if __name__ == "__main__":
    main()
