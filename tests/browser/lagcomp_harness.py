"""The lag-compensation browser test's helpers, in their own process (so the delay proxy's
timers do not wait on the test's Playwright driver for the GIL): a delaying proxy in front
of the server and a target bot walking one straight line square to the shooter's line of
fire. `python -m tests.browser.lagcomp_harness PORT`: prints the proxy's port, runs until
its stdin closes (or 180 s), then stops.
"""

from __future__ import annotations

import asyncio
import math
import sys

from bench.browser_smoothness import DelayProxy
from client_demo.client import Client

ONE_WAY_S, JITTER_S = 0.075, 0.015  # RTT 150 ± 30 ms
MAX_RUN_S = 180.0
MARGIN = 40.0  # units from the walls where the bot turns back


async def walk(bot: Client, stop: asyncio.Event) -> None:
    """Back and forth on one straight line, square to the line of fire once a shooter is
    there; one command per snapshot."""
    direction: tuple[float, float] | None = None
    sign = 1.0
    while not stop.is_set():
        await bot.next_snapshot(timeout=5.0)
        me = bot.own_position()
        if me is None:
            continue
        if direction is None:
            state = bot.mirror.state
            others = [s for s in range(len(state)) if state["kind"][s] == 1 and s != bot.entity]
            if not others:
                await bot.send_input()
                continue
            sx, sy = bot.mirror.position(others[0])
            dx, dy = me[0] - sx, me[1] - sy
            n = math.hypot(dx, dy) or 1.0
            direction = (-dy / n, dx / n)
        ahead = (me[0] + direction[0] * sign * 60, me[1] + direction[1] * sign * 60)
        if not (MARGIN < ahead[0] < 1000 - MARGIN and MARGIN < ahead[1] < 1000 - MARGIN):
            sign = -sign  # turn back: the path stays one straight segment
        await bot.send_input(direction[0] * sign, direction[1] * sign)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        await reader.read()  # EOF: the test is done
        stop.set()

    proxy = DelayProxy(port, ONE_WAY_S, JITTER_S, seed=7)
    proxy_port = await proxy.start()
    print(proxy_port, flush=True)
    watcher = asyncio.create_task(watch_stdin())
    try:
        async with Client(f"ws://127.0.0.1:{port}/ws", "target") as bot:
            await asyncio.wait_for(walk(bot, stop), MAX_RUN_S)
    except TimeoutError:
        pass
    finally:
        watcher.cancel()
        await proxy.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
