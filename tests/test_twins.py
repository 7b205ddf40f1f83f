"""Twins scenarios, counterexamples, and the mutant catalogue: the simulator judged by
the bugs it catches."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lendnet.node.sim.simulation import history
from lendnet.node.sim.twins import EVERYONE, NOBODY, Round, Space, kind_of, run_scenario

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("mutants", ROOT / "scripts" / "mutants.py")
mutants = sys.modules["mutants"] = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(mutants)

SPACE = Space(4, 1, 4)
HANDMADE = SPACE.index((Round(1, 3, EVERYONE, NOBODY), Round(0, None, EVERYONE, EVERYONE),
                        Round(2, None, EVERYONE, EVERYONE), Round(3, None, EVERYONE, EVERYONE)),
                       "viewchange-lie")
# Counterexamples `python scripts/mutants.py` found (scenario numbers in Space(4, 1, 4)),
# each for the mutant it exposes. A change to the protocol's timing can move them: find
# the new ones with `python scripts/mutants.py --only NAME`, which prints the replay spec.
LOWEST_VIEW = 309612369156
NEWVIEW_SHORT = 11495949474313


def test_scenario_numbers_and_choices_are_one_to_one():
    for seed in range(50):
        index = SPACE.draw(seed)
        assert SPACE.index(*SPACE.scenario(index)) == index
    assert SPACE.scenario(0) == ((Round(0, None, EVERYONE, EVERYONE),) * 4, None)
    with pytest.raises(ValueError):
        SPACE.scenario(SPACE.size)
    assert SPACE.describe(SPACE.scenario(HANDMADE)) == [
        "view 0: leader 1, 3 cut off, COMMITs reach nobody", "view 1: leader 0",
        "view 2: leader 2", "view 3: leader 3", "0' lies throughout: viewchange-lie"]


def test_the_protocol_survives_twins_scenarios():
    failures = []
    for seed in range(60):
        run, r = run_scenario(SPACE, SPACE.draw(seed))
        if not r.ok:
            failures.append((r.replay, r.safety_violations, r.liveness_failure))
    assert failures == []
    for index in (NEWVIEW_SHORT, LOWEST_VIEW):          # the counterexamples, unmutated
        assert run_scenario(SPACE, index)[1].ok


def test_a_scenario_replays_identically():
    a, ra = run_scenario(SPACE, LOWEST_VIEW, trace=True)
    b, rb = run_scenario(SPACE, LOWEST_VIEW, trace=True)
    assert a.trace == b.trace and ra.to_json() == rb.to_json()


@pytest.mark.parametrize("name,index", [("viewchange-lowest-view", LOWEST_VIEW),
                                        ("newview-short", NEWVIEW_SHORT)])
def test_a_counterexample_convicts_its_mutant_and_reads_as_a_history(tmp_path, name, index):
    env = mutants.mutated_copy(next(m for m in mutants.CATALOGUE if m.name == name),
                               tmp_path)
    out = subprocess.run([sys.executable, "-m", "lendnet.cli", "sim", "--replay",
                          f"twins:4:1:4:{index}"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env=dict(env, PYTHONHASHSEED="0"))
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    found = re.search(r"commit certificates for 2 different blocks at height (\d+)", out.stdout)
    assert found, out.stdout
    # Who committed what, in which view, after which messages:
    height = f"height {found.group(1)}"
    assert any("receives COMMIT view" in line and height in line for line in lines)
    assert any(f"commits {height}: block" in line for line in lines)
    assert any(re.search(r"enters view \d+ \(leader \d", line) for line in lines)


def test_every_mutant_still_applies_to_the_code():
    """The catalogue edits this very code: a change that moves one of its lines must
    move the mutant too (apply raises if its text is not there exactly once)."""
    for m in mutants.CATALOGUE + mutants.GAPS:
        text = (ROOT / m.file).read_text()
        assert text.count(m.old) == 1, m.name
    assert len(mutants.CATALOGUE) >= 10
    assert {m.category for m in mutants.CATALOGUE} >= {
        "quorum sizes", "view-change selection", "NEW-VIEW validation",
        "vote persistence before sending", "checkpoint stability", "watermarks",
        "the commit rule", "evidence", "catch-up certificate checks", "chain time"}


def test_the_mutant_script_catches_a_broken_quorum_quickly():
    out = subprocess.run([sys.executable, "scripts/mutants.py", "--only", "quorum-f-plus-1",
                          "--budget", "60", "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert '"caught": true' in out.stdout and '"missed": []' in out.stdout


def test_history_names_the_violation_and_groups_messages():
    run, r = run_scenario(SPACE, SPACE.draw(3), trace=True)
    r.safety_violations = ["agreement: nodes disagree at height 1"]       # as if
    lines = history(run, r)
    assert lines[0] == "violation: agreement: nodes disagree at height 1"
    assert any("receives PREPARE view 0 height 1" in line for line in lines)
    assert kind_of(r) == "agreement"


def test_replay_prints_the_same_bytes_in_any_process():
    outs = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        outs.append(subprocess.run([sys.executable, "-m", "lendnet.cli", "sim", "--replay",
                                    f"twins:4:1:4:{LOWEST_VIEW}", "--json"], cwd=ROOT,
                                   env=env, capture_output=True, timeout=120).stdout)
    assert outs[0] == outs[1] and b'"ok": true' in outs[0]
