"""The service's rolling window of query embeddings, for drift monitoring (`mrl drift --current <dir>`)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np


class QueryLog:
    """Rolling window of query embeddings: files of up to `rows_per_file` rows, the newest `max_files` kept. A partial
    file is also written once its oldest row is `max_age_s` old (checked on every append, and every few seconds by
    the service), so a quiet replica still produces a window and a killed one loses at most that much."""

    def __init__(self, directory: Path, rows_per_file: int = 1000, max_files: int = 20, max_age_s: float = 60.0):
        self.directory, self.rows_per_file, self.max_files, self.max_age_s = directory, rows_per_file, max_files, max_age_s
        self._buffer: list[np.ndarray] = []
        self._first_at = 0.0  # monotonic time of the oldest buffered row
        self._lock = threading.Lock()

    def append(self, vectors: np.ndarray) -> None:
        with self._lock:
            if not self._buffer:
                self._first_at = time.monotonic()
            self._buffer.extend(np.atleast_2d(vectors).astype(np.float32))
            if len(self._buffer) >= self.rows_per_file or self._stale():
                self._flush()

    def flush_if_stale(self) -> None:
        with self._lock:
            if self._stale():
                self._flush()

    def _stale(self) -> bool:
        return bool(self._buffer) and time.monotonic() - self._first_at >= self.max_age_s

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"queries-{time.time_ns()}.npy"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            np.save(f, np.stack(self._buffer))
        os.replace(tmp, path)
        self._buffer = []
        for old in sorted(self.directory.glob("queries-*.npy"))[: -self.max_files]:
            old.unlink(missing_ok=True)
