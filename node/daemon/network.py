"""Genesis files and node homes for a real network (`lendnet genesis new`, `lendnet
testnet`): no demo accounts, nothing derived from a name.

    build_genesis(...)      a checked Genesis from validators' keys and initial balances
    layout_testnet(...)     DIR/node0..N-1 (key, config, the one genesis), DIR/README.md,
                            optionally DIR/treasury.key and DIR/compose.yaml

A home laid out here is an ordinary home (home.py): `lendnet node start --home DIR/nodeI`
runs it, on its own machine or, with `local=True`, beside the others on 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from lendnet.consensus.messages import faults_tolerated, quorum_size
from lendnet.ledger import fees, keys, lending
from lendnet.ledger import tx as txm
from lendnet.node.core.node import Genesis

from . import home as H

# A hostname (RFC 1123 labels) or an IPv4 address; what a node dials.
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                         r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
DEFAULT_PORT = 26656
MAX_VALIDATORS = 28          # with the default window of 64 (docs/CONSENSUS.md)
TREASURY_BALANCE = 1_000_000_000 * 100      # 1,000,000,000.00 LND, when no --balance
COMPOSE_FILE = "compose.yaml"
HOME_IN_CONTAINER = "/lendnet/home"


class NetworkError(ValueError):
    """A genesis or layout that cannot be built; the message says why."""


@dataclass
class Validator:
    pubkey: bytes
    host: str | None = None
    port: int | None = None

    @property
    def peer(self) -> str | None:
        if self.host is None or self.port is None:
            return None
        return H.peer_string(self.pubkey, self.host, self.port)


def parse_validator(text: str) -> Validator:
    """`PUBKEYHEX@HOST:PORT` (how peers will dial it) or a bare `PUBKEYHEX`."""
    text = str(text).strip()
    if "@" not in text:
        pk = keys.pubkey_from_hex(text)
        if pk is None:
            raise NetworkError(f"validator {text!r}: must be PUBKEYHEX@HOST:PORT (or "
                               f"PUBKEYHEX), the key {2 * keys.PUBKEY_LEN} hex digits")
        return Validator(pk)
    try:
        pk, host, port = H.parse_peer(text)
    except H.HomeError as e:
        raise NetworkError(f"validator {e}") from None
    if port == 0:
        raise NetworkError(f"validator {text!r}: port 0 is not a port peers can dial")
    return Validator(pk, host, port)


def check_count(n: int) -> None:
    """A validator count worth running: n = 3f+1, at most MAX_VALIDATORS. Other counts
    are safe (the quorum is a majority of n + f, consensus/messages.py) but tolerate no
    more faults than the 3f+1 below them, at more messages a block."""
    if n < 1:
        raise NetworkError("a genesis needs at least one validator (--validator)")
    if n > MAX_VALIDATORS:
        raise NetworkError(f"at most {MAX_VALIDATORS} validators (a NEW-VIEW of more would "
                           f"not fit the message bound; docs/CONSENSUS.md)")
    if n % 3 != 1:
        f = faults_tolerated(n)
        raise NetworkError(
            f"{n} validators: use 1, 4, 7, ... 28 (n = 3f+1). {n} tolerate f = {f} faulty "
            f"validator(s), no more than {3 * f + 1} do, and every block costs more "
            f"messages; the quorum would be {quorum_size(n)} of {n}")


def build_genesis(chain_id: str, validators: list[Validator],
                  balances: list[tuple[str, int]], *, at: int | None = None,
                  appraisers: list[str] = (), registrars: list[str] = (),
                  max_rate_bps: int | None = None, fee_prices: dict | None = None,
                  params: dict | None = None) -> Genesis:
    """A checked genesis: distinct validator keys (and distinct host:port where given),
    distinct funded addresses with positive amounts, lending and fee parameters in range.
    NetworkError says what is wrong."""
    if type(chain_id) is not str or not 0 < len(chain_id) <= 64 or not chain_id.isprintable() \
            or chain_id != chain_id.strip():
        raise NetworkError("chain id must be 1 to 64 printable characters, no surrounding "
                           "spaces")
    check_count(len(validators))
    seen_keys: set[bytes] = set()
    seen_addrs: dict[tuple[str, int], str] = {}
    for v in validators:
        if v.pubkey in seen_keys:
            raise NetworkError(f"validator key {v.pubkey.hex()} is given twice")
        seen_keys.add(v.pubkey)
        if v.host is not None:
            where = (v.host.lower(), v.port)
            if where in seen_addrs:
                raise NetworkError(f"validators {seen_addrs[where]} and {v.pubkey.hex()} "
                                   f"are both at {v.host}:{v.port}")
            seen_addrs[where] = v.pubkey.hex()
    funded: dict[str, int] = {}
    for addr, amount in balances:
        if addr in funded:
            raise NetworkError(f"address {addr} is given a balance twice")
        if type(amount) is not int or not 0 < amount <= txm.MAX_AMOUNT:
            raise NetworkError(f"balance of {addr}: must be above zero and at most "
                               f"{txm.MAX_AMOUNT} minor units")
        funded[addr] = amount
    if sum(funded.values()) > txm.MAX_AMOUNT:
        raise NetworkError(f"the balances add up to {sum(funded.values())} minor units, more "
                           f"than the {txm.MAX_AMOUNT} a ledger amount may hold")
    lend: dict = {"appraisers": sorted(set(appraisers)), "registrars": sorted(set(registrars))}
    for name, who in (("appraiser", appraisers), ("registrar", registrars)):
        for a in who:
            if not keys.is_address(a):
                raise NetworkError(f"{name} {a!r} is not an address")
        if len(set(who)) != len(list(who)):
            raise NetworkError(f"an {name} is given twice")
    if max_rate_bps is not None:
        lend["max_rate_bps"] = max_rate_bps
    try:
        lend = lending.check_params(lend)
        prices = fees.check_prices(dict(fee_prices or {}))
        g = Genesis(chain_id, int(time.time()) if at is None else at, funded,
                    tuple(v.pubkey for v in validators),
                    {**H.DAEMON_PARAMS, **(params or {})}, prices, lend)
        if type(g.time) is not int or g.time < 0:
            raise ValueError("time must be a non-negative integer (unix seconds)")
        g.config()
    except ValueError as e:
        raise NetworkError(str(e)) from None
    return g


def write_genesis_file(path: Path, g: Genesis, overwrite: bool = False) -> None:
    path = Path(path)
    if path.exists() and not overwrite:
        raise NetworkError(f"{path} exists; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(H.genesis_to_json(g), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    H.load_genesis_file(path)            # what a node will read back, checked the same way


# --- testnet layouts ----------------------------------------------------------------------

def hostnames(prefix: str, n: int) -> list[str]:
    names = [f"{prefix}{i}" for i in range(n)]
    for h in names:
        if not HOSTNAME_RE.match(h):
            raise NetworkError(f"--hostname-prefix {prefix!r} makes {h!r}, which is not a "
                               f"hostname (letters, digits, '-' and '.')")
    return names


def layout_testnet(out: Path, n: int, prefix: str, *, base_port: int = DEFAULT_PORT,
                   chain_id: str = "lendnet-testnet", local: bool = False,
                   balances: list[tuple[str, int]] = (), compose: bool = False,
                   image: str = "lendnet", listen: str | None = None,
                   **genesis_opts) -> dict:
    """Lay out an n-validator network in `out` (which must not exist or be empty).

    Node i is reached at `<prefix>i:base_port` (one machine each: every node listens on
    `listen`, by default 0.0.0.0, at base_port); `local`: all on 127.0.0.1 at base_port+i
    instead, to run the same layout on one machine. Without balances a treasury key is
    made (DIR/treasury.key) and funded. Returns what was written (for --json)."""
    out = Path(out).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise NetworkError(f"{out} exists and is not an empty directory; refusing to "
                           f"overwrite it")
    check_count(n)
    if local and compose:
        raise NetworkError("--local and --compose exclude each other: compose gives every "
                           "node its own host")
    names = hostnames(prefix, n)
    last = base_port + (n - 1 if local or compose else 0)   # compose publishes BASE+I
    if not 1 <= base_port or last > 65535:
        raise NetworkError(f"--base-port {base_port}: the ports must lie from 1 to 65535")
    if local:
        where = [("127.0.0.1", base_port + i) for i in range(n)]
        listen = listen or "127.0.0.1"
    else:
        where = [(h, base_port) for h in names]
        listen = listen or "0.0.0.0"
    kps = [keys.Keypair.generate() for _ in range(n)]
    vals = [Validator(kp.pubkey, h, p) for kp, (h, p) in zip(kps, where)]
    treasury = None
    balances = list(balances)
    if not balances:
        treasury = keys.Keypair.generate()
        balances = [(treasury.address, TREASURY_BALANCE)]
    genesis = build_genesis(chain_id, vals, balances, **genesis_opts)
    out.mkdir(parents=True, exist_ok=True)
    nodes = []
    for i, (kp, v) in enumerate(zip(kps, vals)):
        peers = [w.peer for w in vals if w is not v]
        home = out / f"node{i}"
        H.init_home(home, H.NodeConfig(listen, v.port, peers), kp=kp, genesis=genesis)
        nodes.append({"name": f"node{i}", "home": str(home), "host": v.host, "port": v.port,
                      "listen": f"{listen}:{v.port}", "pubkey": kp.pubkey.hex(),
                      "address": kp.address, "peer": v.peer})
    write_genesis_file(out / "genesis.json", genesis)
    if treasury is not None:
        fd = os.open(out / "treasury.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(treasury.seed.hex() + "\n")
    result = {"out": str(out), "chain_id": chain_id, "local": local, "nodes": nodes,
              "genesis": str(out / "genesis.json"),
              "treasury": None if treasury is None else
              {"address": treasury.address, "key": str(out / "treasury.key"),
               "balance": TREASURY_BALANCE},
              "compose": None}
    if compose:
        (out / COMPOSE_FILE).write_text(json.dumps(compose_spec(names, base_port, image),
                                                   indent=2) + "\n")
        result["compose"] = str(out / COMPOSE_FILE)
    (out / "README.md").write_text(readme(result, base_port, image))
    return result


def compose_spec(names: list[str], port: int, image: str = "lendnet") -> dict:
    """A Compose file (written as JSON, which is YAML): one service per node, named and
    hostnamed as its peers dial it, its home mounted from ./nodeI, its API published on
    127.0.0.1:port+i of the machine running compose."""
    user = f"{os.getuid()}:{os.getgid()}" if hasattr(os, "getuid") else None
    services = {}
    for i, h in enumerate(names):
        svc = {"image": image, "hostname": h,
               "command": ["node", "start", "--home", HOME_IN_CONTAINER],
               "volumes": [f"./node{i}:{HOME_IN_CONTAINER}"],
               "ports": [f"127.0.0.1:{port + i}:{port}"],
               "restart": "unless-stopped",
               "stop_signal": "SIGTERM", "stop_grace_period": "20s"}
        if user:
            svc["user"] = user          # the homes' owner, so the node can use its files
        services[h] = svc
    return {"name": "lendnet-testnet", "services": services}


def readme(r: dict, base_port: int, image: str) -> str:
    n = len(r["nodes"])
    rows = "\n".join(f"| node{i} | `{x['host']}:{x['port']}` | `{x['listen']}` | "
                     f"`{x['pubkey']}` |" for i, x in enumerate(r["nodes"]))
    text = [f"# {r['chain_id']}: a {n}-validator lendnet network",
            "",
            "Made by `lendnet testnet`. Each `nodeI/` is one node's home: `node.key` (its "
            "secret key, mode 0600: copy it only to that node's machine), `config.json` "
            "(where it listens, its peers as `PUBKEY@HOST:PORT`) and `genesis.json` (the "
            "same in every home, and in `genesis.json` here).",
            "",
            "| node | peers dial it at | it listens on | public key |",
            "| --- | --- | --- | --- |",
            rows, ""]
    if r["local"]:
        text += ["This layout is for **one machine**: every node is on 127.0.0.1 with its "
                 "own port. Start each in its own terminal (or in the background):", "",
                 "```sh",
                 *[f"lendnet node start --home {x['home']}" for x in r["nodes"]],
                 "```", "",
                 "They find each other at once and commit a block within seconds; "
                 f"`curl http://127.0.0.1:{base_port}/v1/status` shows the height.", ""]
    else:
        text += ["## On N machines", "",
                 "1. On each machine, install lendnet (`pip install .` from the source, or "
                 "the Docker image below) and make the name in the table resolve to that "
                 "machine for every other node (DNS, or `/etc/hosts` lines such as "
                 f"`10.0.0.1 {r['nodes'][0]['host']}`). Open TCP port {base_port}: peer "
                 "links, the API and `/metrics` share it.",
                 "2. Copy `nodeI/` to machine I, and only there (e.g. `scp -r node0 "
                 f"{r['nodes'][0]['host']}:lendnet-home`): its `node.key` is that "
                 "validator's identity.",
                 "3. On each machine: `lendnet node start --home lendnet-home`. A node "
                 "keeps redialling the peers that are not up yet; the chain commits once "
                 f"{quorum_size(n)} of the {n} validators are running.",
                 f"4. Check: `curl http://HOST:{base_port}/v1/status` (height, view, peers).",
                 "",
                 "The nodes listen on all interfaces (`host` 0.0.0.0 in `config.json`). "
                 "The API limits each client address to `api_rate` requests a second; put "
                 "a firewall or reverse proxy in front of the port if it faces the "
                 "internet.", ""]
        if r["compose"]:
            text += ["## With Docker Compose (one machine)", "",
                     f"`{COMPOSE_FILE}` runs every node as a container named and hostnamed "
                     "as its peers dial it, on one Compose network, its home mounted from "
                     f"`./nodeI`. It is JSON, which Compose reads as YAML. Build the image "
                     f"from the lendnet source (its `Dockerfile`), then start:", "",
                     "```sh",
                     f"docker build -t {image} /path/to/lendnet",
                     f"cd {r['out']} && docker compose up -d",
                     f"docker compose logs -f {r['nodes'][0]['host']}   # any service; "
                     "`docker compose down` stops them all",
                     f"curl http://127.0.0.1:{base_port}/v1/status",
                     "```", "",
                     f"Node I's API is published on 127.0.0.1:{base_port}+I of the machine. "
                     "The containers run as the user who made this layout, who owns the "
                     "homes.", ""]
    if r["treasury"]:
        t = r["treasury"]
        text += ["## Money", "",
                 f"No balances were given, so `treasury.key` (mode 0600) holds the key of "
                 f"the one funded account, `{t['address']}` "
                 f"({t['balance'] // 100:,} LND). Import it as a wallet and hand out "
                 "money from it:", "",
                 "```sh",
                 "lendnet wallet import treasury --seed-file treasury.key",
                 "lendnet transfer --wallet treasury --to ADDRESS --amount 1000 "
                 f"--node http://{r['nodes'][0]['host']}:{r['nodes'][0]['port']}",
                 "```", "",
                 "Keep `treasury.key` off the nodes' machines.", ""]
    text += ["The genesis has no demo accounts and no appraiser or registrar unless "
             "they were given (`lendnet testnet --appraiser/--registrar`, or build the "
             "genesis with `lendnet genesis new`). See docs/NODE.md, \"A real network\".",
             ""]
    return "\n".join(text)
