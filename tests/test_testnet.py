"""Real networks: `lendnet genesis new`, `lendnet testnet` (homes for N machines, a
compose file), the Dockerfile, and a generated layout run as real processes: on
127.0.0.1 (`--local`) and, where namespaces are available, each node in its own network
namespace resolving its peers' hostnames, as on N machines."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lendnet.cli.main import main
from lendnet.ledger import keys
from lendnet.ledger import tx as txm
from lendnet.node.daemon import home as H
from lendnet.node.daemon import network as N
from lendnet.node.daemon.client import NodeClient

ROOT = Path(__file__).resolve().parent.parent
A = keys.Keypair.generate()
B = keys.Keypair.generate()
V = [keys.Keypair.generate() for _ in range(4)]


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _val(i: int, port: int = 26656) -> str:
    return f"{V[i].pubkey.hex()}@host{i}.example:{port}"


# --- genesis new ----------------------------------------------------------------------------

def test_genesis_new_builds_a_genesis_with_only_what_it_was_given(tmp_path):
    out = tmp_path / "genesis.json"
    r = _cli("genesis", "new", "--chain-id", "realnet-1", *sum((["--validator", _val(i)]
                                                              for i in range(4)), []),
             "--balance", f"{A.address}=1000", "--balance", f"{B.address}=12.5",
             "--appraiser", A.address, "--registrar", B.address, "--max-rate-bps", "3600",
             "--min-gas-price", "2", "--byte-price", "1", "--time", "1767225600",
             "--param", "view_timeout_ms=4000",
             "--out", out, "--json")
    assert r.exit_code == 0, r.output
    shown = json.loads(r.output)
    assert shown["peers"] == [_val(i) for i in range(4)]
    assert shown["supply"] == 100_000 + 1_250
    g = H.load_genesis_file(out)                      # what a node reads, checked
    assert g.chain_id == "realnet-1" and g.time == 1767225600
    assert g.validators == tuple(v.pubkey for v in V)
    assert g.balances == {A.address: 100_000, B.address: 1_250}
    dev = set(H.dev_balances())
    assert not dev & set(g.balances)                  # no demo account, no dev registrar
    assert g.lending["appraisers"] == [A.address] and g.lending["registrars"] == [B.address]
    assert g.lending["max_rate_bps"] == 3600
    assert g.fees == {"min_gas_price": 2, "byte_price": 1}
    assert g.params == {**H.DAEMON_PARAMS, "view_timeout_ms": 4000}
    # a node joins with it
    home = tmp_path / "n"
    r = _cli("node", "init", "--home", home, "--genesis", out, "--peer", _val(1), "--json")
    assert r.exit_code == 0, r.output
    assert H.load_genesis(home) == g and json.loads(r.output)["validator"] is False


def test_genesis_new_takes_bare_keys_and_no_lending_roles(tmp_path):
    out = tmp_path / "g.json"
    r = _cli("genesis", "new", "--chain-id", "x", "--validator", V[0].pubkey.hex(),
             "--balance", f"{A.address}=1", "--out", out)
    assert r.exit_code == 0, r.output
    g = H.load_genesis_file(out)
    assert g.lending["appraisers"] == [] and g.lending["registrars"] == []
    assert "1 validator(s), 1 funded account(s)" in r.output


@pytest.mark.parametrize("args, says", [
    ([*sum((["--validator", _val(i)] for i in range(3)), []), "--validator", _val(0, 1)],
     "given twice"),
    ([*sum((["--validator", _val(i)] for i in range(3)), []),
      "--validator", f"{V[3].pubkey.hex()}@HOST0.example:26656"], "are both at"),
    (["--validator", _val(0), "--validator", _val(1)], "use 1, 4, 7"),
    (["--validator", "abc@h:1"], "public key"),
    (["--validator", f"{V[0].pubkey.hex()}@h"], "PUBKEYHEX@host:port"),
    (["--validator", f"{V[0].pubkey.hex()}@h:0"], "port 0"),
    (["--validator", "zz"], "PUBKEYHEX@HOST:PORT"),
    (["--validator", _val(0), "--balance", f"{A.address}=1", "--balance", f"{A.address}=2"],
     "balance twice"),
    (["--validator", _val(0), "--balance", "alice=1"], "not an address"),
    (["--validator", _val(0), "--balance", f"{A.address}"], "ADDRESS=AMOUNT"),
    (["--validator", _val(0), "--balance", f"{A.address}=0"], "above zero"),
    (["--validator", _val(0), "--balance", f"{A.address}=-5"], "amount"),
    (["--validator", _val(0), "--balance", f"{A.address}=1.001"], "amount"),
    (["--validator", _val(0), "--appraiser", "bob"], "appraiser 'bob' is not an address"),
    (["--validator", _val(0), "--registrar", A.address, "--registrar", A.address],
     "registrar is given twice"),
    (["--validator", _val(0), "--max-rate-bps", "999999999"], "max_rate_bps"),
    (["--validator", _val(0), "--min-gas-price", "-1"], "min_gas_price"),
    (["--validator", _val(0), "--param", "view_timeout_ms=1"], "view_timeout_ms"),
    (["--validator", _val(0), "--param", "nonsense=1"], "unknown consensus parameters"),
    (["--validator", _val(0), "--param", "window"], "NAME=INTEGER"),
])
def test_genesis_new_refuses_what_is_wrong_and_says_why(tmp_path, args, says):
    out = tmp_path / "g.json"
    r = _cli("genesis", "new", "--chain-id", "x", *args, "--out", out)
    assert r.exit_code != 0
    assert says in r.output, r.output
    assert not out.exists()


def test_genesis_new_needs_a_chain_id_and_never_overwrites(tmp_path):
    out = tmp_path / "g.json"
    r = _cli("genesis", "new", "--validator", _val(0), "--out", out)
    assert r.exit_code != 0 and "--chain-id" in r.output
    r = _cli("genesis", "new", "--chain-id", " x", "--validator", _val(0), "--out", out)
    assert r.exit_code != 0 and "chain id" in r.output
    out.write_text("{}")
    r = _cli("genesis", "new", "--chain-id", "x", "--validator", _val(0), "--out", out)
    assert r.exit_code != 0 and "refusing to overwrite" in r.output
    assert out.read_text() == "{}"


def test_genesis_new_warns_when_nobody_has_money(tmp_path):
    r = CliRunner().invoke(main, ["genesis", "new", "--chain-id", "x",
                                                  "--validator", _val(0),
                                                  "--out", str(tmp_path / "g.json")])
    assert r.exit_code == 0 and "no account holds money" in r.stderr


# --- testnet layouts ----------------------------------------------------------------------

def _layout(tmp_path, *args) -> dict:
    r = _cli("testnet", *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_testnet_lays_out_homes_for_n_machines(tmp_path):
    out = tmp_path / "net"
    r = _layout(tmp_path, "--validators", 4, "--hostname-prefix", "val", "--base-port", 7100,
                "--chain-id", "t-1", "--out", out, "--compose")
    genesis = H.load_genesis_file(out / "genesis.json")
    assert genesis.chain_id == "t-1" and len(genesis.validators) == 4
    assert not set(H.dev_balances()) & set(genesis.balances)
    treasury = r["treasury"]
    assert genesis.balances == {treasury["address"]: N.TREASURY_BALANCE}
    tkey = out / "treasury.key"
    assert oct(tkey.stat().st_mode & 0o777) == "0o600"
    assert keys.Keypair(bytes.fromhex(tkey.read_text().strip())).address == treasury["address"]
    peers = [H.peer_string(pk, f"val{i}", 7100) for i, pk in enumerate(genesis.validators)]
    for i in range(4):
        home = out / f"node{i}"
        assert oct((home / "node.key").stat().st_mode & 0o777) == "0o600"
        kp, cfg = H.load_key(home), H.load_config(home)
        assert kp.pubkey == genesis.validators[i]
        assert (cfg.host, cfg.port) == ("0.0.0.0", 7100)
        assert cfg.peers == [p for j, p in enumerate(peers) if j != i]
        assert H.load_genesis(home) == genesis
        assert (home / "genesis.json").read_bytes() == (out / "genesis.json").read_bytes()
    assert [x["peer"] for x in r["nodes"]] == peers
    readme = (out / "README.md").read_text()
    assert "lendnet node start --home" in readme and "docker compose up" in readme
    assert all(x["pubkey"] in readme for x in r["nodes"]) and treasury["address"] in readme
    # refuses to overwrite, whatever is there
    again = _cli("testnet", "--validators", 1, "--out", out)
    assert again.exit_code != 0 and "refusing to overwrite" in again.output
    assert H.load_genesis_file(out / "genesis.json") == genesis


def test_testnet_local_layout_and_given_balances(tmp_path):
    out = tmp_path / "local"
    r = _layout(tmp_path, "--validators", 4, "--local", "--base-port", 7200,
                "--balance", f"{A.address}=500", "--registrar", B.address, "--out", out)
    assert r["treasury"] is None and not (out / "treasury.key").exists()
    g = H.load_genesis_file(out / "genesis.json")
    assert g.balances == {A.address: 50_000} and g.lending["registrars"] == [B.address]
    for i in range(4):
        cfg = H.load_config(out / f"node{i}")
        assert (cfg.host, cfg.port) == ("127.0.0.1", 7200 + i)
        assert sorted(H.parse_peer(p)[1:] for p in cfg.peers) == \
            [("127.0.0.1", 7200 + j) for j in range(4) if j != i]
    assert "lendnet node start --home " + str(out / "node3") in (out / "README.md").read_text()


@pytest.mark.parametrize("args, says", [
    (["--validators", "29"], "29"),
    (["--validators", "4", "--hostname-prefix", "bad_name"], "not a hostname"),
    (["--validators", "4", "--local", "--compose"], "exclude each other"),
    (["--validators", "4", "--local", "--base-port", "65534"], "65535"),
    (["--validators", "4", "--compose", "--base-port", "65534"], "65535"),
    (["--validators", "4", "--balance", "nobody=1"], "not an address"),
    (["--validators", "2"], "2 validators: use 1, 4, 7"),
    (["--validators", "5"], "5 tolerate f = 1 faulty validator(s), no more than 4 do"),
])
def test_testnet_refuses_bad_options(tmp_path, args, says):
    r = _cli("testnet", *args, "--out", tmp_path / "x")
    assert r.exit_code != 0 and says in r.output, r.output
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_the_compose_file_runs_one_service_per_node(tmp_path):
    """Not run under Docker here (no engine): its structure is what compose needs."""
    out = tmp_path / "c"
    r = _layout(tmp_path, "--validators", 4, "--hostname-prefix", "lend-", "--compose",
                "--image", "lendnet:test", "--out", out)
    spec = json.loads((out / N.COMPOSE_FILE).read_text())    # JSON is YAML: compose reads it
    assert set(spec) == {"name", "services"}
    services = spec["services"]
    assert list(services) == [f"lend-{i}" for i in range(4)]
    for i, (name, svc) in enumerate(services.items()):
        assert svc["image"] == "lendnet:test" and svc["hostname"] == name
        assert svc["command"] == ["node", "start", "--home", N.HOME_IN_CONTAINER]
        assert svc["volumes"] == [f"./node{i}:{N.HOME_IN_CONTAINER}"]
        assert (out / f"node{i}" / "node.key").exists()
        assert svc["ports"] == [f"127.0.0.1:{N.DEFAULT_PORT + i}:{N.DEFAULT_PORT}"]
        assert re.fullmatch(r"\d+:\d+", svc["user"])
        # every peer a node dials is a service of this file, at the port nodes listen on
        for p in H.load_config(out / f"node{i}").peers:
            _, host, port = H.parse_peer(p)
            assert host in services and host != name and port == N.DEFAULT_PORT
    assert r["compose"] == str(out / N.COMPOSE_FILE)


def test_the_dockerfile_installs_what_the_wheel_is_built_from():
    """Not built here (no Docker engine); it installs the package's sources with pip and
    runs `lendnet`. The sources it copies are those tests/test_packaging.py builds."""
    from tests.test_packaging import SOURCES
    text = (ROOT / "Dockerfile").read_text()
    lines = [x.strip() for x in text.splitlines() if x.strip() and not x.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    copied = set()
    for x in lines:
        if x.startswith("COPY "):
            copied |= set(x.split()[1:-1])
    assert copied == set(SOURCES)
    assert any(x.startswith("RUN pip install . ") for x in lines)
    assert 'ENTRYPOINT ["lendnet"]' in lines
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored and ".venv" in ignored


# --- the layout as real processes ------------------------------------------------------------

def _free_run(n: int) -> int:
    """A first port p such that p..p+n-1 are free now (from a port the OS hands out)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


def _wait_all_linked(clients, timeout: float = 30.0) -> None:
    """Every node has a link to each of the others (they dialled by the layout's names)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = [len(cl.status()["peers"]) for cl in clients]
        if all(c == len(clients) - 1 for c in counts):
            return
        assert time.monotonic() < deadline, f"links per node: {counts}"
        time.sleep(0.1)


def _transfer_commits_everywhere(chain: str, treasury: keys.Keypair, clients) -> None:
    """A transfer from the treasury, sent to one node, is committed; every node then
    shows the same balance and the same block."""
    to = keys.Keypair.generate().address
    nonce = clients[0].account(treasury.address)["nonce"]
    raw = txm.sign(txm.build(treasury, chain, "transfer", nonce, to=to, amount=12_345),
                   [treasury]).raw
    h = clients[-1].submit(raw)
    st = clients[-1].wait_committed(h, timeout=60)
    assert st["status"] == "committed", st
    for cl in clients:
        cl.wait_height(st["height"], timeout=30)
        assert cl.account(to)["balance"] == 12_345
    blocks = [cl.get(f"/v1/blocks/{st['height']}") for cl in clients]
    assert len({(b["hash"], b["state_root"]) for b in blocks}) == 1, blocks


def test_a_local_layout_runs_as_four_processes_and_commits_a_transfer(tmp_path):
    from lendnet.node.harness.layout import LayoutRun
    out = tmp_path / "net"
    r = _layout(tmp_path, "--validators", 4, "--local", "--base-port", _free_run(4),
                "--chain-id", "local-1", "--out", out)
    run = LayoutRun(out)
    try:
        members = run.start(wait_s=60)
        assert [m.port for m in members] == [x["port"] for x in r["nodes"]]
        clients = [NodeClient(m.api) for m in members]
        for cl in clients:
            assert cl.status()["chain_id"] == "local-1"
        _wait_all_linked(clients)
        treasury = keys.Keypair(bytes.fromhex((out / "treasury.key").read_text().strip()))
        _transfer_commits_everywhere("local-1", treasury, clients)
    finally:
        run.down()
    assert not any(m.alive() for m in run.members())


def test_a_machine_layout_runs_in_network_namespaces_by_hostname(tmp_path):
    """The layout for N machines, untouched (listening on 0.0.0.0, peers by hostname):
    each node in its own namespace, where the hostnames resolve to the others' addresses."""
    from lendnet.node.harness.netns import available
    why = available()
    if why:
        pytest.skip(f"network namespaces unavailable here: {why}")
    from lendnet.node.harness.layout import NetnsLayoutRun
    out = tmp_path / "net"
    r = _layout(tmp_path, "--validators", 4, "--hostname-prefix", "validator-",
                "--chain-id", "ns-1", "--out", out)
    run = NetnsLayoutRun(out, [f"validator-{i}" for i in range(4)])
    try:
        members = run.start(wait_s=60)
        assert [m.host for m in members] == [run.host(i) for i in range(4)]
        clients = [NodeClient(m.api) for m in members]
        _wait_all_linked(clients)
        treasury = keys.Keypair(bytes.fromhex((out / "treasury.key").read_text().strip()))
        _transfer_commits_everywhere("ns-1", treasury, clients)
    finally:
        run.down()
    assert not any(m.alive() for m in run.members())
    assert f"lendnet-{run.tag}-" not in subprocess.run(["ip", "netns", "list"],
                                                       capture_output=True, text=True).stdout
    assert not any(Path("/etc/netns", run.ns(i)).exists() for i in range(4))
    assert all(H.load_config(out / f"node{i}").peers == [
        x["peer"] for x in r["nodes"] if x["name"] != f"node{i}"] for i in range(4))


def test_operators_join_a_genesis_built_from_their_keys_and_it_runs(tmp_path):
    """Four operators each make a home (`node init`), send their keys and addresses; one
    builds the genesis (`genesis new`); each points their home at it with the same peer
    list (`node join`). Run on 127.0.0.1, the network commits a transfer."""
    from lendnet.node.harness.cluster import free_ports
    from lendnet.node.harness.layout import LayoutRun
    net = tmp_path / "ops"
    ports = free_ports(4)
    pubkeys = []
    for i, port in enumerate(ports):
        r = _cli("node", "init", "--home", net / f"node{i}", "--port", port, "--json")
        assert r.exit_code == 0, r.output
        pubkeys.append(json.loads(r.output)["pubkey"])
    money = keys.Keypair.generate()
    vals = [f"{pk}@127.0.0.1:{p}" for pk, p in zip(pubkeys, ports)]
    r = _cli("genesis", "new", "--chain-id", "ops-1", *sum((["--validator", v] for v in vals),
                                                          []),
             "--balance", f"{money.address}=1000", "--out", tmp_path / "genesis.json", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["peers"] == vals
    genesis = H.load_genesis_file(tmp_path / "genesis.json")
    for i in range(4):
        home = net / f"node{i}"
        r = _cli("node", "join", "--home", home, "--genesis", tmp_path / "genesis.json",
                 *sum((["--peer", v] for v in vals), []), "--json")
        assert r.exit_code == 0, r.output
        shown = json.loads(r.output)
        assert shown["validator"] is True and shown["peers"] == vals[:i] + vals[i + 1:]
        assert H.load_genesis(home) == genesis
        assert not set(H.dev_balances()) & set(H.load_genesis(home).balances)
    run = LayoutRun(net)
    try:
        members = run.start(wait_s=60)
        clients = [NodeClient(m.api) for m in members]
        _wait_all_linked(clients)
        _transfer_commits_everywhere("ops-1", money, clients)
    finally:
        run.down()
    again = _cli("node", "join", "--home", net / "node0", "--genesis", tmp_path / "genesis.json")
    assert again.exit_code != 0 and "has been started" in again.output


def test_node_show_of_a_home_listening_everywhere_names_no_wildcard(tmp_path):
    r = _cli("node", "init", "--home", tmp_path / "h", "--host", "0.0.0.0", "--port", 26656,
             "--json")
    shown = json.loads(r.output)
    assert shown["peer_address"] == \
        f"{shown['pubkey']}@<this machine's name or address>:26656"
    r = _cli("node", "join", "--home", tmp_path / "h", "--genesis", tmp_path / "missing.json")
    assert r.exit_code != 0
