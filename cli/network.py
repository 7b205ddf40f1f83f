"""`lendnet genesis new` and `lendnet testnet`: a genesis and node homes for a real
network, with no demo accounts (node/daemon/network.py)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from lendnet.ledger import keys
from lendnet.node.daemon import network as N

from .common import parse_amount


def _balances(given) -> list[tuple[str, int]]:
    out = []
    for text in given:
        addr, sep, amount = str(text).partition("=")
        addr = addr.strip()
        if not sep:
            raise click.BadParameter(f"{text!r}: must be ADDRESS=AMOUNT", param_hint="--balance")
        if not keys.is_address(addr):
            raise click.BadParameter(f"{text!r}: {addr!r} is not an address (ln and 40 hex "
                                     f"digits)", param_hint="--balance")
        try:
            out.append((addr, parse_amount(amount)))
        except click.BadParameter as e:
            raise click.BadParameter(f"{text!r}: the amount must be {e.message}",
                                     param_hint="--balance") from None
    return out


def _genesis_options(f):
    """What both commands put in the genesis besides validators."""
    for opt in reversed([
        click.option("--chain-id", default=None, help="The chain's id (1 to 64 characters)."),
        click.option("--balance", "balances", multiple=True, metavar="ADDRESS=AMOUNT",
                     help="Fund ADDRESS with AMOUNT LND (e.g. 1000 or 12.50); repeat."),
        click.option("--appraiser", "appraisers", multiple=True, metavar="ADDRESS",
                     help="An address allowed to appraise collateral; repeat. None by "
                          "default."),
        click.option("--registrar", "registrars", multiple=True, metavar="ADDRESS",
                     help="An address allowed to attest borrowers' identities; repeat. "
                          "None by default."),
        click.option("--max-rate-bps", type=int, default=None,
                     help="The rate cap, in basis points a year (default: the ledger's)."),
        click.option("--min-gas-price", type=int, default=None,
                     help="Minor units per unit of gas (default: the ledger's)."),
        click.option("--byte-price", type=int, default=None,
                     help="Minor units per byte of a transaction (default: the ledger's)."),
        click.option("--param", "params", multiple=True, metavar="NAME=INT",
                     help="A consensus parameter (docs/NODE.md), e.g. view_timeout_ms=4000 "
                          "for validators far apart; repeat."),
        click.option("--time", "at", type=click.IntRange(0), default=None, metavar="UNIX",
                     help="Genesis time in unix seconds (default: now)."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    ]):
        f = opt(f)
    return f


def _params(given) -> dict:
    out = {}
    for text in given:
        name, sep, value = str(text).partition("=")
        if not sep or not name or not value.strip().lstrip("-").isdigit():
            raise click.BadParameter(f"{text!r}: must be NAME=INTEGER", param_hint="--param")
        if name in out:
            raise click.BadParameter(f"{name} is given twice", param_hint="--param")
        out[name] = int(value)
    return out


def _genesis_kwargs(appraisers, registrars, max_rate_bps, min_gas_price, byte_price,
                    params, at) -> dict:
    prices = {k: v for k, v in (("min_gas_price", min_gas_price),
                                ("byte_price", byte_price)) if v is not None}
    return {"appraisers": list(appraisers), "registrars": list(registrars),
            "max_rate_bps": max_rate_bps, "fee_prices": prices, "at": at,
            "params": _params(params)}


@click.group("genesis")
def genesis():
    """Build the genesis of a real network (no demo accounts)."""


@genesis.command("new")
@click.option("--validator", "validators", multiple=True, required=True,
              metavar="PUBKEY@HOST:PORT",
              help="A validator: its node's public key (`lendnet node show`) and where its "
                   "peers dial it (or the bare key); repeat, in validator order.")
@_genesis_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write genesis.json (never overwritten).")
def genesis_new(validators, chain_id, balances, appraisers, registrars, max_rate_bps,
                min_gas_price, byte_price, params, at, as_json, out):
    """Write a genesis from validators' public keys and initial balances.

    Every node of the network starts from this one file: `lendnet node init --home H
    --genesis genesis.json --peer PUBKEY@HOST:PORT ...` on each machine. The peers to give
    are printed here (those validators given with HOST:PORT)."""
    if chain_id is None:
        raise click.UsageError("--chain-id is required")
    try:
        vals = [N.parse_validator(v) for v in validators]
        g = N.build_genesis(chain_id, vals, _balances(balances),
                            **_genesis_kwargs(appraisers, registrars, max_rate_bps,
                                              min_gas_price, byte_price, params, at))
        N.write_genesis_file(out, g)
    except N.NetworkError as e:
        raise click.ClickException(str(e))
    peers = [v.peer for v in vals if v.peer]
    result = {"genesis": str(out), "chain_id": g.chain_id, "time": g.time,
              "validators": [v.pubkey.hex() for v in vals], "peers": peers,
              "balances": dict(sorted(g.balances.items())),
              "supply": sum(g.balances.values()), "params": g.params, "fees": g.fees,
              "lending": g.lending}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"wrote {out}: chain {g.chain_id}, {len(vals)} validator(s), "
               f"{len(g.balances)} funded account(s), supply {result['supply'] / 100:,.2f} LND")
    if not g.balances:
        click.echo("warning: no account holds money (give --balance ADDRESS=AMOUNT): no "
                   "transaction can pay its fee", err=True)
    if peers:
        click.echo("each node's peers (all but itself): " + " ".join(peers))


@click.command("testnet")
@click.option("--validators", "n", type=click.IntRange(1, N.MAX_VALIDATORS), required=True,
              help="How many validator homes to lay out.")
@click.option("--hostname-prefix", "prefix", default="node", show_default=True,
              help="Node I is reached at host PREFIX<I> (node0, node1, ...).")
@click.option("--base-port", type=click.IntRange(1, 65535), default=N.DEFAULT_PORT,
              show_default=True, help="The port every node listens on (--local: node I "
                                      "on BASE+I).")
@click.option("--local", is_flag=True,
              help="Run the layout on this machine: every node on 127.0.0.1, node I at "
                   "port BASE+I (hostnames are then not used).")
@click.option("--compose", is_flag=True,
              help=f"Also write OUT/{N.COMPOSE_FILE}: one Docker Compose service per node, "
                   "named and hostnamed PREFIX<I>.")
@click.option("--image", default="lendnet", show_default=True,
              help="The Docker image the compose services run (`docker build -t lendnet .`).")
@_genesis_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The directory to lay out (must not exist, or be empty).")
def testnet(n, prefix, base_port, local, compose, image, chain_id, balances, appraisers,
            registrars, max_rate_bps, min_gas_price, byte_price, params, at, as_json, out):
    """Lay out N validator homes sharing one new genesis, ready to copy to N machines.

    OUT/nodeI holds node I's key, its config (listening on 0.0.0.0:BASE, peers as
    PUBKEY@PREFIX<J>:BASE) and the genesis; OUT/README.md says how to start them. Without
    --balance a treasury account is funded and its key written to OUT/treasury.key."""
    try:
        r = N.layout_testnet(out, n, prefix, base_port=base_port,
                             chain_id=chain_id or "lendnet-testnet", local=local,
                             balances=_balances(balances), compose=compose, image=image,
                             **_genesis_kwargs(appraisers, registrars, max_rate_bps,
                                               min_gas_price, byte_price, params, at))
    except N.NetworkError as e:
        raise click.ClickException(str(e))
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    click.echo(f"laid out {n} validator homes of chain {r['chain_id']} in {out}:")
    for x in r["nodes"]:
        click.echo(f"  {x['name']}: peers dial {x['host']}:{x['port']}, key {x['pubkey']}")
    if r["treasury"]:
        click.echo(f"funded treasury {r['treasury']['address']}: its key is "
                   f"{r['treasury']['key']} (`lendnet wallet import treasury --seed-file "
                   f"{r['treasury']['key']}`)")
    if r["compose"]:
        click.echo(f"compose file: {r['compose']} (`docker compose up -d` in {out})")
    click.echo(f"how to start them: {out / 'README.md'}")
