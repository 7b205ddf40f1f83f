"""Dev clusters, end to end, driven through the `lendnet` command as a user would: a
fast chain clock (`cluster up --time-scale`), the dev faucet (`lendnet faucet`), and
members that come back (`cluster status` shows a killed one dead, `cluster up` starts
just it, `cluster restart NAME`); the faucet refused on a chain that is not a dev one;
`cluster up` interrupted leaves no node behind.

Every node a test starts is stopped by its fixture, even when the test fails: through
`Cluster.down` (the pids recorded in cluster.json) and then any straggler whose command
line names the test's directory.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lendnet.cli.main import main
from lendnet.ledger import keys
from lendnet.node.core.node import Genesis
from lendnet.node.daemon import home as H
from lendnet.node.daemon.client import NodeClient
from lendnet.node.harness.cluster import Cluster
from .waiting import same_chain, until

ROOT = Path(__file__).resolve().parent.parent
SCALE = 2 * 86_400                       # `--time-scale 2d`

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="finds processes through /proc")


def lendnet(*args: str, env: dict | None = None, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "lendnet.cli", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    if check:
        assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p


def as_json(*args: str, **kw) -> dict:
    return json.loads(lendnet(*args, "--json", **kw).stdout)


def _nodes(tag: str) -> list[int]:
    """Live `node start` processes whose command line names tag (a test's directory)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"node\0start\0" in cmd and tag.encode() in cmd:
                pids.append(int(d.name))
    return pids


def _stop_all(home: Path) -> None:
    Cluster(home).down()
    for pid in _nodes(str(home)):              # only ever ours: named by our directory
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    """A 4-node dev cluster with a chain clock of two days a second."""
    home = tmp_path_factory.mktemp("devnet") / "cluster"
    try:
        out = as_json("cluster", "up", "--home", str(home), "--nodes", "4",
                      "--time-scale", "2d")
        yield home, out
    finally:
        _stop_all(home)


@pytest.fixture
def whole(dev):
    """The dev cluster with every member running, whatever a test before left dead."""
    home, out = dev
    lendnet("cluster", "up", "--home", str(home))
    return home, out


def _clients(home: Path) -> dict[str, NodeClient]:
    st = as_json("cluster", "status", "--home", str(home))
    return {r["name"]: NodeClient(r["api"]) for r in st["nodes"]}


def test_up_prints_the_scale_and_the_dev_hints(dev):
    home, out = dev
    assert out["time_scale"] == SCALE and out["started"] == ["node0", "node1", "node2", "node3"]
    assert out["dev_faucet"] == keys.Keypair.from_name("faucet").address
    st = as_json("cluster", "status", "--home", str(home))
    assert st["time_scale"] == SCALE and st["dev"] is True and st["dead"] == []
    assert [r["state"] for r in st["nodes"]] == ["running"] * 4
    text = lendnet("cluster", "status", "--home", str(home)).stdout
    assert "2 chain days a second" in text
    again = lendnet("cluster", "up", "--home", str(home)).stdout   # all running: nothing
    assert "already running" in again and "lendnet faucet" in again
    assert "wallet import registrar --dev --seed-hex" in again
    # the genesis fixes the scale: another one is refused with the reason
    p = lendnet("cluster", "up", "--home", str(home), "--time-scale", "1", check=False)
    assert p.returncode == 1 and "time_scale 172800, not 1" in p.stderr


def test_the_chain_clock_runs_at_the_scale(whole):
    home, _ = whole
    api = _clients(home)["node0"]
    assert api.status()["time_scale"] == SCALE

    def sample():
        """(real time, chain time) as a new block appears: both ends see it as late."""
        h0 = api.status()["height"]
        h = until(lambda: (x := api.status()["height"]) > h0 and x, 30, "a new block")
        return time.monotonic(), api.get(f"/v1/blocks/{h}")["header"]["time"]

    first = sample()
    until(lambda: time.monotonic() - first[0] >= 3, 10, "3 s")
    last = sample()
    rate = (last[1] - first[1]) / (last[0] - first[0])
    assert 0.6 * SCALE < rate < 1.4 * SCALE, rate          # blocks every 250 ms blur it


def test_the_faucet_funds_a_new_wallet(whole, tmp_path):
    home, _ = whole
    clients = _clients(home)
    env = {"LENDNET_WALLETS": str(tmp_path / "wallets")}
    ana = as_json("wallet", "create", "ana", "--dev", env=env)["address"]
    got = as_json("faucet", "--wallet", "ana", "--amount", "1000", "--node",
                  clients["node1"].url, env=env)
    assert got["status"] == "committed" and got["to"] == ana and got["amount"] == 100_000
    assert got["balance"] == 100_000 and got["from"] == H.faucet_address()
    ben = keys.Keypair.generate().address
    got = as_json("faucet", "--to", ben, "--amount", "12.5", "--node", clients["node2"].url)
    assert got["balance"] == 1_250
    same_chain(list(clients.values()), timeout=60)
    for c in clients.values():
        assert c.account(ana)["balance"] == 100_000 and c.account(ben)["balance"] == 1_250
    # calls at once, at different nodes, each get their own nonce of the faucet's
    many = [keys.Keypair.generate().address for _ in range(4)]
    procs = [subprocess.Popen([sys.executable, "-m", "lendnet.cli", "faucet", "--to", a,
                               "--amount", "3", "--json", "--node", c.url], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for a, c in zip(many, clients.values())]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert all(json.loads(o)["status"] == "committed" for o, _ in outs)
    same_chain(list(clients.values()), timeout=60)
    assert [clients["node3"].account(a)["balance"] for a in many] == [300] * 4
    # bounded per call
    p = lendnet("faucet", "--to", ben, "--amount", "100000.01", "--node", clients["node0"].url,
                check=False)
    assert p.returncode == 2 and "at most 100,000.00 LND a call" in p.stderr


def test_a_killed_member_shows_dead_and_up_brings_back_just_it(whole):
    home, _ = whole
    c = Cluster(home)
    before = {m.name: m.pid for m in c.members()}
    c.kill_member("node2", signal.SIGKILL)
    st = as_json("cluster", "status", "--home", str(home))
    assert st["dead"] == ["node2"]
    row = {r["name"]: r for r in st["nodes"]}["node2"]
    assert row["state"] == "dead" and row["running"] is False and row["pid"] == before["node2"]
    assert "dead (pid" in lendnet("cluster", "status", "--home", str(home)).stdout
    # the others go on (3 of 4 are a quorum) and take a transaction node2 must catch up on
    clients = _clients(home)
    got = as_json("faucet", "--to", keys.Keypair.generate().address, "--amount", "1",
                  "--node", clients["node0"].url)
    assert got["status"] == "committed"
    out = as_json("cluster", "up", "--home", str(home))
    assert out["started"] == ["node2"]
    pids = {r["name"]: r["pid"] for r in out["nodes"]}
    assert pids["node2"] != before["node2"]
    assert {n: p for n, p in pids.items() if n != "node2"} == \
        {n: p for n, p in before.items() if n != "node2"}               # not touched
    assert clients["node2"].status()["height"] >= got["height"]        # caught up
    top = same_chain(list(clients.values()), timeout=60)
    assert top >= got["height"]
    st = as_json("cluster", "status", "--home", str(home))
    assert st["dead"] == [] and all(r["state"] == "running" for r in st["nodes"])


def test_a_member_that_cannot_start_again_is_stopped_and_the_others_left_alone(whole):
    home, _ = whole
    c = Cluster(home)
    before = {m.name: m.pid for m in c.members()}
    port = c.kill_member("node3", signal.SIGKILL).port
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def take_port() -> bool:         # once the kernel has let go of node3's sockets
        try:
            squatter.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True

    try:
        until(take_port, 60, f"port {port} free to take")   # someone takes node3's port
        squatter.listen()
        p = lendnet("cluster", "up", "--home", str(home), "--wait", "30", check=False)
        assert p.returncode == 1 and "node3 exited" in p.stderr, p.stderr
        st = {r["name"]: r for r in as_json("cluster", "status", "--home", str(home))["nodes"]}
        assert st["node3"]["state"] == "stopped"
        assert {n: r["pid"] for n, r in st.items() if n != "node3"} == \
            {n: p for n, p in before.items() if n != "node3"}
    finally:
        squatter.close()
    out = as_json("cluster", "up", "--home", str(home))
    assert out["started"] == ["node3"]
    same_chain(list(_clients(home).values()), timeout=60)


def test_up_refuses_to_start_a_member_someone_started_by_hand(whole):
    home, _ = whole
    c = Cluster(home)
    m = c.kill_member("node1", signal.SIGKILL)
    # the workaround: the member started by hand in another terminal
    by_hand = subprocess.Popen([sys.executable, "-m", "lendnet.cli", "node", "start",
                                "--home", str(m.home)], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        until(lambda: m.status(), 60, "the node started by hand answers")
        p = lendnet("cluster", "up", "--home", str(home), check=False)
        assert p.returncode == 1, p.stdout
        assert f"in use by another process (pid {by_hand.pid})" in p.stderr, p.stderr
        assert as_json("cluster", "status", "--home", str(home))["dead"] == ["node1"]
    finally:
        by_hand.terminate()
        try:
            by_hand.wait(30)
        except subprocess.TimeoutExpired:
            by_hand.kill()
            by_hand.wait()
    assert as_json("cluster", "up", "--home", str(home))["started"] == ["node1"]
    same_chain(list(_clients(home).values()), timeout=60)


def test_restart_one_member(whole):
    home, _ = whole
    before = {m.name: m.pid for m in Cluster(home).members()}
    out = as_json("cluster", "restart", "1", "--home", str(home))
    assert out["name"] == "node1" and out["pid"] != before["node1"] and out["height"] >= 1
    after = {m.name: m.pid for m in Cluster(home).members()}
    assert {n: p for n, p in after.items() if n != "node1"} == \
        {n: p for n, p in before.items() if n != "node1"}
    assert before["node1"] not in _nodes(str(home))                    # the old one is gone
    same_chain(list(_clients(home).values()), timeout=60)
    p = lendnet("cluster", "restart", "node9", "--home", str(home), check=False)
    assert p.returncode == 1 and "no node9" in p.stderr


@pytest.fixture
def real_chain(tmp_path):
    """One validator on a genesis that funds alice but not the dev faucet."""
    root = tmp_path / "real"
    kp = keys.Keypair.generate()
    g = Genesis("lendnet-real", int(time.time()),
                {keys.Keypair.from_name("alice").address: 10**9}, (kp.pubkey,),
                dict(H.DAEMON_PARAMS))
    H.init_home(root / "node0", H.NodeConfig(), kp=kp, genesis=g)
    try:
        members = Cluster(root).up(1, wait_s=60)
        yield root, NodeClient(members[0].api)
    finally:
        _stop_all(root)


def test_the_faucet_is_refused_on_a_chain_that_is_not_a_dev_one(real_chain):
    root, api = real_chain
    st = api.status()
    assert st["dev_faucet"] is None and st["time_scale"] == 1
    p = lendnet("faucet", "--to", keys.Keypair.generate().address, "--amount", "1",
                "--node", api.url, check=False)
    assert p.returncode == 1
    assert "not a dev chain" in p.stderr and "'lendnet-real'" in p.stderr, p.stderr
    assert api.account(H.faucet_address())["nonce"] == 0            # nothing was sent
    p = lendnet("cluster", "up", "--home", str(root), "--time-scale", "2d", check=False)
    assert p.returncode == 1 and "dev clusters only" in p.stderr
    st = as_json("cluster", "status", "--home", str(root))
    assert st["dev"] is False and st["time_scale"] == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_up_interrupted_while_it_starts_the_cluster_leaves_no_node(tmp_path, sig):
    home = tmp_path / "cluster"
    p = subprocess.Popen([sys.executable, "-m", "lendnet.cli", "cluster", "up", "--home",
                          str(home), "--nodes", "4"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        until(lambda: (home / "cluster.json").exists(), 60, "the first node recorded")
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 128 + sig, err
        assert "interrupted" in err
        assert _nodes(str(home)) == []
        st = as_json("cluster", "status", "--home", str(home))
        assert all(r["state"] == "stopped" for r in st["nodes"])
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        _stop_all(home)


def test_bad_options_are_explained():
    r = CliRunner().invoke(main, ["cluster", "up", "--time-scale", "0"])
    assert r.exit_code == 2 and "from 1 (real time)" in r.output
    r = CliRunner().invoke(main, ["cluster", "up", "--time-scale", "fast"])
    assert r.exit_code == 2 and "172800" in r.output
    r = CliRunner().invoke(main, ["faucet", "--amount", "1"])
    assert r.exit_code == 2 and "exactly one of --to" in r.output
    r = CliRunner().invoke(main, ["faucet", "--to", "ln00", "--amount", "1"])
    assert r.exit_code == 2 and "not an address" in r.output
    for cmd in (["faucet"], ["cluster", "up"], ["cluster", "restart"], ["cluster", "status"]):
        r = CliRunner().invoke(main, [*cmd, "--help"])
        assert r.exit_code == 0 and "--json" in r.output
    assert "dev chain" in CliRunner().invoke(main, ["faucet", "--help"]).output
    assert "dead" in CliRunner().invoke(main, ["cluster", "status", "--help"]).output


def test_status_shows_a_pruned_member_and_the_archive_ones(whole):
    home, _ = whole
    node1 = home / "node1"
    cfg = H.load_config(node1)
    cfg.keep_blocks = 256                        # the least a default window allows
    H.write_config(node1, cfg)
    try:
        lendnet("cluster", "restart", "1", "--home", str(home), "--json")
        rows = {r["name"]: r for r in as_json("cluster", "status", "--home", str(home))["nodes"]}
        assert rows["node1"]["keeps"] == "pruned (last 256, from height 1)", rows["node1"]
        assert (rows["node1"]["archive"], rows["node1"]["keep_blocks"]) == (False, 256)
        assert [rows[n]["keeps"] for n in ("node0", "node2", "node3")] == ["archive"] * 3
        text = lendnet("cluster", "status", "--home", str(home)).stdout
        assert "node1 pruned (last 256, from height 1)" in text and "node0 archive" in text
    finally:
        cfg.keep_blocks = 0                      # the others' tests expect archives
        H.write_config(node1, cfg)
        lendnet("cluster", "restart", "1", "--home", str(home), check=False)
