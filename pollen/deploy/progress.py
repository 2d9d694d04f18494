"""Live view of a running federation, fed by the ledger files the ServerApp writes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pollen.deploy.launch import Proc
from pollen.errors import DeploymentError
from pollen.server.ledger import human_bytes as ledger_bytes
from pollen.server.ledger import one_line, record_failure, shortfall


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def human_bytes(n: float) -> str:
    return ledger_bytes(n, digits=2)


def _fmt(v: Any, spec: str = ".4f") -> str:
    return "—" if v is None else format(v, spec)


def clients_cell(r: dict[str, Any]) -> str:
    """Aggregated of sampled ("3/4"); rows from before the accounting show the count alone."""
    aggregated = r.get("aggregated", r.get("clients", 0))
    return f"{aggregated}/{r['sampled']}" if r.get("sampled") else str(aggregated)


def lost_cell(r: dict[str, Any]) -> str:
    """Where the sampled clients that were not aggregated went."""
    parts = [f"{r[k]} {label}" for k, label in (("errors", "err"), ("timed_out", "timeout"),
                                                 ("dropped", "dropped")) if r.get(k)]
    return ", ".join(parts) or "—"


def rounds_table(rounds: list[dict[str, Any]], title: str | None = None) -> Table:
    acc = any(r.get("eval_accuracy") is not None for r in rounds)
    lost = any(shortfall(r) is not None for r in rounds)
    t = Table(title=title, title_justify="left")
    for col in ["round", "train_loss", "eval_loss"] + (["eval_acc"] if acc else []) + [
            "clients"] + (["lost"] if lost else []) + ["bytes_up", "bytes_down", "seconds"]:
        t.add_column(col, justify="right")
    for r in rounds:
        cells = [str(r["round"]), _fmt(r.get("train_loss")), _fmt(r.get("eval_loss"))]
        if acc:
            cells.append(_fmt(r.get("eval_accuracy"), ".3f"))
        cells.append(clients_cell(r))
        if lost:
            cells.append(lost_cell(r))
        cells += [human_bytes(r.get("bytes_up", 0)), human_bytes(r.get("bytes_down", 0)),
                  f"{r.get('seconds', 0):.1f}"]
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
    line = f"{bar} round {rnd}/{total} · {phase}{clients_progress(progress)} · {elapsed:.0f}s"
    return Text(line, style="bold cyan")


def clients_progress(progress: dict[str, Any], now: float | None = None) -> str:
    """' · 3/4 clients done · 1 failed · 9:32 left' for the exchange in flight, else ''."""
    c = progress.get("clients")
    if not isinstance(c, dict) or not c.get("sent"):
        return ""
    out = f" · {c.get('done', 0)}/{c['sent']} clients done"
    if c.get("failed"):
        out += f" · {c['failed']} failed"
    deadline = c.get("deadline")
    if isinstance(deadline, (int, float)) and c.get("done", 0) + c.get("failed", 0) < c["sent"]:
        left = max(0, int(deadline - (time.time() if now is None else now)))
        out += f" · {left // 60}:{left % 60:02d} to round timeout"
    return out


def _ended_early(run: Proc) -> str:
    """Why a run ended without a word from the ServerApp: Flower's own exit code, if it printed one."""
    from pollen.deploy.commands import flower_exit_code

    code = flower_exit_code(run.tail(400))
    flower = f", Flower exit code {code}" if code is not None else ""
    return (f"the run ended before finishing (flwr run exited with code {run.popen.returncode}"
            f"{flower}; see {run.log})")


def follow(out: Path, total_rounds: int, run: Proc, watch: list[Proc], console: Console,
           poll: float = 0.5) -> list[dict[str, Any]]:
    """Render progress until the submission ends; raise if the run failed.

    A round that aggregated fewer clients than it sampled gets a one-line warning. A failed run
    leaves progress.json in phase "failed" with its reason, whoever failed (the ServerApp records
    its own failures; a process that died without a word is recorded here).
    """
    started = time.monotonic()
    seen = 0

    def rows_now() -> list[dict[str, Any]]:
        return (_read(out / "metrics.json") or {}).get("rounds", [])

    def view() -> Group:
        return Group(rounds_table(rows_now()),
                     _status(_read(out / "progress.json"), total_rounds, started))

    def dead() -> Proc | None:
        return next((p for p in watch if not p.alive()), None)

    def report(rows: list[dict[str, Any]], printer: Console, lines: bool) -> int:
        for r in rows[seen:]:
            if lines:  # logs and CI: one line per finished round
                printer.print(f"round {r['round']}/{total_rounds}: eval_loss={_fmt(r.get('eval_loss'))} "
                              f"train_loss={_fmt(r.get('train_loss'))} clients={clients_cell(r)} "
                              f"up={human_bytes(r['bytes_up'])} down={human_bytes(r['bytes_down'])}",
                              markup=False, highlight=False)
            lost = shortfall(r)
            if lost is not None:
                printer.print(f"[yellow]warning:[/] {escape(lost)}", highlight=False)
        return len(rows)

    if console.is_terminal:
        with Live(view(), console=console, refresh_per_second=4, transient=True) as live:
            while run.alive() and dead() is None:
                live.update(view())
                seen = report(rows_now(), live.console, lines=False)
                time.sleep(poll)
    else:
        while run.alive() and dead() is None:
            seen = report(rows_now(), console, lines=True)
            time.sleep(poll)
    progress = _read(out / "progress.json") or {}
    rows = rows_now()
    report(rows, console, lines=not console.is_terminal)
    if progress.get("phase") != "done":
        crashed = dead()
        why = one_line(progress.get("error") or (
            f"{crashed.name} exited with code {crashed.popen.returncode}" if crashed
            else _ended_early(run)))
        if progress.get("phase") != "failed":
            record_failure(out, why)
        logs = "\n".join(f"--- {p.name} ({p.log}) ---\n{p.tail(15)}" for p in [run, *watch])
        raise DeploymentError(f"run failed: {why}", details=logs)
    return rows


def summary(rounds: list[dict[str, Any]], out: Path, console: Console, wall: float, *,
            timing: str | None = None) -> None:
    console.print(rounds_table(rounds, title="Pollen run summary"))
    if len(rounds) > 1:
        first, last = rounds[0], rounds[-1]
        up = sum(r["bytes_up"] for r in rounds)
        down = sum(r["bytes_down"] for r in rounds)
        line = f"eval_loss {_fmt(first.get('eval_loss'))} → {_fmt(last.get('eval_loss'))}"
        if last.get("eval_accuracy") is not None:
            line += f" · accuracy {first['eval_accuracy']:.3f} → {last['eval_accuracy']:.3f}"
        console.print(f"{line} · sent up {human_bytes(up)}, down {human_bytes(down)} · wall {wall:.0f}s")
    if timing:
        console.print(timing, style="dim", markup=False, highlight=False)
    console.print(f"results in {out}: metrics.json, timing.json, config.toml, adapter/, curves.png, "
                  "tensorboard/")
