"""Micro-batching: concurrent light searches coalesced into one index call.

Under load, fifty clients' searches each paid for a FAISS call, a re-rank and the Python around them, one at a time
on the event loop. Here a request joins a queue; one search thread takes everything queued (up to `max_batch` of one
kind) and answers it with one call. There is no timer: a lone request is answered at once, on the event loop (no
added latency when idle), and under load a request waits at most for the batch ahead of it, which is what bounds the
wait. While the thread searches (FAISS and numpy release the GIL), the event loop reads and parses the next requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor


class MicroBatcher:
    """`await submit(key, item)` -> `run(key, items)[i]` for this item, where `run` answers a list of items that share
    a key in one go, in order, returning one result (or exception, raised to that caller) per item."""

    def __init__(self, run: Callable[[Hashable, list], list], max_batch: int = 64):
        self.run, self.max_batch = run, max_batch
        self.pending: list[tuple[Hashable, object, asyncio.Future]] = []
        self.busy, self.task = False, None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="mrl-search")  # one search at a time, batched
        self.batches = 0
        self.batched = 0

    async def submit(self, key: Hashable, item):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((key, item, future))
        if not self.busy:
            self.busy = True
            self.task = loop.create_task(self._drain())  # runs after the loop has read what else arrived: those join it
        return await future

    def _take(self) -> tuple[Hashable, list]:
        """The oldest request's key, and up to max_batch queued requests with that key (oldest first)."""
        key = self.pending[0][0]
        batch = [p for p in self.pending if p[0] == key][: self.max_batch]
        taken = {id(p) for p in batch}
        self.pending = [p for p in self.pending if id(p) not in taken]
        return key, batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                key, batch = self._take()
                items = [item for _, item, _ in batch]
                try:
                    if len(batch) == 1 and not self.pending:  # alone: answered here (a thread handoff costs ~0.1 ms)
                        results = self.run(key, items)
                    else:
                        results = await loop.run_in_executor(self.executor, self.run, key, items)
                except Exception as e:  # the whole call failed: every caller gets the error
                    results = [e] * len(batch)
                self.batches, self.batched = self.batches + 1, self.batched + len(batch)
                for (_, _, future), result in zip(batch, results):
                    if future.done():  # the caller went away (disconnect, cancelled)
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self.busy = False

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
