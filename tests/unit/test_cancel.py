"""`cancel_and_wait` ends a task that swallows a cancellation, as Python 3.11's wait_for
does when the cancellation and the completion of what it waits for meet."""

from __future__ import annotations

import asyncio
import sys

import pytest

from client_demo.cancel import cancel_and_wait


async def _wait_for_race() -> tuple[asyncio.Task, asyncio.Future]:
    """A task inside `wait_for(fut)`, with `fut` completed and the task cancelled in the
    same loop iteration (what happens when redis-py's drain completes as we cancel)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future = loop.create_future()
    forever: asyncio.Future = loop.create_future()

    async def heartbeat() -> None:
        await asyncio.wait_for(fut, 10.0)
        await forever  # a heartbeat that did not see its cancellation goes on

    task = asyncio.create_task(heartbeat())
    await asyncio.sleep(0)  # the task is now suspended in wait_for
    fut.set_result(None)
    task.cancel()
    return task, forever


async def test_one_cancel_can_be_lost_in_wait_for_on_python_311() -> None:
    task, forever = await _wait_for_race()
    done, _ = await asyncio.wait({task}, timeout=0.05)
    if sys.version_info < (3, 12):
        assert not done, "3.11's wait_for lost the cancellation: the task runs on"
    else:
        assert done and task.cancelled()
    forever.cancel()
    await asyncio.wait({task}, timeout=1.0)


async def test_cancel_and_wait_ends_a_task_whose_first_cancel_was_lost() -> None:
    task, _ = await _wait_for_race()
    assert await cancel_and_wait([task], 5.0, retry_s=0.0) == set()
    assert task.cancelled()


async def test_a_task_that_ignores_every_cancel_is_returned_after_the_bound() -> None:
    obey = False

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if obey:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await cancel_and_wait([task], 0.1, retry_s=0.02) == {task}
    assert loop.time() - start < 2.0
    obey = True
    assert await cancel_and_wait([task], 1.0) == set()


async def test_exceptions_of_ended_tasks_are_retrieved_and_done_tasks_are_left_alone() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    failed = asyncio.create_task(fails())
    finished = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    assert await cancel_and_wait([failed, finished], 1.0) == set()
    assert not finished.cancelled() and isinstance(failed.exception(), ValueError)


@pytest.mark.parametrize("n", [1, 5])
async def test_several_tasks_end_together(n: int) -> None:
    tasks = [asyncio.create_task(asyncio.sleep(3600)) for _ in range(n)]
    await asyncio.sleep(0)
    assert await cancel_and_wait(tasks, 1.0) == set()
    assert all(t.cancelled() for t in tasks)
