"""FRL accuracy over rounds on Fashion-MNIST (simulated clients, no Flower): accuracy, time and bytes per round.

Example (CPU, a few minutes):
    PYTHONPATH=$PWD python bench/frl_accuracy.py --clients 20 --fraction 0.25 --rounds 10 --per-client 600
Optional rank-reversal attackers (ids < --attackers, spec §5.6/§8): --attackers 4
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from pollen.client.supermask_trainer import TensorBatches, evaluate, round_lr, train_scores
from pollen.data.fashion_mnist import load_fashion_mnist, normalize
from pollen.models.supermask import build_supermask_model, get_scores, layer_sizes, set_scores
from pollen.strategies.frl_core import FRLServerState, rank_reversal, rank_scores
from pollen.strategies.frl_wire import decode_rankings, encode_rankings, encoded_size


def partition(labels: np.ndarray, n_clients: int, alpha: float, per_client: int, seed: int
              ) -> list[np.ndarray]:
    """IID (alpha <= 0) or per-class Dirichlet(alpha) split, each client capped at per_client examples."""
    rng = np.random.default_rng(seed)
    if alpha <= 0:
        parts = np.array_split(rng.permutation(labels.size), n_clients)
    else:
        buckets: list[list[int]] = [[] for _ in range(n_clients)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet([alpha] * n_clients)) * idx.size).astype(int)[:-1]
            for b, chunk in zip(buckets, np.split(idx, cuts)):
                b.extend(chunk.tolist())
        parts = [rng.permutation(np.array(b, dtype=np.int64)) for b in buckets]
    return [p[:per_client] for p in parts]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="conv4-supermask")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-client", type=int, default=600, help="cap on training examples per client")
    ap.add_argument("--alpha", type=float, default=0.0, help="Dirichlet alpha; <= 0 means IID")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.4)
    ap.add_argument("--lr-decay", type=float, default=0.999)
    ap.add_argument("--attackers", type=int, default=0, help="rank-reversal clients (ids < N)")
    ap.add_argument("--test-size", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default="", help="write the per-round records here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)

    data = load_fashion_mnist()
    parts = partition(data.train_labels, a.clients, a.alpha, a.per_client, a.seed)
    xs = torch.from_numpy(normalize(data.train_images))
    ys = torch.from_numpy(data.train_labels.astype(np.int64))
    test = TensorBatches(normalize(data.test_images[:a.test_size]), data.test_labels[:a.test_size], 500,
                         shuffle=False)
    model = build_supermask_model(a.model, seed=a.seed).to(dev)
    state = FRLServerState.from_scores(get_scores(model))
    sizes = layer_sizes(model)
    per_dir = encoded_size(sizes)
    print(f"{a.model}: {sum(sizes.values()):,} edges; ranking {per_dir:,} B per client per direction "
          f"vs dense fp32 {4 * sum(sizes.values()):,} B ({per_dir / (4 * sum(sizes.values())):.3f}x)")
    rng = np.random.default_rng(a.seed + 1)
    per_round = max(1, round(a.fraction * a.clients))
    records, t_start = [], time.perf_counter()
    for rnd in range(a.rounds):
        t0 = time.perf_counter()
        while True:  # reference: resample until attackers are fewer than half the round
            chosen = rng.choice(a.clients, per_round, replace=False)
            if (chosen < a.attackers).sum() < per_round / 2 or a.attackers == 0:
                break
        lr, global_scores = round_lr(a.lr, rnd, a.lr_decay), state.global_scores()
        uploads, mal_scores, n_mal, losses = [], [], 0, []
        for cid in chosen:
            set_scores(model, global_scores)
            idx = parts[cid]
            m = train_scores(model, TensorBatches(xs[idx], ys[idx], a.batch_size, seed=a.seed * 1000 + rnd),
                             epochs=a.epochs, lr=lr)
            scores = {k: v.cpu() for k, v in get_scores(model).items()}
            if cid < a.attackers:
                mal_scores.append(scores)
                n_mal += 1
            else:
                losses.append(m["loss"])
                uploads.append(encode_rankings({k: rank_scores(v) for k, v in scores.items()}))
        if n_mal:
            uploads += [encode_rankings(rank_reversal(mal_scores))] * n_mal
        state.update([decode_rankings(b, state.layer_sizes(), client=i) for i, b in enumerate(uploads)])
        set_scores(model, state.global_scores())
        loss, acc = evaluate(model, ((x.to(dev), y.to(dev)) for x, y in test))
        rec = {"round": rnd + 1, "test_acc": acc, "test_loss": loss, "train_loss": float(np.mean(losses)),
               "malicious": n_mal, "seconds": time.perf_counter() - t0,
               "bytes_up_per_client": len(uploads[0]), "bytes_down_per_client": per_dir}
        records.append(rec)
        print(f"round {rnd + 1:3d}  acc {acc:.4f}  loss {loss:.3f}  mal {n_mal}  {rec['seconds']:.1f}s",
              flush=True)
    total = time.perf_counter() - t_start
    print(f"final accuracy {records[-1]['test_acc']:.4f} after {a.rounds} rounds, {total:.0f}s total "
          f"({total / a.rounds:.1f}s/round, {per_round} clients/round)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "rounds": records, "total_seconds": total}, f, indent=1)


if __name__ == "__main__":
    main()
