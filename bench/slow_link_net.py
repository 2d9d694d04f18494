"""Emulated client links for bench/slow_link.py: one network namespace + veth pair per client.

Client i lives in namespace `pollen-slow-<i>` and reaches the host (where `pollen server` listens
on 0.0.0.0) over a veth pair: host end `pslow<i>h` = P.<i>.1/24, namespace end `pslow<i>n` =
P.<i>.2/24 (P defaults to 10.77). A tbf qdisc on BOTH ends shapes the down-link (host end egress)
and the up-link (namespace end egress) at the same rate, so every client has its own slow line
and the server's outbound traffic to one client never competes with another's.

Pure helpers (address planning, rate parsing, tc output parsing) need no root and are unit tested;
the rest calls `ip`/`tc` and is only used by the benchmark.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

NS_PREFIX = "pollen-slow-"
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$")
_UNITS = {"bit": 1, "kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}
_TC_SENT = re.compile(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)")


@dataclass(frozen=True)
class Link:
    """One client's line: the namespace it runs in and both ends of its veth pair."""

    index: int
    netns: str
    host_dev: str
    ns_dev: str
    host_ip: str
    ns_ip: str


def plan_links(n: int, prefix: str = "10.77") -> list[Link]:
    """Names and /24 addresses for n clients; client i dials `host_ip` of link i."""
    if not 1 <= n <= 254:
        raise ValueError(f"--clients must be in [1, 254] (one /24 per client), got {n}")
    parts = prefix.split(".")
    if len(parts) != 2 or not all(p.isdigit() and 0 <= int(p) <= 255 for p in parts):
        raise ValueError(f"--prefix must be two octets like 10.77, got {prefix!r}")
    return [Link(i, f"{NS_PREFIX}{i}", f"pslow{i}h", f"pslow{i}n", f"{prefix}.{i}.1",
                 f"{prefix}.{i}.2") for i in range(n)]


def rate_bps(rate: str) -> int:
    """tc rate text (`1mbit`, `512kbit`) in bit/s; tc's own suffixes only, decimal multiples."""
    m = _RATE.match(rate.strip().lower())
    if m is None:
        raise ValueError(f"--rate must look like 1mbit, 512kbit or 10mbit, got {rate!r}")
    bps = int(float(m.group(1)) * _UNITS[m.group(2)])
    if bps < 8_000:
        raise ValueError(f"--rate {rate} is below 8 kbit/s; nothing useful would get through")
    return bps


def burst_bytes(bps: int) -> int:
    """tbf bucket: 32 kbit (the verified 1 Mbit/s setting) or 10 ms of traffic, whichever is larger.

    A bucket smaller than one timer tick of traffic caps the rate below what was asked for."""
    return max(4_000, bps // 800)


def parse_tc_stats(text: str) -> dict[str, int]:
    """Counters of the root qdisc from `tc -s qdisc show dev X` (zeros when none is shaped)."""
    m = _TC_SENT.search(text)
    keys = ("bytes", "packets", "dropped", "overlimits")
    return dict(zip(keys, map(int, m.groups()))) if m else dict.fromkeys(keys, 0)


def stale_indices(netns_list: str, link_list: str) -> set[int]:
    """Client indices that still have a namespace (`ip netns list`) or host end (`ip -o link`)."""
    found = re.findall(rf"^{NS_PREFIX}(\d+)\b", netns_list, re.MULTILINE)
    found += re.findall(r"^\d+: pslow(\d+)h[@:]", link_list, re.MULTILINE)
    return {int(i) for i in found}


def missing_tools() -> list[str]:
    """`ip`/`tc` not found; /usr/sbin and /sbin are added to PATH first (a user's PATH may lack them)."""
    path = os.environ.get("PATH", "")
    extra = [d for d in ("/usr/sbin", "/sbin") if d not in path.split(os.pathsep)]
    os.environ["PATH"] = os.pathsep.join(filter(None, [path, *extra]))
    return [t for t in ("ip", "tc") if shutil.which(t) is None]


@contextmanager
def shielded() -> Iterator[None]:
    """Hold Ctrl-C/SIGTERM/SIGHUP while cleaning up: a second Ctrl-C must not leave half a mess."""
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, check=False, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {res.stderr.strip() or res.stdout.strip()}")
    return res


class SlowLinks:
    """Create the namespaces and veths on enter, remove them (and anything left inside) on exit."""

    def __init__(self, links: list[Link], rate: str) -> None:
        self.links = links
        self.rate = rate
        self._bps = rate_bps(rate)

    def __enter__(self) -> Self:
        self._remove_stale()
        try:
            for ln in self.links:
                _run("ip", "netns", "add", ln.netns)
                _run("ip", "link", "add", ln.host_dev, "type", "veth", "peer", "name", ln.ns_dev)
                _run("ip", "link", "set", ln.ns_dev, "netns", ln.netns)
                _run("ip", "addr", "add", f"{ln.host_ip}/24", "dev", ln.host_dev)
                _run("ip", "link", "set", ln.host_dev, "up")
                _run("ip", "-n", ln.netns, "addr", "add", f"{ln.ns_ip}/24", "dev", ln.ns_dev)
                _run("ip", "-n", ln.netns, "link", "set", ln.ns_dev, "up")
                # The SuperNode's own Runtime API and its ClientApp talk over loopback.
                _run("ip", "-n", ln.netns, "link", "set", "lo", "up")
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def shape(self, on: bool) -> None:
        """tbf on both ends (on) or no qdisc at all (off: the unshaped reference)."""
        for ln in self.links:
            for ns, dev in ((None, ln.host_dev), (ln.netns, ln.ns_dev)):
                pre = ("ip", "netns", "exec", ns) if ns else ()
                _run(*pre, "tc", "qdisc", "del", "dev", dev, "root", check=False)
                if on:
                    _run(*pre, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", self.rate,
                         "burst", str(burst_bytes(self._bps)), "latency", "400ms")

    def tc_stats(self) -> list[dict[str, dict[str, int]]]:
        """Per link: the qdisc counters of the down-link (host end) and up-link (namespace end)."""
        out = []
        for ln in self.links:
            down = _run("tc", "-s", "qdisc", "show", "dev", ln.host_dev, check=False).stdout
            up = _run("ip", "netns", "exec", ln.netns, "tc", "-s", "qdisc", "show", "dev",
                      ln.ns_dev, check=False).stdout
            out.append({"down": parse_tc_stats(down), "up": parse_tc_stats(up)})
        return out

    def wire_bytes(self) -> tuple[int, int]:
        """(up, down) bytes on all host ends so far: everything a client sent / received on its line."""
        up = down = 0
        for ln in self.links:
            stats = Path("/sys/class/net") / ln.host_dev / "statistics"
            up += int((stats / "rx_bytes").read_text())
            down += int((stats / "tx_bytes").read_text())
        return up, down

    def _remove_stale(self) -> None:
        """Leftovers of a run killed with -9 (any client count): our namespaces and host ends."""
        stale = stale_indices(_run("ip", "netns", "list", check=False).stdout,
                              _run("ip", "-o", "link", "show", check=False).stdout)
        SlowLinks(plan_links(max(stale) + 1) if stale else [], self.rate).teardown()
        self.teardown()

    def teardown(self) -> None:
        """Kill what still runs inside our namespaces (all started by this script), then delete."""
        with shielded():
            for ln in self.links:
                for pid in _run("ip", "netns", "pids", ln.netns, check=False).stdout.split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                _run("ip", "netns", "del", ln.netns, check=False)
                _run("ip", "link", "del", ln.host_dev, check=False)  # gone with the netns, normally


def _send(sock: socket.socket, nbytes: int) -> None:
    """Send nbytes, close our direction, wait for the peer's one-byte receipt."""
    sock.sendall(b"\0" * nbytes)
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)


def _receive(sock: socket.socket, nbytes: int) -> None:
    """Read until nbytes arrived (or the peer closed), then send the receipt."""
    got = 0
    while got < nbytes:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += len(chunk)
    sock.sendall(b"k")


def _probe_peer(host: str, port: int, nbytes: int, direction: str) -> None:
    """The namespace end of `probe` (run there as `python slow_link_net.py HOST PORT N DIR`)."""
    with socket.create_connection((host, port), timeout=120) as sock:
        (_send if direction == "up" else _receive)(sock, nbytes)


def probe(link: Link, nbytes: int, direction: str) -> float:
    """Seconds to move `nbytes` over one link, timed from the host end (TCP, payload only)."""
    srv = socket.create_server((link.host_ip, 0))
    port = srv.getsockname()[1]
    result: dict[str, float] = {}

    def serve() -> None:
        conn, _ = srv.accept()
        t0 = time.monotonic()
        with conn:
            (_receive if direction == "up" else _send)(conn, nbytes)
        result["s"] = time.monotonic() - t0

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        subprocess.run(["ip", "netns", "exec", link.netns, sys.executable, __file__,
                        link.host_ip, str(port), str(nbytes), direction], check=True, timeout=300)
        t.join(60)
    finally:
        srv.close()
    if "s" not in result:
        raise RuntimeError(f"link probe ({direction}) through {link.netns} did not finish")
    return result["s"]


if __name__ == "__main__":
    _probe_peer(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
