"""`lendnet sim`: run validators in the deterministic simulator, seed by seed, under
random faults or Twins scenarios; replay one run and read what went wrong."""
from __future__ import annotations

import json
import logging
import time

import click

from lendnet.node.sim.simulation import FAULT_CLASSES, Simulation, history, run_seed


@click.command("sim")
@click.option("--validators", type=click.IntRange(4, 16), default=4, show_default=True,
              help="Number of validators n; up to f = (n-1)//3 may be byzantine.")
@click.option("--seeds", type=click.IntRange(1, 10_000_000), default=1, show_default=True,
              help="How many seeds (runs, or Twins scenarios) to run, starting at --seed.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=1, show_default=True,
              help="First seed; a failing run is replayed exactly with --replay.")
@click.option("--faults", type=click.Choice(["none", *FAULT_CLASSES, "all"]), default="all",
              show_default=True, help="Fault classes the nemesis injects (clock: up to f "
              "clocks set beyond the tolerated skew).")
@click.option("--txs", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="Client transactions per run (a lending workload: offers, "
              "applications, funding, repayments, transfers).")
@click.option("--twins", is_flag=True,
              help="Run Twins scenarios instead: up to f validators doubled (two "
              "instances, one key), a leader and a cut of each view's messages chosen "
              "view by view (see docs/CONSENSUS.md).")
@click.option("--rounds", type=click.IntRange(1, 12), default=4, show_default=True,
              help="Twins: views whose leader and cut the scenario chooses.")
@click.option("--doubled", type=click.IntRange(0, 5), default=None,
              help="Twins: validators with a twin [default: f].")
@click.option("--replay", "replay", metavar="SPEC",
              help="Run the one run SPEC names (printed with every failure, e.g. "
              "twins:4:1:4:123456 or sim:4:all:200:17), byte for byte, and print the "
              "history that shows what went wrong.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def sim(validators, seeds, seed, faults, txs, twins, rounds, doubled, replay, as_json):
    """Run full nodes in one process under a nemesis, then check the result.

    Each run uses the real node logic (mempool, PBFT replica, ledger) over a
    simulated network with a virtual clock; each node has its own clock offset
    and drift, scheduling delays and start time. Every random choice comes from
    the seed, so the same seed prints the same result byte for byte. The checker
    verifies agreement, validity, integrity (no honest validator signs twice for
    one slot), evidence, bounded state, equal state roots, conservation of
    money, chain time and liveness after the faults heal. Exit status 1 if any
    run fails.
    """
    # The simulated nodes' own log lines (how a restarted node rebuilt its state) would
    # be the same few lines from every node of every seed: the run's trace has them.
    logging.getLogger("lendnet").addHandler(logging.NullHandler())
    if replay:
        return _replay(replay, as_json)
    if twins:
        return _twins(validators, seeds, seed, rounds, doubled, as_json)
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
            _problems(r)
    failed = [r for r in results if not r.ok]
    summary = {
        "runs": len(results), "validators": validators, "faults": faults, "txs": txs,
        "safety_violations": sum(len(r.safety_violations) for r in results),
        "liveness_failures": sum(1 for r in results if r.liveness_failure),
        "time_violations": sum(len(r.time_violations) for r in results),
        "committed_txs": sum(r.committed_txs for r in results),
        "view_changes": sum(r.view_changes for r in results),
        "evidence": sum(r.evidence for r in results),
        # crashed nodes booted again, by where their state came from (snapshot, genesis)
        "restarts": _sum_counts(r.restarts for r in results),
        "seeds_failed": [r.seed for r in failed],
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
                   + ("; restarts from " + ", ".join(
                       f"{k} {v}" for k, v in summary["restarts"].items())
                      if summary["restarts"] else "")
                   + (f"; replay with --replay {failed[0].replay}" if failed else ""))
    if failed:
        raise SystemExit(1)


def _sum_counts(counts) -> dict:
    total: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return dict(sorted(total.items()))


def _problems(r) -> None:
    for v in r.safety_violations:
        click.echo(f"    safety: {v}")
    if r.liveness_failure:
        click.echo(f"    liveness: {r.liveness_failure}")
    for v in r.time_violations:
        click.echo(f"    time: {v}")


def _twins(n, seeds, seed, rounds, doubled, as_json):
    from lendnet.node.sim.twins import Space, run_scenario, shrink
    f = (n - 1) // 3
    doubled = f if doubled is None else doubled
    if doubled > f:
        raise click.UsageError(f"--doubled: at most f = {f} validators of {n} may be doubled")
    space = Space(n, doubled, rounds)
    t0 = time.monotonic()
    failed = []
    for s in range(seed, seed + seeds):
        index = space.draw(s)
        run, r = run_scenario(space, index)
        if r.ok:
            continue
        small = shrink(space, index)
        failed.append({"seed": s, "scenario": index, "replay": r.replay,
                       "shrunk": f"twins:{n}:{doubled}:{rounds}:{small}",
                       "violations": r.safety_violations + r.time_violations,
                       "liveness_failure": r.liveness_failure,
                       "described": space.describe(space.scenario(small))})
        if not as_json:
            click.echo(f"seed {s} FAIL scenario {index}")
            _problems(r)
            click.echo(f"    the simplest scenario found that fails the same way "
                       f"(--replay {failed[-1]['shrunk']}):")
            for line in failed[-1]["described"]:
                click.echo(f"      {line}")
    took = time.monotonic() - t0
    summary = {"scenarios": seeds, "failed": len(failed), "validators": n,
               "doubled": doubled, "rounds": rounds, "space": space.size,
               "seconds": round(took, 1), "scenarios_per_second": round(seeds / took, 1),
               "failures": failed}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"{seeds} Twins scenarios ({n} validators, {doubled} doubled, {rounds} "
                   f"views each), {len(failed)} failed, {summary['scenarios_per_second']} "
                   f"scenarios/s; the space holds {space.size:,} scenarios")
    if failed:
        raise SystemExit(1)


def _replay(spec: str, as_json: bool):
    parts = spec.split(":")
    try:
        if parts[0] == "twins" and len(parts) == 5:
            from lendnet.node.sim.twins import Space, run_scenario
            n, doubled, rounds, index = map(int, parts[1:])
            space = Space(n, doubled, rounds)
            run, r = run_scenario(space, index, trace=True)
            described = space.describe(run.scenario)
        elif parts[0] == "sim" and len(parts) == 5:
            n, faults, txs, seed = int(parts[1]), parts[2], int(parts[3]), int(parts[4])
            run = Simulation(seed, validators=n, faults=faults, txs=txs, trace=True)
            r = run.run()
            described = [f"seed {seed}, {n} validators, faults {faults}, {txs} transactions"]
        else:
            raise ValueError("unknown kind")
    except ValueError as e:
        raise click.BadParameter(f"{spec!r} is not a replay spec ({e}); it looks like "
                                 f"twins:N:DOUBLED:ROUNDS:SCENARIO or sim:N:FAULTS:TXS:SEED",
                                 param_hint="--replay")
    r.history = history(run, r) if not r.ok else []
    if as_json:
        click.echo(json.dumps({**r.to_json(), "scenario": described}, indent=2, default=str))
    else:
        click.echo(f"{spec}: {'ok' if r.ok else 'FAIL'}")
        for line in described:
            click.echo(f"  {line}")
        _problems(r)
        for line in r.history:
            click.echo(f"  {line}")
    if not r.ok:
        raise SystemExit(1)
