"""Run a `lendnet testnet` layout exactly as it was laid out (its configs untouched), as
real processes: on 127.0.0.1 (a `--local` layout), or one network namespace per node
where the layout's hostnames resolve to the namespaces' addresses (a machine layout, as
on N machines). Stopping is Cluster.down's: exactly the processes started, then (netns)
the namespaces, bridge and hosts files are removed.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from lendnet.node.daemon import home as H

from .cluster import Cluster, Member
from .netns import NetnsCluster


class LayoutRun(Cluster):
    """The homes DIR/node0..N-1 of a layout, started with their own configs."""

    def api_host(self, i: int, cfg: H.NodeConfig) -> str:
        return "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host

    def prepare(self, members: list[Member]) -> None:
        """Anything the hosts need before the nodes start (netns: the network)."""

    def start(self, wait_s: float = 60.0) -> list[Member]:
        members = self.members()
        if not members:
            raise FileNotFoundError(f"{self.root} holds no node homes")
        self._procs = {}
        try:
            self.prepare(members)
            for i, m in enumerate(members):
                cfg = H.load_config(m.home)
                m.host, m.port = self.api_host(i, cfg), cfg.port
            self._launch(members, wait_s)
        except BaseException:
            self.down(members)
            raise
        return members


class NetnsLayoutRun(NetnsCluster, LayoutRun):
    """Node i in its own namespace at 10.77.T.(10+i); inside every namespace the layout's
    hostnames (`hostnames[i]`) resolve to those addresses, through the
    /etc/netns/NAME/hosts file `ip netns exec` mounts over /etc/hosts."""

    def __init__(self, root, hostnames: list[str], tag: int | None = None):
        super().__init__(root, tag)
        self.hostnames = list(hostnames)

    def api_host(self, i: int, cfg: H.NodeConfig) -> str:
        return self.host(i)

    def prepare(self, members: list[Member]) -> None:
        n = len(members)
        self._network_up(n)
        lines = ["127.0.0.1 localhost", "::1 localhost"]
        lines += [f"{self.host(i)} {name}" for i, name in enumerate(self.hostnames[:n])]
        for i in range(n):
            d = Path("/etc/netns") / self.ns(i)
            d.mkdir(parents=True, exist_ok=True)
            (d / "hosts").write_text("\n".join(lines) + "\n")

    def teardown(self) -> None:
        super().teardown()
        for i in range(16):
            d = Path("/etc/netns") / self.ns(i)
            if d.is_dir() and {p.name for p in d.iterdir()} <= {"hosts"}:
                shutil.rmtree(d, ignore_errors=True)
