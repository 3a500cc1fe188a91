"""The collector policy a controller that owns its process sets (``controller/heap.py``): set while it runs,
put back when it stops, and never set where the controller shares a process with a user's code."""

from __future__ import annotations

import gc

import anyio

from fluster.controller.heap import YOUNG_THRESHOLD, keep_collections_cheap


async def test_the_policy_holds_while_it_runs_and_is_put_back_after() -> None:
    before = gc.get_threshold()
    assert before[0] != YOUNG_THRESHOLD
    async with anyio.create_task_group() as tg:
        tg.start_soon(keep_collections_cheap)
        with anyio.fail_after(10):
            while gc.get_threshold()[0] != YOUNG_THRESHOLD or gc.get_freeze_count() == 0:
                await anyio.sleep(0.05)  # frozen within FREEZE_EVERY_S
        tg.cancel_scope.cancel()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
