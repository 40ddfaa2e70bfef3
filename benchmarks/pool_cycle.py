"""One uncontended pool cycle, repeated: for profilers that count instructions.

Wall-clock ratios of a sub-microsecond cycle move with the machine; an
instruction and cache-miss count does not. Run a variant under cachegrind and
subtract the ``none`` run (interpreter start-up and the imports)::

    valgrind --tool=cachegrind --cache-sim=yes \\
        python -m benchmarks.pool_cycle await 100000
    valgrind --tool=cachegrind --cache-sim=yes \\
        python -m benchmarks.pool_cycle none 0

Variants: ``await`` (``await pool.acquire()`` + ``await pool.release(obj)``),
``with`` (``async with pool.acquire()``), ``peer-await`` and ``peer-with``
(the same on the asyncio.Queue pool of :mod:`benchmarks.pool_bench`), and
``none`` (no cycles).
"""

from __future__ import annotations

import asyncio
import sys

from benchmarks.pool_bench import QueuePool, _factory
from memwarden.pool import ObjectPool

VARIANTS = ("await", "with", "peer-await", "peer-with", "none")


async def run(variant: str, cycles: int) -> None:
    """Run ``cycles`` cycles of ``variant`` on a pool holding one ready object."""
    pool: ObjectPool[list[int]] = ObjectPool(_factory, max_size=10)
    await pool.release(await pool.acquire())
    peer = QueuePool(_factory, 1)
    if variant == "await":
        for _ in range(cycles):
            obj = await pool.acquire()
            await pool.release(obj)
    elif variant == "with":
        for _ in range(cycles):
            async with pool.acquire():
                pass
    elif variant == "peer-await":
        for _ in range(cycles):
            obj = await peer.acquire()
            peer.release(obj)
    elif variant == "peer-with":
        for _ in range(cycles):
            async with peer.lease():
                pass
    await pool.aclose()


def main(argv: list[str]) -> int:
    """``python -m benchmarks.pool_cycle VARIANT [CYCLES]``."""
    if not argv or argv[0] not in VARIANTS:
        print(f"usage: python -m benchmarks.pool_cycle {{{','.join(VARIANTS)}}} [CYCLES]")
        return 2
    cycles = int(argv[1]) if len(argv) > 1 else 100_000
    asyncio.run(run(argv[0], cycles))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
