"""A guard process between Pollen and each Flower process, so that nothing Flower starts outlives Pollen.

Why: the SuperLink starts `flwr-serverapp` or `flwr-simulation`, and the latter starts Ray
(gcs_server, raylet, `ray::ClientAppActor` workers). `PR_SET_PDEATHSIG` reaches a direct child only,
and when a parent dies its children are re-parented to init, out of reach. A process group and
`killpg` are not enough either: Ray starts its daemons in new sessions, and after a `kill -9` of
Pollen nobody is left to call `killpg`. Something must outlive Pollen, know every descendant, and
act when Pollen dies. That is this guard.

How (Linux): `guarded(argv)` turns a command into `python -I .../reaper.py --parent PID -- argv`.
The guard

1. marks itself a child subreaper (`PR_SET_CHILD_SUBREAPER`): every process orphaned below it is
   re-parented to it, so all descendants stay reachable through /proc parent links;
2. learns when Pollen dies, even by `kill -9`: `PR_SET_PDEATHSIG` sends it `PARENT_GONE` (SIGUSR1,
   not SIGTERM, so that it cannot be mistaken for `Proc.stop`'s polite SIGTERM), confirmed by
   `getppid()` no longer being PID. The same test runs before the child starts and every
   `PARENT_POLL` seconds, which covers a Pollen that died before the prctl call, and a signal
   sent when only the spawning *thread* ended (`PR_SET_PDEATHSIG` is per thread);
3. runs argv as its only child, with `PR_SET_PDEATHSIG=SIGKILL` (a backstop should the guard itself
   be SIGKILLed), and forwards SIGTERM, SIGINT and SIGHUP to it. The child then has `GRACE` seconds
   to exit; a second signal, or the end of the grace, SIGKILLs the child and everything below it.
   When Pollen has died, the whole tree gets SIGTERM at once instead, and SIGKILL soon after;
4. once the child has exited, SIGTERMs every remaining descendant, SIGKILLs those still alive after
   `LEFTOVER_GRACE` seconds, reaps them all, and exits with the child's status (a child killed by
   signal N makes the guard die by signal N, so the caller sees the same return code).

It runs by file path with `-I`: stdlib only, independent of the working directory, `sys.path` and
`PYTHON*` variables, and always the same file as the Pollen that started it.

Elsewhere (no `prctl`), `guarded` returns argv unchanged and Pollen behaves as before: the child
runs in its own process group, which `launch.Proc.stop` kills.

Limit: a `kill -9` of the guard itself kills its child (the backstop above) but leaves deeper
descendants to init; nothing can prevent that short of a cgroup per run.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

GRACE = 7.0  # seconds the child has to exit after a forwarded signal; below launch.Proc.stop's 10
LEFTOVER_GRACE = 2.0  # seconds the leftovers have between SIGTERM and SIGKILL
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
PARENT_POLL = 2.0  # seconds between checks that Pollen is still the parent
PARENT_GONE = signal.SIGUSR1  # the guard's PR_SET_PDEATHSIG
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_WATCHED = {signal.SIGCHLD, PARENT_GONE, *_STOP_SIGNALS}


def _prctl() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def available() -> bool:
    """True where the guard can do its job (Linux with prctl)."""
    return _prctl() is not None


def guarded(argv: list[str]) -> list[str]:
    """argv run under a guard that ends with this process; argv itself where no guard is possible."""
    if not available():
        return list(argv)
    return [sys.executable, "-I", str(Path(__file__).resolve()), "--parent", str(os.getpid()),
            "--", *argv]


# --- the guard process ------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"pollen-reaper[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


def _proc_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state letter, command name), from /proc/*/stat."""
    table: dict[int, tuple[int, str, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read().decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        comm = raw[raw.find("(") + 1:raw.rfind(")")]
        fields = raw[raw.rfind(")") + 2:].split()
        table[int(entry)] = (int(fields[1]), fields[0], comm)
    return table


def descendants(root: int) -> dict[int, str]:
    """Live (non-zombie) processes below `root`: pid -> command name."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        for kid in children.get(pid, ()):
            if kid not in found and kid != root:
                found[kid] = table[kid][2]
                frontier.append(kid)
    return {pid: name for pid, name in found.items() if table[pid][1] != "Z"}


def _signal_all(pids: object, sig: int) -> None:
    for pid in pids:  # type: ignore[attr-defined]
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(child: int) -> int | None:
    """Reap every exited child (orphans included); the wait status of `child` if it was among them."""
    status = None
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        if pid == child:
            status = st


def _parent_gone(parent: int, wait: float = 0.0) -> bool:
    """Pollen has died: the guard was re-parented. With `wait`, give a dying Pollen's last threads
    that long to go (a multi-threaded process is re-parented from only when all have exited)."""
    deadline = time.monotonic() + wait
    while os.getppid() == parent:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _supervise(child: int, parent: int, grace: float) -> tuple[int, float | None]:
    """Wait for the child, passing stop signals on; its wait status, and when Pollen died, the
    time by which the leftovers (which already had their SIGTERM) get SIGKILL.

    A stop signal (`Proc.stop`) goes to the child alone, which has `grace` seconds to shut down
    politely. Pollen's death is a crash: the whole tree gets SIGTERM at once, and SIGKILL
    `LEFTOVER_GRACE` s later, as a `kill -9` of Pollen killed the SuperLink at once before.
    """
    kill_at: float | None = None
    crash_kill_at: float | None = None
    while True:
        status = _reap(child)
        if status is not None:
            return status, crash_kill_at
        wait = PARENT_POLL if kill_at is None else max(0.0, kill_at - time.monotonic())
        info = signal.sigtimedwait(_WATCHED, wait)
        signo = None if info is None else info.si_signo
        if kill_at is None and (signo == PARENT_GONE and _parent_gone(parent, wait=1.0)
                                or signo is None and _parent_gone(parent)):
            _log(f"Pollen (pid {parent}) is gone; stopping everything below")
            _signal_all([child, *descendants(os.getpid())], signal.SIGTERM)
            kill_at = crash_kill_at = time.monotonic() + LEFTOVER_GRACE
        elif signo in _STOP_SIGNALS:
            if kill_at is None:
                _signal_all([child], signal.SIGTERM if signo == signal.SIGHUP else signo)
                kill_at = time.monotonic() + grace
            else:  # a second stop signal: no more waiting
                kill_at = time.monotonic()
        if kill_at is not None and time.monotonic() >= kill_at:
            _signal_all([child, *descendants(os.getpid())], signal.SIGKILL)
            kill_at = time.monotonic() + 0.1  # checked again shortly, without spinning


def _clear_leftovers(child: int, grace: float) -> None:
    """SIGTERM every remaining descendant, SIGKILL those left after `grace` s; return when none is."""
    me, t0 = os.getpid(), time.monotonic()
    left = descendants(me)
    if not left:
        return
    _log(f"stopping {len(left)} leftover process(es): {', '.join(sorted(set(left.values())))}")
    termed: set[int] = set()
    while left and time.monotonic() < t0 + grace + 5.0:
        if time.monotonic() < t0 + grace:
            _signal_all(left.keys() - termed, signal.SIGTERM)  # once each, new ones included
            termed |= left.keys()
        else:
            _signal_all(left, signal.SIGKILL)
        signal.sigtimedwait({signal.SIGCHLD}, 0.05)
        _reap(child)
        left = descendants(me)
    _reap(child)
    _log(f"leftovers gone after {time.monotonic() - t0:.1f} s"
         + (" (SIGKILL needed)" if time.monotonic() >= t0 + grace else ""))


def _exit_like(status: int) -> NoReturn:
    """Exit the way the child did: same exit code, or death by the same signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the child's core dump is enough
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot be caught anyway
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # a signal that does not kill by default
    os._exit(os.waitstatus_to_exitcode(status))


def _child_setup() -> None:
    """In the forked child, before exec: normal signal mask, and death with the guard."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def main(args: list[str]) -> NoReturn:
    if "--" not in args or args[:1] != ["--parent"] or len(args) < 4:
        _log("usage: reaper.py --parent PID [--grace S] -- COMMAND [ARG...]")
        os._exit(2)
    split = args.index("--")
    opts = dict(zip(args[:split:2], args[1:split:2], strict=True))
    parent, grace, argv = int(opts["--parent"]), float(opts.get("--grace", GRACE)), args[split + 1:]
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_CHILD_SUBREAPER, 1)
        prctl(_PR_SET_PDEATHSIG, int(PARENT_GONE))
    # Signals are taken with sigwaitinfo; a handler on SIGCHLD keeps it pending while blocked.
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
    if os.getppid() != parent:  # Pollen died before PR_SET_PDEATHSIG took hold
        os._exit(128 + PARENT_GONE)
    try:
        popen = subprocess.Popen(argv, preexec_fn=_child_setup)  # noqa: PLW1509
    except OSError as e:
        _log(f"cannot run {argv[0]!r}: {e}")
        os._exit(127)
    try:
        status, crash_kill_at = _supervise(popen.pid, parent, grace)
        popen.returncode = os.waitstatus_to_exitcode(status)
        left_grace = LEFTOVER_GRACE if crash_kill_at is None else crash_kill_at - time.monotonic()
        _clear_leftovers(popen.pid, max(0.0, left_grace))
    except BaseException as e:  # noqa: BLE001 - a bug here must not leave the tree running
        _log(f"internal error ({e!r}); killing everything below")
        _signal_all([popen.pid, *descendants(os.getpid())], signal.SIGKILL)
        os._exit(1)
    _exit_like(status)


if __name__ == "__main__":
    main(sys.argv[1:])
