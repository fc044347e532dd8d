"""The bounded inference pool (service/inference.py): at most `workers` jobs run, at most
`max_pending` wait, one more is refused at once; every worker thread is warmed before the
first request."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.inference import InferencePool, OverloadedError


def test_inference_pool_bounds_running_and_waiting_jobs():
    """At most `workers` jobs run; `max_pending` may wait; one more is refused at once."""

    async def scenario():
        pool = InferencePool(workers=2, max_pending=2)
        gate = threading.Event()
        peak = 0
        lock = threading.Lock()
        running = 0

        def job(i):
            nonlocal peak, running
            with lock:
                running += 1
                peak = max(peak, running)
            gate.wait(10)
            with lock:
                running -= 1
            return i

        tasks = [asyncio.create_task(pool.run(job, i)) for i in range(4)]
        while pool.running < 2 or pool.waiting < 2:
            await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError):
            await pool.run(job, 99)
        gate.set()
        results = await asyncio.gather(*tasks)
        pool.shutdown()
        return results, peak, pool.running, pool.waiting

    results, peak, running, waiting = asyncio.run(scenario())
    assert results == [0, 1, 2, 3] and peak == 2 and running == waiting == 0


def test_inference_pool_warm_up_runs_once_in_every_thread():
    """`warm_up` starts all `workers` threads and runs the function once in each; requests then
    run in those threads (none starts cold later)."""
    calls: list[int] = []
    pool = InferencePool(workers=3, max_pending=16)
    try:
        warmed = pool.warm_up(lambda: calls.append(threading.get_ident()))
        assert len(warmed) == 3 and sorted(calls) == sorted(warmed)

        async def requests():
            return await asyncio.gather(*(pool.run(threading.get_ident) for _ in range(12)))

        assert set(asyncio.run(requests())) <= warmed
    finally:
        pool.shutdown()
