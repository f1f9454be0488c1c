"""Work taken off a request path: queued by the request, written by one background thread per process."""

from __future__ import annotations

import threading
import time


class PeriodicFlusher:
    """Calls `flush()` every `interval_s` from a daemon thread of its own.

    The thread starts with the first queued item (`_start_unless_running`, called under `_lock` by whoever queues),
    so in each gunicorn worker after the fork, never at import. `flush()` must not raise: the thread lives for the
    worker's life."""

    def __init__(self, thread_name: str, interval_s: float) -> None:
        self.interval_s = interval_s
        self._thread_name = thread_name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def flush(self) -> int:
        raise NotImplementedError

    def _start_unless_running(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            self.flush()
