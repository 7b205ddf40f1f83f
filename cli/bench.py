"""`lendnet bench`: committed throughput and commit latency of a real cluster."""
from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("bench")
@click.option("--nodes", type=click.IntRange(1, 16), default=4, show_default=True)
@click.option("--txs", type=click.IntRange(1, 10_000_000), default=3_000, show_default=True)
@click.option("--rate", type=click.IntRange(0, 100_000), default=300, show_default=True,
              help="Offered transactions/s (open loop); 0: as fast as the nodes accept.")
@click.option("--workload", type=click.Choice(["transfer", "repay", "mixed"]),
              default="mixed", show_default=True)
@click.option("--nodes-from", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, help="Load a running `lendnet cluster` (its --home) instead.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def bench(nodes, txs, rate, workload, nodes_from, as_json):
    """Start a local cluster (or use a running one), pre-sign the transactions in worker
    processes before the clock starts, offer them through every node, and report
    committed tx/s, p50/p90/p99/max commit latency as the client sees it, blocks/s,
    average batch, CPU seconds per committed transaction and peak RSS per node."""
    from lendnet.node.harness.bench import bench as run_bench
    from lendnet.node.harness.bench import describe
    from lendnet.node.harness.cluster import ClusterError
    try:
        out = run_bench(nodes, txs, rate, workload, nodes_from)
    except (ClusterError, RuntimeError, OSError) as e:
        raise click.ClickException(str(e))
    click.echo(json.dumps(out, indent=2) if as_json else describe(out))
    if out["committed"] != out["offered"] - out["refused"]:
        raise SystemExit(1)
