"""A cluster whose nodes are separate hosts: one Linux network namespace per node, each
with its own address on a bridge (veth pairs), set up and torn down here. It shows the
same config — peers as pubkey@host:port — running across machines. Partitions are
blackhole routes inside the namespaces (no iptables needed); it needs root and `ip`.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from .cluster import Cluster, Member

PORT = 7000


class NetnsUnavailable(RuntimeError):
    pass


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    if check and r.returncode != 0:
        raise NetnsUnavailable(f"`{' '.join(cmd)}` failed: {r.stderr.strip()}")
    return r


def available() -> str | None:
    """None if namespaces can be used here, else why not (for a clear skip)."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"lendnet-probe-{os.getpid()}"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class NetnsCluster(Cluster):
    def __init__(self, root, tag: int | None = None):
        super().__init__(root)
        self.tag = (os.getpid() if tag is None else tag) % 200 + 20
        self.subnet = f"10.77.{self.tag}"
        self.bridge = f"lnb{self.tag}"
        self.n = 0
        self.blocked: set[tuple[int, int]] = set()

    def ns(self, i: int) -> str:
        return f"lendnet-{self.tag}-{i}"

    def host(self, i: int) -> str:
        return f"{self.subnet}.{10 + i}"

    def addresses(self, n: int) -> list[tuple[str, int]]:
        self._network_up(n)
        return [(self.host(i), PORT) for i in range(n)]

    def prefix(self, m: Member) -> list[str]:
        return ["ip", "netns", "exec", self.ns(int(m.name[4:]))]

    def _network_up(self, n: int) -> None:
        why = available()
        if why:
            raise NetnsUnavailable(why)
        self.teardown()                                  # leftovers of a crashed run
        self.n = n
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(n):
            ns, outer, inner = self.ns(i), f"lnh{self.tag}x{i}", f"lnn{self.tag}x{i}"
            _ip("netns", "add", ns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", outer, "master", self.bridge)
            _ip("link", "set", outer, "up")
            _ip("link", "set", inner, "netns", ns)
            _ip("addr", "add", f"{self.host(i)}/24", "dev", inner, ns=ns)
            _ip("link", "set", inner, "up", ns=ns)
            _ip("link", "set", "lo", "up", ns=ns)

    def cut(self, i: int, j: int) -> None:
        """i can no longer reach j (one way): a blackhole route in i's namespace."""
        if (i, j) not in self.blocked:
            _ip("route", "add", "blackhole", f"{self.host(j)}/32", ns=self.ns(i))
            self.blocked.add((i, j))

    def partition(self, side: set[int]) -> None:
        for i in range(self.n):
            for j in range(self.n):
                if (i in side) != (j in side):
                    self.cut(i, j)

    def heal_network(self) -> None:
        for i, j in sorted(self.blocked):
            _ip("route", "del", "blackhole", f"{self.host(j)}/32", ns=self.ns(i), check=False)
        self.blocked.clear()

    def teardown(self) -> None:
        """Remove the namespaces, veths and bridge of this tag (processes must be down)."""
        for i in range(16):
            _ip("netns", "del", self.ns(i), check=False)
            _ip("link", "del", f"lnh{self.tag}x{i}", check=False)
        _ip("link", "del", self.bridge, check=False)

    def down(self, members=None, grace_s: float = 10.0) -> list[str]:
        try:
            return super().down(members, grace_s)
        finally:
            self.teardown()
