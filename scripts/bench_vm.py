"""Micro-benchmark of the contract VM interpreter.

Prints instructions per second for a tight counting loop and microseconds per call for
a ~200-instruction repayment-shaped program (storage reads and writes, muldiv interest,
a payment and an event). `--json` prints the same figures as one JSON object.
"""
from __future__ import annotations

import argparse
import json
import time

from lendnet.contracts.asm import assemble
from lendnet.contracts.vm import Program, execute

LOOP = """
.slot I 0
    push 0
    store I
loop:
    load I
    push 1
    add
    dup
    store I
    push {n}
    lt
    jnz loop
    load I
    ret
"""

# A repayment step: accrue interest on the outstanding balance, split the payment into
# interest and principal, update storage, pay the lender, emit an event. Repeated over a
# few instalments so one call executes about 200 instructions.
REPAY = """
.const BPS 1200
.const YEAR 120000
.slot BAL 0
.slot PAY 1
.slot INT 2
.slot K 3
    pushb "balance"
    sget
    store BAL
    arg 0
    store PAY
    push 0
    store K
step:
    load BAL
    push BPS
    push YEAR
    muldiv half_even
    store INT
    load PAY
    load INT
    min
    load BAL
    load PAY
    load INT
    sub
    push 0
    max
    min
    callsub apply
    load K
    push 1
    add
    dup
    store K
    push 6
    lt
    jnz step
    pushb "balance"
    load BAL
    sput
    pushb "lender"
    load PAY
    pay
    load BAL
    load PAY
    pushb "repaid"
    emit 2
    load BAL
    ret
apply:
    proto 2 0
    swap
    pop
    load BAL
    swap
    sub
    dup
    push 0
    ge
    assert "negative balance"
    store BAL
    retsub
"""


# Worst cases per gas unit: each body runs in a loop of LOOP_N iterations; ns/gas near the
# repayment program's figure means the surcharges price big values fairly.
HEAVY = {
    "mul_8k_bits": "push {big8k}\n    dup\n    mul\n    pop",
    "div_16k_by_8k": "push {big16k}\n    push {big8k}\n    div\n    pop",
    "muldiv_16k_bits": "push {big16k}\n    dup\n    dup\n    muldiv half_even\n    pop",
    "exp_16k_bits": "push 3\n    push 10330\n    exp\n    pop",
    "sha256_4k": "load 1\n    sha256\n    pop",
    "ed25519verify": "pushb \"m\"\n    load 2\n    load 3\n    ed25519verify\n    pop",
}
HEAVY_LOOP = """
    push 0
    store 0
    pushb 0x{four_kib}
    store 1
    pushb 0x{sig}
    store 2
    pushb 0x{pk}
    store 3
loop:
    {body}
    load 0
    push 1
    add
    dup
    store 0
    push {n}
    lt
    jnz loop
"""


class BenchHost:
    height = 100
    time = 1_700_000_000
    caller = b"borrower"
    self_address = b"loan"
    value = 0

    def __init__(self):
        self.storage = {b"balance": 1_000_000}

    def storage_get(self, key):
        return self.storage.get(key)

    def storage_put(self, key, value):
        self.storage[key] = value

    def storage_del(self, key):
        self.storage.pop(key, None)

    def balance(self, addr):
        return 0

    def pay(self, to, amount):
        pass

    def emit(self, name, values):
        pass

    def wake(self, t):
        pass

    def release_liens(self):
        pass

    def seize_liens(self, to):
        pass


def best_of(fn, repeat: int, number: int) -> float:
    """Smallest mean time per call over `repeat` rounds of `number` calls (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    opts = parser.parse_args()

    iterations = 20_000
    loop = Program.load(assemble(LOOP.format(n=iterations)))
    host = BenchHost()
    loop_out = execute(loop, host, [], 10**9)
    loop_instructions = 3 + iterations * 8 + 2          # setup + body × n + tail
    loop_time = best_of(lambda: execute(loop, host, [], 10**9), 10, 1)

    repay_code = assemble(REPAY)
    repay = Program.load(repay_code)
    out = execute(repay, BenchHost(), [50_000], 100_000)
    repay_instructions = _count_instructions(repay, [50_000])
    repay_time = best_of(lambda: execute(repay, BenchHost(), [50_000], 100_000), 7, 2000)
    cached_time = best_of(
        lambda: execute(Program.load(repay_code), BenchHost(), [50_000], 100_000), 7, 2000)
    load_time = best_of(lambda: Program(repay_code, b""), 5, 200)

    heavy = {name: _ns_per_gas(body) for name, body in HEAVY.items()}
    figures = {
        "loop_instructions_per_s": round(loop_instructions / loop_time),
        "loop_gas": loop_out.gas_used,
        "repay_instructions": repay_instructions,
        "repay_gas": out.gas_used,
        "repay_us_per_call": round(repay_time * 1e6, 2),
        "repay_us_per_call_with_cached_load": round(cached_time * 1e6, 2),
        "repay_ns_per_instruction": round(repay_time * 1e9 / repay_instructions, 1),
        "verify_decode_us": round(load_time * 1e6, 1),
        "code_bytes": len(repay_code),
        "repay_ns_per_gas": round(repay_time * 1e9 / out.gas_used, 1),
        "heavy_ns_per_gas": heavy,
    }
    if opts.json:
        print(json.dumps(figures))
        return
    print(f"tight loop:        {figures['loop_instructions_per_s']:>12,} instructions/s")
    print(f"repayment program: {figures['repay_us_per_call']:>9.2f} µs/call "
          f"({repay_instructions} instructions, {out.gas_used} gas, "
          f"{figures['repay_ns_per_instruction']} ns/instruction)")
    print(f"  incl. cached Program.load: {figures['repay_us_per_call_with_cached_load']:.2f} µs")
    print(f"repayment program: {figures['repay_ns_per_gas']} ns/gas; worst cases:")
    for name, ns in heavy.items():
        print(f"  {name:<18} {ns:>8.1f} ns/gas")
    print(f"verify + decode ({len(repay_code)} B): {figures['verify_decode_us']:.1f} µs "
          "(once per code hash)")


def _ns_per_gas(body: str, n: int = 20) -> float:
    from nacl.signing import SigningKey

    key = SigningKey(bytes(32))
    source = HEAVY_LOOP.format(
        body=body.format(big8k=hex((1 << 8191) - 1), big16k=hex((1 << 16383) - 1)),
        n=n, four_kib="61" * 4096, sig=key.sign(b"m").signature.hex(),
        pk=key.verify_key.encode().hex())
    program = Program.load(assemble(source))
    gas = execute(program, BenchHost(), [], 10**9).gas_used
    seconds = best_of(lambda: execute(program, BenchHost(), [], 10**9), 5, 1)
    return round(seconds * 1e9 / gas, 1)


def _count_instructions(program: Program, args: list) -> int:
    """Instructions executed, read off as gas from a copy where every instruction costs 1
    (the benchmark's values are small, so no size surcharge is added)."""
    unit = Program(program.code, program.code_hash)
    unit._linked = tuple((kind, fn, imm, 1) for kind, fn, imm, _ in program._linked[:-1]) \
        + program._linked[-1:]
    return execute(unit, BenchHost(), args, 10**9).gas_used


if __name__ == "__main__":
    main()
