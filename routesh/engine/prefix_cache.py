"""Key/value caches of prompt prefixes (the schema a question's stages share), kept across calls.

Keyed by the prefix's text, so a prefix is found again whoever asks; bounded by bytes, not by count,
because a full schema's cache is a hundred times a short one's. The least recently used go first; one
entry larger than the whole bound is computed and used but not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

DEFAULT_BYTES = 512 * 2**20  # about 40 full Spider schemas on the 0.5B model in bf16


@dataclass
class CachedPrefix:
    ids: tuple[int, ...]
    cache: Any  # a one-row DynamicCache of exactly these tokens; never handed out, only copied
    nbytes: int


def cache_bytes(cache: Any) -> int:
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


class PrefixCache:
    def __init__(self, max_bytes: int = DEFAULT_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, CachedPrefix] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, text: str) -> CachedPrefix | None:
        with self._lock:
            entry = self._entries.get(text)
            if entry is not None:
                self._entries.move_to_end(text)
            return entry

    def put(self, text: str, entry: CachedPrefix) -> None:
        with self._lock:
            old = self._entries.pop(text, None)
            if old is not None:
                self._bytes -= old.nbytes
            if entry.nbytes > self.max_bytes:
                return
            self._entries[text] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
