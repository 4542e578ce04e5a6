"""The worker's own test: `python3 -m unittest` in this folder (or `pytest`)."""

from __future__ import annotations

import threading
import time
import unittest

import worker


class WorkerTest(unittest.TestCase):
    def test_a_task_under_way_finishes_when_told_to_stop(self) -> None:
        stop = threading.Event()
        finished: list[int] = []

        def slow_task(number: int) -> None:
            stop.set()  # the stop arrives in the middle of the task
            time.sleep(0.1)
            finished.append(number)

        self.assertEqual(worker.run(stop, 0.01, slow_task), 1)
        self.assertEqual(finished, [1])

    def test_runs_tasks_until_stopped(self) -> None:
        stop = threading.Event()
        seen: list[int] = []

        def task(number: int) -> None:
            seen.append(number)
            if number == 3:
                stop.set()

        worker.run(stop, 0.0, task)
        self.assertEqual(seen, [1, 2, 3])


if __name__ == "__main__":
    unittest.main()
