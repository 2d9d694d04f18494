"""FRL vs dense FedAvg on Fashion-MNIST, clean and under attack, with the real strategy objects in-process.

FRL runs Pollen's own server runner (`pollen.strategies.frl.server.run`: FRLStrategy, MeteredGrid, ledger,
RankReversalGrid) and client handler (`pollen.client.app.train` → pollen/strategies/frl/client.py) over `InProcessGrid`, i.e.
`pollen simulate` minus the Flower/Ray processes. FedAvg runs Flower's `FedAvg` over the same grid with a
dense conv4 of the same architecture (bench/frl_dense.py), same client split, same number of rounds.
Attacks: FRL under colluding rank reversal, FedAvg under scaling (Δ_mal = 1e5·θ_global), spec §5.6.

Examples (CPU; a few minutes each):
    PYTHONPATH=$PWD python bench/frl_accuracy.py --method frl --clients 20 --fraction 0.5 --rounds 10 \
        --per-client 300 --attack-fraction 0.2
    PYTHONPATH=$PWD python bench/frl_accuracy.py --method fedavg --attack-fraction 0.1 ...
Each run prints per-round accuracy on the first 2000 test images and the final accuracy on all 10 000.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pollen.config import PollenConfig
from pollen.models.supermask import build_supermask_model, layer_sizes
from pollen.protocol.records import CONFIG_KEY
from pollen.strategies.frl.wire import encoded_size


def frl_config(a: argparse.Namespace) -> PollenConfig:
    over: dict[str, Any] = {
        "strategy.name": "frl", "data.name": "fashion-mnist", "model.name": a.model,
        "federation.clients": a.clients, "federation.fraction": a.fraction, "run.rounds": a.rounds,
        "run.seed": a.seed, "data.max_client_examples": a.per_client, "data.alpha": a.alpha,
        "data.partition": "iid" if a.alpha <= 0 else "dirichlet", "frl.local_epochs": a.epochs,
        "frl.batch_size": a.batch_size, "frl.lr": a.lr, "frl.lr_decay": a.lr_decay,
    }
    if a.attack_fraction > 0:
        over.update({"attack.name": "rank-reversal", "attack.fraction": a.attack_fraction})
    if a.alpha <= 0:
        over["data.alpha"] = 0.5  # unused by iid; must stay a valid config value
    return PollenConfig.load(None, over)


def run_frl(cfg: PollenConfig, out: Path) -> dict[str, Any]:
    import pollen.client.app as client_app
    from pollen.protocol.grid import InProcessGrid
    from pollen.server.app import run_server
    from pollen.strategies.frl.runtime import preflight
    from pollen.strategies.frl.server import evaluate_saved

    preflight(cfg)
    t0 = time.monotonic()
    grid = InProcessGrid(cfg.federation.clients, client_app.train, {CONFIG_KEY: cfg.to_json()})
    res = run_server(grid, cfg, out)
    seconds = round(time.monotonic() - t0, 1)
    rows = res["rounds"]
    for r in rows:
        print(f"frl round {r['round']}: acc {r['eval_accuracy']:.4f} loss {r['eval_loss']:.3f} "
              f"clients {r['clients']} up {r['bytes_up']} B down {r['bytes_down']} B", flush=True)
    test = evaluate_saved(out / "frl")
    trained = [r for r in rows if r["round"] > 0 and r["clients"]]
    up = [r["bytes_up"] / r["clients"] for r in trained]
    from pollen.attacks import select_attackers

    attackers = select_attackers(cfg.federation.clients, cfg.attack.fraction, cfg.attack.seed) \
        if cfg.attack.name else []
    return {"rounds": rows, "test": test, "seconds": seconds, "attackers": attackers,
            "bytes_up_per_client_per_round": float(np.mean(up)) if up else 0.0,
            "bytes_down_per_client_per_round": float(np.mean([r["bytes_down"] / r["clients"] for r in trained]))
            if trained else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=("frl", "fedavg"), default="frl")
    ap.add_argument("--model", default="conv4-supermask", help="FRL model (FedAvg always uses dense conv4)")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-client", type=int, default=300, help="cap on training examples per client (0: none)")
    ap.add_argument("--alpha", type=float, default=0.5, help="Dirichlet alpha over labels; <= 0 means IID")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=None, help="default: 0.4 (FRL scores), 0.02 (FedAvg weights, as the reference)")
    ap.add_argument("--lr-decay", type=float, default=0.999)
    ap.add_argument("--attack-fraction", type=float, default=0.0,
                    help="attackers: rank reversal for FRL, scaling for FedAvg")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="", help="FRL run directory (default: a temporary one)")
    ap.add_argument("--json", default="", help="write the result here")
    a = ap.parse_args()
    a.lr = a.lr if a.lr is not None else (0.4 if a.method == "frl" else 0.02)
    torch.set_num_threads(a.threads)
    random.seed(a.seed)  # Flower's FedAvg samples nodes with the global `random`
    logging.basicConfig(level=logging.WARNING)
    cfg = frl_config(a)
    sizes = layer_sizes(build_supermask_model(a.model, seed=a.seed))
    ranking, dense = encoded_size(sizes), 4 * sum(sizes.values())
    print(f"{a.model}: {sum(sizes.values()):,} edges; ranking {ranking:,} B per client per direction vs "
          f"dense fp32 {dense:,} B ({ranking / dense:.3f}x)", flush=True)
    if a.method == "frl":
        if a.out:
            res = run_frl(cfg, Path(a.out))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                res = run_frl(cfg, Path(tmp))
    else:
        from frl_dense import run_fedavg  # bench/ sibling module

        res = run_fedavg(cfg, lr=a.lr, attack_fraction=a.attack_fraction)
    print(f"{a.method} attack_fraction={a.attack_fraction}: final accuracy {res['test']['accuracy']:.4f} on "
          f"{res['test']['examples']:.0f} test images after {a.rounds} rounds, {res['seconds']:.0f}s", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), **res}, indent=1, default=float))


if __name__ == "__main__":
    main()
