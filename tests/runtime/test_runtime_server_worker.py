"""The server's one compute is handed to waiting lanes in the order the simulator assumes."""

from __future__ import annotations

import threading
import time

from pipelearn.runtime.server_worker import ServerCompute
from pipelearn.schedule import COORDINATOR


def _served(compute: ServerCompute, lanes: list[int]) -> list[int]:
    """Hold the compute, let `lanes` queue for it one after another, then release it: the order they were served."""
    order: list[int] = []
    queued = threading.Semaphore(0)
    hold = compute.turn(COORDINATOR)
    hold.__enter__()

    def ask(lane: int) -> None:
        queued.release()
        with compute.turn(lane):
            order.append(lane)

    threads = []
    for lane in lanes:
        threads.append(threading.Thread(target=ask, args=(lane,)))
        threads[-1].start()
        queued.acquire()
        while len(compute._waiting) < len(threads):  # the lane has taken its place in the queue
            time.sleep(0.001)
    hold.__exit__(None, None, None)
    for t in threads:
        t.join(10)
    return order


def test_without_priorities_the_lane_that_asked_first_is_served_first():
    assert _served(ServerCompute(), [2, 0, 3, 1]) == [2, 0, 3, 1]


def test_with_priorities_the_best_ranked_waiting_lane_is_served_first():
    ranks = [3, 0, 2, 1]  # device 1 is on the critical path, then 3, 2, 0
    assert _served(ServerCompute(ranks), [0, 2, 1, 3]) == [1, 3, 2, 0]
    assert _served(ServerCompute(ranks), [0, 0, 1]) == [1, 0, 0]  # equal ranks: first come, first served
