"""`pollen simulate`: a local federation on Flower's simulation engine (Ray backend)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from pollen.config import PollenConfig
from pollen.deploy.federation import LinkOptions, run_federation

GB = 1 << 30
# What one client actor costs beyond the model weights it holds privately, measured on the default
# task (docs/benchmarks.md "Issue 14: memory", 1.15 GB per extra concurrent client): the interpreter
# with torch, transformers, peft, Flower and Ray imported (~0.3 GB of private pages: relocated
# library data a fresh process cannot share) and the activations kept for the backward pass
# (~0.6 GB at batch 8 × 64 tokens); train.gradient_checkpointing cuts the latter to ~0.25 GB.
ACTOR_OVERHEAD = int(1.2 * GB)
CHECKPOINTED_ACTOR_OVERHEAD = int(0.6 * GB)
# Share of the available memory the plan may fill; the rest is the server's and the system's.
MEMORY_SHARE = 0.75


@dataclass(frozen=True)
class ActorPlan:
    """How many clients train at once and with how many threads each, and why."""

    concurrent: int
    cpus_per_client: float
    cores: int
    available_bytes: int
    per_client_bytes: int
    limited_by: str  # "clients", "cores", "memory" or "config"

    @property
    def threads(self) -> int:
        """Torch threads per client: whole threads (a share below one core still runs one)."""
        return max(1, int(self.cpus_per_client))

    def flower_options(self) -> dict[str, int]:
        """The plan as Flower's simulation options.

        Flower's `client-resources-num-cpus` is an integer, so a share below one core (0.5: two
        clients per core) cannot be said to Flower directly; instead Ray is told the run has
        `concurrent × threads` logical CPUs, which makes the actor pool exactly `concurrent` actors
        of `threads` threads each, whatever the machine's core count.
        """
        return {"client-resources-num-cpus": self.threads,
                "init-args-num-cpus": self.concurrent * self.threads}

    def describe(self) -> str:
        share = "" if self.cpus_per_client >= 1 else f" ({_num(self.cpus_per_client)} core each)"
        return (f"simulation plan: {self.concurrent} client(s) at a time × {self.threads} "
                f"CPU thread(s) each{share} ({self.cores} cores, {self.available_bytes / GB:.1f} GB available, "
                f"~{self.per_client_bytes / GB:.1f} GB per client; limited by {self.limited_by}; "
                "set simulation.client_cpus to choose)")


def plan_actors(sampled: int, *, cores: int, available_bytes: int, model_bytes: int,
                client_cpus: float = 0.0, shared_weights: bool = False,
                overhead: int = ACTOR_OVERHEAD) -> ActorPlan:
    """Clients per round that fit in cores and memory; each gets an equal share of the cores.

    `shared_weights`: the base weights are memory-mapped and left unchanged, so all actors share one
    copy in the page cache (counted once); otherwise every actor holds its own.
    """
    per_client = overhead + (0 if shared_weights else model_bytes)
    if shared_weights:
        available_bytes = max(0, available_bytes - model_bytes)
    if client_cpus > 0:
        concurrent = max(1, min(sampled, int(cores // client_cpus) or 1))
        return ActorPlan(concurrent, client_cpus, cores, available_bytes, per_client, "config")
    by_memory = max(1, int(available_bytes * MEMORY_SHARE // per_client))
    concurrent = min(sampled, cores, by_memory)
    limited_by = {sampled: "clients", cores: "cores", by_memory: "memory"}[concurrent]
    # Whole threads per client; leftover cores go unused rather than oversubscribed.
    return ActorPlan(concurrent, float(max(1, cores // concurrent)), cores, available_bytes, per_client,
                     limited_by)


def machine() -> tuple[int, int]:
    """(usable cores, available memory in bytes) of this machine/container."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    available = 8 * GB
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    return cores, available


def model_files(cfg: PollenConfig) -> list[Path]:
    """The model's weight files (registered models are located, not loaded); [] if unknown."""
    from pollen.models.registry import MODELS

    try:
        path = Path(MODELS.get(cfg.model.name).locate()) if cfg.model.name in MODELS else Path(cfg.model.name)
        return list(path.glob("*.safetensors")) + list(path.glob("*.bin")) if path.is_dir() else []
    except Exception:  # noqa: BLE001 - an estimate; the preflight reports real load errors
        return []


def model_bytes(cfg: PollenConfig) -> int:
    """Size of the model's weights on disk (0.5 GB when they cannot be located)."""
    files = model_files(cfg)
    return sum(f.stat().st_size for f in files) if files else GB // 2


def float32_safetensors(files: list[Path]) -> bool:
    """Every file is safetensors holding float32 tensors only: what transformers memory-maps as is
    when Pollen loads in float32 (other dtypes and .bin files are converted into private memory)."""
    if not files:
        return False
    for f in files:
        if f.suffix != ".safetensors":
            return False
        try:
            with f.open("rb") as fh:
                size = int.from_bytes(fh.read(8), "little")
                if not 0 < size <= 100 << 20:  # a header larger than 100 MB is not one we trust
                    return False
                header = json.loads(fh.read(size))
        except (OSError, ValueError):
            return False
        if not isinstance(header, dict) or any(
                isinstance(v, dict) and v.get("dtype") != "F32"
                for k, v in header.items() if k != "__metadata__"):
            return False
    return True


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def simulate(cfg: PollenConfig, console: Console | None = None) -> list[dict[str, Any]]:
    from pollen.strategies import method_for
    from pollen.strategies.registry import sampled_clients

    console = console or Console()
    cores, available = machine()
    files = model_files(cfg)
    shared = float32_safetensors(files) and not method_for(cfg).writes_base_weights
    plan = plan_actors(sampled_clients(cfg), cores=cores, available_bytes=available,
                       model_bytes=model_bytes(cfg), client_cpus=cfg.simulation.client_cpus,
                       shared_weights=shared,
                       overhead=CHECKPOINTED_ACTOR_OVERHEAD if cfg.train.gradient_checkpointing
                       else ACTOR_OVERHEAD)
    flower = {"num-supernodes": cfg.federation.clients, **plan.flower_options()}
    return run_federation(cfg, console, LinkOptions(simulation=True, announce=plan.describe(),
                                                    federation_config=flower))
