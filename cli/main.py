"""`lendnet`: the command line. Each command group lives in its own module."""
from __future__ import annotations

import click

from .bench import bench
from .chaos import chaos
from .cluster import cluster
from .demo import demo
from .faucet import faucet
from .group import group
from .guarantor import guarantor
from .lending import appraiser, borrower, lender, registrar
from .loan import loan
from .network import genesis, testnet
from .node import node
from .sale import sale
from .savings import savings
from .sim import sim
from .tx import multisig, transfer, tx
from .wallet import wallet
from .watch import watch


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lendnet")
def main():
    """lendnet: a peer-to-peer microlending network.

    Full nodes agree on signed loan transactions with PBFT-style consensus, keep a
    replicated ledger, and run lending agreements in a deterministic contract VM.
    Amounts are integers in minor units (1 LND = 100 minor units).
    """


main.add_command(cluster)
main.add_command(loan)
main.add_command(node)
main.add_command(sim)
main.add_command(wallet)
main.add_command(borrower)
main.add_command(lender)
main.add_command(sale)
main.add_command(savings)
main.add_command(group)
main.add_command(guarantor)
main.add_command(registrar)
main.add_command(appraiser)
main.add_command(multisig)
main.add_command(tx)
main.add_command(transfer)
main.add_command(demo)
main.add_command(faucet)
main.add_command(watch)
main.add_command(chaos)
main.add_command(bench)
main.add_command(genesis)
main.add_command(testnet)
