"""Bytes up/down and eval_loss per round of one run, in one process: the down-link benchmark.

Why: `pollen simulate` starts Ray and one process per client; on a loaded 2-core machine its rounds
outlive the round timeout. This runs the same pieces in one process: the server's `run_server`
(strategy, MeteredGrid with the down-link layer, ledger, central evaluation) over the real ClientApp
handler (`pollen.client.app.train`) with one Flower Context per node (`InProcessGrid`, the
simulation's node config), so bytes and losses are those of a simulated run with the same config.

Usage: python bench/downlink.py --out DIR [--set section.key=value ...]
(defaults: the default task, `pollen simulate`'s defaults; prints the per-round table)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from pollen.config import PollenConfig
from pollen.deploy.federation import preflight, with_partition_ceiling
from pollen.protocol.grid import InProcessGrid
from pollen.protocol.records import CONFIG_KEY


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    over = dict(item.split("=", 1) for item in args.set)
    over["run.out"] = args.out
    cfg = PollenConfig.load(None, over)
    preflight(cfg)
    cfg = with_partition_ceiling(cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.toml")

    import pollen.client.app as client_app
    from pollen.server.app import run_server

    grid = InProcessGrid(cfg.federation.clients, client_app.train, {CONFIG_KEY: cfg.to_json()})
    t0 = time.monotonic()
    run_server(grid, cfg, out)
    rows = json.loads((out / "metrics.json").read_text())["rounds"]
    print(f"{time.monotonic() - t0:.0f} s; round, eval_loss, down_eval_loss, bytes up/down per "
          "client-round")
    for r in rows:
        n = max(int(r["sampled"] or 0), 1)
        print(r["round"], r.get("eval_loss"), r.get("down_eval_loss"), r["bytes_up"] // n,
              r["bytes_down"] // n)
    cr = sum(int(r["sampled"] or 0) for r in rows)
    total = sum(r["bytes_up"] + r["bytes_down"] for r in rows)
    print(f"bytes per client-round (up + down): {total / max(cr, 1):,.0f}")


if __name__ == "__main__":
    main()
