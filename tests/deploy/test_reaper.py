"""`pollen.deploy.reaper`: nothing a spawned command starts outlives Pollen, even a detached grandchild and
even after a `kill -9` of Pollen; exit codes pass through unchanged. Real processes, no Flower."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pollen.deploy import reaper
from pollen.deploy.launch import spawn

ROOT = Path(__file__).resolve().parents[2]
needs_guard = pytest.mark.skipif(not reaper.available(), reason="the guard needs Linux prctl")

# A grandchild that leaves its parent's session and is orphaned at once: invisible to killpg and
# to PR_SET_PDEATHSIG, the way Ray's daemons and Flower's app processes are.
_DETACH = ("import os, sys, time\n"
           "os.setsid()\n"
           "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\n"
           "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
           "time.sleep(300)\n")


def _detached(pidfile: Path) -> str:
    """Shell code starting the detached grandchild (orphaned: its subshell exits at once)."""
    return f"({sys.executable} -c \"$DETACH\" {pidfile} &)"


def _env() -> dict[str, str]:
    return {**os.environ, "DETACH": _DETACH, "PYTHONPATH": str(ROOT)}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_pid(path: Path, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} was never written"
        time.sleep(0.02)
    return int(path.read_text())


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _cleanup(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@needs_guard
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_death_of_pollen_takes_every_descendant_down(tmp_path: Path, how: signal.Signals) -> None:
    gc = tmp_path / "gc.pid"
    launcher_code = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from pollen.deploy.launch import spawn
        p = spawn("t", ["sh", "-c", {_detached(gc) + "; exec sleep 300"!r}],
                  Path({str(tmp_path / "t.log")!r}), dict(os.environ))
        print(p.popen.pid, flush=True)
        time.sleep(300)
    """)
    launcher = subprocess.Popen([sys.executable, "-c", launcher_code], env=_env(),
                                stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert launcher.stdout is not None
        guard = int(launcher.stdout.readline())
        grandchild = _wait_pid(gc)
        below = reaper.descendants(guard)
        assert grandchild in below and "sleep" in below.values()  # orphaned to the guard
        pids = [guard, *below]
        launcher.send_signal(how)
        launcher.wait(5)
        assert _wait_gone(pids, timeout=5.0) == []
        log = (tmp_path / "t.log").read_text()
        assert f"Pollen (pid {launcher.pid}) is gone" in log
    finally:
        launcher.kill()
        launcher.wait()
        _cleanup(pids)


@needs_guard
def test_normal_exit_keeps_the_exit_code_and_leaves_nothing(tmp_path: Path) -> None:
    gc = tmp_path / "gc.pid"
    script = f"{_detached(gc)}; while [ ! -s {gc} ]; do sleep 0.02; done; echo from-the-child; exit 3"
    proc = spawn("t", ["sh", "-c", script], tmp_path / "t.log", _env())
    grandchild = None
    try:
        assert proc.popen.wait(10) == 3
        grandchild = _wait_pid(gc)
        assert not _alive(grandchild)  # the guard exits only once everything below it is gone
        assert proc.stop() == 3
        log = (tmp_path / "t.log").read_text()
        assert "from-the-child" in log and "stopping 1 leftover process(es)" in log
    finally:
        proc.stop()
        _cleanup([grandchild] if grandchild else [])


@needs_guard
def test_stop_escalates_when_the_tree_ignores_sigterm(tmp_path: Path) -> None:
    gc = tmp_path / "gc.pid"
    # An ignored SIGTERM is inherited across fork and exec: the whole tree ignores it.
    proc = spawn("t", ["sh", "-c", f"trap '' TERM; {_detached(gc)}; while :; do sleep 0.1; done"],
                 tmp_path / "t.log", _env())
    grandchild = _wait_pid(gc)
    try:
        t0 = time.monotonic()
        assert proc.stop(grace=0.5) == -signal.SIGKILL  # the child's own fate, passed through
        assert time.monotonic() - t0 < 3.0
        assert _wait_gone([grandchild], timeout=1.0) == []
    finally:
        proc.stop()
        _cleanup([grandchild])


@needs_guard
def test_death_by_signal_is_reported_as_such(tmp_path: Path) -> None:
    proc = spawn("t", ["sh", "-c", "kill -USR1 $$"], tmp_path / "t.log", _env())
    assert proc.popen.wait(10) == -signal.SIGUSR1
    assert proc.stop() == -signal.SIGUSR1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_without_prctl_the_command_runs_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reaper, "_prctl", lambda: None)
    argv = ["sh", "-c", "sleep 300 & exec sleep 300"]
    assert reaper.guarded(argv) == argv
    proc = spawn("t", argv, tmp_path / "t.log", _env())
    time.sleep(0.2)
    kids = [proc.popen.pid, *_children_in_group(proc.popen.pid)]
    assert proc.stop(grace=2) == -signal.SIGTERM
    assert _wait_gone(kids, timeout=2.0) == []  # the process group is killed


def _children_in_group(pgid: int) -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and _pgid(int(e)) == pgid]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def test_a_missing_command_fails_in_pollen(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-flower-binary"):
        spawn("t", ["no-such-flower-binary"], tmp_path / "t.log", _env())
