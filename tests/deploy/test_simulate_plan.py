"""The simulation sizes its client actors from the machine: concurrent whenever cores and memory allow."""

from __future__ import annotations

import pytest

from pollen.config import PollenConfig
from pollen.deploy.simulate import (
    CHECKPOINTED_ACTOR_OVERHEAD,
    GB,
    float32_safetensors,
    plan_actors,
)


@pytest.mark.parametrize("sampled, cores, avail_gb, model_gb, want", [
    (4, 2, 16, 0.5, (2, 1.0, "cores")),      # this CI box: two clients at once, one thread each
    (8, 64, 256, 0.5, (8, 8.0, "clients")),  # a big box: every sampled client at once, 8 threads each
    (32, 64, 8, 0.5, (3, 21.0, "memory")),   # memory-bound: 8 GB * 0.75 / 1.7 GB per client
    (1, 16, 64, 0.5, (1, 16.0, "clients")),  # one client gets the whole machine
    (4, 2, 0.1, 0.5, (1, 2.0, "memory")),    # never zero actors
])
def test_auto_plan(sampled, cores, avail_gb, model_gb, want):
    p = plan_actors(sampled, cores=cores, available_bytes=int(avail_gb * GB),
                    model_bytes=int(model_gb * GB))
    assert (p.concurrent, p.cpus_per_client, p.limited_by) == want
    assert p.concurrent * p.cpus_per_client <= max(cores, p.cpus_per_client)  # never oversubscribed
    assert f"{p.concurrent} client(s) at a time" in p.describe()


def test_a_configured_share_wins():
    p = plan_actors(8, cores=8, available_bytes=64 * GB, model_bytes=GB // 2, client_cpus=2)
    assert (p.concurrent, p.cpus_per_client, p.limited_by) == (4, 2.0, "config")


def test_shared_weights_count_once_and_checkpointing_fits_more_clients():
    args = {"cores": 64, "available_bytes": 16 * GB, "model_bytes": 4 * GB}
    private = plan_actors(32, **args)  # 16 * 0.75 / (1.2 + 4) GB
    shared = plan_actors(32, **args, shared_weights=True)  # (16 - 4) * 0.75 / 1.2 GB
    lean = plan_actors(32, **args, shared_weights=True, overhead=CHECKPOINTED_ACTOR_OVERHEAD)
    assert (private.concurrent, shared.concurrent, lean.concurrent) == (2, 7, 15)
    assert {private.limited_by, shared.limited_by, lean.limited_by} == {"memory"}


def test_only_float32_safetensors_count_as_shared(tmp_path):
    import json
    import struct

    def write(name, dtypes):
        header = json.dumps({"__metadata__": {"format": "pt"}, **{
            f"t{i}": {"dtype": d, "shape": [1], "data_offsets": [0, 4]} for i, d in enumerate(dtypes)}})
        raw = header.encode()
        (tmp_path / name).write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
        return tmp_path / name

    assert float32_safetensors([write("a.safetensors", ["F32", "F32"])])
    assert not float32_safetensors([write("b.safetensors", ["F32", "BF16"])])
    assert not float32_safetensors([])
    (tmp_path / "c.bin").write_bytes(b"x")
    assert not float32_safetensors([tmp_path / "c.bin"])
    (tmp_path / "d.safetensors").write_bytes(struct.pack("<Q", 1 << 40))  # a hostile header size
    assert not float32_safetensors([tmp_path / "d.safetensors"])


@pytest.mark.parametrize(("share", "cores", "want"), [
    (0.5, 2, (4, 1, 4)),   # two clients per core: 4 one-thread actors on 2 cores
    (0.25, 2, (8, 1, 8)),
    (1, 2, (2, 1, 2)),
    (2, 8, (4, 2, 8)),
    (4, 2, (1, 4, 4)),     # more threads than cores: one client, Ray told of 4 CPUs
])
def test_a_share_reaches_flower_as_whole_numbers(share, cores, want):
    """Flower's client-resources-num-cpus is an unsigned integer (a float made `flwr run` fail)."""
    p = plan_actors(8, cores=cores, available_bytes=64 * GB, model_bytes=GB // 2, client_cpus=share)
    opts = p.flower_options()
    assert all(isinstance(v, int) for v in opts.values())
    assert (p.concurrent, opts["client-resources-num-cpus"], opts["init-args-num-cpus"]) == want
    # The actor pool Flower builds: Ray's CPUs over each client's CPUs.
    assert opts["init-args-num-cpus"] // opts["client-resources-num-cpus"] == p.concurrent
    assert f"{p.concurrent} client(s) at a time × {opts['client-resources-num-cpus']} CPU" in p.describe()


def test_auto_is_the_default_and_negative_is_refused():
    assert PollenConfig().simulation.client_cpus == 0
    with pytest.raises(Exception, match="simulation.client_cpus"):
        PollenConfig.load(None, {"simulation.client_cpus": "-1"})
