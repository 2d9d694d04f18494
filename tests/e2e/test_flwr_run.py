"""`flwr run .` of the repository itself against Flower's own local SuperLink, then `flwr ls` /
`flwr log` after the run ended and after that SuperLink restarted (its state.db under FLWR_HOME)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from pollen.config import PollenConfig
from pollen.deploy.launch import flower_env, free_port, spawn
from pollen.deploy.node_auth import flwr_executable

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def local_superlink(home: Path, env: dict[str, str]):
    """Flower's managed local SuperLink (flwr.cli.local_superlink), started the way `flwr` starts
    it, but waited for as long as a loaded CI machine needs (Flower gives it 15 s)."""
    db = home / "local-superlink"
    db.mkdir(parents=True, exist_ok=True)
    argv = ["flower-superlink", "--insecure", "--simulation", "--isolation", "subprocess",
            "--control-api-address", f"127.0.0.1:{env['FLWR_LOCAL_CONTROL_API_PORT']}",
            "--host", "127.0.0.1", "--port", env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"],
            "--database", str(db / "state.db")]
    proc = spawn("superlink", argv, db / "superlink.out", env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{env['FLWR_LOCAL_SUPERLINK_HTTP_API_PORT']}/health",
                         timeout=2).is_success:
                return proc
        except httpx.HTTPError:
            pass
        assert proc.alive(), proc.tail()
        time.sleep(1)
    proc.stop()
    pytest.fail("local SuperLink did not start")


def flwr(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([flwr_executable("flwr"), *args], check=False, cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


def test_flwr_run_of_the_repository(tmp_path: Path, tiny_model_dir: Path, tiny_data: Path) -> None:
    home = tmp_path / "flwr-home"
    env = flower_env(home)  # the env README asks for: offline hub, local-only Ray
    env.update({"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # use this environment's Pollen
                "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
                "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
                "POLLEN_HOME": str(tmp_path / "pollen-home")})
    overrides = (f"run.rounds=1 run.out='run1' model.name='{tiny_model_dir}' model.max_length=24 "
                 f"data.name='{tiny_data}' data.eval_size=6 data.partition='iid' "
                 "train.local_steps=1 train.batch_size=2 train.lr=1e-2 tracking.tensorboard=false "
                 "simulation.client_cpus=1")
    link = local_superlink(home, env)
    try:
        run = flwr(env, "run", ".", "--stream", "--run-config", overrides, timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        out = tmp_path / "pollen-home" / "run1"  # a relative run.out: under $POLLEN_HOME
        assert f"pollen: writing this run to {out}" in run.stdout + run.stderr
        rounds = json.loads((out / "metrics.json").read_text())["rounds"]
        assert [r["round"] for r in rounds] == [0, 1]
        # Flower's default local federation has 2 SuperNodes; federation.clients followed them.
        assert rounds[1]["clients"] == 2 and rounds[1]["train_loss"] is not None
        saved = PollenConfig.load(out / "config.toml")
        assert saved.train.lr == 1e-2 and saved.run.out == str(out) and saved.federation.clients == 2
        listed = json.loads(flwr(env, "ls", "--format", "json").stdout)
        (row,) = listed["runs"]
        assert row["status"] == "finished:completed" and row["fab-name"] == "pollen-fl"
    finally:
        link.stop()
    # The run outlives its SuperLink: a restarted one (same FLWR_HOME database) still lists it.
    link = local_superlink(home, env)
    try:
        again = json.loads(flwr(env, "ls", "--format", "json").stdout)
        assert [r["run-id"] for r in again["runs"]] == [row["run-id"]]
        logs = flwr(env, "log", str(row["run-id"]), "--show")
        assert "pollen: writing this run to" in logs.stdout + logs.stderr
    finally:
        link.stop()
