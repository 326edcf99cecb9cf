"""A bounded cache of real verdicts, least recently used first out."""

from __future__ import annotations

from collections import OrderedDict


class VerdictCache:
    """(gold, pred) -> verdict for at most ``size`` pairs. Holds only real verdicts: the grader never stores a
    timeout, crash or error here, since those say something about the machine at that moment, not about the pair."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[tuple[str, str], bool] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: tuple[str, str]) -> bool | None:
        v = self._data.get(key)
        if v is not None:
            self._data.move_to_end(key)
        return v

    def put(self, key: tuple[str, str], verdict: bool) -> None:
        if self.size <= 0:
            return
        self._data[key] = verdict
        self._data.move_to_end(key)
        if len(self._data) > self.size:
            self._data.popitem(last=False)
