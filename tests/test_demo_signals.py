"""An interrupted `lendnet demo` leaves no node process behind: Ctrl-C or SIGTERM at any
moment (while its cluster starts, mid scenario), or even SIGKILL. And the pieces of
node/harness/cluster.py that make it so: no child lost between fork and record, a `down` that a
second signal hurries instead of aborting, `lendnet cluster up` nodes that outlive it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lendnet.node.harness.cluster import Cluster, Member
from .waiting import until

ROOT = Path(__file__).resolve().parent.parent
POPEN = subprocess.Popen          # the real one, for when a test stands in for it

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="finds processes through /proc")


def _nodes(tag: str) -> list[int]:
    """Live `node start` processes whose command line mentions tag (a test's tmp dir)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()           # empty for a zombie
        except OSError:
            continue
        if b"node\0start\0" in cmd and tag.encode() in cmd:
            pids.append(int(d.name))
    return pids


class Run:
    """A `lendnet` command in its own session (a terminal's foreground group), its work
    dir under tmp_path (TMPDIR), its output collected line by line."""

    def __init__(self, tmp_path: Path, *args: str):
        self.tag = str(tmp_path)
        self.lines: list[str] = []
        self.p = subprocess.Popen(
            [sys.executable, "-m", "lendnet.cli", *args], cwd=ROOT,
            env={**os.environ, "TMPDIR": self.tag, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def close(self) -> None:
        """Whatever happened: nothing this run started survives it."""
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait(10)
        for pid in _nodes(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.reader.join(5)


MOMENTS = {
    # a node process exists: the demo is spawning the rest or waiting for them to commit
    "starting": lambda run: _nodes(run.tag),
    # the scenario has begun
    "mid-scenario": lambda run: any("wallets created" in ln for ln in run.lines),
}


@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupted_demo_leaves_no_node(tmp_path, sig, moment):
    run = Run(tmp_path, "demo")
    try:
        until(lambda: MOMENTS[moment](run) or run.p.poll() is not None, 30,
               f"the demo reaching {moment}")
        assert run.p.poll() is None, run.output()
        if sig == signal.SIGINT:
            os.killpg(run.p.pid, sig)                   # Ctrl-C: the whole foreground group
        else:
            run.p.send_signal(sig)
        assert run.p.wait(15) == 128 + sig, run.output()
        run.reader.join(5)
        assert run.lines[-1] == "interrupted: cluster stopped", run.output()
        assert "Traceback" not in run.output()
        until(lambda: not _nodes(run.tag), 5, "the demo's nodes gone")
    finally:
        run.close()


def test_killed_demo_takes_its_nodes_along(tmp_path):
    """SIGKILL runs no cleanup: the nodes go because the kernel tells them (PDEATHSIG)."""
    run = Run(tmp_path, "demo")
    try:
        until(lambda: any("validators committing" in ln for ln in run.lines)
               or run.p.poll() is not None, 30, "the demo's cluster up")
        assert len(_nodes(run.tag)) == 4, run.output()
        run.p.kill()
        run.p.wait(5)
        until(lambda: not _nodes(run.tag), 15, "the killed demo's nodes gone")
    finally:
        run.close()


def test_cluster_up_nodes_outlive_the_command(tmp_path):
    """Only the demo ties its nodes to itself: `lendnet cluster up` must leave them running."""
    home = tmp_path / "c"
    run = Run(tmp_path, "cluster", "up", "--nodes", "4", "--home", str(home))
    try:
        assert run.p.wait(60) == 0, run.output()
        time.sleep(0.5)       # a tied node would be getting its SIGTERM now (none may come)
        assert len(_nodes(run.tag)) == 4
        assert "stopped 4 node(s)" in subprocess.run(
            [sys.executable, "-m", "lendnet.cli", "cluster", "down", "--home", str(home)],
            cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
        assert not _nodes(run.tag)
    finally:
        run.close()


def _sleeper(ignore_term: bool = False) -> subprocess.Popen:
    code = "import signal, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('ready', flush=True)\ntime.sleep(60)\n"
    p = POPEN([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\n"          # its handlers are in place
    return p


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt in this process, as in an interactive shell, even
    when it was started with SIGINT ignored (as a shell's background job is: CI may run
    the suite that way)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_signal_between_fork_and_record_loses_no_child(tmp_path, monkeypatch, ctrl_c_raises):
    """Ctrl-C landing just as Popen returns, before `_spawn` records the child: `up`
    still knows the child and stops it."""
    started: list[subprocess.Popen] = []

    def popen(*args, **kwargs):
        started.append(_sleeper())
        signal.raise_signal(signal.SIGINT)
        return started[-1]

    monkeypatch.setattr("lendnet.node.harness.cluster.subprocess.Popen", popen)
    c = Cluster(tmp_path / "c")
    try:
        with pytest.raises(KeyboardInterrupt):
            c.up(4, wait_s=5)
        assert len(started) == 1                   # interrupted after the first spawn...
        assert started[0].poll() is not None       # ...which `up` stopped on its way out
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_signal_during_down_kills_at_once_then_is_delivered(tmp_path, ctrl_c_raises):
    """A second Ctrl-C while `down` waits for a node does not abort `down` (which would
    leave the node running): it skips the grace period, then is raised."""
    p = _sleeper(ignore_term=True)
    c = Cluster(tmp_path / "c")
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    try:
        t0 = time.monotonic()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            c.down([Member("node0", tmp_path / "c" / "node0", p.pid, proc=p)], grace_s=30)
        assert p.wait(5) == -signal.SIGKILL
        assert time.monotonic() - t0 < 10
    finally:
        timer.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
