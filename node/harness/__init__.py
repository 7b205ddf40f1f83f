"""Test and operations tooling around real nodes: local clusters (cluster.py,
netns.py), fault injection (chaos.py, admin.py, byzantine.py, faults.py), the benchmark
(bench.py) and the lending workload the simulator and the fault runs share (workload.py).
Nothing in the core or the daemon imports it: a test-only fault reaches a daemon through
the hooks `lendnet node start` installs (faults.py)."""
