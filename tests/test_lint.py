"""The tools that help the next person: ruff over the whole tree, mypy over the
deterministic core (consensus/, ledger/, contracts/). Both are in the test extras, so the
README's test command installs them."""
from __future__ import annotations

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
