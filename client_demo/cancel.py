"""Stopping asyncio tasks for sure, on Python 3.11 too.

Python 3.11's `asyncio.wait_for` loses a cancellation that arrives in the loop iteration in
which what it waits for completes: it returns the result, and the task carries on as if
never cancelled (CPython gh-86296; 3.12 rebuilt wait_for on `asyncio.timeout`). Libraries
built on it inherit the hole: redis-py waits for a socket's drain that way on every
command, so a task cancelled just as a Redis write drains keeps running. One `cancel()`
followed by an unbounded wait can then wait forever (a bots worker that never exited
after SIGTERM was this). `cancel_and_wait` cancels again until the tasks end, within a
bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Task], timeout_s: float, *,
                          retry_s: float = 0.05) -> set[asyncio.Task]:
    """Cancel `tasks` and wait for them to end, cancelling again every `retry_s` while
    any runs on, for at most `timeout_s`. Returns the tasks still running (empty unless
    one ignores cancellation for good). Ended tasks' exceptions are retrieved, as
    `gather(..., return_exceptions=True)` would."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    tasks = set(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(retry_s, left))
    for task in tasks - pending:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at exit
    return pending
