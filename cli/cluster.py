"""`lendnet cluster`: a local cluster of node processes on 127.0.0.1."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from lendnet.node.harness.cluster import Cluster, ClusterError

DEFAULT_HOME = Path(os.environ.get("LENDNET_CLUSTER_HOME",
                                   Path.home() / ".lendnet" / "cluster"))


def _home_option(f):
    return click.option("--home", type=click.Path(file_okay=False, path_type=Path),
                        default=DEFAULT_HOME, show_default=True,
                        help="Where the cluster's node homes live "
                             "(env LENDNET_CLUSTER_HOME).")(f)


@click.group("cluster")
def cluster():
    """Run N validators as real processes on this machine, with a shared dev genesis
    that funds the demo accounts (alice, bob, carol, dave, lender, borrower)."""


@cluster.command("up")
@click.option("--nodes", type=click.IntRange(1, 16), default=4, show_default=True)
@_home_option
@click.option("--wait", "wait_s", type=click.IntRange(1, 600), default=60, show_default=True,
              help="Seconds to wait for every node to commit a block.")
@click.option("--json", "as_json", is_flag=True)
def up(nodes, home, wait_s, as_json):
    """Create (or reuse) the node homes, start the nodes, wait until they commit."""
    try:
        members = Cluster(home).up(nodes, wait_s)
    except ClusterError as e:
        raise click.ClickException(str(e))
    rows = [{"name": m.name, "pid": m.pid, "api": m.api, "home": str(m.home)} for m in members]
    if as_json:
        click.echo(json.dumps({"home": str(home), "nodes": rows}, indent=2))
        return
    click.echo(f"{len(rows)} nodes committing blocks (home {home}):")
    for r in rows:
        click.echo(f"  {r['name']}  {r['api']}  pid {r['pid']}")
    click.echo("Stop them with: lendnet cluster down" +
               ("" if home == DEFAULT_HOME else f" --home {home}"))


@cluster.command("status")
@_home_option
@click.option("--json", "as_json", is_flag=True)
def status(home, as_json):
    """Each node's process, height, view, primary, peers and mempool."""
    c = Cluster(home)
    members = c.members()
    if not members:
        raise click.ClickException(f"no cluster in {home}")
    rows = []
    for m in members:
        alive = m.alive()
        st = m.status() if alive else None
        rows.append({"name": m.name, "running": alive, "pid": m.pid if alive else None,
                     "api": m.api if m.port else None, **(st or {})})
    if as_json:
        click.echo(json.dumps({"home": str(home), "nodes": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"cluster {home}")
    for col in ("node", "running", "height", "view", "primary", "peers", "mempool", "api"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], "yes" if r["running"] else "no", str(r.get("height", "-")),
                  str(r.get("view", "-")), str(r.get("primary", "-")),
                  str(len(r.get("peers", []))) if "peers" in r else "-",
                  str(r.get("mempool", "-")), r["api"] or "-")
    Console().print(t)


@cluster.command("logs")
@click.argument("node")
@_home_option
@click.option("-n", "lines", type=click.IntRange(1, 100_000), default=50, show_default=True)
def logs(node, home, lines):
    """The last lines of NODE's log (NODE: node0, node1, ... or an index)."""
    name = f"node{node}" if node.isdigit() else node
    members = {m.name: m for m in Cluster(home).members()}
    if name not in members:
        raise click.ClickException(f"no {name} in {home} (nodes: {', '.join(members) or 'none'})")
    click.echo(Cluster.log_tail(members[name], lines))


@cluster.command("down")
@_home_option
def down(home):
    """Stop every node process the cluster started, and only those. Homes are kept."""
    stopped = Cluster(home).down()
    click.echo(f"stopped {len(stopped)} node(s)" + (f": {', '.join(stopped)}" if stopped else ""))
