"""`lendnet wallet ...`: keys in an encrypted keystore (see cli/keystore.py).

Other commands get a signing key with `unlock(name)`.
"""
from __future__ import annotations

import functools
import json

import click

from lendnet.ledger.keys import Keypair

from . import keystore
from .documents import DocumentError
from .keystore import KeystoreError


def _friendly(f):
    """Keystore and document errors end the command with their message, not a traceback."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except (KeystoreError, DocumentError) as e:
            raise click.ClickException(str(e)) from None
    return wrapper


def _warn_dev(name: str) -> None:
    click.secho(f"WARNING: wallet {name} is stored UNENCRYPTED (dev mode): anyone who can "
                f"read {keystore.wallet_path(name)} can spend from it. Never use it for "
                "real funds.", err=True, fg="red", bold=True)


def _new_passphrase(name: str) -> str:
    return keystore.passphrase_from_env() or click.prompt(
        f"New passphrase for wallet {name}", hide_input=True, confirmation_prompt=True)


@_friendly
def unlock(name: str) -> Keypair:
    """Wallet NAME's key for signing: the passphrase comes from LENDNET_PASSPHRASE or one
    prompt. Warns on stderr if the wallet is unencrypted. Raises click.ClickException."""
    if not keystore.info(name)["encrypted"]:
        _warn_dev(name)
        return keystore.load(name, None)
    passphrase = keystore.passphrase_from_env() or click.prompt(
        f"Passphrase for wallet {name}", hide_input=True)
    return keystore.load(name, passphrase)


def _public(kp_or_info, name: str) -> dict:
    if isinstance(kp_or_info, Keypair):
        return {"name": name, "address": kp_or_info.address, "pubkey": kp_or_info.pubkey.hex()}
    return {k: kp_or_info[k] for k in ("name", "address", "pubkey")}


def _refuse_existing(name: str) -> None:
    # Checked before prompting, so nobody types a passphrase twice only to be refused.
    if keystore.wallet_path(name).exists():
        raise KeystoreError(f"wallet {name} already exists; refusing to overwrite it")


def _stored(name: str, kp: Keypair, dev: bool, verb: str, as_json: bool) -> None:
    if dev:
        _warn_dev(name)
    out = {**_public(kp, name), "encrypted": not dev}
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"{verb} wallet {name}{' (UNENCRYPTED)' if dev else ''}\n"
               f"  address {kp.address}\n  pubkey  {kp.pubkey.hex()}")


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON value.")
dev_option = click.option("--dev", is_flag=True,
                          help="Store the key UNENCRYPTED, for tests and demos only.")


@click.group()
def wallet():
    """Keys in an encrypted keystore.

    Wallets live in $LENDNET_WALLETS (default ~/.lendnet/wallets), one file each, the
    key sealed under an argon2id-derived key. The passphrase is read from
    LENDNET_PASSPHRASE if set, otherwise asked for.
    """


@wallet.command("create")
@click.argument("name")
@dev_option
@json_option
@_friendly
def create_cmd(name, dev, as_json):
    """Make a new random key and store it as wallet NAME."""
    keystore.check_name(name)
    _refuse_existing(name)
    kp = keystore.create(name, None if dev else _new_passphrase(name))
    _stored(name, kp, dev, "created", as_json)


def _seed_from_file(f) -> bytes:
    data = f.read(1024)
    if len(data) == 32:
        return data
    try:
        seed = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        seed = b""
    if len(seed) != 32:
        raise KeystoreError(f"{f.name}: a seed file holds 32 raw bytes or 64 hex digits")
    return seed


@wallet.command("import")
@click.argument("name")
@click.option("--seed-hex", metavar="HEX",
              help="The 32-byte ed25519 seed as 64 hex digits (visible in shell history; "
                   "prefer --seed-file).")
@click.option("--seed-file", type=click.File("rb"), metavar="FILE",
              help="A file ('-' for stdin) holding the seed: 32 raw bytes or 64 hex digits.")
@dev_option
@json_option
@_friendly
def import_cmd(name, seed_hex, seed_file, dev, as_json):
    """Store an existing key as wallet NAME."""
    if (seed_hex is None) == (seed_file is None):
        raise click.UsageError("give exactly one of --seed-hex and --seed-file")
    if seed_file is not None:
        seed = _seed_from_file(seed_file)
    else:
        try:
            seed = bytes.fromhex(seed_hex.strip())
        except ValueError:
            raise click.BadParameter("not hex digits", param_hint="--seed-hex") from None
    if len(seed) != 32:
        raise click.BadParameter("a seed is 64 hex digits (32 bytes)", param_hint="--seed-hex")
    keystore.check_name(name)
    _refuse_existing(name)
    kp = keystore.import_seed(name, seed, None if dev else _new_passphrase(name))
    _stored(name, kp, dev, "imported", as_json)


@wallet.command("list")
@json_option
@_friendly
def list_cmd(as_json):
    """List the wallets in the keystore."""
    rows = keystore.list_wallets()
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo(f"no wallets in {keystore.wallets_dir()}")
        return
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"wallets in {keystore.wallets_dir()}", title_justify="left")
    table.add_column("name", overflow="fold")      # names are typed back: never elide
    table.add_column("address", no_wrap=True)
    table.add_column("encrypted")
    for r in rows:
        table.add_row(r["name"], r["address"], "yes" if r["encrypted"] else "NO (dev)")
    Console().print(table)


@wallet.command("show")
@click.argument("name")
@json_option
@_friendly
def show_cmd(name, as_json):
    """Show a wallet's address and public key (no passphrase needed)."""
    facts = keystore.info(name)
    if as_json:
        click.echo(json.dumps(facts))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table(show_header=False, title=f"wallet {name}", title_justify="left")
    table.add_column("field")
    table.add_column("value", no_wrap=True)
    table.add_row("address", facts["address"])
    table.add_row("pubkey", facts["pubkey"])
    table.add_row("encrypted", "yes" if facts["encrypted"] else "NO (dev)")
    table.add_row("file", str(keystore.wallet_path(name)))
    Console().print(table)


@wallet.command("export-public")
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Write the JSON here instead of to stdout.")
@json_option
@_friendly
def export_public_cmd(name, out, as_json):
    """Export a wallet's public key as JSON {name, address, pubkey}, to share."""
    pub = _public(keystore.info(name), name)
    text = json.dumps(pub)
    if out is None or as_json:
        click.echo(text)
    if out is not None:
        try:
            with open(out, "w") as f:
                f.write(text + "\n")
        except OSError as e:
            raise click.ClickException(f"cannot write {out}: {e.strerror}") from None
        if not as_json:
            click.echo(f"wrote the public key of wallet {name} to {out}")
