"""The one bound every door shares: so many answers at once, so many waiting, the rest turned away."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from cxr.capacity import Capacity, ServerBusyError


def run_burst(capacity: Capacity, callers: int, seconds: float) -> tuple[list[str], int]:
    """``callers`` requests at once, each holding a worker ``seconds``; their outcomes and the peak running."""
    running, peak, lock = [0], [0], threading.Lock()

    def work() -> str:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(seconds)
        with lock:
            running[0] -= 1
        return "ok"

    outcomes: list[str] = []

    async def call() -> None:
        try:
            outcomes.append(await capacity.run(work))
        except ServerBusyError as error:
            outcomes.append(str(error))

    async def burst() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(callers):
                group.start_soon(call)

    anyio.run(burst)
    return outcomes, peak[0]


@pytest.mark.parametrize(("workers", "max_waiting", "callers"), [(2, 1, 6), (1, 3, 6), (2, 64, 6)])
def test_at_most_workers_run_and_max_waiting_wait(workers, max_waiting, callers):
    outcomes, peak = run_burst(Capacity(workers, max_waiting), callers, seconds=0.2)
    admitted = min(callers, workers + max_waiting)
    assert outcomes.count("ok") == admitted and peak == min(workers, callers)
    assert outcomes.count("The server is full; try again shortly.") == callers - admitted


def test_the_bound_frees_up_after_a_burst():
    capacity = Capacity(1, 0)
    assert run_burst(capacity, 3, seconds=0.1)[0].count("ok") == 1
    assert run_burst(capacity, 1, seconds=0.0)[0] == ["ok"] and capacity.in_flight == 0
