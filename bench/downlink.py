"""Bytes up/down and eval_loss per round of one run, in one process: the down-link benchmark.

Why: `pollen simulate` starts Ray and one process per client; on a loaded 2-core machine its rounds
outlive the round timeout. This runs the same pieces in one process: the server's `run_server`
(strategy, MeteredGrid with the down-link layer, ledger, central evaluation) over the real ClientApp
handler (`pollen.client.app.train`) with one Flower Context per node (`InProcessGrid`, the
simulation's node config), so bytes and losses are those of a simulated run with the same config.

Usage: python bench/downlink.py --out DIR [--set section.key=value ...]
(defaults: the default task, `pollen simulate`'s defaults; prints the per-round table)

       python bench/downlink.py --price X0.safetensors X1.safetensors --codecs SPEC...
prices the round-2 down-link of a client that holds x0 (the initial adapter) when the server's
global is x1 (e.g. a run's checkpoint after round 1): the pollen.v1.Downlink bytes each down codec
sends, their relative error ||x1 − x̂1|| / ||x1 − x0||, and the round-1 message (fingerprint only).
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


def price(x0_path: str, x1_path: str, codecs: list[str]) -> None:
    import numpy as np
    from safetensors.numpy import load_file

    from pollen.strategies.fedpeft.downlink import DownlinkServer

    x0, x1 = load_file(x0_path), load_file(x1_path)
    moved = float(np.sqrt(sum(((x1[k].astype(np.float64) - x0[k]) ** 2).sum() for k in x0)))
    for spec in codecs:
        srv = DownlinkServer(spec, x0)
        srv.advance(x0)
        srv._hold(1, 0)
        first = len(srv.message_for(1)[0])
        srv.advance(x1)
        blob = srv.message_for(1)[0]
        print(f"{spec!r}: round-1 message {first} B, round-2 message {len(blob):,} B, "
              f"rel. error {srv.residual_norm() / max(moved, 1e-30):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--price", nargs=2, metavar=("X0", "X1"))
    ap.add_argument("--codecs", nargs="*", default=["kmeans:4 > zstd"])
    ap.add_argument("--out")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.price:
        price(*args.price, args.codecs)
        return
    if not args.out:
        ap.error("--out is required")
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
