"""`lendnet node`: make a node's home directory and run the node."""
from __future__ import annotations

import json
from pathlib import Path

import click

from lendnet.node.daemon import home as H
from lendnet.node.harness.byzantine import MODES


def _home_option(f):
    return click.option("--home", type=click.Path(file_okay=False, path_type=Path),
                        required=True, help="The node's home directory.")(f)


@click.group("node")
def node():
    """Run one full node (a validator if genesis lists its key)."""


@node.command("init")
@_home_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (peer links, API and metrics share one port).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port to listen on; 0 picks a free one at start.")
@click.option("--peer", "peers", multiple=True, metavar="PUBKEY@HOST:PORT",
              help="A peer to dial, with its public key in hex, which its handshake must "
                   "show (repeat for each). A bare HOST:PORT is accepted with a warning: "
                   "its key is then not checked.")
@click.option("--chain-id", default="lendnet-dev", show_default=True)
@click.option("--genesis", "genesis_file", type=click.Path(dir_okay=False, exists=True,
                                                           path_type=Path),
              help="Join this chain's genesis.json instead of starting a one-validator "
                   "dev chain whose demo accounts are funded.")
@click.option("--keep-blocks", "keep_blocks", type=click.IntRange(0), default=0, show_default=True,
              help="Keep only the last K blocks (a pruned node: it answers 410 'pruned' "
                   "below them); 0: every block (an archive node). K must be at least 4 "
                   "consensus windows (256 with the default window).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def init(home, host, port, peers, chain_id, genesis_file, keep_blocks, as_json):
    """Write a home: a new node key (0600), config.json and genesis.json."""
    try:
        for p in peers:
            if H.parse_peer(p)[0] is None:
                click.echo(f"warning: peer {p} has no key: the node will take whatever key "
                           f"answers there (give it as PUBKEY@{p})", err=True)
        genesis = None
        if genesis_file is not None:
            genesis = H.load_genesis_file(genesis_file)
        H.init_home(home, H.NodeConfig(host, port, list(peers), keep_blocks=keep_blocks),
                    genesis=genesis, chain_id=chain_id)
    except H.HomeError as e:
        raise click.ClickException(str(e))
    _show(home, as_json)


@node.command("join")
@_home_option
@click.option("--genesis", "genesis_file", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The network's genesis.json (`lendnet genesis new`).")
@click.option("--peer", "peers", multiple=True, metavar="PUBKEY@HOST:PORT",
              help="A peer to dial (repeat); this node's own entry, if listed, is left "
                   "out, so every operator can pass the same list. Without --peer the "
                   "config's peers stay.")
@click.option("--host", default=None, help="Address to listen on (default: unchanged).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port to listen on (default: unchanged).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def join(home, genesis_file, peers, host, port, as_json):
    """Point a home made by `node init` at a real network before its first start: its
    key stays, genesis.json becomes the network's, the peers and address those given."""
    try:
        kp, cfg = H.load_key(home), H.load_config(home)
        if (home / "node.db").exists():
            raise H.HomeError(f"{home} has been started (node.db holds its chain); a node "
                              f"joins a network from a new home (`lendnet node init`)")
        genesis = H.load_genesis_file(genesis_file)
        mine = {p for p in peers if H.parse_peer(p)[0] == kp.pubkey}
        for p in peers:
            if H.parse_peer(p)[0] is None:
                click.echo(f"warning: peer {p} has no key: the node will take whatever key "
                           f"answers there (give it as PUBKEY@{p})", err=True)
        if peers:
            cfg.peers = [p for p in dict.fromkeys(peers) if p not in mine]
        if host is not None:
            cfg.host = host
        if port is not None:
            cfg.port = port
        H.write_config(home, cfg)
        H.write_genesis(home, genesis)
    except H.HomeError as e:
        raise click.ClickException(str(e))
    _show(home, as_json)


WILDCARD = ("0.0.0.0", "::", "")     # listening on every interface: peers use a real name


def _show(home: Path, as_json: bool) -> None:
    kp, cfg = H.load_key(home), H.load_config(home)
    out = {"home": str(home), "address": kp.address, "pubkey": kp.pubkey.hex(),
           "validator": kp.pubkey in H.load_genesis(home).validators,
           "peer_address": f"{kp.pubkey.hex()}@"
           + ("<this machine's name or address>" if cfg.host in WILDCARD else cfg.host)
           + (f":{cfg.port}" if cfg.port else ":<port>"), "peers": list(cfg.peers),
           "keep_blocks": cfg.keep_blocks or None}         # None: an archive node
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"node home {home}: address {kp.address}, public key {kp.pubkey.hex()}"
               + ("" if out["validator"] else " (not a validator of this genesis: a "
                  "full node)"))
    click.echo(f"peers dial it as {out['peer_address']}"
               + ("" if cfg.port else " (port 0: the one it picks at start, which it logs)"))
    click.echo(f"it keeps the last {cfg.keep_blocks} blocks (a pruned node)" if cfg.keep_blocks
               else "it keeps every block (an archive node)")


@node.command("show")
@_home_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def show(home, as_json):
    """Print the node's address, key and the PUBKEY@HOST:PORT its peers dial it as."""
    try:
        _show(home, as_json)
    except H.HomeError as e:
        raise click.ClickException(str(e))


@node.command("start")
@_home_option
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one structured object per line.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING"]), default="INFO",
              show_default=True)
@click.option("--state-sync", is_flag=True,
              help="If the store is empty: take the latest snapshot a peer can prove "
                   "certified (its chunks fetched from every peer that has it, each "
                   "checked; a peer serving a bad one is avoided) instead of replaying "
                   "the chain from genesis, then follow blocks from there. With no such "
                   "snapshot, syncs block by block (logged as a warning). A store that "
                   "is not empty resumes as usual.")
@click.option("--byzantine", type=click.Choice(MODES), default=None, hidden=True,
              help="TEST ONLY: make this validator lie (for `lendnet chaos`).")
@click.option("--quorum-override", type=click.IntRange(1, 64), default=None, hidden=True,
              help="TEST ONLY: accept this many votes as a quorum (a broken node).")
@click.option("--keep-blocks", "keep_blocks", type=click.IntRange(0), default=None,
              help="Keep only the last K blocks, over the config's keep_blocks (a pruned "
                   "node: it answers 410 'pruned' below them); 0: every block (an archive "
                   "node). K must be at least 4 consensus windows (256 with the default "
                   "window).")
def start(home, log_format, log_level, state_sync, byzantine, quorum_override,
          keep_blocks):
    """Run the node in the foreground until SIGTERM or Ctrl-C, which stop it cleanly."""
    from lendnet.node.core.store import StoreError
    from lendnet.node.daemon.daemon import run  # the daemon's imports only when one is run
    from lendnet.node.harness.faults import hooks_for   # the test modes, as daemon hooks
    try:
        run(home, log_format, log_level, hooks_for(home, byzantine, quorum_override),
            keep_blocks=keep_blocks, state_sync=state_sync)
    except (H.HomeError, StoreError) as e:
        raise click.ClickException(str(e))
    except OSError as e:
        raise click.ClickException(f"cannot start the node: {e}")


class CannotVerify(click.ClickException):
    exit_code = 2              # 1 is kept for "the chain is wrong", so a script can tell


@node.command("verify-chain")
@_home_option
@click.option("--from-height", type=click.IntRange(1), default=1, show_default=True,
              help="Check certificates, hash links and certified roots from here; the "
                   "blocks below are still replayed, and their roots compared.")
@click.option("--to-height", type=click.IntRange(0), default=None,
              help="Stop after this height (default: every stored block).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def verify_chain(home, from_height, to_height, as_json):
    """Replay the stored chain from genesis and check every block: its transactions,
    hash link, commit certificate and state root. A pruned store is replayed from its
    oldest kept snapshot instead (the summary says so). Reads the home only (a running
    node is fine). Exit 0: all reproduced; 1: a block differs (named); 2: cannot be
    read, or a pruned store without a usable snapshot."""
    from lendnet.node.core.store import StoreError
    from lendnet.node.daemon.verify import Mismatch
    from lendnet.node.daemon.verify import verify_chain as run
    if not home.is_dir():
        raise CannotVerify(f"{home} is not a directory (a node's home)")
    try:
        out = run(home, from_height, to_height)
    except Mismatch as m:
        if as_json:
            click.echo(json.dumps(m.to_json(), indent=2))
        click.echo(f"verify-chain: FAILED at {m}", err=True)
        raise SystemExit(1)
    except (H.HomeError, StoreError) as e:
        raise CannotVerify(str(e))
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    rate = f"{out['tx_per_s']:,} tx/s" if out["tx_per_s"] is not None else "- tx/s"
    start = ("from genesis" if out["from"] == "genesis" else
             f"from the snapshot at height {out['snapshot']} (the store keeps blocks from "
             f"{out['first_block']})")
    click.echo(f"verified {home}: height {out['height']}, {out['blocks']:,} blocks and "
               f"{out['txs']:,} transactions replayed {start} in {out['seconds']:.2f} s "
               f"({rate}); "
               f"every root reproduced"
               + (f", checks from height {from_height}" if from_height > 1 else "")
               + f"; final state root {out['root']}")
