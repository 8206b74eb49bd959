"""One worker thread runs every engine call in arrival order, and hands streamed pieces back to the event loop.

A single context (llama.cpp) or model (torch) is driven by exactly one thread, so requests for different identities
cannot interleave inside the engine: each runs start to finish with its own identity, and waits its turn in a queue.
Since one generation holds the only worker, a generation stops as soon as its client has left (`Stop.set`) or its
request has run for its deadline: engines check `Stop.is_set()` at every token.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

from credo.errors import CredoError

T = TypeVar("T")
_DONE = object()


class ServerBusy(CredoError):
    """A request waited in the queue past its deadline, before its generation could start."""


class Stop(threading.Event):
    """Set when a generation should end early: its client left (`set()`, reason "cancelled"), or its request's
    deadline (a `time.monotonic()` value) passed (reason "deadline"). Engines poll `is_set()` at every token."""

    def __init__(self, deadline: float | None = None) -> None:
        super().__init__()
        self.deadline = deadline
        self.reason: str | None = None

    def set(self) -> None:
        if self.reason is None:
            self.reason = "cancelled"
        super().set()

    def is_set(self) -> bool:
        if not super().is_set() and self.deadline is not None and time.monotonic() >= self.deadline:
            if self.reason is None:
                self.reason = "deadline"
            super().set()
        return super().is_set()


class Worker:
    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        # generations run, and how many of them stopped early because the client left or the deadline passed
        self.counts = {"generations": 0, "cancelled": 0, "timed_out": 0}
        self._thread = threading.Thread(target=self._run, name="credo-engine", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def stop(self) -> None:
        self._jobs.put(None)

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the worker and wait for its result from any other thread."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def job() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:  # handed back to the caller, who decides what it means
                box["error"] = e
            done.set()

        self._jobs.put(job)
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["value"]

    async def acall(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, self.call, fn)

    def stream(self, make: Callable[[Stop], Iterator[str]], deadline: float | None = None) -> AsyncStream:
        """Queue a generation; its pieces (or its error) arrive on the returned async iterator. `deadline` is a
        `time.monotonic()` value past which the generation stops (or, not started yet, fails as busy)."""
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[Any] = asyncio.Queue()
        stop = Stop(deadline)

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(out.put_nowait, item)

        def job() -> None:
            if stop.is_set():  # the client left, or the deadline passed, while the request waited its turn
                put(ServerBusy("the server was busy: the request waited in the queue past its time limit")
                    if stop.reason == "deadline" else _DONE)
                return
            self.counts["generations"] += 1
            last: Any = _DONE
            pieces = None
            try:
                pieces = make(stop)
                for piece in pieces:
                    put(piece)
                    if stop.is_set():
                        break
            except BaseException as e:
                last = e
            finally:
                if hasattr(pieces, "close"):
                    pieces.close()  # the engine's own clean-up (its figures) runs before the end is handed over
            if stop.reason:  # counted before the end is handed over, after which the consumer may set it
                self.counts["cancelled" if stop.reason == "cancelled" else "timed_out"] += 1
            put(last)

        self._jobs.put(job)
        return AsyncStream(out, stop)


class AsyncStream:
    """Text pieces from the worker; raises the engine's error where it happened; `cancel()` stops the generation."""

    def __init__(self, out: asyncio.Queue[Any], stop: Stop):
        self._out = out
        self.stop = stop
        self.finished = False  # every piece (or the error) was taken, or the consumer left
        self._head: list[Any] = []
        self._watcher: asyncio.Task[None] | None = None

    async def first(self) -> None:
        """Wait for the first piece (or the end) so errors in prefill surface before any response is sent."""
        item = await self._out.get()
        if isinstance(item, BaseException):
            self.finished = True
            raise item
        self._head.append(item)

    def cancel(self) -> None:
        self.stop.set()

    def watch(self, is_disconnected: Callable[[], Awaitable[bool]], every: float = 0.1) -> None:
        """Until the stream is finished, ask `is_disconnected()` every `every` seconds; cancel once the client left.

        A client that gives up on a non-streaming request is noticed only this way: nothing else reads from it."""

        async def poll() -> None:
            while not self.finished:
                if await is_disconnected():
                    self.cancel()
                    return
                await asyncio.sleep(every)

        self._watcher = asyncio.get_running_loop().create_task(poll())

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[str]:
        try:
            while True:
                item = self._head.pop() if self._head else await self._out.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.finished = True
            self.cancel()  # a consumer that left before the end stops the generation
