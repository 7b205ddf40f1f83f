"""The daemon shell: the core with a real clock, real sockets (transport.py), a real
disk (sqlstore.py, blobs.py), the HTTP API (api.py), metrics, the node's home folder
(home.py) and the API client wallets use (client.py)."""
