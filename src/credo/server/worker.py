"""One worker thread runs every engine call in arrival order, and hands streamed pieces back to the event loop.

A single context (llama.cpp) or model (torch) is driven by exactly one thread, so requests for different identities
cannot interleave inside the engine: each runs start to finish with its own identity, and waits its turn in a queue.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_DONE = object()


class Worker:
    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
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

    def stream(self, make: Callable[[threading.Event], Iterator[str]]) -> AsyncStream:
        """Queue a generation; its pieces (or its error) arrive on the returned async iterator."""
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(out.put_nowait, item)

        def job() -> None:
            if cancel.is_set():  # the client left while the request waited its turn
                put(_DONE)
                return
            try:
                for piece in make(cancel):
                    put(piece)
                    if cancel.is_set():
                        break
                put(_DONE)
            except BaseException as e:
                put(e)

        self._jobs.put(job)
        return AsyncStream(out, cancel)


class AsyncStream:
    """Text pieces from the worker; raises the engine's error where it happened; `cancel()` stops the generation."""

    def __init__(self, out: asyncio.Queue[Any], cancel: threading.Event):
        self._out = out
        self._cancel = cancel
        self._head: list[Any] = []

    async def first(self) -> None:
        """Wait for the first piece (or the end) so errors in prefill surface before any response is sent."""
        item = await self._out.get()
        if isinstance(item, BaseException):
            raise item
        self._head.append(item)

    def cancel(self) -> None:
        self._cancel.set()

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
            self._cancel.set()
