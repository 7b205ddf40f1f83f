"""The deterministic simulator: many nodes' cores on one virtual clock and network,
faults from a seed (simulation.py), Twins scenarios (twins.py) and the checker that
judges a run (checker.py)."""
