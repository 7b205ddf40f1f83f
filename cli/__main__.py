"""`python -m lendnet.cli`: the `lendnet` command, for a child process that must run
the same interpreter (a node the cluster starts, a test's subprocess)."""
from .main import main

main(prog_name="lendnet")
