"""The service's own test: `python3 -m unittest` in this folder (or `pytest`)."""

from __future__ import annotations

import json
import threading
import time
import unittest
import urllib.error
import urllib.request

import app


class ServiceTest(unittest.TestCase):
    def setUp(self) -> None:
        self.server = app.serve(0, "hi there")
        self.server.ready.set()
        self.thread = threading.Thread(target=self.server.serve_forever)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def tearDown(self) -> None:
        self.server.drain()
        self.thread.join(10)
        self.server.server_close()

    def get(self, path: str) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def test_health_and_readiness(self) -> None:
        self.assertEqual(self.get("/healthz"), (200, {"status": "ok"}))
        self.assertEqual(self.get("/ready"), (200, {"status": "ready", "in_flight": 0}))

    def test_answers_with_its_config(self) -> None:
        status, body = self.get("/hello")
        self.assertEqual(status, 200)
        self.assertEqual(body["message"], "hi there")
        self.assertEqual(body["path"], "/hello")

    def test_draining_finishes_the_request_in_flight(self) -> None:
        answer: list[tuple[int, dict[str, object]]] = []
        slow = threading.Thread(target=lambda: answer.append(self.get("/?delay=1")))
        slow.start()
        deadline = time.monotonic() + 10
        while self.server.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # wait until the request is being worked on
        self.server.drain()
        self.assertFalse(self.server.ready.is_set())
        slow.join(10)
        self.assertEqual(answer and answer[0][0], 200)


if __name__ == "__main__":
    unittest.main()
