"""FedKSeed bytes per client-round in the paper's setting, before vs after the bounded down-link (issue 13).

Simulates the schedule through the real strategy (pollen.strategies.fedkseed.strategy.FedKSeed):
200 clients, 10 sampled per round (seeded, as in a run), 40 rounds, K = 4096, 200 local steps. Every
sampled client replies with 200 (seed index, g) pairs: indices drawn uniformly (Pro: from the sent
probabilities), g ~ N(0, 1) * 3 as float32 (the scale of two-point ZO estimates; the byte counts do
not depend on it). No model trains: the accumulator, the messages and their bytes are real.

Bytes, per client-round:
- after: the pollen.v1 protobuf blobs exactly as sent, `pairs` up and `downlink` (+ `probs` for Pro)
  down, and the whole Flower payload (`payload_bytes`, record keys and the other fields included);
- before: the hand-packed format this replaced (pre-issue-13 fedkseed/wire.py): up 6 + 6 B per step,
  down 4 + sum over the rounds since the client's version of (12 + 6 B per touched seed), + 5 + 4·K
  for Pro.
The paper's accounting (FedKSeed §3.4, K = 4096, 200 steps): 16,384 + 1,600 = 17,984 B.

    python bench/fedkseed_bytes.py [--clients 200 --per-round 10 --rounds 40 --k 4096 --steps 200]
                                   [--timing]   # + CPU seconds of the rebuild vs a one-round replay
"""

from __future__ import annotations

import argparse

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from pollen.protocol.records import payload_bytes
from pollen.strategies.fedkseed.state import SeedAccumulator
from pollen.strategies.fedkseed.strategy import REPLY_KEY, FedKSeed
from pollen.strategies.fedkseed.wire import decode_downlink, decode_probabilities, encode_pairs

PAPER = 17_984

try:  # Outside a ServerApp process Flower has no task identity; Messages need one.
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
except ImportError:  # older Flower builds messages without it
    pass


class Grid:
    def __init__(self, n: int) -> None:
        self.nodes = list(range(1, n + 1))

    def get_node_ids(self) -> list[int]:
        return self.nodes


def old_down(acc: SeedAccumulator, base: int, pro: bool) -> int:
    size = 4 + sum(12 + 6 * d.indices.size for d in acc.deltas_since(base))
    return size + (5 + 4 * acc.k if pro else 0)


def simulate(clients: int, per_round: int, rounds: int, k: int, steps: int, pro: bool,
             seed: int = 0) -> dict[str, np.ndarray]:
    acc = SeedAccumulator(k, master_seed=seed, lr=1e-3, pro=pro)
    s = FedKSeed(acc, local_steps=steps, fraction_train=per_round / clients, min_train_nodes=1,
                 min_available_nodes=1, seed=seed)
    grid, rng = Grid(clients), np.random.default_rng(seed)
    rows: dict[str, list[int]] = {key: [] for key in
                                  ("up", "down", "up_payload", "down_payload", "old_up", "old_down",
                                   "staleness", "dense")}
    for r in range(1, rounds + 1):
        msgs = list(s.configure_train(r, s.initial_arrays(), ConfigRecord(), grid))
        replies = []
        for m in msgs:
            node, conf = m.metadata.dst_node_id, m.content["config"]
            base = min(s.synced.get(node, 0), acc.version)
            down = len(conf["downlink"]) + (len(conf["probs"]) if "probs" in conf else 0)
            d = decode_downlink(conf["downlink"], k, max_version=rounds)
            if pro:
                p = decode_probabilities(conf["probs"], k)
                idx = rng.choice(k, size=steps, p=p)
            else:
                idx = rng.integers(0, k, steps)
            g = (rng.standard_normal(steps) * 3).astype(np.float32)
            pairs = encode_pairs(list(zip(idx.tolist(), g.tolist(), strict=True)), k)
            content = RecordDict({REPLY_KEY: ConfigRecord({"pairs": pairs}), "metrics": MetricRecord(
                {"num-examples": int(rng.integers(50, 500)), "model-version": d.version,
                 "partition-id": node - 1, "train_loss": 2.5, "skipped": 0})})
            replies.append(Message(content=content, reply_to=Message(
                content=RecordDict({}), dst_node_id=node, message_type=MessageType.TRAIN)))
            for key, v in (("up", len(pairs)), ("down", down), ("up_payload", payload_bytes(content)),
                           ("down_payload", payload_bytes(m.content)), ("old_up", 6 + 6 * steps),
                           ("old_down", old_down(acc, base, pro)), ("staleness", acc.version - base),
                           ("dense", d.kind == "dense")):
                rows[key].append(int(v))
        s.aggregate_train(r, replies)
        assert not s.dropped, s.dropped
    return {key: np.array(v) for key, v in rows.items()}


def staleness_table(k: int, steps: int, per_round: int) -> list[tuple[int, int, int]]:
    """Down-link bytes for a client 1, 5 and 40 rounds behind (before / after)."""
    from pollen.strategies.fedkseed.wire import encode_downlink_smallest

    rng = np.random.default_rng(1)
    acc = SeedAccumulator(k, 0, 1e-3)
    out = []
    for r in range(1, 41):
        acc.aggregate([(list(zip(rng.integers(0, k, steps).tolist(),
                                 rng.standard_normal(steps).astype(np.float32).tolist(), strict=True)),
                        100) for _ in range(per_round)])
        if r in (1, 5, 40):
            base = 0 if r == 40 else acc.version - r
            # "r behind": the client trained from version V - r (base 0 for 40: a new client).
            new, _ = encode_downlink_smallest(acc.downlinks(base), k)
            out.append((r, old_down(acc, base, False), len(new)))
    return out


def rebuild_cost(d: int, k: int, seeds_per_round: int) -> tuple[float, float]:
    """Seconds for a client to reach w_V on CPU (one thread): the full rebuild from w_0 and A_V
    (every party's canonical path now, all K seeds nonzero) vs replaying one round's delta."""
    import time

    import torch

    from pollen.strategies.fedkseed.seeds import apply_seeds
    from pollen.strategies.fedkseed.state import rebuild

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    w0 = [torch.randn(d)]
    w = [w0[0].clone()]
    seeds = rng.integers(1, 1 << 62, k)
    a = rng.standard_normal(k).astype(np.float32)
    t = time.perf_counter()
    rebuild(w, w0, a, seeds, 1e-3)
    full = time.perf_counter() - t
    t = time.perf_counter()
    apply_seeds(w, seeds[:seeds_per_round], a[:seeds_per_round] * -1e-3)
    one = time.perf_counter() - t
    return full, one


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--per-round", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--timing", action="store_true", help="also time the rebuild on this CPU")
    a = ap.parse_args()
    print(f"{a.clients} clients, {a.per_round} per round, {a.rounds} rounds, K={a.k}, "
          f"{a.steps} local steps; bytes per client-round, mean / max over "
          f"{a.per_round * a.rounds} client-rounds; paper: {PAPER:,} B up + down\n")
    print("| variant | format | up | down | up + down | vs paper (mean) |")
    print("|---|---|---:|---:|---:|---:|")
    for pro in (False, True):
        res = simulate(a.clients, a.per_round, a.rounds, a.k, a.steps, pro)
        name = "FedKSeed-Pro" if pro else "FedKSeed"

        def mm(x: np.ndarray) -> str:
            return f"{x.mean():,.0f} / {x.max():,}"

        for fmt, up, down in (("before (hand-packed log)", res["old_up"], res["old_down"]),
                              ("after (pollen.v1 blobs)", res["up"], res["down"]),
                              ("after, whole Flower payload", res["up_payload"], res["down_payload"])):
            tot = up + down
            print(f"| {name} | {fmt} | {mm(up)} | {mm(down)} | {mm(tot)} | "
                  f"{tot.mean() / PAPER:.2f}x |")
        if not pro:
            st = res["staleness"]
            print(f"\n(FedKSeed: staleness of the sampled clients: mean {st.mean():.1f}, max {st.max()} "
                  f"rounds; {res['dense'].mean():.0%} of messages were the dense A)\n")
    print("\nDown-link to one client r rounds behind (10 clients x 200 steps per round):\n")
    print("| behind | before | after |")
    print("|---:|---:|---:|")
    for r, old, new in staleness_table(a.k, a.steps, a.per_round):
        print(f"| {r} | {old:,} | {new:,} |")
    if a.timing:
        print("\nCPU cost of reaching w_V, one thread (d tuned values):\n")
        print("| d | K | rebuild from w_0 (all K seeds) | replay one round (distinct seeds) |")
        print("|---:|---:|---:|---:|")
        for d, k, per in ((35_136, 1024, 100), (35_136, 4096, 1570), (1_000_000, 4096, 1570)):
            full, one = rebuild_cost(d, k, per)
            print(f"| {d:,} | {k} | {full:.2f} s | {one:.2f} s ({per} seeds) |")


if __name__ == "__main__":
    main()
