"""The one Flower app (FAB) every Pollen run submits, built byte-for-byte reproducibly.

Why: a client must be able to tell Pollen's app from any other app a server sends it (issue 10,
"clients run only Pollen"). Flower names an app by the SHA-256 of its FAB bytes (`fab_hash`), so
Pollen makes those bytes a function of the installed Pollen alone: the FAB holds one
`pyproject.toml` naming `pollen.server.app:app` / `pollen.client.app:app` (the code itself comes
from the installed `pollen` package, never from the FAB), built with Flower's own builder (fixed
zip timestamps, sorted entries: the same builder `flwr run` uses, so the hash we compute is the hash
the SuperLink stores). Everything run-specific (the resolved config, the output directory, resume)
travels in the run config (`flwr run --run-config OUT/.flwr-run-config.toml`), not in the FAB.

`pollen app-hash` prints `bundle_hash()`; `pollen client` trusts it by default.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from functools import lru_cache
from pathlib import Path

import tomli_w

from pollen import __version__
from pollen.config import PollenConfig
from pollen.errors import ConfigError
from pollen.protocol.records import CONFIG_KEY, OUT_KEY, RESUME_KEY

PUBLISHER = "pollen"
APP_NAME = "pollen-app"
SERVER_COMPONENT = "pollen.server.app:app"
CLIENT_COMPONENT = "pollen.client.app:app"
APP_DIR = ".flwr-app"
RUN_CONFIG_FILE = ".flwr-run-config.toml"
# The environment variable and CLI flag that pin another trusted hash (see pollen.deploy.app_gate).
TRUSTED_HASH_ENV = "POLLEN_TRUSTED_APP_HASH"

_HASH = re.compile(r"[0-9a-f]{64}")


def pyproject_doc(version: str = __version__) -> dict[str, object]:
    """The bundle's only file. Pollen's version is part of the identity: a client trusts the app
    of the Pollen it runs, so mismatched releases refuse each other with a clear line."""
    return {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": APP_NAME, "version": version, "dependencies": [],
                    "description": "Pollen's fixed Flower app; code comes from the installed pollen",
                    "license": "Apache-2.0"},
        "tool": {"flwr": {"app": {
            "publisher": PUBLISHER,
            "components": {"serverapp": SERVER_COMPONENT, "clientapp": CLIENT_COMPONENT},
            # Defaults only; each run overrides them through its run config file (Flower drops
            # override keys that the FAB does not declare).
            "config": {CONFIG_KEY: "", OUT_KEY: "", RESUME_KEY: False},
        }}},
    }


def bundle_files(version: str = __version__) -> dict[str, bytes]:
    """Relative path -> bytes of the app directory `flwr run` is given."""
    return {"pyproject.toml": tomli_w.dumps(pyproject_doc(version)).encode("utf-8")}


@lru_cache(maxsize=4)
def build_bundle(version: str = __version__) -> bytes:
    """The FAB bytes, from Flower's own builder (the one `flwr run` calls on the app directory)."""
    from flwr.cli.build import build_fab_from_files

    fab, _ = build_fab_from_files(dict(bundle_files(version)))
    return fab


def bundle_hash(version: str = __version__) -> str:
    """SHA-256 (hex) of the FAB: the `fab_hash` a SuperNode sees for a genuine Pollen run."""
    return hashlib.sha256(build_bundle(version)).hexdigest()


def write_bundle(directory: Path) -> Path:
    """Write exactly the bundle's files to `directory` (anything else there would enter the FAB)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for name, data in bundle_files().items():
        (directory / name).write_bytes(data)
    return directory


def user_app_pyproject(cfg: PollenConfig | None = None) -> str:
    """pyproject.toml of a Flower app for a pip-installed Pollen: `flwr run DIR --run-config ...`.

    The repository's own pyproject.toml carries the same `[tool.flwr.app]`; a wheel does not ship
    it, so `pollen app --out DIR` writes this one. Components come from the installed package; the
    config table is every Pollen key, dotted, with the values of `cfg` (default: the defaults).
    """
    from pollen.protocol.run_config import pyproject_table_text

    doc = pyproject_doc()
    doc["project"] = {**doc["project"], "name": "pollen-flower-app",  # type: ignore[dict-item]
                      "description": "Pollen as a Flower app (code from the installed pollen-fl)"}
    app = doc["tool"]["flwr"]["app"]  # type: ignore[index]
    app.pop("config")
    return tomli_w.dumps(doc) + "\n" + pyproject_table_text(cfg)


def write_user_app(directory: Path, cfg: PollenConfig | None = None, *, overwrite: bool = False) -> Path:
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise ConfigError(f"{directory} exists and is not empty; pass --overwrite or choose another --out")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(user_app_pyproject(cfg))
    return directory


def write_run_config(path: Path, *, config_json: str, out: Path, resume: bool) -> Path:
    """The run-specific values, as the TOML file `flwr run --run-config` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps({CONFIG_KEY: config_json, OUT_KEY: str(out.resolve()),
                                   RESUME_KEY: bool(resume)}))
    return path


def validate_app_hash(value: str, source: str = "--trusted-app-hash") -> str:
    """A pinned hash: 64 hex digits (case and surrounding blanks forgiven), or one clear error."""
    text = value.strip().lower()
    if not _HASH.fullmatch(text):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise ConfigError(f"{source} must be a SHA-256 app hash (64 hex digits, as printed by "
                          f"`pollen app-hash`), got {shown!r}")
    return text
