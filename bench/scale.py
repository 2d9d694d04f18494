"""Scale of a simulation, side by side in one run: memory and round time versus concurrent clients,
where a default run's wall time goes, and Flag's aggregation cost versus FedAvg's as clients grow.

Sections (each can be run alone):
- memory   `pollen simulate` with N clients that all train at once (N concurrent actors,
           simulation.client_cpus = cores / N), 1 round; the whole process tree's proportional set
           size (PSS, from /proc/PID/smaps_rollup, sampled every 0.25 s; shared pages are split
           between the processes that map them, so the sum is the tree's real footprint) at its
           peak, the same for the client actors alone (`ray::ClientAppActor`), what each
           additional client adds, as a share of the base model's weights, and the round's time.
- ratio    the default task (`pollen simulate`, nothing changed), its OUT/timing.json: wall time
           over the clients' summed training time, and the breakdown (pollen/deploy/timing.py).
- round    one round of the default task with many clients (`--many 100`, all sampled, iid split,
           `--many-steps` local steps): every client aggregated?, round time, tree PSS peak, timing.
- step     one client's local training steps on the default model and data, in this process: the
           model's own loss (`model(**batch).loss`, logits for every position) against
           `pollen.models.train.lm_loss` (the vocabulary projection on response tokens only), run
           alternately; time per step and the peak of resident memory above the loaded model
           (VmHWM, reset through /proc/self/clear_refs before each run).
- flag     bench/aggregation_cost.py's Flag vs FedAvg (torch `w @ U`) and vs Flower's
           `aggregate_arrayrecords` at n clients × d parameters, one thread, CPU time.

Usage:
  python bench/scale.py                          # all three sections (~30 min on 2 cores)
  python bench/scale.py --sections memory --concurrent 1,2,4,8 --local-steps 2
  python bench/scale.py --sections ratio [-- extra pollen simulate args]
  python bench/scale.py --sections round --many 100 --many-steps 1
  python bench/scale.py --sections step --steps 6 --threads 1
  python bench/scale.py --sections flag --clients 10,20,50,100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MB = 1 << 20


def _pss(pid: int) -> int:
    """Proportional set size of one process in bytes (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class TreeSampler(threading.Thread):
    """Peak PSS of a process and all its descendants (Pollen's guard keeps them reachable)."""

    def __init__(self, root: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.peak_tree = self.peak_actors = self.peak_actor_count = 0
        self._halt = threading.Event()

    def run(self) -> None:
        from pollen.deploy.reaper import descendants

        while not self._halt.is_set():
            pids = [self.root, *descendants(self.root)]
            sizes = {pid: _pss(pid) for pid in pids}
            actors = [p for p in pids if "ClientAppActor" in _cmdline(p)]
            self.peak_tree = max(self.peak_tree, sum(sizes.values()))
            self.peak_actors = max(self.peak_actors, sum(sizes[p] for p in actors))
            self.peak_actor_count = max(self.peak_actor_count, len(actors))
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def simulate(args: list[str], out: Path, *, sample: bool) -> tuple[float, TreeSampler | None, str]:
    """Run `pollen simulate ARGS --out OUT`; returns (wall seconds, sampler, output tail)."""
    cmd = [sys.executable, "-m", "pollen.cli", "simulate", *args, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    sampler = TreeSampler(proc.pid) if sample else None
    if sampler is not None:
        sampler.start()
    output, _ = proc.communicate()
    wall = time.monotonic() - t0
    if sampler is not None:
        sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"pollen simulate {' '.join(args)} failed ({proc.returncode}):\n{output[-3000:]}")
    return wall, sampler, output[-2000:]


def _rows(out: Path) -> list[dict[str, Any]]:
    return json.loads((out / "metrics.json").read_text())["rounds"]


def memory_section(concurrent: list[int], local_steps: int, extra: list[str]) -> list[dict[str, Any]]:
    from pollen.config import PollenConfig
    from pollen.deploy.simulate import machine, model_bytes

    cores, _ = machine()
    base = model_bytes(PollenConfig())
    rows: list[dict[str, Any]] = []
    for n in concurrent:
        with tempfile.TemporaryDirectory(prefix=f"scale-mem{n}-") as tmp:
            out = Path(tmp) / "out"
            wall, s, _ = simulate(["--clients", str(n), "--rounds", "1", "--local-steps", str(local_steps),
                                   "--set", f"simulation.client_cpus={cores / n:g}",
                                   "--set", "run.eval_every=0", *extra], out, sample=True)
            assert s is not None
            r1 = _rows(out)[1]
            rows.append({"clients": n, "actors": s.peak_actor_count, "tree_mb": s.peak_tree / MB,
                         "actors_mb": s.peak_actors / MB, "round_s": r1["seconds"],
                         "train_s": r1.get("train_s"), "wall_s": wall})
    one = rows[0]
    print(f"\n## memory vs concurrent clients (1 round, {local_steps} local steps, base model "
          f"{base / MB:.0f} MB)\n")
    print("| concurrent clients | actors | tree PSS peak MB | actors' PSS MB | + per extra client MB "
          "| % of base model | round s | Σ client train s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["clients"] > one["clients"]:
            extra_mb = (r["tree_mb"] - one["tree_mb"]) / (r["clients"] - one["clients"])
            added = f"{extra_mb:.0f} | {100 * extra_mb * MB / base:.0f} %"
        else:
            added = "— | —"
        print(f"| {r['clients']} | {r['actors']} | {r['tree_mb']:.0f} | {r['actors_mb']:.0f} | "
              f"{added} | {r['round_s']:.1f} | {r['train_s']:.1f} |")
    return rows


def ratio_section(extra: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="scale-ratio-") as tmp:
        out = Path(tmp) / "out"
        simulate(extra, out, sample=False)
        timing = json.loads((out / "timing.json").read_text())
        rows = _rows(out)
    print(f"\n## wall time / client training, `pollen simulate {' '.join(extra)}`\n")
    print("| wall s | Σ client train s | wall / train | preflight | start-up | server load | "
          "Σ client loads | evaluation | aggregation | rounds (client work) | finish |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    t = timing
    print(f"| {t['wall']:.0f} | {t['train_sum']:.0f} | **{t['wall_per_train']:.2f}** | {t['preflight']:.0f} | "
          f"{t['startup']:.0f} | {t['server_load']:.0f} | {t['load_sum']:.0f} | {t['evaluation']:.0f} | "
          f"{t['aggregation']:.1f} | {t['rounds']:.0f} | {t['finish']:.0f} |")
    print("\nper round: " + "; ".join(
        f"r{r['round']} {r['seconds']:.0f} s (train Σ {r.get('train_s', 0):.0f}, eval {r.get('eval_s', 0):.0f}, "
        f"eval_loss {r.get('eval_loss') or float('nan'):.4f})"
        for r in rows))
    return timing


def round_section(clients: int, steps: int, extra: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix=f"scale-round{clients}-") as tmp:
        out = Path(tmp) / "out"
        wall, s, _ = simulate(["--clients", str(clients), "--partition", "iid", "--rounds", "1",
                               "--local-steps", str(steps), *extra], out, sample=True)
        assert s is not None
        r1 = _rows(out)[1]
        t = json.loads((out / "timing.json").read_text())
    print(f"\n## one round, {clients} clients (all sampled, iid, {steps} local step(s))\n")
    print("| sampled | aggregated | timed out | round s | Σ client train s | wall s | wall / train "
          "| tree PSS peak MB | actors |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {r1['sampled']} | {r1['aggregated']} | {r1['timed_out']} | {r1['seconds']:.0f} | "
          f"{r1['train_s']:.0f} | {wall:.0f} | {t['wall_per_train']:.2f} | {s.peak_tree / MB:.0f} | "
          f"{s.peak_actor_count} |")


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def step_section(steps: int, threads: int, repeats: int) -> None:
    import torch

    from pollen.config import PollenConfig
    from pollen.data.tokenize import batches
    from pollen.models.train import enable_gradient_checkpointing, lm_loss
    from pollen.registry import trim_heap
    from pollen.strategies.fedpeft.runtime import client_data, runtime

    torch.set_num_threads(threads)
    cfg = PollenConfig()
    rt = runtime(cfg)
    data = client_data(cfg, 0, cfg.federation.clients)
    params = [p for p in rt.model.parameters() if p.requires_grad]
    base = rt.model.get_base_model()

    def run(own: bool, checkpointing: bool) -> tuple[float, float, float]:
        stream = list(batches(data, cfg.train.batch_size, rt.pad_id, steps=steps, seed=0))
        if checkpointing:
            enable_gradient_checkpointing(rt.model)
        else:
            base.gradient_checkpointing_disable()
        rt.model.train()
        trim_heap()  # the previous run's freed activations must not hide this run's
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _rss_kb("VmRSS")
        t0 = time.perf_counter()
        total = 0.0
        for batch in stream:
            loss = rt.model(**batch).loss if own else lm_loss(rt.model, batch)[0]
            grads = torch.autograd.grad(loss, params)
            total += float(loss.detach())
            del grads, loss
        seconds = (time.perf_counter() - t0) / len(stream)
        rt.model.eval()
        return seconds, (_rss_kb("VmHWM") - before) / 1024, total / len(stream)

    variants = {"model's own loss (`model(**batch).loss`)": (True, False),
                "response tokens only (`lm_loss`)": (False, False),
                "`lm_loss` + `train.gradient_checkpointing`": (False, True)}
    run(False, False)  # warm-up
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, (own, ckpt) in variants.items():
            results[name].append(run(own, ckpt))
    print(f"\n## one client's training step, default task (batch {cfg.train.batch_size} × ≤ "
          f"{cfg.model.max_length} tokens, {threads} thread(s), best of {repeats} × {steps} steps)\n")
    print("| loss | s / step | peak RSS above the trimmed heap, MB | mean loss |")
    print("|---|---:|---:|---:|")
    for name, rs in results.items():
        print(f"| {name} | {min(r[0] for r in rs):.3f} | {max(r[1] for r in rs):.0f} | "
              f"{rs[0][2]:.6f} |")


def flag_section(clients: list[int], size: float, repeats: int) -> None:
    """In a child process, so that numpy's and torch's BLAS run one thread whatever ran before."""
    print(f"\n## Flag vs FedAvg, d = {size:.0e}, 1 thread, CPU time, best of {repeats}\n", flush=True)
    one = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env = {**os.environ, **one, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run([sys.executable, str(ROOT / "bench" / "aggregation_cost.py"),
                    "--clients", ",".join(map(str, clients)), "--sizes", f"{size:g}", "--device", "cpu",
                    "--threads", "1", "--clock", "cpu", "--repeats", str(repeats), "--no-f64"],
                   check=True, env=env)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="memory,ratio,round,step,flag")
    ap.add_argument("--concurrent", default="1,2,4,8")
    ap.add_argument("--local-steps", type=int, default=2)
    ap.add_argument("--clients", default="10,20,50,100", help="flag section: client counts")
    ap.add_argument("--size", type=float, default=1e6, help="flag section: parameters per update")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="step section: training steps per run")
    ap.add_argument("--many", type=int, default=100, help="round section: clients")
    ap.add_argument("--many-steps", type=int, default=1, help="round section: local steps")
    ap.add_argument("--threads", type=int, default=1, help="step section: torch threads")
    ap.add_argument("extra", nargs="*", help="after --: more `pollen simulate` arguments")
    a = ap.parse_args(argv)
    sections = {s.strip() for s in a.sections.split(",") if s.strip()}
    known = ("memory", "ratio", "round", "step", "flag")
    unknown = sections - set(known)
    if unknown:
        ap.error(f"unknown section(s) {', '.join(sorted(unknown))}; sections are {', '.join(known)}")
    if "memory" in sections:
        memory_section([int(x) for x in a.concurrent.split(",")], a.local_steps, a.extra)
    if "ratio" in sections:
        ratio_section(a.extra)
    if "round" in sections:
        round_section(a.many, a.many_steps, a.extra)
    if "step" in sections:
        step_section(a.steps, a.threads, a.repeats)
    if "flag" in sections:
        flag_section([int(x) for x in a.clients.split(",")], a.size, a.repeats)


if __name__ == "__main__":
    main()
