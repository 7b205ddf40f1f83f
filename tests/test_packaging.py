"""What a user installs: one top-level name, `lendnet`, and nothing else."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "ledger", "node", "consensus", "contracts", "cli")


def test_the_wheel_holds_only_the_lendnet_namespace(tmp_path):
    src = tmp_path / "src"                  # a clean copy: the build writes beside it
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    # (in build isolation, as `pip install .` does: setuptools comes from the index)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "-w", str(tmp_path / "dist"), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    [wheel] = (tmp_path / "dist").glob("lendnet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"lendnet"}, tops
    # the namespace has no __init__ of its own, so nothing else can shadow it piecemeal
    assert "lendnet/__init__.py" not in names
    for module in ("lendnet/ledger/ledger.py", "lendnet/consensus/replica.py",
                   "lendnet/node/core/node.py", "lendnet/node/sim/simulation.py",
                   "lendnet/node/daemon/daemon.py", "lendnet/node/harness/chaos.py",
                   "lendnet/cli/__main__.py",
                   "lendnet/contracts/agreements/loan.lasm"):
        assert module in names, module
    assert not [n for n in names if n.startswith(("lendnet/tests", "lendnet/scripts"))]
    [entry] = [n for n in names if n.endswith("entry_points.txt")]
    assert "lendnet = lendnet.cli.main:main" in zipfile.ZipFile(wheel).read(entry).decode()
