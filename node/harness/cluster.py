"""Local clusters: N node homes with a shared genesis, run as N real processes.

    DIR/cluster.json         the processes this cluster started: pid, port, home
    DIR/node0 ... nodeN-1    node homes (key, config, genesis, node.db, node.log)

`up` creates the homes on first use and reuses them afterwards (the chain continues),
picks free 127.0.0.1 ports, starts the processes in their own sessions, and waits
until every node has committed a block. `down` stops exactly the processes recorded in
cluster.json — each checked to still be a lendnet node of that home, so a recycled pid
is never signalled — and any this object started that the file does not list yet.

An interruption cannot lose a node: SIGINT and SIGTERM are held (recorded, delivered
afterwards) from the moment a process is forked until it is recorded, and while `down`
runs (a second one there skips the grace period and kills at once). A `tied` cluster's
nodes also get SIGTERM from the kernel if the process that started them dies, however
it dies (Linux; elsewhere `tied` only does the rest) — for clusters that must not
outlive their command, like `lendnet demo`'s; `lendnet cluster up` leaves its running.
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lendnet.ledger import keys
from lendnet.node.core.node import Genesis
from lendnet.node.daemon import home as H
from lendnet.node.daemon.client import http_json

HOST = "127.0.0.1"


class ClusterError(RuntimeError):
    pass


class HeldSignals:
    """`with HeldSignals() as held:` SIGINT and SIGTERM that arrive inside the block are
    recorded in `held.pending` instead of running their handlers, then re-raised, in
    order, once the previous handlers are back. Nests. Only the main thread runs Python
    signal handlers, so elsewhere there is nothing to hold and this does nothing.

    (Not `pthread_sigmask`: a child forked while the mask blocks SIGTERM would inherit the
    blocked mask through exec, and could then only be stopped with SIGKILL.)"""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> HeldSignals:
        self.pending: list[int] = []
        self._saved: list[tuple[int, object]] = []
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._saved.append((sig, signal.signal(sig, self._hold)))
        return self

    def _hold(self, signum, frame) -> None:
        self.pending.append(signum)

    def __exit__(self, *exc) -> None:
        self._restore(self._saved)
        for sig in dict.fromkeys(self.pending):
            signal.raise_signal(sig)

    @classmethod
    def _restore(cls, saved: list) -> None:
        # Each restore in a `finally` of the one before: a handler put back first that
        # raises (a signal caught in between) cannot leave the others held forever.
        if saved:
            (sig, handler), rest = saved[0], saved[1:]
            try:
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)
            finally:
                cls._restore(rest)


PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """A preexec_fn asking the kernel to SIGTERM the child when this process (its
    spawning thread) dies; None where that is not available (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl     # looked up before the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0 \
                and os.getppid() != parent:
            os._exit(1)            # the parent died before the request took: go with it
    return preexec


def store_holder(home: Path) -> int | str | None:
    """Who holds the node store's lock in `home` (node/daemon/sqlstore.py): its pid as
    written in the lock file ("?" if unreadable), or None if no process does."""
    path = home / "node.db.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else "?"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def free_ports(n: int) -> list[int]:
    """Ask the OS for n free ports (held open together, so they are distinct)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Member:
    name: str
    home: Path
    pid: int | None = None
    port: int | None = None
    host: str = HOST

    @property
    def api(self) -> str:
        return f"http://{self.host}:{self.port}"

    proc: subprocess.Popen | None = None     # set when this very process started it

    def alive(self) -> bool:
        """Is our process still running (and still the lendnet node of this home)?"""
        if self.proc is not None:
            return self.proc.poll() is None
        if not self.pid:
            return False
        try:
            cmd = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return b"start" in cmd and str(self.home).encode() in cmd

    def state(self) -> str:
        """running; dead (its recorded process is gone: killed, crashed, not stopped
        by `down`); stopped (by `down`, or never started)."""
        if self.alive():
            return "running"
        return "dead" if self.pid else "stopped"

    def status(self, timeout: float = 1.0) -> dict | None:
        try:
            code, body = http_json(self.api + "/v1/status", timeout)
        except (OSError, ValueError):
            return None
        return body if code == 200 else None


class Cluster:
    def __init__(self, root: Path, tied: bool = False):
        """`tied`: the nodes die with this process, even if it is SIGKILLed (Linux)."""
        self.root = Path(root)
        self.file = self.root / "cluster.json"
        self.tied = tied
        self._procs: dict[str, subprocess.Popen] = {}   # what this object started

    # --- what is on disk ---------------------------------------------------------------

    def members(self) -> list[Member]:
        if self.file.exists():
            data = json.loads(self.file.read_text())
            out = [Member(m["name"], Path(m["home"]), m.get("pid"), m.get("port"),
                          host=m.get("host", HOST)) for m in data["nodes"]]
            for m in out:
                proc = self._procs.get(m.name)
                if proc is not None and proc.pid == m.pid:
                    m.proc = proc
            return out
        homes = sorted(p for p in self.root.glob("node*") if (p / "node.key").exists())
        return [Member(p.name, p) for p in sorted(homes, key=lambda p: int(p.name[4:]))]

    def _save(self, members: list[Member]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"nodes": [
            {"name": m.name, "home": str(m.home), "pid": m.pid, "port": m.port,
             "host": m.host}
            for m in members]}, indent=2))
        os.replace(tmp, self.file)

    def _create(self, n: int, params: dict | None = None) -> list[Member]:
        kps = [keys.Keypair.generate() for _ in range(n)]
        genesis = Genesis("lendnet-dev", int(time.time()), H.dev_balances(),
                          tuple(k.pubkey for k in kps), {**H.DAEMON_PARAMS, **(params or {})},
                          lending=H.dev_lending())
        members = []
        for i, kp in enumerate(kps):
            home = (self.root / f"node{i}").resolve()
            H.init_home(home, H.NodeConfig(HOST, 0, []), kp=kp, genesis=genesis)
            members.append(Member(f"node{i}", home))
        return members

    # --- up / down ---------------------------------------------------------------------

    def up(self, n: int | None = None, wait_s: float = 60.0, extra_args: dict | None = None,
           params: dict | None = None, admin: bool = False,
           config: dict | None = None) -> list[Member]:
        """Start (creating if need be, with these consensus `params` in its genesis) an
        n-node cluster; return once all commit. `config`: more NodeConfig fields for
        every node (e.g. api_exempt). `n` None: the existing cluster's size, else 4.

        On a cluster some of whose members still run, start only the others (members
        that died or were stopped), on their recorded ports, and return once they have
        caught up with the running ones; the running ones are not touched."""
        members = self.members()
        if members and n is not None and len(members) != n:
            raise ClusterError(f"{self.root} holds a {len(members)}-node cluster; use "
                               f"--nodes {len(members)} or another --home")
        if members and params:
            self.check_params(params)
        running = [m for m in members if m.alive()]
        if running:
            return self.revive(members, [m for m in members if not m.alive()], wait_s,
                               extra_args)
        if not members:
            members = self._create(4 if n is None else n, params)
        n = len(members)
        self._procs = {}
        addrs = self.addresses(n)
        named = [H.peer_string(H.load_key(m.home).pubkey, h, p)
                 for m, (h, p) in zip(members, addrs)]
        for m, (host, port), me in zip(members, addrs, named):
            m.host, m.port = host, port
            peers = [p for p in named if p != me]      # each checked against its key
            H.write_config(m.home, H.NodeConfig(host, port, peers, admin, **(config or {})))
        try:
            self._launch(members, wait_s, extra_args)
        except BaseException:
            self.down(members)
            raise
        return members

    def _launch(self, members: list[Member], wait_s: float,
                extra_args: dict | None = None) -> None:
        """Start every member (each recorded on disk before an interruption can end us)
        and wait until all have committed a block."""
        for m in members:
            with HeldSignals():
                self._spawn(m, (extra_args or {}).get(m.name, []))
                self._save(members)
        self.wait_until(lambda: all((m.status() or {}).get("height", 0) >= 1
                                    for m in members), wait_s, members)

    def genesis(self) -> Genesis | None:
        """The cluster's genesis (node0's), or None before the homes exist."""
        members = self.members()
        if not members or not (members[0].home / "genesis.json").exists():
            return None
        return H.load_genesis(members[0].home)

    def check_params(self, params: dict) -> None:
        """An existing cluster's genesis fixes its consensus parameters: refuse to start
        it with others (a new `--time-scale` needs a new home)."""
        g = self.genesis()
        if g is None:
            return
        cfg = g.config()
        for k, v in params.items():
            if getattr(cfg, k) != v:
                raise ClusterError(
                    f"the cluster in {self.root} was created with {k} {getattr(cfg, k)}, "
                    f"not {v}: its genesis fixes it. Start it without that option, or "
                    f"make a new cluster with another --home (or `lendnet cluster down` "
                    f"and remove {self.root})")

    def revive(self, members: list[Member], dead: list[Member], wait_s: float = 60.0,
               extra_args: dict | None = None) -> list[Member]:
        """Start the `dead` members (on their recorded ports, with their configs as
        they are, so the running members' peer lists still hold) and wait until each
        has caught up with the highest running member. If that fails or is interrupted,
        stop only what this call started."""
        if not dead:
            return members
        for m in dead:
            holder = store_holder(m.home)
            if holder is not None:
                raise ClusterError(
                    f"{m.name}'s store is in use by another process (pid {holder}), not one "
                    f"this cluster started (a node started by hand with `lendnet node start "
                    f"--home {m.home}`?); stop it, then start the cluster's {m.name} again")
        others = [m for m in members if m not in dead and m.alive()]
        target = max([(m.status() or {}).get("height", 0) for m in others] + [1])
        started: list[Member] = []
        try:
            for m in dead:
                if not m.port:
                    raise ClusterError(f"{m.name} has no recorded port; `lendnet cluster "
                                       f"down --home {self.root}` and `up` again")
                with HeldSignals():
                    self._spawn(m, (extra_args or {}).get(m.name, []))
                    started.append(m)
                    self._save(members)
            self.wait_until(lambda: all((m.status() or {}).get("height", 0) >= target
                                        for m in dead), wait_s, dead)
        except BaseException:
            self.down(members, only={m.name for m in started})
            raise
        return members

    def restart(self, name: str, wait_s: float = 60.0) -> Member:
        """Stop member `name` if it runs (SIGTERM, then SIGKILL after 10 s) and start it
        again; return once it has caught up with the others."""
        members = self.members()
        m = next((x for x in members if x.name == name), None)
        if m is None:
            raise ClusterError(f"no {name} in {self.root} (nodes: "
                               f"{', '.join(x.name for x in members) or 'none'})")
        if len(members) > 1 and not any(x.alive() for x in members if x is not m):
            raise ClusterError(f"no other member of the cluster in {self.root} is running: "
                               f"`lendnet cluster up --home {self.root}` starts them all")
        if m.alive():
            self.down(members, only={name})
        self.revive(members, [m], wait_s)
        return m

    def addresses(self, n: int) -> list[tuple[str, int]]:
        """Where the nodes listen: free ports on 127.0.0.1 (NetnsCluster: own hosts)."""
        return [(HOST, p) for p in free_ports(n)]

    def prefix(self, m: Member) -> list[str]:
        """What the node's command runs under (NetnsCluster: its network namespace)."""
        return []

    def _spawn(self, m: Member, extra: list[str]) -> None:
        """Start m's process and record it in self._procs, which `down` always covers;
        an interruption in between is held until it is recorded."""
        preexec = _die_with_parent() if self.tied else None
        log = open(m.home / "node.log", "ab")
        try:
            with HeldSignals():
                m.proc = subprocess.Popen(
                    [*self.prefix(m), sys.executable, "-m", "lendnet.cli", "node", "start",
                     "--home", str(m.home),
                     "--log-format", "json", *extra],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=preexec)
                m.pid = m.proc.pid
                self._procs[m.name] = m.proc
        finally:
            log.close()

    def start_member(self, name: str, extra: list[str] = ()) -> Member:
        """(Re)start one stopped member on its recorded port."""
        members = self.members()
        m = next(x for x in members if x.name == name)
        if m.alive():
            raise ClusterError(f"{name} is already running (pid {m.pid})")
        with HeldSignals():
            self._spawn(m, list(extra))
            self._save(members)
        return m

    def kill_member(self, name: str, sig: int = signal.SIGKILL) -> Member:
        """Signal one member; for SIGKILL/SIGTERM, wait until it is gone."""
        m = next(x for x in self.members() if x.name == name)
        if not m.alive():
            raise ClusterError(f"{name} is not running")
        os.kill(m.pid, sig)
        deadline = time.monotonic() + 10
        while sig in (signal.SIGKILL, signal.SIGTERM) and m.alive() \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        if sig in (signal.SIGKILL, signal.SIGTERM) and m.alive():
            raise ClusterError(f"{name} (pid {m.pid}) still runs 10 s after signal {sig}")
        return m

    def wait_until(self, cond, wait_s: float, members: list[Member]) -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            dead = [m for m in members if m.pid and not m.alive()]
            if dead:
                raise ClusterError(f"{dead[0].name} exited; last log lines:\n"
                                   + self.log_tail(dead[0], 15))
            if cond():
                return
            time.sleep(0.1)
        raise ClusterError(f"the cluster did not get there within {wait_s:.0f} s")

    def down(self, members: list[Member] | None = None, grace_s: float = 10.0,
             only: set[str] | None = None) -> list[str]:
        """Stop every process this cluster started (only those; with `only`, only the
        members so named); return their names. SIGINT/SIGTERM wait until it is done; one
        arriving during the grace period SIGKILLs what is left at once."""
        with HeldSignals() as held:
            members = members if members is not None else self.members()
            known = {m.pid for m in members if m.pid}
            unlisted = [Member(name, self.root / name, proc.pid, proc=proc)
                        for name, proc in self._procs.items() if proc.pid not in known]
            ours = [m for m in members + unlisted
                    if m.alive() and (only is None or m.name in only)]
            for m in ours:
                os.kill(m.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and not held.pending \
                    and any(m.alive() for m in ours):
                self._reap(ours)
                time.sleep(0.05)
            for m in ours:
                if m.alive():
                    os.kill(m.pid, signal.SIGKILL)
            self._reap(ours)
            for m in members:
                if only is None or m.name in only:
                    m.pid = None
            if self.file.exists() or members:
                self._save(members)
            return [m.name for m in ours]

    @staticmethod
    def _reap(members: list[Member]) -> None:
        # Children of this process (tests, `up` failing) must be waited for, or they
        # linger as zombies.
        for m in members:
            if m.proc is not None:
                m.proc.poll()

    @staticmethod
    def log_tail(m: Member, lines: int = 50) -> str:
        path = m.home / "node.log"
        if not path.exists():
            return "(no log yet)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
