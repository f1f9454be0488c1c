"""A periodic flusher's thread starts with the first queued item, never before (gunicorn forks after import)."""

from __future__ import annotations

import threading

from easysmart.flusher import PeriodicFlusher


class Queue(PeriodicFlusher):
    def __init__(self) -> None:
        super().__init__("test-flusher", interval_s=0.001)
        self.items: list[int] = []
        self.flushed = threading.Event()

    def add(self, item: int) -> None:
        with self._lock:
            self.items.append(item)
            self._start_unless_running()

    def flush(self) -> int:
        with self._lock:
            taken, self.items = self.items, []
        if taken:
            self.flushed.set()
        return len(taken)


def test_the_thread_starts_with_the_first_item_and_only_once():
    queue = Queue()
    assert not any(thread.name == "test-flusher" for thread in threading.enumerate())

    queue.add(1)
    first = queue._thread
    queue.add(2)

    assert first is not None and queue._thread is first
    assert queue.flushed.wait(5)
    assert [thread.name for thread in threading.enumerate()].count("test-flusher") == 1
