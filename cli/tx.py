"""`lendnet tx` (signed transaction files: submit, co-sign, inspect, status) and
`lendnet multisig` (M-of-N accounts: create, propose a spend)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from lendnet.ledger import keys
from lendnet.ledger import tx as txm
from lendnet.ledger.ledger import multisig_address

from .common import (AMOUNT, client, emit, get, money, node_option, read_tx_file,
                     save_tx, send_options, sign_and_send, sign_body, submit, unlock,
                     wallet_option)

FILE = click.Path(dir_okay=False, exists=True, path_type=Path)


@click.group("tx")
def tx():
    """Signed transaction files: submit one signed offline, co-sign, inspect, status."""


@tx.command("submit")
@click.argument("file", type=FILE)
@node_option
@click.option("--wait", "wait_s", type=click.IntRange(0, 600), default=30, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def submit_cmd(file, node_url, wait_s, as_json):
    """Send a transaction signed earlier (e.g. `--offline` on a cold machine)."""
    submit(client(node_url), read_tx_file(file), wait_s, as_json)


@tx.command("sign")
@click.argument("file", type=FILE)
@wallet_option
@click.option("--json", "as_json", is_flag=True)
def sign_cmd(file, wallet_name, as_json):
    """Add this wallet's signature to a transaction file (a multisig co-signature).
    Needs no node."""
    t = read_tx_file(file)
    try:
        t = txm.add_signature(t, unlock(wallet_name))
    except txm.TxError as e:
        raise click.ClickException(str(e))
    save_tx(file, t, as_json, f"{file}: {len(t.sigs)} signature(s) on {t.body['kind']} {t.id}")


@tx.command("show")
@click.argument("file", type=FILE)
def show_cmd(file):
    """Print what a transaction file would do (always JSON)."""
    t = read_tx_file(file)
    body = {k: (v.hex() if type(v) is bytes else v) for k, v in t.body.items()}
    click.echo(json.dumps({"hash": t.id, "body": body,
                           "signers": [keys.address_of(pk) for pk in t.signers()],
                           "signatures_valid": t.verify_signatures()}, indent=2))


@tx.command("status")
@click.argument("tx_hash")
@node_option
@click.option("--json", "as_json", is_flag=True)
def status_cmd(tx_hash, node_url, as_json):
    """Pending, committed (height), failed (why) or rejected (why)."""
    st = get(node_url, f"/v1/tx/{tx_hash}")
    emit(st, as_json, f"{tx_hash}: {st['status']}"
         + (f" at height {st['height']}" if "height" in st else "")
         + (f" — {st['error']}" if st.get("error") else ""))


@click.group("multisig")
def multisig():
    """M-of-N accounts: a lending pool or an institution's treasury."""


def _member_key(text: str) -> bytes:
    """A member: a public key in hex, or a file from `lendnet wallet export-public`."""
    p = Path(text)
    if p.is_file():
        try:
            text = json.loads(p.read_text())["pubkey"]
        except (OSError, ValueError, KeyError) as e:
            raise click.BadParameter(f"{p}: not an exported public key ({e})")
    try:
        pk = bytes.fromhex(text)
    except ValueError:
        pk = b""
    if len(pk) != keys.PUBKEY_LEN:
        raise click.BadParameter(f"{text!r}: a member is a 32-byte public key in hex or an "
                                 f"exported public-key file")
    return pk


@multisig.command("create")
@wallet_option
@click.option("--threshold", type=click.IntRange(1, txm.MAX_SIGS), required=True)
@click.option("--member", "members", multiple=True, required=True, metavar="PUBKEY|FILE")
@send_options
def create_cmd(wallet_name, threshold, members, **send):
    """Create an M-of-N account; prints its address (fund it with a transfer)."""
    pks = sorted({_member_key(m) for m in members})
    if threshold > len(pks):
        raise click.UsageError(f"threshold {threshold} is more than the {len(pks)} members")
    address = multisig_address(threshold, pks)
    sign_and_send(unlock(wallet_name), "create_multisig", threshold=threshold,
                  members=pks, describe=f"account {address}", **send)


@multisig.command("transfer")
@wallet_option
@click.option("--account", required=True, help="The multisig account's address.")
@click.option("--to", required=True)
@click.option("--amount", type=AMOUNT, required=True, help="In LND, e.g. 250.00")
@click.option("--nonce", type=int, default=None, help="The account's next nonce "
              "[default: asked of the node].")
@click.option("--chain", "chain_id", default=None)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@node_option
@click.option("--json", "as_json", is_flag=True)
def propose_cmd(wallet_name, account, to, amount, nonce, chain_id, out, node_url, as_json):
    """Propose a spend from a multisig account: writes it signed by this wallet to --out;
    co-sign with `lendnet tx sign`, send with `lendnet tx submit` once M have signed."""
    kp = unlock(wallet_name)
    if nonce is None or chain_id is None:
        api = client(node_url)
        nonce = api.account(account)["nonce"] if nonce is None else nonce
        chain_id = chain_id or api.status()["chain_id"]
    t = sign_body(txm.build(kp, chain_id, "transfer", nonce, sender=account, to=to,
                            amount=amount), kp)
    save_tx(out, t, as_json, f"proposed {money(amount)} from {account} to {to}: {out} "
                             f"(1 signature)")


@click.command("transfer")
@wallet_option
@click.option("--to", required=True, help="Recipient address.")
@click.option("--amount", type=AMOUNT, required=True, help="In LND, e.g. 25.50")
@send_options
def transfer(wallet_name, to, amount, **send):
    """Send money from a wallet's account."""
    if not keys.is_address(to):
        raise click.BadParameter("an address is 'ln' and 40 lowercase hex digits",
                                 param_hint="--to")
    sign_and_send(unlock(wallet_name), "transfer", to=to, amount=amount,
                  describe=f"{money(amount)} to {to}", **send)
