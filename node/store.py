"""Where a node keeps what must outlive it: committed blocks with their certificates and
state roots, and the consensus votes it signed. `MemoryStore` is the simulator's disk: it
survives a simulated crash because the simulator keeps it while the node is rebuilt."""
from __future__ import annotations


class MemoryStore:
    def __init__(self):
        self.records: dict = {}                    # ("vote", t, v, h) / ("view",) / ...
        self.blocks: dict[int, tuple] = {}         # height -> (block, cert, state root)

    # consensus records: written before the message they protect leaves the node
    def put_record(self, key: tuple, value) -> None:
        if key == ("gc",):
            for k in [k for k in self.records if k[0] == "vote" and k[3] <= value]:
                del self.records[k]
            return
        self.records[key] = value

    def load_records(self) -> dict:
        return dict(self.records)

    # the chain
    def put_block(self, height: int, block: dict, cert: list, root: bytes) -> None:
        self.blocks[height] = (block, cert, root)

    def get_block(self, height: int):
        return self.blocks.get(height)

    @property
    def height(self) -> int:
        return max(self.blocks, default=0)
