"""Cut a stream of text pieces at the first stop string, holding back any tail that may still grow into one."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class StopCutter:
    """Feed text pieces in; get back the pieces that are safe to show. `stopped` turns true at the first stop string."""

    def __init__(self, stops: Iterable[str]):
        self.stops = [s for s in stops if s]
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.text += piece
        cut = min((i for i in (self.text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._emit(cut)
        return self._emit(len(self.text) - self._hold())

    def flush(self) -> str:
        """At the end of generation a held-back tail is no longer a possible stop: show it."""
        return "" if self.stopped else self._emit(len(self.text))

    def _hold(self) -> int:
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        return hold

    def _emit(self, upto: int) -> str:
        if upto <= self.emitted:
            return ""
        out = self.text[self.emitted : upto]
        self.emitted = upto
        return out


def cut_stream(pieces: Iterable[str], stops: Iterable[str]) -> Iterator[str]:
    """Yield the text of `pieces` up to (not including) the first stop string; stop pulling pieces once it is seen."""
    cutter = StopCutter(stops)
    for piece in pieces:
        out = cutter.feed(piece)
        if out:
            yield out
        if cutter.stopped:
            return
    tail = cutter.flush()
    if tail:
        yield tail
