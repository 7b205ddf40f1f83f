"""`lendnet sim`: run validators in the deterministic simulator, seed by seed."""
from __future__ import annotations

import json

import click

from node.sim import FAULT_CLASSES, run_seed


@click.command("sim")
@click.option("--validators", type=click.IntRange(4, 16), default=4, show_default=True,
              help="Number of validators n; up to f = (n-1)//3 may be byzantine.")
@click.option("--seeds", type=click.IntRange(1, 100_000), default=1, show_default=True,
              help="How many seeds to run, starting at --seed.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=1, show_default=True,
              help="First seed; a failing seed is replayed exactly with --seed S.")
@click.option("--faults", type=click.Choice(["none", *FAULT_CLASSES, "all"]), default="all",
              show_default=True, help="Fault classes the nemesis injects (clock: up to f "
              "clocks set beyond the tolerated skew).")
@click.option("--txs", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="Client transactions per run (a lending workload: offers, "
              "applications, funding, repayments, transfers).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def sim(validators, seeds, seed, faults, txs, as_json):
    """Run full nodes in one process under a nemesis, then check the result.

    Each run uses the real node logic (mempool, PBFT replica, ledger) over a
    simulated network with a virtual clock; each node has its own clock offset
    and drift, scheduling delays and start time. Every random choice comes from
    the seed, so the same seed prints the same result byte for byte. The checker
    verifies agreement, validity, integrity, equal state roots, conservation of
    money, chain time and liveness after the faults heal. Exit status 1 if any
    run fails.
    """
    results = []
    for s in range(seed, seed + seeds):
        r = run_seed(s, validators=validators, faults=faults, txs=txs)
        results.append(r)
        if not as_json:
            status = "ok  " if r.ok else "FAIL"
            byz = ",".join(f"{i}:{m}" for i, m in r.byzantine.items()) or "-"
            click.echo(f"seed {s:>6} {status} height {r.height:>5} txs {r.committed_txs:>6} "
                       f"view changes {r.view_changes:>3} evidence {r.evidence:>3} "
                       f"faults {r.faults_injected:>3} byzantine {byz}")
            for v in r.safety_violations:
                click.echo(f"    safety: {v}")
            if r.liveness_failure:
                click.echo(f"    liveness: {r.liveness_failure}")
            for v in r.time_violations:
                click.echo(f"    time: {v}")
    failed = [r.seed for r in results if not r.ok]
    summary = {
        "runs": len(results), "validators": validators, "faults": faults, "txs": txs,
        "safety_violations": sum(len(r.safety_violations) for r in results),
        "liveness_failures": sum(1 for r in results if r.liveness_failure),
        "time_violations": sum(len(r.time_violations) for r in results),
        "committed_txs": sum(r.committed_txs for r in results),
        "view_changes": sum(r.view_changes for r in results),
        "evidence": sum(r.evidence for r in results),
        "seeds_failed": failed,
    }
    if as_json:
        click.echo(json.dumps({**summary, "results": [r.to_json() for r in results]},
                              indent=2))
    else:
        click.echo(f"{summary['runs']} runs, {len(failed)} failed: "
                   f"{summary['safety_violations']} safety violations, "
                   f"{summary['liveness_failures']} liveness failures, "
                   f"{summary['time_violations']} time-rule violations, "
                   f"{summary['committed_txs']} transactions committed"
                   + (f"; replay with --seed {failed[0]}" if failed else ""))
    if failed:
        raise SystemExit(1)
