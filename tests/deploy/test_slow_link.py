"""bench/slow_link.py's pure parts (no root needed): argument checks, link plan, tc parsing, tables.

The namespaces, veths and tbf themselves need root and are exercised by running the benchmark."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import slow_link
import slow_link_net as net

TC_SHOW = """qdisc tbf 8001: root refcnt 2 rate 1Mbit burst 4000b lat 400ms
 Sent 656261 bytes 1204 pkt (dropped 3, overlimits 1102 requeues 0)
 backlog 0b 0p requeues 0
"""


def test_plan_gives_each_client_its_own_subnet_and_short_device_names():
    links = net.plan_links(4, "10.77")
    assert [ln.host_ip for ln in links] == ["10.77.0.1", "10.77.1.1", "10.77.2.1", "10.77.3.1"]
    assert [ln.ns_ip for ln in links] == ["10.77.0.2", "10.77.1.2", "10.77.2.2", "10.77.3.2"]
    assert len({ln.netns for ln in links}) == 4 and links[3].netns == "pollen-slow-3"
    big = net.plan_links(254)
    assert all(len(d) <= 15 for ln in big for d in (ln.host_dev, ln.ns_dev))  # IFNAMSIZ - 1
    assert len({ln.host_dev for ln in big} | {ln.ns_dev for ln in big}) == 2 * 254


@pytest.mark.parametrize("n,prefix", [(0, "10.77"), (255, "10.77"), (2, "10.77.1"), (2, "10.300")])
def test_plan_refuses_what_does_not_fit(n, prefix):
    with pytest.raises(ValueError):
        net.plan_links(n, prefix)


def test_rate_and_burst():
    assert net.rate_bps("1mbit") == 1_000_000
    assert net.rate_bps("512kbit") == 512_000
    assert net.rate_bps("2.5Mbit") == 2_500_000
    for bad in ("1 mbps", "fast", "1mb", "100bit"):
        with pytest.raises(ValueError):
            net.rate_bps(bad)
    assert net.burst_bytes(1_000_000) == 4_000  # the verified 32 kbit bucket at 1 Mbit/s
    assert net.burst_bytes(100_000_000) == 125_000  # 10 ms of traffic at 100 Mbit/s


def test_tc_counters_parse_and_default_to_zero():
    assert net.parse_tc_stats(TC_SHOW) == {"bytes": 656261, "packets": 1204, "dropped": 3,
                                           "overlimits": 1102}
    assert net.parse_tc_stats("qdisc noqueue 0: root refcnt 2") == {
        "bytes": 0, "packets": 0, "dropped": 0, "overlimits": 0}


def test_stale_links_of_a_killed_run_are_found_whatever_their_count():
    netns = "pollen-slow-7 (id: 3)\nother-ns\npollen-slow-1\n"
    links = ("1: lo: <LOOPBACK,UP> mtu 65536\n"
             "12: pslow9h@if11: <BROADCAST,MULTICAST,UP> mtu 1500\n"
             "13: pslow2n: <BROADCAST> mtu 1500\n"
             "14: eth0@if5: <BROADCAST> mtu 1500\n")
    assert net.stale_indices(netns, links) == {1, 7, 9}
    assert net.stale_indices("", "") == set()


def test_args_forward_unknown_options_to_the_server_and_refuse_clashes(capsys):
    args, extra = slow_link.parse_args(["--clients", "2", "--codecs", "none", "topz:0.05 > zstd",
                                        "--model", "minilm-l6", "--set", "data.max_client_examples=64"])
    assert args.codecs == ["none", "topz:0.05 > zstd"] and args.clients == 2
    assert extra == ["--model", "minilm-l6", "--set", "data.max_client_examples=64"]
    argv = slow_link.server_argv(args, "none", Path("/c"), Path("/o"), extra)
    assert argv[argv.index("--codec") + 1] == "none" and argv[-4:] == extra
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and "--insecure" not in argv
    for bad in (["--codec", "zstd"], ["--rounds", "0"], ["--rate", "1mbps"], ["--clients", "0"],
                ["--certs=/x"], ["--host", "1.2.3.4"], ["stray"]):
        with pytest.raises(SystemExit) as e:
            slow_link.parse_args(bad)
        assert e.value.code == 2
    assert "set by this script" in capsys.readouterr().err


def test_client_runs_in_its_namespace_and_dials_its_own_host_end():
    ln = net.plan_links(3)[2]
    argv = slow_link.client_argv(ln, 9192, Path("/certs"), 3)
    assert argv[:4] == ["ip", "netns", "exec", "pollen-slow-2"]
    assert argv[argv.index("--server") + 1] == "10.77.2.1:9192"
    assert argv[argv.index("--partition-id") + 1] == "2" and "--insecure" not in argv


def _run(codec: str, link: str, secs: list[float], up: int, loss: float) -> dict:
    rounds = [{"round": i, "seconds": s, "clients": 2 if i else 0, "bytes_up": up if i else 0,
               "bytes_down": 1000 if i else 0, "eval_loss": loss + 0.1 * (len(secs) - 1 - i)}
              for i, s in enumerate(secs)]
    return {"codec": codec, "link": link, "rounds": rounds, "wire_up": 5 * up, "wire_down": 9000,
            "tc": None}


def test_steady_seconds_skips_the_joining_round():
    assert slow_link.steady_seconds(_run("none", "1mbit", [4, 30, 10, 12], 1, 1.0)["rounds"]) == 11
    assert slow_link.steady_seconds(_run("none", "1mbit", [4, 30], 1, 1.0)["rounds"]) == 30
    assert slow_link.steady_seconds([{"round": 0, "seconds": 4}]) is None


def test_summary_puts_shaped_and_reference_side_by_side():
    results = [_run("none", "unshaped", [4, 20, 10], 600_000, 1.1),
               _run("none", "1mbit", [4, 30, 18], 600_000, 1.1),
               _run("topz:0.05 > zstd", "1mbit", [4, 25, 12.5], 10_000, 1.2)]
    lines = slow_link.summary_table(results, "1mbit").splitlines()
    assert lines[0].startswith("| codec | s/round 1mbit | s/round unshaped | link cost s |")
    assert len(lines) == 4
    assert lines[2] == ("| `none` | 18.0 | 10.0 | 8.0 | 600,000 | 1,000 | 3,000,000 | 9,000 | "
                        "1.1000 | 1.1000 |")
    assert lines[3] == ("| `topz:0.05 > zstd` | 12.5 | — | — | 10,000 | 1,000 | 50,000 | 9,000 | "
                        "1.2000 | — |")
    detail = slow_link.rounds_table(results).splitlines()
    assert len(detail) == 2 + 9 and "| `none` | 1mbit | 2 | 18.0 | 2 | 600,000 | 1,000 | 1.1000 |" in detail
