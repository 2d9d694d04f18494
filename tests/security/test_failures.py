"""Honesty of failure (issue 10, items 6 and 7): every failure says what happened, in one line, with
a non-zero exit, and leaves files that tell the truth.

- paths typed on the command line are absolute before any other process sees them;
- an unwritable --out is refused up front; error text is printed as text, never as Rich markup;
- every round accounts for its clients (sampled/replied/errors/timed_out/dropped/aggregated), a
  round short of clients says so, and a round that aggregated nobody fails the run unless
  run.allow_empty_rounds is set;
- a crash (a full disk) leaves progress.json "failed" with the reason, never "train";
- resuming from a round-0 checkpoint lists round 0 once;
- `pollen simulate` listens on loopback only (Ray's GCS, raylet, workers; the SuperLink).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from rich.console import Console

from pollen import cli
from pollen.config import PollenConfig
from pollen.deploy.launch import RAY_LOOPBACK_ENV, flower_env
from pollen.protocol.delegating_grid import DelegatingGrid
from pollen.protocol.grid import InProcessGrid
from pollen.protocol.identity import IDENTITY_KEY, identity_record
from pollen.protocol.records import CONFIG_KEY, OUT_KEY, partition_of
from pollen.server import app as server_app
from pollen.server.ledger import Ledger, record_failure
from tests.e2e.tiny import tiny_config
from tests.strategies.helpers import TIMING

# ---- paths typed on the command line ----------------------------------------------------------


def test_relative_cli_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    (tmp_path / "run.toml").write_text('[run]\nrounds = 1\n')
    args = cli.build_parser().parse_args(["simulate", "--config", "run.toml", "--out", "runs/x",
                                          "--dataset", "data.jsonl"])
    cfg = cli.load_config(args)
    assert cfg.run.out == str(tmp_path / "runs" / "x")
    assert cfg.data.name == str(tmp_path / "data.jsonl")
    assert cfg.run.rounds == 1  # the relative --config was read
    # Registered names and hub ids are names, not paths.
    args = cli.build_parser().parse_args(["simulate", "--dataset", "hf:foo", "--model", "org/m"])
    cfg = cli.load_config(args)
    assert (cfg.data.name, cfg.model.name) == ("hf:foo", "org/m")
    assert cli.load_config(cli.build_parser().parse_args(["simulate"])).model.name == "smollm2-135m"
    # A local model directory becomes absolute; --certs and --node-key too.
    (tmp_path / "mymodel").mkdir()
    args = cli.build_parser().parse_args(["simulate", "--model", "mymodel"])
    assert cli.load_config(args).model.name == str(tmp_path / "mymodel")
    assert cli.absolute("certs") == str(tmp_path / "certs")
    assert cli.absolute(None) is None


def test_node_keys_are_registered_by_absolute_path(tmp_path, monkeypatch):
    """`flwr supernode register` runs in FLWR_HOME, so a relative key path named nothing there."""
    from pollen.deploy import node_auth
    from pollen.deploy.certs import generate_certs

    generate_certs(tmp_path / "certs", ["127.0.0.1"], 1)
    monkeypatch.chdir(tmp_path)
    seen: list[list[str]] = []

    def fake_flwr(args: list[str], flwr_home: Path, timeout: float) -> dict[str, Any]:
        seen.append(args)
        return {"success": True, "node-id": 7}

    monkeypatch.setattr(node_auth, "_flwr_json", fake_flwr)
    node_auth.register_nodes("127.0.0.1:1", [Path("certs/node-0.pub")], flwr_home=tmp_path / "h",
                             root_cert=None, insecure=True)
    key = seen[0][2]
    assert Path(key).is_absolute() and Path(key).is_file()


# ---- one escaped line, non-zero exit -----------------------------------------------------------


def _last_line(text: str) -> str:
    return [ln for ln in text.splitlines() if ln.strip()][-1]


def test_unwritable_out_is_one_line_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    t0 = time.monotonic()
    code = cli.main(["simulate", "--out", str(blocker / "run")])
    out = capsys.readouterr().out
    assert code != 0 and "Traceback" not in out
    assert _last_line(out).startswith("error: --out ") and "not writable" in out
    assert len([ln for ln in out.splitlines() if ln.strip()]) == 1
    assert time.monotonic() - t0 < 30  # refused before the model or data were loaded
    assert cli.main(["simulate", "--out", str(blocker)]) != 0
    assert "is not a directory" in capsys.readouterr().out
    assert cli.main(["simulate", "--out", " "]) != 0
    assert "run.out: must name a directory" in capsys.readouterr().out


def test_error_text_is_printed_as_text_not_markup(tmp_path, capsys):
    code = cli.main(["simulate", "--model", "[red]gpt", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code != 0 and "Traceback" not in out
    assert "unknown model '[red]gpt'" in _last_line(out)
    # "[/]" alone is a Rich markup error: printed as markup, the error itself would crash.
    code = cli.main(["simulate", "--model", "gpt[/]", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code != 0 and "Traceback" not in out and "model 'gpt[/]'" in _last_line(out)


@pytest.mark.parametrize("exc, code, fragment", [
    (OSError(errno.ENOSPC, "No space left on device", "/out/metrics.json"), 1,
     "/out/metrics.json: No space left on device"),
    (RuntimeError("boom [red]x[/]\nsecond line"), 1, "unexpected RuntimeError: boom [red]x[/]"),
])
def test_any_failure_ends_in_one_line(exc, code, fragment, monkeypatch, capsys):
    def boom(args: Any, console: Console) -> int:
        raise exc

    monkeypatch.setattr(cli, "cmd_simulate", boom)
    monkeypatch.delenv("POLLEN_DEBUG", raising=False)
    assert cli.main(["simulate"]) == code
    out = capsys.readouterr().out
    assert "Traceback" not in out and fragment in _last_line(out)


def test_multi_line_errors_end_with_their_first_line(capsys):
    from pollen.errors import DeploymentError

    console = Console(width=60)
    cli.fail(console, "run failed: [x] went wrong", details="--- log ---\n[/] raw log line")
    out = capsys.readouterr().out
    assert _last_line(out) == "error: run failed: [x] went wrong"
    assert "[/] raw log line" in out
    assert DeploymentError("m", details="d").details == "d"


# ---- per-round accounting and empty rounds ----------------------------------------------------


def _tiny_cfg(tmp_path: Path, **run: Any) -> PollenConfig:
    cfg = PollenConfig.load(tiny_config(tmp_path, rounds=1, clients=4))
    cfg.data.eval_size = 32
    for k, v in run.items():
        setattr(cfg.run, k, v)
    return cfg.validate()


def _echo(msg: Message, pid: int) -> RecordDict:
    """A client that sends the global adapter back unchanged (a valid reply, no training)."""
    return RecordDict({"arrays": msg.content["arrays"],
                       "metrics": MetricRecord({**TIMING, "num-examples": 10, "train_loss": 1.0, "seen": 10}),
                       IDENTITY_KEY: identity_record(pid)})


def _handler(kinds: dict[int, str]):
    def handle(msg: Message, context: Context) -> Message:
        pid, _ = partition_of(context)
        kind = kinds.get(pid, "ok")
        if kind == "error":
            raise RuntimeError("client crashed")
        content = _echo(msg, pid)
        if kind == "nan":
            arrays = msg.content["arrays"]
            content["arrays"] = ArrayRecord({k: Array(np.full(arrays[k].shape, np.nan, np.float32))
                                             for k in arrays})
        return Message(content=content, reply_to=msg)
    return handle


class SilentGrid(DelegatingGrid):
    """Replies from these partitions never arrive (as if the round timed out before them)."""

    def __init__(self, inner: Grid, silent: set[int]) -> None:
        super().__init__(inner)
        self.silent = silent

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        replies = self._inner.send_and_receive(messages, timeout=timeout)
        return [r for r in replies if r.metadata.src_node_id - 1 not in self.silent]


def _serve(cfg: PollenConfig, out: Path, grid: Grid) -> None:
    """The ServerApp's own entry point, as Flower calls it."""
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                  run_config={CONFIG_KEY: cfg.to_json(), OUT_KEY: str(out)})
    server_app.main(grid, ctx)


def test_every_round_accounts_for_its_clients(tmp_path, caplog):
    cfg = _tiny_cfg(tmp_path)
    out = tmp_path / "acct"
    grid = SilentGrid(InProcessGrid(4, _handler({0: "error", 2: "nan"})), silent={3})
    with caplog.at_level("WARNING", logger="pollen.server"):
        _serve(cfg, out, grid)
    rows = json.loads((out / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == [0, 1]
    assert {k: rows[0][k] for k in ("sampled", "aggregated")} == {"sampled": 0, "aggregated": 0}
    for r in rows[1:]:
        assert {k: r[k] for k in ("sampled", "replied", "errors", "timed_out", "dropped",
                                  "aggregated", "clients")} == {
            "sampled": 4, "replied": 2, "errors": 1, "timed_out": 1, "dropped": 1,
            "aggregated": 1, "clients": 1}
    warnings = [r.getMessage() for r in caplog.records if "aggregated 1 of 4" in r.getMessage()]
    assert warnings == [f"round {i} aggregated 1 of 4 sampled clients (2 replied, 1 errors, "
                        "1 timed out, 1 dropped)" for i in (1,)]
    assert json.loads((out / "progress.json").read_text())["phase"] == "done"


def test_a_round_that_aggregated_nobody_fails_the_run(tmp_path):
    cfg = _tiny_cfg(tmp_path)
    out = tmp_path / "empty"
    grid = InProcessGrid(4, _handler({0: "error", 1: "error", 2: "nan", 3: "error"}))
    with pytest.raises(Exception, match="round 1 aggregated 0 of 4 sampled clients"):
        _serve(cfg, out, grid)
    progress = json.loads((out / "progress.json").read_text())
    assert progress["phase"] == "failed"
    assert "aggregated 0 of 4" in progress["error"] and "run.allow_empty_rounds" in progress["error"]
    assert "\n" not in progress["error"]
    rows = json.loads((out / "metrics.json").read_text())["rounds"]
    assert rows[-1]["round"] == 1 and rows[-1]["aggregated"] == 0 and rows[-1]["errors"] == 3


def test_timeouts_name_the_round_timeout(tmp_path):
    cfg = _tiny_cfg(tmp_path)
    grid = SilentGrid(InProcessGrid(4, _handler({})), silent={0, 1, 2, 3})
    with pytest.raises(Exception, match="4 timed out.*raise run.round_timeout"):
        _serve(cfg, tmp_path / "slow", grid)


def test_allow_empty_rounds_lets_the_run_finish(tmp_path):
    cfg = _tiny_cfg(tmp_path, allow_empty_rounds=True)
    out = tmp_path / "tolerant"
    _serve(cfg, out, InProcessGrid(4, _handler({i: "error" for i in range(4)})))
    rows = json.loads((out / "metrics.json").read_text())["rounds"]
    assert [r["aggregated"] for r in rows] == [0, 0]
    assert json.loads((out / "progress.json").read_text())["phase"] == "done"


def test_allow_empty_rounds_is_a_typed_config_key():
    assert PollenConfig().run.allow_empty_rounds is False
    assert PollenConfig.load(None, {"run.allow_empty_rounds": "true"}).run.allow_empty_rounds is True
    with pytest.raises(Exception, match="run.allow_empty_rounds: expected bool"):
        PollenConfig.load(None, {"run.allow_empty_rounds": "sometimes"})


def test_progress_display_shows_accounting_and_warns():
    from pollen.deploy.progress import rounds_table

    rows = [{"round": 0, "eval_loss": 3.0, "clients": 0, "bytes_up": 0, "bytes_down": 0,
             "seconds": 1.0, "sampled": 0, "aggregated": 0},
            {"round": 1, "eval_loss": 2.0, "clients": 2, "bytes_up": 9, "bytes_down": 9,
             "seconds": 1.0, "sampled": 4, "replied": 3, "errors": 0, "timed_out": 1,
             "dropped": 1, "aggregated": 2}]
    console = Console(width=200, record=True)
    console.print(rounds_table(rows))
    text = console.export_text()
    assert "2/4" in text and "1 timeout, 1 dropped" in text


# ---- crashes leave progress.json "failed" -----------------------------------------------------


def test_a_crash_mid_run_leaves_progress_failed(tmp_path, monkeypatch):
    """A full disk while writing metrics.json: the run fails and progress.json says why."""
    import pollen.server.ledger as ledger_mod

    real = ledger_mod.atomic_write_json

    def full_disk(path: Any, obj: Any) -> None:
        if Path(path).name == "metrics.json" and obj["rounds"][-1]["round"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, obj)

    monkeypatch.setattr(ledger_mod, "atomic_write_json", full_disk)
    out = tmp_path / "crash"
    with pytest.raises(OSError):
        _serve(_tiny_cfg(tmp_path), out, InProcessGrid(4, _handler({})))
    progress = json.loads((out / "progress.json").read_text())
    assert progress["phase"] == "failed"
    assert progress["error"].startswith("OSError: [Errno 28] No space left on device")


def test_failure_is_recorded_even_when_no_new_file_fits(tmp_path, monkeypatch):
    led = Ledger(tmp_path, 3)
    led.phase(2, "train")
    import pollen.server.ledger as ledger_mod

    def no_space(*a: Any, **k: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ledger_mod, "atomic_write_json", no_space)
    assert record_failure(tmp_path, "OSError: [Errno 28] No space left on device\nmore") is True
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert (progress["round"], progress["total_rounds"], progress["phase"]) == (2, 3, "failed")
    assert progress["error"] == "OSError: [Errno 28] No space left on device more"


def test_failure_removes_a_stale_progress_it_cannot_rewrite(tmp_path, monkeypatch):
    Ledger(tmp_path, 3).phase(1, "train")
    import pollen.server.ledger as ledger_mod

    def no_space(*a: Any, **k: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ledger_mod, "atomic_write_json", no_space)
    monkeypatch.setattr(ledger_mod.os, "write", no_space)
    assert record_failure(tmp_path, "disk full") is False
    assert not (tmp_path / "progress.json").exists()  # never left saying "train"


def test_follow_records_a_failure_the_server_could_not(tmp_path):
    """A ServerApp killed outright says nothing; the CLI marks the run failed for it."""
    from pollen.deploy.launch import spawn
    from pollen.deploy.progress import follow
    from pollen.errors import DeploymentError

    Ledger(tmp_path, 3).phase(2, "train")
    script = "print('ERROR :     Exit Code: 700'); import sys; sys.exit(3)"
    run = spawn("flwr-run", [sys.executable, "-c", script], tmp_path / "logs" / "run.log",
                dict(os.environ))
    run.popen.wait(30)
    with pytest.raises(DeploymentError) as err:
        follow(tmp_path, 3, run, [], Console(file=open(os.devnull, "w")))  # noqa: SIM115
    run.stop()
    assert "exited with code 3, Flower exit code 700" in str(err.value)
    assert "\n" not in str(err.value) and "Exit Code: 700" in (err.value.details or "")
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["phase"] == "failed" and "exited with code 3" in progress["error"]


# ---- resume -----------------------------------------------------------------------------------


def test_resume_from_round_0_lists_round_0_once(tmp_path):
    from pollen.server.app import run_server as peft_run  # one round runner for every method
    from pollen.server.checkpoint import has_checkpoint

    cfg = _tiny_cfg(tmp_path)
    out = tmp_path / "resume"
    # Round 1 aggregates nobody: the run stops after the round-0 checkpoint was written.
    with pytest.raises(Exception, match="aggregated 0 of 4"):
        peft_run(InProcessGrid(4, _handler({i: "error" for i in range(4)})), cfg, out)
    assert has_checkpoint(out)
    assert json.loads((out / "checkpoint" / "state.json").read_text())["round"] == 0
    peft_run(InProcessGrid(4, _handler({})), cfg, out, resume=True)
    rows = json.loads((out / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[1]["aggregated"] == 4


# ---- item 6: nothing of `pollen simulate` listens beyond loopback -----------------------------


def test_flower_processes_get_a_loopback_only_ray(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    env = flower_env(tmp_path)
    assert all(env[k] == v for k, v in RAY_LOOPBACK_ENV.items())
    assert "RAY_ADDRESS" not in env  # never joins a cluster someone pointed the environment at


def _process_tree(root: int) -> dict[int, str]:
    seen: dict[int, str] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        try:
            seen[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
            for tid in os.listdir(f"/proc/{pid}/task"):
                todo += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return seen


def _listening_inodes() -> dict[str, tuple[str, int]]:
    """inode -> (address, port) of every listening TCP socket and bound UDP socket on the host."""
    out: dict[str, tuple[str, int]] = {}
    for fam, state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        try:
            lines = Path(f"/proc/net/{fam}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] != state:
                continue
            raw, port = f[1].split(":")
            b = bytes.fromhex(raw)
            if len(b) == 4:
                ip = str(ipaddress.IPv4Address(b[::-1]))
            else:
                ip = str(ipaddress.IPv6Address(b"".join(b[i:i + 4][::-1] for i in range(0, 16, 4))))
            out[f[9]] = (ip, int(port, 16))
    return out


def _sockets_of(pids: dict[int, str]) -> set[tuple[str, str, int]]:
    socks = _listening_inodes()
    found = set()
    for pid, name in pids.items():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in socks:
                found.add((name, *socks[link[8:-1]]))
    return found


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux /proc")
def test_simulate_listens_on_loopback_only(tmp_path):
    cfg = tiny_config(tmp_path, rounds=1, clients=2)
    log = open(tmp_path / "simulate.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "pollen.cli", "simulate", "--config", str(cfg)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    seen: set[tuple[str, str, int]] = set()
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= _sockets_of(_process_tree(proc.pid))
            time.sleep(0.5)
        assert proc.wait(timeout=60) == 0, (tmp_path / "simulate.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        log.close()
    names = {name for name, _, _ in seen}
    # We watched the real thing: Flower's SuperLink and Ray's GCS and raylet were all listening.
    assert {"gcs_server", "raylet"} <= names, seen
    assert any(n.startswith(("flower-superlin", "flwr")) for n in names), seen
    exposed = sorted(s for s in seen if not _is_loopback(s[1]))
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_eval_every_skips_central_evaluation_but_not_the_ledger(tmp_path):
    from pollen.server.runner import evaluates

    assert [r for r in range(6) if evaluates(r, 5, 2)] == [0, 2, 4, 5]
    assert [r for r in range(6) if evaluates(r, 5, 0)] == [5]
    cfg = _tiny_cfg(tmp_path, rounds=3, eval_every=2)
    out = tmp_path / "cadence"
    _serve(cfg, out, InProcessGrid(4, _handler({})))
    rows = json.loads((out / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert [r.get("eval_loss") is not None for r in rows] == [True, False, True, True]
    assert all(r["aggregated"] == 4 for r in rows[1:])  # every round still trained and was accounted
