"""Live view of a running federation, fed by the ledger files the ServerApp writes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pollen.deploy.launch import Proc
from pollen.errors import DeploymentError


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def _fmt(v: Any, spec: str = ".4f") -> str:
    return "—" if v is None else format(v, spec)


def rounds_table(rounds: list[dict[str, Any]], title: str | None = None) -> Table:
    acc = any(r.get("eval_accuracy") is not None for r in rounds)
    t = Table(title=title, title_justify="left")
    for col in ["round", "train_loss", "eval_loss"] + (["eval_acc"] if acc else []) + [
            "clients", "bytes_up", "bytes_down", "seconds"]:
        t.add_column(col, justify="right")
    for r in rounds:
        cells = [str(r["round"]), _fmt(r.get("train_loss")), _fmt(r.get("eval_loss"))]
        if acc:
            cells.append(_fmt(r.get("eval_accuracy"), ".3f"))
        cells += [str(r.get("clients", 0)), human_bytes(r.get("bytes_up", 0)),
                  human_bytes(r.get("bytes_down", 0)), f"{r.get('seconds', 0):.1f}"]
        t.add_row(*cells)
    return t


def _status(progress: dict[str, Any] | None, total: int, started: float) -> Text:
    elapsed = time.monotonic() - started
    if not progress:
        return Text(f"starting Flower … {elapsed:.0f}s", style="dim")
    rnd, phase = progress.get("round", 0), progress.get("phase", "?")
    done = max(0, rnd - (0 if phase in ("evaluate", "done") else 1))
    width = 24
    filled = int(width * done / max(total, 1))
    bar = "█" * filled + "░" * (width - filled)
    return Text(f"{bar} round {rnd}/{total} · {phase} · {elapsed:.0f}s", style="bold cyan")


def follow(out: Path, total_rounds: int, run: Proc, watch: list[Proc], console: Console,
           poll: float = 0.5) -> list[dict[str, Any]]:
    """Render progress until the submission ends; raise if the run failed."""
    started = time.monotonic()
    seen = 0

    def view() -> Group:
        m = _read(out / "metrics.json") or {}
        return Group(rounds_table(m.get("rounds", [])),
                     _status(_read(out / "progress.json"), total_rounds, started))

    def dead() -> Proc | None:
        return next((p for p in watch if not p.alive()), None)

    if console.is_terminal:
        with Live(view(), console=console, refresh_per_second=4, transient=True) as live:
            while run.alive() and dead() is None:
                live.update(view())
                time.sleep(poll)
    else:  # logs and CI: one line per finished round
        while run.alive() and dead() is None:
            rows = (_read(out / "metrics.json") or {}).get("rounds", [])
            for r in rows[seen:]:
                console.print(f"round {r['round']}/{total_rounds}: eval_loss={_fmt(r.get('eval_loss'))} "
                              f"train_loss={_fmt(r.get('train_loss'))} clients={r['clients']} "
                              f"up={human_bytes(r['bytes_up'])} down={human_bytes(r['bytes_down'])}")
            seen = len(rows)
            time.sleep(poll)
    progress = _read(out / "progress.json") or {}
    rows = (_read(out / "metrics.json") or {}).get("rounds", [])
    if progress.get("phase") != "done":
        crashed = dead()
        why = progress.get("error") or (f"{crashed.name} exited with code {crashed.popen.returncode}"
                                        if crashed else "the run ended before finishing")
        logs = "\n".join(f"--- {p.name} ({p.log}) ---\n{p.tail(15)}" for p in [run, *watch])
        raise DeploymentError(f"run failed: {why}\n{logs}")
    return rows


def summary(rounds: list[dict[str, Any]], out: Path, console: Console, wall: float) -> None:
    console.print(rounds_table(rounds, title="Pollen run summary"))
    if len(rounds) > 1:
        first, last = rounds[0], rounds[-1]
        up = sum(r["bytes_up"] for r in rounds)
        down = sum(r["bytes_down"] for r in rounds)
        line = f"eval_loss {_fmt(first.get('eval_loss'))} → {_fmt(last.get('eval_loss'))}"
        if last.get("eval_accuracy") is not None:
            line += f" · accuracy {first['eval_accuracy']:.3f} → {last['eval_accuracy']:.3f}"
        console.print(f"{line} · sent up {human_bytes(up)}, down {human_bytes(down)} · wall {wall:.0f}s")
    console.print(f"results in {out}: metrics.json, config.toml, adapter/, curves.png")
