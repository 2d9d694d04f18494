"""LoRA aggregation modes side by side (issue 13): eval loss and bytes per round, in one process.

Why: `pollen simulate` on the default task takes minutes per run on a shared 2-core machine; this
runs the same server runner (strategy, MeteredGrid metering, ledger, central evaluation) and the
real client handler over an in-process grid (pollen.protocol.grid.InProcessGrid), clients one after
another, so the three modes can be compared on a small task in seconds. Figures are ledger rows.

Usage: python bench/lora_modes.py [--preset classification] [--set KEY=VALUE ...] [--modes factors,svd,exact]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

import pollen.client.app as client_app
from pollen.cli import PRESETS
from pollen.config import PollenConfig
from pollen.protocol.grid import InProcessGrid
from pollen.protocol.records import CONFIG_KEY
from pollen.server.app import run_server


def run(preset: str, overrides: dict[str, str], mode: str, out: Path) -> list[dict]:
    cfg = PollenConfig.load(str(PRESETS / f"{preset}.toml"),
                            {**overrides, "strategy.lora_aggregation": mode, "run.out": str(out)})
    grid = InProcessGrid(cfg.federation.clients, client_app.train, {CONFIG_KEY: cfg.to_json()})
    run_server(grid, cfg, out)
    return json.loads((out / "metrics.json").read_text())["rounds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="classification")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--modes", default="factors,svd,exact")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    overrides = dict(item.split("=", 1) for item in args.set)
    print("| mode | round | train_loss | eval_loss | accuracy | clients | bytes_up | bytes_down |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            t0 = time.monotonic()
            for r in run(args.preset, overrides, mode, Path(tmp) / mode):
                tl, acc = r.get("train_loss"), r.get("eval_accuracy", r.get("accuracy"))
                print(f"| {mode} | {r['round']} | {'—' if tl is None else f'{tl:.4f}'} | "
                      f"{r['eval_loss']:.4f} | {'—' if acc is None else f'{acc:.4f}'} | {r['clients']} | "
                      f"{r['bytes_up']:,} | {r['bytes_down']:,} |", flush=True)
            print(f"<!-- {mode}: {time.monotonic() - t0:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
