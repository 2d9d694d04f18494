"""Server-side cost of one aggregation: Flag Aggregator vs FedAvg vs Multi-Krum.

Why: Flag's pitch is robustness at a modest cost; this measures that cost (time per round) against
the two baselines a deployment would otherwise use, for realistic client counts and update sizes.

Methods timed on the same (n, d) float32 updates (20% of rows replaced by large random vectors):
- fedavg       weighted mean `w @ U` in torch (the reference for the ratios);
- flag         pollen.strategies.flag.core.flag_aggregate, m = n // 2 (paper rule of thumb), to
               convergence (iterations reported); Gram from float32 blocks summed in float64;
- flag f64     the same with gram_blocks="float64" (the all-float64 Gram used before issue 14);
- mkrum_torch  vectorised Multi-Krum (pairwise distances from one Gram, f = n // 5, select n − f);
- mkrum_flwr   Flower's own `select_multikrum` + `aggregate_arrayrecords` (what
               `flwr.serverapp.strategy.MultiKrum.aggregate_train` runs) on prebuilt RecordDicts, CPU;
- fedavg_flwr  Flower's `aggregate_arrayrecords` alone, for a like-for-like Flower ratio.
Combos whose estimated peak memory exceeds --max-gb are skipped (Flower's path holds ~4 copies).

Usage: python bench/aggregation_cost.py [--quick] [--device cpu|cuda|all] [--threads 1] [--no-f64]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch

from pollen.strategies.flag.core import flag_aggregate


def make_updates(n: int, d: int, device: str, seed: int = 0) -> torch.Tensor:
    """Honest updates around a shared direction, with n // 5 rows of large random vectors."""
    gen = torch.Generator(device=device).manual_seed(seed)
    base = torch.randn(d, generator=gen, device=device) / d**0.5
    upd = torch.randn(n, d, generator=gen, device=device).mul_(0.5 / d**0.5).add_(base)
    f = n // 5
    if f:
        upd[:f].normal_(generator=gen).mul_(10.0)
    return upd


def multikrum_torch(upd: torch.Tensor, weights: torch.Tensor, f: int, k: int) -> torch.Tensor:
    """Multi-Krum: score = sum of the n−f−2 smallest squared distances to others; mean of k best."""
    n = upd.shape[0]
    gram = upd @ upd.T
    sq = gram.diagonal()
    dist = (sq[:, None] + sq[None, :] - 2 * gram).clamp_min_(0)
    dist.fill_diagonal_(float("inf"))
    closest = max(1, n - f - 2)
    scores = dist.topk(closest, dim=1, largest=False).values.sum(1)
    chosen = torch.argsort(scores)[:k]
    w = torch.zeros_like(weights)
    w[chosen] = weights[chosen] / weights[chosen].sum()
    return w @ upd


def _flwr_records(upd: torch.Tensor, weights: torch.Tensor) -> list:
    from flwr.app import ArrayRecord, MetricRecord, RecordDict

    arr = upd.cpu().numpy()
    return [RecordDict({"arrays": ArrayRecord([arr[i]]),
                        "metrics": MetricRecord({"num-examples": float(weights[i])})})
            for i in range(arr.shape[0])]


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def time_call(fn: Callable[[], object], device: str, repeats: int) -> tuple[float, object]:
    """Best time (ms) of `repeats` calls after one warm-up call, on the `--clock` chosen: wall, or
    this process's CPU time (with one thread, what a call costs even on a machine others load)."""
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = _clock()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, _clock() - t0)
    return best * 1e3, out


def bench_one(n: int, d: int, device: str, repeats: int, with_flwr: bool,
              with_f64: bool = True) -> dict[str, object]:
    upd = make_updates(n, d, device)
    weights = torch.ones(n, device=device)
    f, m = n // 5, max(1, n // 2)
    row: dict[str, object] = {"device": device, "n": n, "d": d}
    row["fedavg"], _ = time_call(lambda: (weights / weights.sum()) @ upd, device, repeats)
    row["flag"], res = time_call(lambda: flag_aggregate(upd, m=m, weights=weights), device, repeats)
    row["iters"] = res.iters  # type: ignore[attr-defined]
    if with_f64:  # the float64 Gram Flag used before issue 14, side by side
        row["flag_f64"], _ = time_call(
            lambda: flag_aggregate(upd, m=m, weights=weights, gram_blocks="float64"), device, repeats)
    row["mkrum_torch"], _ = time_call(lambda: multikrum_torch(upd, weights, f, n - f), device,
                                      repeats)
    if with_flwr:
        from flwr.serverapp.strategy.multikrum import select_multikrum
        from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

        recs = _flwr_records(upd, weights)
        del upd
        row["mkrum_flwr"], _ = time_call(
            lambda: aggregate_arrayrecords(select_multikrum(recs, f, n - f), "num-examples"),
            "cpu", repeats)
        row["fedavg_flwr"], _ = time_call(lambda: aggregate_arrayrecords(recs, "num-examples"),
                                          "cpu", repeats)
    return row


def peak_gb(n: int, d: int, with_flwr: bool) -> float:
    return (16 if with_flwr else 4.5) * n * d / 1e9 + 0.2


def fmt(row: dict[str, object]) -> str:
    def cell(key: str) -> str:
        if key not in row:
            return f"{'-':>18}"
        ms = float(row[key])  # type: ignore[arg-type]
        return f"{ms:10.1f} ({ms / float(row['fedavg']):5.0f}x)"  # type: ignore[arg-type]

    fl = row.get("fedavg_flwr")
    vs_flwr = "-" if fl is None else f"{float(row['flag']) / float(fl):.1f}x"  # type: ignore[arg-type]
    return (f"{row['device']:>6} {row['n']:>5} {row['d']:>9.0e} {float(row['fedavg']):10.2f} "  # type: ignore[arg-type]
            f"{cell('flag')} {cell('flag_f64')} {row['iters']:>5} {cell('mkrum_torch')} {cell('mkrum_flwr')} "
            f"{('-' if fl is None else f'{float(fl):.1f}'):>11} {vs_flwr:>13}")  # type: ignore[arg-type]


HEADER = (f"{'device':>6} {'n':>5} {'d':>9} {'fedavg ms':>10} {'flag ms (ratio)':>18} "
          f"{'flag f64 ms':>18} {'iters':>5} "
          f"{'mkrum_torch ms':>18} {'mkrum_flwr ms':>18} {'fedavg_flwr':>11} {'flag/flwr avg':>13}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="d=1e5 for all n, d=1e6 for n<=50, best of 2")
    ap.add_argument("--clients", default="10,50,100,200")
    ap.add_argument("--sizes", default="1e5,1e6,1e7")
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (shared machines: 1)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-gb", type=float, default=6.0, help="host RAM cap per combo")
    ap.add_argument("--max-gpu-gb", type=float, default=40.0, help="GPU memory cap per combo")
    ap.add_argument("--no-flwr", action="store_true", help="skip Flower's own Multi-Krum path")
    ap.add_argument("--no-f64", action="store_true",
                    help="skip Flag with the all-float64 Gram (the pre-issue-14 path)")
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                    help="wall time, or process CPU time (1 thread, shared machine; not for cuda)")
    args = ap.parse_args(argv)
    global _clock
    _clock = CLOCK[args.clock]
    torch.set_num_threads(args.threads)
    clients = [int(c) for c in args.clients.split(",")]
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    repeats = min(2, args.repeats) if args.quick else args.repeats
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [dv for dv in devices if dv == "cpu" or torch.cuda.is_available()]
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s), devices {devices}, "
          f"best of {repeats} after warm-up, {args.clock} clock; ratios vs fedavg (torch weighted mean)")
    print(HEADER)
    for device in devices:
        for d in sizes:
            for n in clients:
                if args.quick and (d > 1_000_000 or (d == 1_000_000 and n > 50)):
                    continue
                with_flwr = not args.no_flwr and device == "cpu"
                if with_flwr and peak_gb(n, d, True) > args.max_gb:
                    with_flwr = False
                cap = args.max_gpu_gb if device == "cuda" else args.max_gb
                if peak_gb(n, d, False) > cap:
                    print(f"{device:>6} {n:>5} {d:>9.0e}  skipped (~{peak_gb(n, d, False):.1f} GB)")
                    continue
                print(fmt(bench_one(n, d, device, repeats, with_flwr, not args.no_f64)), flush=True)
                if device == "cuda":
                    torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
