"""deploy_local: clear failure without an engine, least-privilege staging and guaranteed teardown
(against an in-memory engine double), and a real 1 server + 3 clients run where Docker exists."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

docker = pytest.importorskip("docker")
from docker.errors import APIError, ImageNotFound

from pollen.deploy import local
from pollen.deploy.certs import load_bundle
from pollen.deploy.local import DeploymentError, deploy_local, engine_available

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    p = tmp_path / "run.toml"
    p.write_text('[run]\nrounds = 5\nseed = 3\n\n[federation]\nclients = 9\n')
    return p


def test_no_engine_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                    config: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")
    with pytest.raises(DeploymentError, match="start dockerd or run docker/bootstrap.sh"):
        deploy_local(2, config_path=config)
    assert not engine_available()


@pytest.mark.parametrize(("kw", "msg"), [({"n_clients": 0}, "at least one client"),
                                         ({"memory": "12"}, "at least 64m"),
                                         ({"memory": "lots"}, "like '512m'"),
                                         ({"cpus": 0}, "cpus must be > 0")])
def test_bad_arguments_fail_before_touching_docker(kw: dict[str, Any], msg: str,
                                                   config: Path) -> None:
    args = {"n_clients": 2, **kw}
    with pytest.raises(DeploymentError, match=msg):
        deploy_local(args.pop("n_clients"), config_path=config, **args)


# -- an engine double: records what deploy_local asks Docker to do -------------------------------
class FakeContainer:
    def __init__(self, engine: FakeEngine, name: str, kw: dict[str, Any]) -> None:
        self.engine, self.name, self.kw = engine, name, kw
        self.status, self.attrs = "created", {"State": {"ExitCode": 0}}
        # What the container would see in its mounts, captured at creation time.
        self.mounted = {bind["bind"]: sorted(os.listdir(host)) for host, bind in
                        kw.get("volumes", {}).items() if Path(host).is_dir()}
        self.toml, self.bundle = "", None
        for host, bind in kw.get("volumes", {}).items():
            if bind["bind"] == "/config":
                self.toml = (Path(host) / "run.toml").read_text()
            if bind["bind"] == "/certs" and (Path(host) / "server.pem").exists():
                self.bundle = load_bundle(Path(host), role="server")  # what `pollen server` loads

    def start(self) -> None:
        self.status = "running"

    def wait(self, timeout: float) -> dict[str, int]:
        if self.engine.hang:
            raise TimeoutError("read timed out")
        self.status = "exited"  # the server finished; clients keep running until torn down
        return {"StatusCode": self.engine.server_code}

    def logs(self, **_: Any) -> bytes:
        return f"log of {self.name}\n".encode()

    def stats(self, stream: bool) -> dict[str, Any]:
        return {"memory_stats": {"max_usage": 300 << 20},
                "cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}}}

    def reload(self) -> None:
        pass  # status is kept current by start()/wait()

    def remove(self, force: bool, v: bool) -> None:
        self.engine.removed.append(self.name)


class FakeEngine:
    def __init__(self, fail_on_create: int | None = None, hang: bool = False,
                 missing_image: str | None = None) -> None:
        self.created: list[FakeContainer] = []
        self.removed: list[str] = []
        self.networks_made: list[str] = []
        self.networks_removed: list[str] = []
        self.fail_on_create, self.hang, self.missing = fail_on_create, hang, missing_image
        self.server_code = 0
        eng = self

        class Images:
            def get(self, name: str) -> None:
                if name == eng.missing:
                    raise ImageNotFound(name)

        class Net:
            def __init__(self, name: str) -> None:
                self.name = name

            def remove(self) -> None:
                eng.networks_removed.append(self.name)

        class Networks:
            def list(self, names: list[str]) -> list[Net]:
                return []

            def create(self, name: str, **_: Any) -> Net:
                eng.networks_made.append(name)
                return Net(name)

        class Containers:
            def create(self, image: str, name: str, **kw: Any) -> FakeContainer:
                if eng.fail_on_create is not None and len(eng.created) == eng.fail_on_create:
                    raise APIError("no space left on device")
                c = FakeContainer(eng, name, {"image": image, **kw})
                eng.created.append(c)
                return c

        class Api:
            def create_endpoint_config(self, aliases: list[str]) -> dict[str, Any]:
                return {"Aliases": aliases}

        self.images, self.networks, self.containers, self.api = Images(), Networks(), Containers(), Api()

    def close(self) -> None:
        pass


def _use(monkeypatch: pytest.MonkeyPatch, engine: FakeEngine) -> FakeEngine:
    monkeypatch.setattr(local, "_docker_client", lambda: engine)
    return engine


def test_run_stages_least_privilege_and_tears_down(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path, config: Path) -> None:
    eng = _use(monkeypatch, FakeEngine())
    res = deploy_local(3, cpus=0.5, memory="1g", config_path=config, rounds=2,
                       out_dir=tmp_path / "out")
    assert res.ok and res.out_dir == tmp_path / "out"
    srv, *clients = eng.created
    assert srv.kw["networking_config"]["pollen-net"]["Aliases"] == ["pollen-server"]
    # The server gets the node *public* keys to register, never a node's private key.
    assert srv.mounted["/certs"] == ["bundle.json", "ca.crt", "node-0.pub", "node-1.pub",
                                     "node-2.pub", "server.key", "server.pem"]
    assert srv.bundle is not None and srv.bundle.n_nodes == 3
    assert srv.bundle.hosts == ("pollen-server",)
    assert 'rounds = 2' in srv.toml and 'clients = 3' in srv.toml and "seed = 3" in srv.toml
    # The Fleet API faces the bridge network; the Control API stays on the container's loopback
    # and nothing is published to the host.
    scmd = srv.kw["command"]
    assert scmd[scmd.index("--port") + 1] == "9092" and scmd[scmd.index("--control-port") + 1] == "9093"
    assert "--control-host" not in scmd and not srv.kw.get("ports")
    for i, c in enumerate(clients):
        assert c.mounted["/certs"] == ["ca.crt", f"node-{i}.key"]  # only its own identity
        assert c.kw["nano_cpus"] == 500_000_000 and c.kw["mem_limit"] == 1 << 30
        cmd = c.kw["command"]
        assert cmd[cmd.index("--partition-id") + 1] == str(i)
        assert cmd[cmd.index("--server") + 1] == "pollen-server:9092"
    assert sorted(eng.removed) == sorted(c.name for c in eng.created)
    assert eng.networks_removed == eng.networks_made == ["pollen-net"]
    assert res.stats[clients[0].name] == {"mem_peak_mb": 300.0, "cpu_s": 2.5}
    assert (tmp_path / "out" / "logs").is_dir() and len(list((tmp_path / "out" / "logs").iterdir())) == 4
    assert not any(Path(h).exists() for c in eng.created for h in c.kw["volumes"]
                   if "pollen-stage-" in h)  # staged private keys are gone


@pytest.mark.parametrize("fail_at", [0, 2])
def test_teardown_after_a_failed_start(monkeypatch: pytest.MonkeyPatch, config: Path,
                                       tmp_path: Path, fail_at: int) -> None:
    eng = _use(monkeypatch, FakeEngine(fail_on_create=fail_at))
    with pytest.raises(DeploymentError, match="no space left"):
        deploy_local(3, config_path=config, out_dir=tmp_path)
    assert len(eng.created) == fail_at
    assert sorted(eng.removed) == sorted(c.name for c in eng.created)
    assert eng.networks_removed == ["pollen-net"]


def test_timeout_still_tears_down(monkeypatch: pytest.MonkeyPatch, config: Path,
                                  tmp_path: Path) -> None:
    eng = _use(monkeypatch, FakeEngine(hang=True))
    with pytest.raises(DeploymentError, match="did not finish within 5 s"):
        deploy_local(1, config_path=config, timeout=5, out_dir=tmp_path)
    assert len(eng.removed) == 2 and eng.networks_removed == ["pollen-net"]


def test_missing_image_names_the_fix(monkeypatch: pytest.MonkeyPatch, config: Path) -> None:
    eng = _use(monkeypatch, FakeEngine(missing_image="pollen-client:0.1.0"))
    with pytest.raises(DeploymentError, match="build it with docker/bootstrap.sh"):
        deploy_local(1, config_path=config)
    assert eng.networks_made == [] and eng.created == []


# -- the real thing -------------------------------------------------------------------------------
@pytest.mark.docker
@pytest.mark.slow
def test_real_federation_one_server_three_clients(tmp_path: Path) -> None:
    if not engine_available():
        pytest.skip("no Docker engine reachable")
    client = docker.from_env()
    have = all(_has_image(client, f"pollen-{r}:0.1.0") for r in ("server", "client"))
    if not have:
        if os.geteuid() != 0:
            pytest.skip("images missing and building them (docker/bootstrap.sh) needs root")
        subprocess.run(["bash", str(REPO / "docker" / "bootstrap.sh")], check=True, timeout=3600)
    cfg = tmp_path / "run.toml"
    # The configuration this test passed with on a real engine (minilm-l6 + tweets, tiny slices).
    small = ("[run]\nrounds = 2\n\n[data]\nname = \"tweets\"\nmax_client_examples = 32\n"
             "eval_size = 32\n\n[train]\nlocal_steps = 2\nbatch_size = 8\n\n"
             "[model]\nname = \"minilm-l6\"\nmax_length = 32\n")
    cfg.write_text(os.environ.get("POLLEN_DOCKER_TEST_CONFIG_TOML", small))
    res = deploy_local(3, cpus=0.5, memory="2g", config_path=cfg, rounds=2,
                       out_dir=tmp_path / "out", timeout=1800)
    assert res.ok, res.server_log[-4000:]
    assert len(res.client_logs) == 3
    assert not client.containers.list(all=True, filters={"label": "pollen.deploy"})
    assert not [n for n in client.networks.list() if n.name == "pollen-net"]


def _has_image(client: Any, name: str) -> bool:
    try:
        client.images.get(name)
    except ImageNotFound:
        return False
    return True
