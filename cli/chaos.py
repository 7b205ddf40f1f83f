"""`lendnet chaos`: fault injection on a real local cluster, checked afterwards."""
from __future__ import annotations

import json
import signal
import tempfile
from pathlib import Path

import click

from lendnet.node.harness.attacks import ATTACKS
from lendnet.node.harness.chaos import FAULTS, RSS_BOUND_MIB, ChaosConfig, run


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


@click.group("chaos")
def chaos():
    """Jepsen-style runs: a real cluster, a lending workload, a nemesis, a checker."""


@chaos.command("run")
@click.option("--nodes", type=click.IntRange(4, 10), default=4, show_default=True)
@click.option("--duration", type=click.IntRange(10, 3_600), default=60, show_default=True,
              help="Seconds of workload under faults (then heal, settle, check).")
@click.option("--faults", default="kill,pause,partition,latency,byzantine", show_default=True,
              help="Comma-separated: " + ", ".join(FAULTS) + "; or none (no nemesis).")
@click.option("--attack", "attack", default="", metavar="LIST",
              help="Comma-separated attackers to run beside the clients: "
                   + ", ".join(ATTACKS) + " (or all). Turns on the fast chain clock and "
                   "a reference run without them first.")
@click.option("--no-reference", is_flag=True,
              help="With --attack: skip the reference run (no honest-rate check).")
@click.option("--rss-bound", type=click.IntRange(50, 100_000), default=RSS_BOUND_MIB,
              show_default=True, help="MiB no node's RSS may pass (sampled every 2 s).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=1, show_default=True,
              help="Seeds the fault schedule and the clients' choices.")
@click.option("--rate", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="Transactions per second offered by all clients together.")
@click.option("--dir", "work", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Keep the run's cluster and client histories here.")
@click.option("--hosts", is_flag=True,
              help="One network namespace per node, each with its own address (root and "
                   "iproute2 needed): the same config as across machines.")
@click.option("--broken-quorum", type=click.IntRange(1, 64), default=None, hidden=True,
              help="TEST ONLY: every node accepts this many votes as a quorum.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def run_cmd(nodes, duration, faults, attack, no_reference, rss_bound, seed, rate, work,
            hosts, broken_quorum, as_json):
    """Start a cluster, drive lending from client processes, inject faults on a seeded
    schedule, heal, settle, and check: every acknowledged transaction on every honest
    node, nothing committed twice, identical blocks and state roots, money conserved,
    the byzantine validator's equivocation kept as evidence, liveness back after
    healing. Exit status 1 if any check fails."""
    if not faults.strip():
        raise click.BadParameter("say --faults none for a run without faults",
                                 param_hint="--faults")
    chosen = () if faults.strip() == "none" else \
        tuple(f.strip() for f in faults.split(",") if f.strip())
    bad = set(chosen) - set(FAULTS)
    if bad:
        raise click.BadParameter(f"unknown {sorted(bad)}; choose from {', '.join(FAULTS)}",
                                 param_hint="--faults")
    attacks = ATTACKS if attack.strip() == "all" else \
        tuple(a.strip() for a in attack.split(",") if a.strip())
    bad = set(attacks) - set(ATTACKS)
    if bad:
        raise click.BadParameter(f"unknown {sorted(bad)}; choose from {', '.join(ATTACKS)}",
                                 param_hint="--attack")
    if hosts:
        from lendnet.node.harness.netns import available
        why = available()
        if why:
            raise click.ClickException(f"--hosts mode is not available here: {why}")
    cfg = ChaosConfig(nodes=nodes, duration_s=duration, faults=chosen, seed=seed, rate=rate,
                      broken_quorum=broken_quorum, hosts=hosts, attacks=attacks,
                      reference=not no_reference, rss_bound_mib=rss_bound,
                      log=None if as_json else lambda s: click.echo(s, err=True))
    with tempfile.TemporaryDirectory(prefix="lendnet-chaos-") as tmp:
        root = work or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        # SIGTERM as Ctrl-C: the run's `finally` stops its clients, attackers and nodes.
        previous = signal.signal(signal.SIGTERM, _terminated)
        try:
            report = run(cfg, root)
        except ValueError as e:
            raise click.UsageError(str(e))
        finally:
            signal.signal(signal.SIGTERM, previous)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"{'OK' if report['ok'] else 'FAILED'}: {report['acknowledged']} "
                   f"acknowledged, {report['lost']} lost, {report['duplicated']} duplicated, "
                   f"{report['divergent_heights']} divergent heights, money "
                   f"{'conserved' if report['conservation_ok'] else 'NOT conserved'}, "
                   f"evidence {report['evidence']}, recovery {report['recovery_seconds']} s, "
                   f"{report['faults_injected']} faults injected")
        if attacks:
            ref = report.get("reference", {}).get("honest_tx_per_s")
            click.echo(f"  honest {report['honest_tx_per_s']} tx/s under attack"
                       + (f", {ref} tx/s in the reference run" if ref is not None else "")
                       + f"; peak RSS {max(report['rss']['peak_mib'].values(), default=0)}"
                       f" MiB (bound {report['rss']['bound_mib']}); loans "
                       f"{report['loans']['by_status']}, late fees on time "
                       f"{report['loans']['late_fees_on_time']}, defaults on time "
                       f"{report['loans']['defaults_on_time']}; attackers paid: "
                       f"{report['attackers_paid']['paid']}")
            for name, f in report["attacks"].items():
                click.echo(f"  {name:8} sent {f.get('sent')}, accepted {f.get('accepted')}, "
                           f"committed {f['committed']}, spent {f['spent_lnd']} LND, "
                           f"refused {f.get('refused')}")
        for r in report["reasons"]:
            click.echo(f"  - {r}")
    if not report["ok"]:
        raise SystemExit(1)
