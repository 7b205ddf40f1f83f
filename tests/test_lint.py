"""The tools that help the next person: ruff over the whole tree, mypy over the
deterministic core (consensus/, ledger/, contracts/). Both are in the test extras, so the
README's test command installs them."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TYPED = ("consensus", "ledger", "contracts", "node")


def test_ruff_is_clean():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_is_clean_over_the_core(tmp_path):
    # mypy must see these folders as lendnet.<folder>, as they install: link them under
    # a lendnet/ of our own and put it on MYPYPATH ([tool.mypy] names the packages).
    (tmp_path / "lendnet").mkdir()
    for d in TYPED:
        (tmp_path / "lendnet" / d).symlink_to(ROOT / d, target_is_directory=True)
    env = dict(os.environ, MYPYPATH=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no issues found" in r.stdout


# ledger/'s modules that are lending (the rest is the generic ledger they build on).
LENDING = ("lending", "settlement", "portfolio", "apr", "savings", "pools", "groups", "guarantees")


def test_one_direction_between_ledger_and_lending():
    """Lending (lending.py and the modules in LENDING) builds on the generic ledger; the
    generic ledger (every other module of ledger/) imports neither lending nor the loan
    agreements. lending.py wires itself in through `ledger.Rules` (lending.RULES,
    lending.genesis)."""
    banned = (*(f"lendnet.ledger.{m}" for m in LENDING), "lendnet.contracts.agreements")
    found = [f"{path.relative_to(ROOT)}: {name}"
             for path in sorted((ROOT / "ledger").glob("*.py")) if path.stem not in LENDING
             for name in imports(path)
             if any(name == b or name.startswith(b + ".") for b in banned)]
    assert found == []
    assert "lendnet.ledger.ledger" in imports(ROOT / "ledger" / "lending.py")


CORE = [ROOT / d for d in ("consensus", "ledger", "contracts", "node/core")]
NO_IO = {"asyncio", "sqlite3", "socket", "time", "threading", "subprocess", "aiohttp"}


def test_the_deterministic_core_imports_no_io_and_no_clock():
    """The replica, ledger, VM and node core run inside the simulator as they run in the
    daemon: none of them may reach a socket, a database, a thread or the clock."""
    found = []
    for place in CORE:
        for path in ([place] if place.is_file() else sorted(place.rglob("*.py"))):
            found += [f"{path.relative_to(ROOT)}: {n}" for n in imports(path)
                      if n.split(".")[0] in NO_IO]
    assert found == []


def imports(path: Path) -> list[str]:
    """Every module a file imports, anywhere in it (function-local imports too), by its
    absolute name; `from a import b` counts as importing both a and a.b."""
    package = "lendnet." + ".".join(path.relative_to(ROOT).parent.parts)
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (package.rsplit(".", node.level - 1)[0] if node.level else "")
            module = ".".join(p for p in (base, node.module or "") if p)
            names += [module] + [f"{module}.{a.name}" for a in node.names]
    return names


# What each part of node/ may import from the others: the core nothing, the daemon the
# core, the simulator the core and the harness's lying validators and workload (and the
# daemon's clock setting); the harness anything. A test-only fault reaches a daemon
# through hooks the harness installs (node/harness/faults.py), never an import.
LAYERS = {"core": set(), "daemon": {"core"}, "sim": {"core", "harness", "daemon.home"},
          "harness": {"core", "daemon", "sim"}}


def test_node_parts_import_only_the_layers_below():
    found = []
    for part, allowed in LAYERS.items():
        for path in sorted((ROOT / "node" / part).rglob("*.py")):
            for name in imports(path):
                if not name.startswith("lendnet.node."):
                    continue
                rest = name.removeprefix("lendnet.node.")
                if "." not in rest:
                    continue                      # a part's package itself: a docstring
                if rest.split(".")[0] != part and not any(
                        rest == a or rest.startswith(a + ".") for a in allowed):
                    found.append(f"{path.relative_to(ROOT)} imports {name}")
    assert found == []
