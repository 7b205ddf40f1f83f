"""`lendnet cluster`: a local cluster of node processes on 127.0.0.1."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import click

from lendnet.ledger import keys
from lendnet.ledger.money import fmt
from lendnet.node.daemon import home as H
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
    that funds the demo accounts (alice, bob, carol, dave, lender, borrower), the dev
    registrar and the dev faucet (`lendnet faucet`).

    A member that died (killed, crashed) shows as dead in `cluster status`; `cluster up`
    starts the dead members again, or `cluster restart NAME` one of them."""


DAY = 86_400
SCALE_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": DAY, "w": 7 * DAY}
SCALE_MAX = 10**7                    # the consensus parameter's bound (consensus/replica.py)
FAST_EMPTY_BLOCK_MS = 250            # as `lendnet demo`: a fast clock's deadlines are seen


class TimeScale(click.ParamType):
    """Chain seconds per real second: an integer (172800), or chain time with a unit
    (2d: two chain days a second; s, m, h, d, w)."""
    name = "SECONDS_PER_SECOND"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        unit = SCALE_UNITS.get(text[-1:]) if text[-1:].isalpha() else 1
        digits = text[:-1] if text[-1:].isalpha() else text
        if unit is None or not digits.isdigit() or len(digits) > 9:
            self.fail(f"{value!r} is not a time scale: give chain seconds per real second "
                      f"as an integer (e.g. 172800) or with a unit s, m, h, d or w (2d: two "
                      f"chain days each real second)", param, ctx)
        scale = int(digits) * unit
        if not 1 <= scale <= SCALE_MAX:
            self.fail(f"{value!r} is {scale} chain seconds per real second; it must be from "
                      f"1 (real time) to {SCALE_MAX:,} (about 115 chain days a second)",
                      param, ctx)
        return scale


def _scale_text(scale: int) -> str:
    if scale == 1:
        return "1 (real time)"
    for name, unit in (("day", DAY), ("hour", 3_600), ("minute", 60)):
        if scale >= unit:
            n = scale / unit
            return f"{scale} ({n:g} chain {name}{'' if n == 1 else 's'} a second)"
    return f"{scale} (chain seconds a second)"


def dev_hints(home: Path, api: str) -> list[str]:
    """What a developer needs to fund and attest on a dev cluster (`api`: a node's)."""
    reg = keys.Keypair.from_name(H.DEV_REGISTRAR)
    where = "" if home == DEFAULT_HOME else f" --node {api}"
    return [
        f"Fund a wallet: lendnet faucet --wallet NAME --amount 1000{where}   (or --to "
        f"ADDRESS; at most {fmt(H.FAUCET_MAX)} a call)",
        f"The dev registrar and appraiser ({reg.address}) attests identities and appraises "
        f"collateral: lendnet wallet import registrar --dev --seed-hex {reg.seed.hex()}",
        f"Demo accounts ({', '.join(H.DEMO_ACCOUNTS)}): their keys come from their names "
        f"(dev only; see docs/NODE.md).",
    ]


def _interruptible(fn):
    """Run fn with SIGTERM raising KeyboardInterrupt like Ctrl-C, so that an `up` stopped
    either way stops the processes it started (the cluster's `down` on the way out) and
    exits 130 or 143."""
    caught: list[int] = []

    def interrupt(signum, frame):
        if not caught:
            caught.append(signum)
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return fn()
    except KeyboardInterrupt:
        click.echo("interrupted: the nodes this command started are stopped", err=True)
        raise SystemExit(128 + (caught[0] if caught else signal.SIGINT))
    finally:
        signal.signal(signal.SIGTERM, previous)


@cluster.command("up")
@click.option("--nodes", type=click.IntRange(1, 16), default=None,
              help="How many validators  [default: 4; an existing cluster's own count]")
@_home_option
@click.option("--time-scale", "time_scale", type=TimeScale(), default=None,
              help="A new cluster's chain clock: chain seconds per real second, e.g. "
                   "172800 or 2d (two chain days each second, as `lendnet demo`), to watch "
                   "loans reach due dates, late fees and default. Fixed in the genesis when "
                   "the cluster is created (dev genesis only); blocks then come every "
                   f"{FAST_EMPTY_BLOCK_MS} ms.  [default: 1, real time]")
@click.option("--wait", "wait_s", type=click.IntRange(1, 600), default=60, show_default=True,
              help="Seconds to wait for every node to commit a block (restarted members: "
                   "to catch up).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def up(nodes, home, time_scale, wait_s, as_json):
    """Create (or reuse) the node homes, start the nodes, wait until they commit.

    On a cluster whose members all run: nothing to do. On one where some died (see
    `cluster status`): start just those, on their ports, and wait until they have
    caught up with the others."""
    params = None
    if time_scale is not None:
        params = {"time_scale": time_scale}
        if time_scale > 1:
            params["empty_block_ms"] = FAST_EMPTY_BLOCK_MS
    c = Cluster(home)
    before = {m.name: m.state() for m in c.members()}
    try:
        g = c.genesis()
        if time_scale is not None and g is not None and not H.is_dev(g):
            raise click.ClickException(f"--time-scale is for dev clusters only: the genesis "
                                       f"in {home} is not a dev genesis")
    except H.HomeError as e:
        raise click.ClickException(str(e))
    try:
        members = _interruptible(lambda: c.up(nodes, wait_s, params=params))
    except ClusterError as e:
        raise click.ClickException(str(e))
    except H.HomeError as e:
        raise click.ClickException(str(e))
    g = c.genesis()
    scale = g.config().time_scale if g else 1
    started = [m.name for m in members if before.get(m.name) != "running"]
    rows = [{"name": m.name, "pid": m.pid, "api": m.api, "home": str(m.home),
             "started": m.name in started} for m in members]
    dev = g is not None and H.is_dev(g)
    if as_json:
        click.echo(json.dumps({"home": str(home), "time_scale": scale, "started": started,
                               "dev_faucet": H.faucet_address() if dev else None,
                               "dev_registrar": keys.Keypair.from_name(H.DEV_REGISTRAR).address
                               if dev else None,
                               "nodes": rows}, indent=2))
        return
    if not started:
        click.echo(f"all {len(rows)} nodes already running (home {home}):")
    elif before and len(started) < len(rows):
        click.echo(f"restarted {', '.join(started)}; caught up with the others "
                   f"(home {home}):")
    else:
        click.echo(f"{len(rows)} nodes committing blocks (home {home}):")
    for r in rows:
        click.echo(f"  {r['name']}  {r['api']}  pid {r['pid']}"
                   + ("  (restarted)" if before and r["started"] and len(started) < len(rows)
                      else ""))
    click.echo(f"chain clock: {_scale_text(scale)}")
    if dev:
        for line in dev_hints(home, rows[0]["api"]):
            click.echo(line)
    click.echo("Stop them with: lendnet cluster down" +
               ("" if home == DEFAULT_HOME else f" --home {home}"))


@cluster.command("restart")
@click.argument("node")
@_home_option
@click.option("--wait", "wait_s", type=click.IntRange(1, 600), default=60, show_default=True,
              help="Seconds to wait for it to catch up with the others.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def restart(node, home, wait_s, as_json):
    """Stop NODE (node0, node1, ... or an index) if it runs, start it again on its port,
    and wait until it has caught up with the other members."""
    name = f"node{node}" if node.isdigit() else node
    c = Cluster(home)
    try:
        m = _interruptible(lambda: c.restart(name, wait_s))
    except (ClusterError, H.HomeError) as e:
        raise click.ClickException(str(e))
    st = m.status() or {}
    out = {"name": m.name, "pid": m.pid, "api": m.api, "height": st.get("height")}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{m.name} restarted: {m.api}  pid {m.pid}, at height {out['height']}")


def blocks_kept(status: dict) -> str:
    """Which blocks a node keeps, from its /v1/status: "archive" (all, from genesis) or
    "pruned (last K, from height X)" (node/core/pruning.py); a node that state-synced
    and does not prune keeps everything from its snapshot on."""
    first = status.get("first_block", 1)
    if status.get("archive", True):
        return "archive"
    if status.get("keep_blocks") is None:
        return f"from height {first} (state-synced)"
    return f"pruned (last {status['keep_blocks']}, from height {first})"


@cluster.command("status")
@_home_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def status(home, as_json):
    """Each node's state (running; dead: its process is gone without `cluster down`;
    stopped), height, view, primary, peers and mempool; the chain clock's scale."""
    c = Cluster(home)
    members = c.members()
    if not members:
        raise click.ClickException(f"no cluster in {home}")
    try:
        g = c.genesis()
    except H.HomeError as e:
        raise click.ClickException(str(e))
    scale = g.config().time_scale if g else 1
    rows = []
    for m in members:
        state = m.state()
        st = m.status() if state == "running" else None
        rows.append({"name": m.name, "state": state, "running": state == "running",
                     "answering": st is not None,
                     "pid": m.pid if state != "stopped" else None,
                     "api": m.api if m.port else None, **(st or {}),
                     "keeps": blocks_kept(st) if st else None})
    dead = [r["name"] for r in rows if r["state"] == "dead"]
    if as_json:
        click.echo(json.dumps({"home": str(home), "time_scale": scale,
                               "dev": g is not None and H.is_dev(g), "dead": dead,
                               "nodes": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"cluster {home}", caption=f"chain clock: {_scale_text(scale)}")
    for col in ("node", "state", "height", "view", "primary", "peers", "mempool", "api"):
        t.add_column(col)
    for r in rows:
        state = r["state"] + ("" if r["state"] != "dead" else f" (pid {r['pid']} gone)") \
            + ("" if r["answering"] or r["state"] != "running" else " (not answering)")
        t.add_row(r["name"], state, str(r.get("height", "-")),
                  str(r.get("view", "-")), str(r.get("primary", "-")),
                  str(len(r.get("peers", []))) if "peers" in r else "-",
                  str(r.get("mempool", "-")), r["api"] or "-")
    Console().print(t)
    # Under the table, not a column: "pruned (last K, from height X)" would squeeze the
    # table past a terminal's 80 columns.
    kept = [f"{r['name']} {r['keeps']}" for r in rows if r["keeps"]]
    if kept:
        click.echo("blocks kept: " + "; ".join(kept))
    flag = "" if home == DEFAULT_HOME else f" --home {home}"
    if dead:
        click.echo(f"dead: {', '.join(dead)} (see `lendnet cluster logs {dead[0]}{flag}`); "
                   f"`lendnet cluster up{flag}` starts them again, or `lendnet cluster "
                   f"restart NAME{flag}`")


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
