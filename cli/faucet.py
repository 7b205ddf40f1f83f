"""`lendnet faucet`: fund an address on a dev chain, as Anvil's funded keys would.

A dev genesis (`lendnet cluster up`, `lendnet node init` without --genesis) funds the dev
faucet, a key derived from the name "faucet" like the demo accounts' (node/daemon/home.py
DEV_FAUCET). That the genesis funds this key is what makes a chain a dev chain: the node
says so in `/v1/status` (`dev_faucet`: the faucet's address, or null), and on any other
chain the faucet refuses, saying why. Its key is public, so a genesis for a real network
must never fund it. Each call sends one signed transfer of at most FAUCET_MAX.
"""
from __future__ import annotations

import click

from lendnet.ledger import keys
from lendnet.ledger import tx as txm
from lendnet.ledger.money import fmt
from lendnet.node.daemon import home as H
from lendnet.node.daemon.client import ApiError

from .common import AMOUNT, EXIT_TIMEOUT, _call, client, emit, max_fee, node_option

RETRY_CODES = ("nonce-used", "nonce-taken")  # another faucet call took that nonce first
MAX_TRIES = 16


@click.command("faucet")
@click.option("--to", "to_addr", metavar="ADDRESS", default=None,
              help="The address to fund.")
@click.option("--wallet", "wallet_name", metavar="NAME", default=None,
              help="Fund this keystore wallet's address (no passphrase needed).")
@click.option("--amount", type=AMOUNT, required=True,
              help=f"In LND, e.g. 1000 or 12.50; at most {fmt(H.FAUCET_MAX)} a call.")
@node_option
@click.option("--wait", "wait_s", type=click.IntRange(0, 600), default=30, show_default=True,
              help="Seconds to wait for the commit (0: don't).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def faucet(to_addr, wallet_name, amount, node_url, wait_s, as_json):
    """Send AMOUNT from the dev faucet to an address or a wallet: dev chains only.

    A dev chain is one whose genesis funds the dev faucet key (`lendnet cluster up` and
    `lendnet node init` make such genesis files); the node reports it in /v1/status as
    `dev_faucet`. On any other chain this refuses and says why.

    \b
    lendnet wallet create ana
    lendnet faucet --wallet ana --amount 1000
    lendnet faucet --to ln0123... --amount 250.50 --node http://127.0.0.1:7000 --json
    """
    if (to_addr is None) == (wallet_name is None):
        raise click.UsageError("give exactly one of --to ADDRESS and --wallet NAME")
    if wallet_name is not None:
        from .keystore import KeystoreError, info
        try:
            to_addr = info(wallet_name)["address"]
        except KeystoreError as e:
            raise click.ClickException(str(e))
    elif not keys.is_address(to_addr):
        raise click.BadParameter(f"{to_addr!r} is not an address (ln + 40 hex digits)",
                                 param_hint="--to")
    if amount > H.FAUCET_MAX:
        raise click.BadParameter(f"the faucet gives at most {fmt(H.FAUCET_MAX)} a call "
                                 f"(asked {fmt(amount)}); call it again for more",
                                 param_hint="--amount")
    api = client(node_url)
    status = _call(api.status)
    source = keys.Keypair.from_name(H.DEV_FAUCET)
    if status.get("dev_faucet") != source.address:
        raise click.ClickException(
            f"refused: the node at {api.url} runs chain {status.get('chain_id')!r}, which is "
            f"not a dev chain: its genesis does not fund the dev faucet ({source.address}). "
            f"The faucet works only on a dev genesis (`lendnet cluster up`, `lendnet node "
            f"init` without --genesis); on this chain, ask someone who holds LND for a "
            f"transfer.")
    chain = status["chain_id"]
    nonce = _call(api.account, source.address)["nonce"]
    text = f"{fmt(amount)} from the dev faucet to {to_addr}"
    for _ in range(MAX_TRIES):
        # Another faucet call (here or at another node) may take this nonce first: then
        # the next one, whether the node refuses it at once or drops it from a block.
        tx = txm.sign(txm.build(source, chain, "transfer", nonce, to=to_addr, amount=amount),
                      [source])
        try:
            h = api.submit(tx.raw)
        except ApiError as e:
            if e.code not in RETRY_CODES:
                raise click.ClickException(f"the faucet's transfer was refused: {e.error}")
            nonce += 1
            continue
        except OSError as e:
            raise click.ClickException(f"cannot reach the node at {api.url}: {e}")
        out = {"status": "pending", "hash": h, "from": source.address, "to": to_addr,
               "amount": amount, "max_fee": max_fee(tx, status.get("fees")), "chain": chain}
        if not wait_s:
            emit(out, as_json, f"submitted {h}: {text} (pending)")
            return
        try:
            st = api.wait_committed(h, wait_s)
        except TimeoutError:
            emit(out, as_json, f"{h} not committed within {wait_s} s; check with "
                               f"`lendnet tx status {h}`")
            raise SystemExit(EXIT_TIMEOUT)
        except ApiError as e:
            if e.code not in RETRY_CODES:
                raise click.ClickException(f"the faucet's transfer {h} was rejected: "
                                           f"{e.error}")
            nonce = max(nonce + 1, _call(api.account, source.address)["nonce"])
            continue
        except OSError as e:
            raise click.ClickException(f"cannot reach the node at {api.url}: {e}")
        break
    else:
        raise click.ClickException(f"the faucet is busy (its nonce was taken by other calls "
                                   f"{MAX_TRIES} times); try again")
    if st["status"] != "committed":
        raise click.ClickException(f"the faucet's transfer {h} failed at height "
                                   f"{st.get('height')}: {st.get('error')}")
    balance = _call(api.account, to_addr)["balance"]
    out.update(status="committed", height=st["height"], fee=st.get("fee", 0), balance=balance)
    emit(out, as_json, f"{text}, committed at height {st['height']} ({h}); its balance is "
                       f"now {fmt(balance)}")
