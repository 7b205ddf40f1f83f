"""What every wallet-driven command shares: which node, which wallet, how amounts are read
and shown, and how a transaction is signed and sent (or written to a file offline).

Exit codes scripts can rely on: 0 done; 1 refused, failed or an error (the message says
why); 2 bad usage (click); 3 submitted but not committed within --wait seconds.
"""
from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

import click

from lendnet.ledger import keys, lending, tx as txm
from lendnet.ledger.ledger import Ledger
from lendnet.ledger.money import DECIMALS, UNIT, fmt
from lendnet.node.daemon.client import ApiError, NodeClient

EXIT_TIMEOUT = 3
AMOUNT_RE = re.compile(rf"^(\d{{1,18}})(?:\.(\d{{1,{DECIMALS}}}))?$")


def parse_amount(text: str) -> int:
    """'12.5' LND -> 1250 minor units; exact, no floats."""
    m = AMOUNT_RE.match(str(text).strip())
    if not m:
        raise click.BadParameter(f"an amount in {UNIT} with at most {DECIMALS} decimals, "
                                 f"e.g. 250 or 12.50")
    minor = int(m.group(1)) * 10**DECIMALS + int((m.group(2) or "").ljust(DECIMALS, "0"))
    if not 0 < minor <= txm.MAX_AMOUNT:
        raise click.BadParameter("must be above zero")
    return minor


class Amount(click.ParamType):
    name = "AMOUNT"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_amount(value)
        except click.BadParameter as e:
            self.fail(str(e), param, ctx)


AMOUNT = Amount()


def default_node() -> str | None:
    if os.environ.get("LENDNET_NODE"):
        return os.environ["LENDNET_NODE"]
    from .cluster import DEFAULT_HOME
    try:
        nodes = json.loads((DEFAULT_HOME / "cluster.json").read_text())["nodes"]
    except (OSError, ValueError, KeyError):
        return None
    return next((f"http://127.0.0.1:{n['port']}" for n in nodes if n.get("port")), None)


def node_option(f):
    return click.option("--node", "node_url", metavar="URL", default=None,
                        help="A node's API [default: $LENDNET_NODE, else the local "
                             "cluster's node0].")(f)


def client(node_url: str | None) -> NodeClient:
    url = node_url or default_node()
    if not url:
        raise click.ClickException("no node to talk to: pass --node URL, set LENDNET_NODE, "
                                   "or start one with `lendnet cluster up`")
    return NodeClient(url, timeout=10)


def wallet_option(f):
    return click.option("--wallet", "wallet_name", required=True, metavar="NAME",
                        help="The keystore wallet that signs.")(f)


def send_options(f):
    """--offline/--nonce/--chain/--out, --wait and --json for commands that sign."""
    for opt in reversed([
        click.option("--offline", is_flag=True,
                     help="Sign without a node: write the signed transaction to --out."),
        click.option("--nonce", type=click.IntRange(0, txm.MAX_AMOUNT), default=None,
                     help="The account's next nonce (required with --offline)."),
        click.option("--chain", "chain_id", default=None,
                     help="Chain id (offline; online it comes from the node)."),
        click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Where --offline writes the signed transaction."),
        click.option("--wait", "wait_s", type=click.IntRange(0, 600), default=30,
                     show_default=True, help="Seconds to wait for the commit (0: don't)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
        click.option("--gas-price", type=click.IntRange(0, txm.MAX_GAS_PRICE),
                     default=txm.DEFAULT_GAS_PRICE, show_default=True,
                     help="What to pay a unit of gas, in 1/1000 of a minor unit: at least "
                          "the chain's minimum; a higher price is included first."),
        node_option,
    ]):
        f = opt(f)
    return f


def unlock(name: str):
    from .keystore import KeystoreError
    from .wallet import unlock as _unlock
    try:
        return _unlock(name)
    except KeystoreError as e:
        raise click.ClickException(str(e))


@functools.lru_cache(maxsize=8)
def _fee_ledger(chain: str, prices: tuple) -> Ledger:
    return lending.genesis(chain, {}, 0, dict(prices))


def max_fee(tx: txm.SignedTx, prices: dict | None = None) -> int:
    """The most this transaction can pay in fees (minor units): what the node reserves
    from the sender; the receipt says what it paid. `prices`: the chain's (/v1/status
    "fees"); offline, the default chain's."""
    return _fee_ledger(tx.body["chain"], tuple(sorted((prices or {}).items()))).max_fee(tx)


def save_tx(path: Path, tx: txm.SignedTx, as_json: bool, text: str, **extra) -> dict:
    """Write a signed transaction file (atomically) and report it: the summary as JSON,
    or `text`. Returns the file's contents."""
    doc = {"kind": tx.body["kind"], "from": tx.sender, "nonce": tx.nonce,
           "chain": tx.body["chain"], "hash": tx.id, "signatures": len(tx.sigs),
           "gas_price": tx.body["gas_price"], "max_fee": max_fee(tx), "tx": tx.raw.hex()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    emit({**extra, **{k: v for k, v in doc.items() if k != "tx"}}, as_json, text)
    return doc


def read_tx_file(path: Path) -> txm.SignedTx:
    try:
        doc = json.loads(Path(path).read_text())
        return txm.parse(bytes.fromhex(doc["tx"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise click.ClickException(f"{path}: not a signed transaction file ({e})")
    except txm.TxError as e:
        raise click.ClickException(f"{path}: {e}")


def sign_and_send(kp, kind: str, *, node_url, offline, nonce, chain_id, out, wait_s,
                  as_json, sender: str | None = None, describe: str = "", quiet: bool = False,
                  **fields) -> dict:
    """Build, sign and submit (or write) one transaction; print what happened (unless
    `quiet`: a command that sends several prints one result for all of them)."""
    if offline:
        if nonce is None or out is None:
            raise click.UsageError("--offline needs --nonce N and --out FILE")
        body = txm.build(kp, chain_id or "lendnet-dev", kind, nonce, sender=sender, **fields)
        tx = sign_body(body, kp)
        return save_tx(out, tx, as_json,
                       f"signed {kind} {tx.id} (nonce {tx.nonce}, fee at most "
                       f"{fmt(max_fee(tx))}) -> {out}; submit it later with "
                       f"`lendnet tx submit {out}`", status="signed", file=str(out))
    api = client(node_url)
    status = _call(api.status)
    if nonce is None:
        nonce = _call(api.account, sender or kp.address)["nonce"]
    body = txm.build(kp, status["chain_id"], kind, nonce, sender=sender, **fields)
    return submit(api, sign_body(body, kp), wait_s, as_json, describe, quiet,
                  status.get("fees"))


def sign_body(body: dict, kp) -> txm.SignedTx:
    try:
        return txm.sign(body, [kp])
    except txm.TxError as e:
        raise click.ClickException(f"cannot build this transaction: {e}")


def submit(api: NodeClient, tx: txm.SignedTx, wait_s: int, as_json: bool,
           describe: str = "", quiet: bool = False, prices: dict | None = None) -> dict:
    """Send a signed transaction and report it, with the most it can pay in fees and,
    once committed, the fee it paid (`max_fee`, `fee`: minor units)."""
    kind = tx.body["kind"]
    most = max_fee(tx, prices)
    try:
        h = api.submit(tx.raw)
    except ApiError as e:
        raise click.ClickException(f"{kind} refused by the node: {e.error}")
    except OSError as e:
        raise click.ClickException(f"cannot reach the node at {api.url}: {e}")
    pending = {"status": "pending", "hash": h, "kind": kind, "max_fee": most}
    if not wait_s:
        if not quiet:
            emit(pending, as_json, f"{kind} submitted: {h} (pending; fee at most {fmt(most)})")
        return pending
    try:
        st = api.wait_committed(h, wait_s)
    except TimeoutError:
        emit(pending, as_json,
             f"{kind} {h} not committed within {wait_s} s; check with `lendnet tx status {h}`")
        raise SystemExit(EXIT_TIMEOUT)
    except ApiError as e:
        raise click.ClickException(f"{kind} {h} rejected: {e.error}")
    if st["status"] != "committed":
        raise click.ClickException(f"{kind} {h} failed at height {st['height']}: "
                                   f"{st.get('error')} (fee paid {fmt(st.get('fee', 0))})")
    if not quiet:
        emit({**st, "kind": kind, "max_fee": most}, as_json,
             f"{kind} committed at height {st['height']}: {h}"
             + (f" — {describe}" if describe else "") + f" (fee {fmt(st.get('fee', 0))})")
    return {**st, "kind": kind, "max_fee": most}


def _call(fn, *args):
    try:
        return fn(*args)
    except ApiError as e:
        raise click.ClickException(f"the node refused: {e.error}")
    except OSError as e:
        raise click.ClickException(f"cannot reach the node: {e}")


def get(node_url, path: str) -> dict:
    return _call(client(node_url).get, path)


def put_blob(node_url, data: bytes, kp) -> str:
    """Store a blob on the node, the upload signed with `kp` (an account of its chain)."""
    from lendnet.node.daemon.blobs import sign_upload
    chain = get(node_url, "/v1/status")["chain_id"]
    return _call(client(node_url).put_blob, data, sign_upload(kp, chain, data))


LISTING_MOST = 10_000          # records a command reads from a paged listing, at most


def get_all(node_url, path: str, records: str) -> list:
    """Every record of a paged listing (`GET /v1/loans?...`, following `next`), up to
    LISTING_MOST; `records` names the list in each page ("loans")."""
    out: list = []
    sep = "&" if "?" in path else "?"
    after = None
    while len(out) < LISTING_MOST:
        page = get(node_url, path + sep + "limit=1000" + (f"&after={after}" if after else ""))
        out += page[records]
        after = page.get("next")
        if after is None:
            break
    return out[:LISTING_MOST]


def emit(obj, as_json: bool, text: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(obj, indent=2, sort_keys=True))
    elif text is not None:
        click.echo(text)


def money(minor) -> str:
    return "-" if minor is None else fmt(minor)


def pct(bps: int) -> str:
    """Basis points as a percentage, exactly: 1250 -> '12.50%'."""
    sign = "-" if bps < 0 else ""
    return f"{sign}{abs(bps) // 100}.{abs(bps) % 100:02d}%"


def check_address(text: str) -> str:
    """An address given on the command line, or click's usage error saying what one is."""
    if not keys.is_address(text):
        raise click.BadParameter(f"{text!r} is not an address ('ln' and 40 lowercase hex "
                                 f"digits)")
    return text


def address_param(ctx, param, value):
    """click callback for an address option or argument (None when not given)."""
    return None if value is None else check_address(value)
