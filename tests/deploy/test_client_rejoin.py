"""`pollen client` replaces a SuperNode that crashed (a restarted server forgot its node id), but not
one the server refused, one stopped on purpose, or one stuck in a crash loop."""

import sys

import pytest

from pollen.deploy import client as deploy


@pytest.fixture()
def fake(monkeypatch, tmp_path):
    """A SuperNode stand-in that exits with the next status from a script, counting its starts."""
    starts = tmp_path / "starts"

    def use(codes, line="ok"):
        script = (f"import pathlib; p = pathlib.Path({str(starts)!r}); "
                  f"n = len(p.read_text()) if p.exists() else 0; p.write_text('x' * (n + 1)); "
                  f"print({line!r}); raise SystemExit({codes!r}[min(n, {len(codes) - 1})])")
        monkeypatch.setattr(deploy, "supernode_argv", lambda **kw: [sys.executable, "-c", script])
        return lambda: len(starts.read_text()) if starts.exists() else 0

    monkeypatch.setattr(deploy.signal, "signal", lambda *a: None)
    monkeypatch.setattr(deploy, "_reachable", lambda server: True)
    return use


def _run(max_wait=None):
    return deploy.run_client(server="127.0.0.1:1", partition_id=0, num_partitions=1, insecure=True,
                             certs=None, node_key=None, max_wait=max_wait)


def test_supernode_that_quit_is_replaced_while_the_server_answers(fake, monkeypatch):
    starts = fake([1, 0, 0])  # Flower's SuperNode quits with 0 after a restarted server's 401
    monkeypatch.setattr(deploy, "_reachable", lambda server: starts() < 3)
    assert _run(max_wait=0.3) == 0 and starts() == 3


def test_refused_node_is_retried_only_while_the_server_is_new(fake, monkeypatch):
    monkeypatch.setattr(deploy, "REFUSAL_GRACE_S", 0.0)
    starts = fake([1], line="Exit Code: 305")
    assert _run() == deploy.REFUSED_EXIT and starts() == 1
    monkeypatch.setattr(deploy, "REFUSAL_GRACE_S", 60.0)
    monkeypatch.setattr(deploy.time, "sleep", lambda s: None)
    monkeypatch.setattr(deploy, "MAX_REJOINS", 2)
    assert _run() == deploy.REFUSED_EXIT and starts() == 1 + 3


def test_crash_loop_gives_up(fake, monkeypatch):
    monkeypatch.setattr(deploy, "MAX_REJOINS", 2)
    starts = fake([7])
    assert _run() == 7 and starts() == 3


def test_server_gone_for_max_wait_ends_the_client(fake, monkeypatch):
    starts = fake([1, 0])
    monkeypatch.setattr(deploy, "_reachable", lambda server: starts() == 0)  # gone after start
    assert _run(max_wait=0.5) == 1 and starts() == 1


def test_no_supernode_before_the_server_answers(fake, monkeypatch):
    starts = fake([0])
    monkeypatch.setattr(deploy, "_reachable", lambda server: False)
    assert _run(max_wait=0.3) == 1 and starts() == 0


def test_supernode_hung_after_its_shutdown_is_stopped():
    """Flower 1.39's SuperNode can print its shutdown and then never exit; it must not block rejoining."""
    import subprocess
    import time

    hang = "import time; print('INFO: Finished server process [1]', flush=True); time.sleep(600)"
    proc = subprocess.Popen([sys.executable, "-c", hang],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.monotonic()
    try:
        deploy._relay(proc)  # returns once the stand-in's output closes, i.e. once it was stopped
        deploy._reap_if_hung(proc, grace=0.5)
        assert proc.wait(timeout=30) != 0
        assert time.monotonic() - t0 < 30
    finally:
        proc.kill()


def test_server_gone_while_the_supernode_runs_is_a_normal_end(monkeypatch, tmp_path):
    """The watchdog stops a SuperNode whose server has been gone for --max-wait: exit 0, not its status."""
    script = "print('ok', flush=True); import time; time.sleep(60)"
    monkeypatch.setattr(deploy, "supernode_argv", lambda **kw: [sys.executable, "-c", script])
    monkeypatch.setattr(deploy.signal, "signal", lambda *a: None)
    up = iter([True, True])  # reachable for the start-up checks, then gone for good
    monkeypatch.setattr(deploy, "_reachable", lambda server: next(up, False))
    assert _run(max_wait=0.5) == 0
