"""The node's IO-free core: the mempool, the replica and the ledger wired into one
`Node` (node.py), and the store interface it writes through. No asyncio, sqlite3, socket
or time here (tests/test_lint.py checks): the simulator and the daemon both run it."""
