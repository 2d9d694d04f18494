r"""Round time of a REAL deployment when every client sits behind its own slow link.

Runs `pollen certs`, `pollen server` (TLS + node authentication, listening on 0.0.0.0) and N
`pollen client` processes, each client in its own network namespace whose veth line is shaped by
tbf at `--rate` in both directions (see bench/slow_link_net.py). For every codec it runs the same
config twice: over the shaped lines, and over the same veths without a qdisc (the reference), so
the cost of the link is the difference. It prints markdown tables built from the server's
`metrics.json` (per-round `seconds`, `bytes_up`, `bytes_down`, `eval_loss`), the bytes that really
crossed the lines (veth counters: payload + TLS + HTTP + Flower's 3 s polls), and the tc counters
that show the shaper at work. A self-check first times a TCP transfer through link 0, shaped and not.

Needs root, `ip` and `tc` (iproute2); otherwise it exits with status 2 and says why. Namespaces,
veths and every process are removed on exit, Ctrl-C, SIGTERM or failure.

Default task (smollm2-135m + LoRA on chatterbot, 4 clients; `pollen server` defaults) — the
command for the figures in docs/benchmarks.md:

    sudo .venv/bin/python bench/slow_link.py --clients 4 --rounds 2 \
        --codecs none "topz:0.05 > kmeans:16 > zstd"

Tiny config (about 5 minutes for 4 runs; how this script was validated):

    sudo .venv/bin/python bench/slow_link.py --clients 2 --rounds 2 \
        --codecs none "topz:0.05 > kmeans:16 > zstd" --model minilm-l6 --dataset tweets \
        --set data.max_client_examples=64 --set data.eval_size=128 --set model.max_length=32 \
        --set train.local_steps=3

Options it does not know (--model, --dataset, --config, --set K=V, ...) go to `pollen server`.
On a slow machine add `--set run.round_timeout=1800`: a client that misses the round timeout
(600 s by default) is left out of that round, and the script warns about such rounds.
`s/round` is the mean of rounds 2..R (round 1 also waits for the clients to join and load the
model), or round 1 when R = 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slow_link_net import (  # noqa: I001  (after the path insert above)
    Link, SlowLinks, missing_tools, plan_links, probe, rate_bps)
from slow_link_procs import Procs

ROOT = Path(__file__).resolve().parents[1]
# `pollen server` flags this script sets itself; passing them through would be silently overridden.
OWN_SERVER_FLAGS = {"--codec", "--clients", "--rounds", "--out", "--host", "--port", "--certs",
                    "--insecure", "--no-node-auth", "--resume"}


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=4, help="pollen clients, one slow link each")
    p.add_argument("--rounds", type=int, default=2, help="federated rounds per run")
    p.add_argument("--codecs", nargs="+", default=["none"], help='codecs, e.g. none "topz:0.05 > zstd"')
    p.add_argument("--rate", default="1mbit", help="tbf rate of each link, both directions")
    p.add_argument("--no-reference", action="store_true", help="skip the unshaped reference runs")
    p.add_argument("--probe-bytes", type=int, default=250_000, help="self-check transfer size")
    p.add_argument("--prefix", default="10.77", help="first two octets of the link subnets")
    p.add_argument("--port", type=int, default=9192, help="server port")
    p.add_argument("--timeout", type=float, default=7200.0, help="seconds allowed per run")
    p.add_argument("--out", default="runs/slow-link", help="logs, run outputs and results.json")
    args, extra = p.parse_known_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    try:
        rate_bps(args.rate)
        plan_links(args.clients, args.prefix)
    except ValueError as e:
        p.error(str(e))
    if extra and not extra[0].startswith("-"):
        p.error(f"unexpected argument {extra[0]!r} (server options start with --)")
    if clash := sorted({a.split("=")[0] for a in extra} & OWN_SERVER_FLAGS):
        p.error(f"{', '.join(clash)}: set by this script (use --codecs, --clients, --rounds, "
                "--port, --out)")
    return args, extra


def server_argv(args: argparse.Namespace, codec: str, certs: Path, out: Path,
                extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "pollen.cli", "server", "--certs", str(certs), "--host", "0.0.0.0",
            "--port", str(args.port), "--out", str(out), "--clients", str(args.clients),
            "--rounds", str(args.rounds), "--codec", codec, *extra]


def client_argv(link: Link, port: int, certs: Path, n: int) -> list[str]:
    return ["ip", "netns", "exec", link.netns, sys.executable, "-m", "pollen.cli", "client",
            "--server", f"{link.host_ip}:{port}", "--certs", str(certs), "--partition-id",
            str(link.index), "--num-partitions", str(n), "--max-wait", "15"]


def steady_seconds(rounds: list[dict[str, Any]]) -> float | None:
    """Mean seconds of rounds 2..R (round 1 includes the clients joining), round 1 alone if R = 1."""
    trained = [r["seconds"] for r in rounds if r.get("round", 0) >= 1]
    steady = trained[1:] or trained
    return sum(steady) / len(steady) if steady else None


def markdown(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def secs(v: float | None) -> str | None:
    """Seconds to one decimal (the tables' floats otherwise print as losses, four decimals)."""
    return None if v is None else f"{v:.1f}"


def per_round_mean(rounds: list[dict[str, Any]], key: str) -> int:
    vals = [r[key] for r in rounds if r.get("round", 0) >= 1]
    return round(sum(vals) / len(vals)) if vals else 0


def _final_loss(run: dict[str, Any] | None) -> float | None:
    return run["rounds"][-1].get("eval_loss") if run else None


def summary_table(results: list[dict[str, Any]], rate: str) -> str:
    """One row per codec: the shaped and the reference run side by side; wire = shaped run total."""
    rows = []
    for codec in dict.fromkeys(r["codec"] for r in results):
        by = {r["link"]: r for r in results if r["codec"] == codec}
        slow, ref = by.get(rate), by.get("unshaped")
        base = slow or ref
        s_slow = steady_seconds(slow["rounds"]) if slow else None
        s_ref = steady_seconds(ref["rounds"]) if ref else None
        cost = s_slow - s_ref if s_slow is not None and s_ref is not None else None
        rows.append([f"`{codec}`", secs(s_slow), secs(s_ref), secs(cost),
                     per_round_mean(base["rounds"], "bytes_up"),
                     per_round_mean(base["rounds"], "bytes_down"),
                     slow["wire_up"] if slow else None, slow["wire_down"] if slow else None,
                     _final_loss(slow), _final_loss(ref)])
    return markdown(["codec", f"s/round {rate}", "s/round unshaped", "link cost s",
                     "bytes_up/round", "bytes_down/round", "wire up (run)", "wire down (run)",
                     f"eval_loss {rate}", "eval_loss unshaped"], rows)


def rounds_table(results: list[dict[str, Any]]) -> str:
    rows = [[f"`{r['codec']}`", r["link"], row["round"], secs(row["seconds"]), row["clients"],
             row["bytes_up"], row["bytes_down"], row.get("eval_loss")]
            for r in results for row in r["rounds"]]
    return markdown(["codec", "link", "round", "seconds", "clients", "bytes_up", "bytes_down",
                     "eval_loss"], rows)


def tail(path: Path, n: int = 2500) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def run_once(args: argparse.Namespace, extra: list[str], net: SlowLinks, procs: Procs, certs: Path,
             codec: str, shaped: bool, out: Path, env: dict[str, str]) -> dict[str, Any]:
    """One federated run over the links, shaped or not; its metrics and what crossed the wire."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    net.shape(shaped)
    up0, down0 = net.wire_bytes()
    t0 = time.monotonic()
    server = procs.start(server_argv(args, codec, certs, out / "run", extra), out / "server.log",
                         env, ROOT)
    clients = [procs.start(client_argv(ln, args.port, certs, args.clients),
                           out / f"client-{ln.index}.log", env, ROOT) for ln in net.links]
    code = procs.wait(server, args.timeout)
    for c in clients:  # they leave by themselves once the server is gone for --max-wait
        procs.wait(c, 60)
    procs.stop_all()
    if code != 0:
        raise RuntimeError(f"server {'timed out' if code is None else f'exited with {code}'} "
                           f"(codec {codec!r}, {'shaped' if shaped else 'unshaped'}); "
                           f"logs in {out}\n{tail(out / 'server.log')}")
    up1, down1 = net.wire_bytes()
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    return {"codec": codec, "link": args.rate if shaped else "unshaped", "rounds": metrics["rounds"],
            "wire_up": up1 - up0, "wire_down": down1 - down0, "wall_s": time.monotonic() - t0,
            "tc": net.tc_stats() if shaped else None}


def self_check(net: SlowLinks, nbytes: int, rate: str) -> list[str]:
    """Time a transfer each way through link 0, shaped and unshaped: the shaper must bite."""
    expect = nbytes * 8 / rate_bps(rate)
    lines = []
    for shaped in (True, False):
        net.shape(shaped)
        for d in ("up", "down"):
            s = probe(net.links[0], nbytes, d)
            lines.append(f"self-check {'shaped  ' if shaped else 'unshaped'} {d:>4}: {nbytes:,} B in "
                         f"{s:.2f} s = {nbytes * 8 / s / 1e6:.2f} Mbit/s"
                         + (f" (tbf {rate}: ≥ {expect:.2f} s expected)" if shaped else ""))
            if shaped and s < 0.8 * expect:
                raise RuntimeError(f"link 0 moved {nbytes} B {d} in {s:.2f} s, faster than {rate}: "
                                   "the shaper does not apply")
    return lines


def run_labelled(args: argparse.Namespace, extra: list[str], net: SlowLinks, procs: Procs,
                 certs: Path, i: int, codec: str, shaped: bool, out: Path,
                 env: dict[str, str]) -> dict[str, Any]:
    tag = f"{i}-{'slow' if shaped else 'ref'}"
    print(f"run {tag}: codec {codec!r}, {'tbf ' + args.rate if shaped else 'unshaped'} links, "
          f"{args.clients} clients, {args.rounds} rounds …", flush=True)
    res = run_once(args, extra, net, procs, certs, codec, shaped, out / tag, env)
    s = steady_seconds(res["rounds"])
    print(f"  done in {res['wall_s']:.0f} s; {s:.1f} s/round" if s is not None else "  done", flush=True)
    return res


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    if os.geteuid() != 0:
        print("error: bench/slow_link.py needs root (network namespaces, veths, tc); run it with sudo",
              file=sys.stderr)
        return 2
    if missing := missing_tools():
        print(f"error: {', '.join(missing)} not found; install iproute2", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # even if started with SIGINT ignored
        signal.signal(sig, _interrupt)
    links = plan_links(args.clients, args.prefix)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                      os.environ.get("PYTHONPATH")]))}
    certs = out / "certs"
    subprocess.run([sys.executable, "-m", "pollen.cli", "certs", "--out", str(certs), "--overwrite",
                    "--hosts", ",".join(ln.host_ip for ln in links), "--nodes", str(args.clients)],
                   check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    procs = Procs()
    results: list[dict[str, Any]] = []
    try:
        with SlowLinks(links, args.rate) as net:
            try:
                for line in self_check(net, args.probe_bytes, args.rate):
                    print(line, flush=True)
                for i, codec in enumerate(args.codecs):
                    for shaped in ((True,) if args.no_reference else (False, True)):
                        res = run_labelled(args, extra, net, procs, certs, i, codec, shaped, out, env)
                        results.append(res)
                        (out / "results.json").write_text(json.dumps(results, indent=1))
            finally:
                procs.stop_all()  # before the namespaces go, so the clients can stop politely
    except KeyboardInterrupt:
        print("interrupted: processes stopped and links removed", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"\n## {args.clients} clients, {args.rounds} rounds, links {args.rate} vs unshaped\n")
    print(summary_table(results, args.rate))
    print("\n" + rounds_table(results))
    for r in results:
        for ln_i, st in enumerate(r["tc"] or []):
            print(f"tc `{r['codec']}` link {ln_i}: down {st['down']['bytes']:,} B "
                  f"(overlimits {st['down']['overlimits']}, dropped {st['down']['dropped']}), "
                  f"up {st['up']['bytes']:,} B (overlimits {st['up']['overlimits']}, "
                  f"dropped {st['up']['dropped']})")
    for r in results:
        short = [row["round"] for row in r["rounds"] if row["round"] >= 1
                 and row["clients"] < args.clients]
        if short:
            print(f"warning: `{r['codec']}` {r['link']}: rounds {short} aggregated fewer than "
                  f"{args.clients} clients (round timeout?); their times are not comparable")
    print(f"\nresults: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
