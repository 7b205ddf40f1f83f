"""The simulator on many seeds, every fault class, f = 1 and f = 2; and the checker shown
to catch a broken protocol."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from consensus import messages as M
from node.checker import check
from node.sim import FAULT_CLASSES, Simulation, run_seed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _failures(validators, faults, seeds, txs):
    out = []
    for seed in seeds:
        r = run_seed(seed, validators=validators, faults=faults, txs=txs)
        if not r.ok or r.committed_txs < txs:
            out.append((seed, r.safety_violations[:3], r.liveness_failure))
    return out


@pytest.mark.parametrize("faults", ["none", *FAULT_CLASSES, "all"])
def test_four_validators_many_seeds(faults):
    seeds = range(1, 11) if faults == "none" else range(1, 51)
    assert _failures(4, faults, seeds, txs=100) == []


@pytest.mark.parametrize("faults", [*FAULT_CLASSES, "all"])
def test_seven_validators(faults):
    assert _failures(7, faults, range(1, 13), txs=60) == []


def test_byzantine_runs_inject_and_record():
    r = run_seed(2, faults="byzantine", txs=40)           # seed 2: equivocating primary
    assert r.ok and r.byzantine == {0: "equivocate"} and r.evidence > 0
    r = run_seed(3, faults="all", txs=40)                 # seed 3: a replaying node, too
    assert r.ok and r.byzantine == {1: "replay"} and r.faults_injected > 5
    assert r.view_changes > 0


def test_a_quorum_of_f_plus_1_is_caught():
    """The deliberately broken variant (test-only quorum override) lets two halves of a
    partition each commit their own block, and the checker says so, within a bounded
    number of seeds."""
    for seed in range(1, 11):
        r = run_seed(seed, faults="network", txs=300, quorum_override=2)
        if r.safety_violations:
            assert not r.ok
            assert any(v.startswith("agreement: nodes disagree") or "assertion" in v
                       for v in r.safety_violations), r.safety_violations
            return
    pytest.fail("a quorum of f+1 went unnoticed for 10 seeds")


def test_checker_catches_a_tampered_chain():
    s = Simulation(3, faults="none", txs=20)
    assert s.run().ok
    nodes = dict(enumerate(s.nodes))
    block, cert, root = s.stores[2].get_block(1)
    s.stores[2].blocks[1] = (block, cert, b"\x01" * 32)          # another state root
    other = dict(block, header=dict(block["header"], time=block["header"]["time"] + 1))
    s.stores[3].blocks[2] = (other, s.stores[3].get_block(2)[1], root)
    problems = check(nodes, s.workload.created, s.genesis.config().validators.quorum)
    assert any("agreement: nodes disagree at height 1" in p for p in problems)
    assert any("height 2 on node 3: commit certificate short" in p for p in problems)


def test_same_seed_same_bytes_across_processes():
    """Byte-for-byte replay, even with a different hash seed in each process."""
    outs = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        outs.append(subprocess.run(
            [sys.executable, "-m", "cli.main", "sim", "--seed", "5", "--txs", "30", "--json"],
            cwd=ROOT, env=env, capture_output=True, timeout=120, check=True).stdout)
    assert outs[0] == outs[1] and b'"seeds_failed": []' in outs[0]


def test_messages_from_outside_the_validator_set_are_refused():
    s = Simulation(4, faults="none", txs=5)
    node = s.nodes[0]
    from ledger.keys import Keypair
    stranger = Keypair.from_name("stranger")
    body = {"t": M.PREPARE, "v": 0, "h": 1, "d": b"\x00" * 32, "r": 1}
    forged = M.sign(s.genesis.chain_id, stranger, body)
    assert node.deliver(M.encode(forged), s.now) == []
    assert node.rejected_messages == 1
