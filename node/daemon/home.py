"""A node's home directory: its key, its configuration and the chain's genesis.

    HOME/node.key       the node's ed25519 seed, hex (mode 0600)
    HOME/config.json    where it listens and who its peers are (pubkey@host:port)
    HOME/genesis.json   the chain: id, time, validator keys, balances, consensus params,
                        fee prices (ledger/fees.py)
    HOME/node.db        the store (SQLite), created on first start
    HOME/node.log       the log, when a cluster started the node

Peers are `PUBKEYHEX@host:port` (CometBFT style): the node dials host:port and refuses
a server whose handshake shows another key. A bare `host:port` is accepted (a full node
joining a network whose keys it was not given) with a warning that its key is unchecked.
The same files work across machines. Every file is checked on
load and a bad one is a `HomeError` naming the file and the field.
"""
from __future__ import annotations

import ipaddress
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from lendnet.ledger import fees, keys, lending
from lendnet.node.core import pruning
from lendnet.ledger.state import DEFAULT_CACHE_ROWS
from lendnet.node.core.node import Genesis

# Dev genesis: named demo accounts a wallet can use at once (keys from the name).
DEMO_ACCOUNTS = ("alice", "bob", "carol", "dave", "lender", "borrower")
DEMO_BALANCE = 100_000_000             # 1,000,000.00 LND each
# The dev chain's appraiser and registrar: a named key like the demo accounts, so a dev
# cluster can attest collateral and borrowers' identities (`lendnet wallet import
# registrar`). A real genesis names its own (lending.check_params) or none.
DEV_REGISTRAR = "registrar"
# The dev faucet (`lendnet faucet`): a named key the dev genesis funds, which hands out at
# most FAUCET_MAX a call. That the genesis funds this key is what makes a chain a dev
# chain, for the faucet and `/v1/status` (`dev_faucet`): its key is public, so a genesis
# for a real network must not fund it (`genesis new` funds only what it is told).
DEV_FAUCET = "faucet"
FAUCET_BALANCE = 100 * DEMO_BALANCE     # 100,000,000.00 LND
FAUCET_MAX = 10_000_000                 # 100,000.00 LND a call


def dev_lending() -> dict:
    """The dev genesis's lending parameters: the default rate cap; the registrar key
    appraises collateral and attests identities."""
    who = [keys.Keypair.from_name(DEV_REGISTRAR).address]
    return lending.check_params({"appraisers": who, "registrars": who})
# Consensus timing for a real network on one machine: view change after 1.5 s without
# progress (a lost primary costs about that much; a block under full load commits in
# well under it), an empty block every 2 s so a quiet chain still shows it is alive.
DAEMON_PARAMS = {"view_timeout_ms": 1_500, "batch_delay_ms": 5, "empty_block_ms": 2_000,
                 "fetch_timeout_ms": 500}
# A fast chain clock for watching loans move (`lendnet demo`, the simulator): one real
# second is two chain days.
FAST_CLOCK = 2 * 86_400


class HomeError(ValueError):
    """A home directory that is missing, unreadable or inconsistent."""


@dataclass
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = 0
    peers: list = field(default_factory=list)        # ["pubkeyhex@host:port", ...]
    admin: bool = False                              # test-only endpoints (off by default)
    # API requests per second per client address, and the burst it may spend at once.
    # Clients at the api_exempt addresses (by default the node's own machine: its
    # wallets and tools) are not limited; behind a reverse proxy on the same host, set
    # it to [] (every client then arrives from 127.0.0.1).
    api_rate: int = 50
    api_burst: int = 200
    api_exempt: list = field(default_factory=lambda: list(API_EXEMPT))
    # Keep only the last keep_blocks blocks (a pruned node, node/core/pruning.py); 0: every
    # block from genesis (an archive node). Checked against the genesis at start.
    keep_blocks: int = 0
    # Decoded ledger rows kept in memory per table (the state itself is in node.db):
    # what bounds the node's memory as the state grows.
    state_cache_rows: int = DEFAULT_CACHE_ROWS

    def to_json(self) -> dict:
        return {"host": self.host, "port": self.port, "peers": list(self.peers),
                "admin": self.admin, "api_rate": self.api_rate, "api_burst": self.api_burst,
                "api_exempt": list(self.api_exempt), "keep_blocks": self.keep_blocks,
                "state_cache_rows": self.state_cache_rows}


API_EXEMPT = ("127.0.0.1", "::1")
MAX_KEEP_BLOCKS = 10**12           # a bound on the number read, not a useful setting


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _port(v, where):
    if type(v) is not int or not 0 <= v <= 65535:
        raise HomeError(f"{where}: port must be an integer from 0 to 65535")
    return v


def parse_peer(s: str) -> tuple[bytes | None, str, int]:
    """A peer `PUBKEYHEX@host:port` -> (its key, host, port); a bare `host:port` -> (None,
    host, port): its key is then taken unchecked."""
    key, at, addr = str(s).rpartition("@")
    pubkey = None
    if at:
        pubkey = keys.pubkey_from_hex(key)
        if pubkey is None:
            raise HomeError(f"peer {s!r}: before the @ must be the peer's public key, "
                            f"{2 * keys.PUBKEY_LEN} hex digits")
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise HomeError(f"peer {s!r} must be PUBKEYHEX@host:port (or host:port)")
    return pubkey, host, _port(int(port), f"peer {s!r}")


def peer_string(pubkey: bytes, host: str, port: int) -> str:
    """How peers name a node in their config: `PUBKEYHEX@host:port`."""
    return f"{pubkey.hex()}@{host}:{port}"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise HomeError(f"{path} does not exist (run `lendnet node init --home "
                        f"{path.parent}` first)") from None
    except (OSError, ValueError) as e:
        raise HomeError(f"{path}: {e}") from None
    if type(data) is not dict:
        raise HomeError(f"{path}: must hold a JSON object")
    return data


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)                    # never a half-written file


def write_key(home: Path, kp: keys.Keypair) -> None:
    path = home / "node.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(kp.seed.hex() + "\n")


def load_key(home: Path) -> keys.Keypair:
    path = home / "node.key"
    try:
        text = path.read_text().strip()
        return keys.Keypair(bytes.fromhex(text))
    except FileNotFoundError:
        raise HomeError(f"{path} does not exist") from None
    except ValueError:
        raise HomeError(f"{path}: must hold a 32-byte seed in hex") from None


def write_config(home: Path, cfg: NodeConfig) -> None:
    _write_json(home / "config.json", cfg.to_json())


def load_config(home: Path) -> NodeConfig:
    path = home / "config.json"
    d = _read_json(path)
    unknown = set(d) - set(NodeConfig.__dataclass_fields__)
    if unknown:
        raise HomeError(f"{path}: unknown fields {sorted(unknown)}")
    default = NodeConfig()
    for name in ("api_rate", "api_burst"):
        v = d.get(name, getattr(default, name))
        if type(v) is not int or not 1 <= v <= 1_000_000:
            raise HomeError(f"{path}: {name} must be an integer from 1 to 1000000")
    cache_rows = d.get("state_cache_rows", default.state_cache_rows)
    if type(cache_rows) is not int or not 1_000 <= cache_rows <= 100_000_000:
        raise HomeError(f"{path}: state_cache_rows must be an integer from 1000 to "
                        "100000000")
    cfg = NodeConfig(host=str(d.get("host", "127.0.0.1")), port=_port(d.get("port", 0), path),
                     peers=list(d.get("peers", [])), admin=bool(d.get("admin", False)),
                     api_rate=d.get("api_rate", default.api_rate),
                     api_burst=d.get("api_burst", default.api_burst),
                     api_exempt=d.get("api_exempt", default.api_exempt),
                     keep_blocks=d.get("keep_blocks", 0), state_cache_rows=cache_rows)
    if type(cfg.keep_blocks) is not int or not 0 <= cfg.keep_blocks <= MAX_KEEP_BLOCKS:
        raise HomeError(f"{path}: keep_blocks must be an integer from 0 (an archive node) "
                        f"to {MAX_KEEP_BLOCKS}")
    if (type(cfg.api_exempt) is not list or len(cfg.api_exempt) > 64
            or not all(type(a) is str and _ip(a) for a in cfg.api_exempt)):
        raise HomeError(f"{path}: api_exempt must be a list of at most 64 IP addresses")
    for p in cfg.peers:
        parse_peer(p)
    return cfg


def genesis_to_json(g: Genesis) -> dict:
    return {"chain_id": g.chain_id, "time": g.time, "balances": dict(sorted(g.balances.items())),
            "validators": [pk.hex() for pk in g.validators], "params": dict(g.params),
            "fees": fees.check_prices(g.fees), "lending": lending.check_params(g.lending)}


def write_genesis(home: Path, g: Genesis) -> None:
    _write_json(home / "genesis.json", genesis_to_json(g))


def load_genesis(home: Path) -> Genesis:
    return load_genesis_file(home / "genesis.json")


def load_genesis_file(path: Path) -> Genesis:
    d = _read_json(path)
    try:
        chain = d["chain_id"]
        if type(chain) is not str or not 0 < len(chain) <= 64:
            raise HomeError(f"{path}: chain_id must be a text of 1 to 64 characters")
        if type(d["time"]) is not int or d["time"] < 0:
            raise HomeError(f"{path}: time must be a non-negative integer (unix seconds)")
        vals = tuple(bytes.fromhex(v) for v in d["validators"])
        if not vals or any(len(v) != keys.PUBKEY_LEN for v in vals) or len(set(vals)) != len(vals):
            raise HomeError(f"{path}: validators must be distinct 32-byte public keys in hex")
        balances = d["balances"]
        if type(balances) is not dict or not all(
                keys.is_address(a) and type(b) is int and b >= 0 for a, b in balances.items()):
            raise HomeError(f"{path}: balances must map addresses to non-negative integers")
        params = d.get("params", {})
        if type(params) is not dict or not all(type(v) is int for v in params.values()):
            raise HomeError(f"{path}: params must map names to integers")
        fee_params = d.get("fees", {})      # absent (an older genesis): the defaults
        if type(fee_params) is not dict:
            raise HomeError(f"{path}: fees must map names to integers")
        fees.check_prices(fee_params)
        lending_params = lending.check_params(d.get("lending"))   # absent: the defaults
        genesis = Genesis(chain, d["time"], balances, vals, params, fee_params,
                          lending_params)
        genesis.config()                     # the consensus parameters, checked
    except KeyError as e:
        raise HomeError(f"{path}: missing field {e}") from None
    except (TypeError, ValueError) as e:
        raise HomeError(f"{path}: {e}") from None
    return genesis


def dev_balances() -> dict[str, int]:
    return {**{keys.Keypair.from_name(n).address: DEMO_BALANCE
               for n in (*DEMO_ACCOUNTS, DEV_REGISTRAR)},
            faucet_address(): FAUCET_BALANCE}


def faucet_address() -> str:
    return keys.Keypair.from_name(DEV_FAUCET).address


def is_dev(g: Genesis) -> bool:
    """A dev chain: its genesis funds the dev faucet, whose key anyone can derive."""
    return g.balances.get(faucet_address(), 0) > 0


def init_home(home: Path, cfg: NodeConfig, kp: keys.Keypair | None = None,
              genesis: Genesis | None = None, chain_id: str = "lendnet-dev",
              at: int | None = None) -> keys.Keypair:
    """Create a home: a new key (unless given), config, and a genesis — the one given
    (a cluster's shared one) or a one-validator dev chain with the demo accounts."""
    home.mkdir(parents=True, exist_ok=True)
    if (home / "node.key").exists():
        raise HomeError(f"{home} already holds a node key; refusing to overwrite it")
    kp = kp or keys.Keypair.generate()
    if genesis is None:
        genesis = Genesis(chain_id, int(time.time()) if at is None else at,
                          dev_balances(), (kp.pubkey,), dict(DAEMON_PARAMS),
                          lending=dev_lending())
    check_keep_blocks(cfg.keep_blocks, genesis)       # before anything is written
    write_key(home, kp)
    write_config(home, cfg)
    write_genesis(home, genesis)
    return kp


def check_keep_blocks(keep_blocks: int, genesis: Genesis) -> int | None:
    """A node's keep_blocks (0: archive) checked against its chain: K, or None for an
    archive node; HomeError (saying why, with the rule's code) if it is not safe, or
    over what load_config reads back (MAX_KEEP_BLOCKS: init must not write a home that
    cannot start)."""
    if type(keep_blocks) is int and keep_blocks > MAX_KEEP_BLOCKS:
        raise HomeError(f"keep_blocks must be an integer from 0 (an archive node) to "
                        f"{MAX_KEEP_BLOCKS}, not {keep_blocks} [keep-blocks-invalid]")
    try:
        return pruning.check_keep_blocks(keep_blocks, genesis.config())
    except pruning.KeepBlocksError as e:
        raise HomeError(f"{e} [{e.code}]") from None
