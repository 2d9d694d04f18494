"""One tiny registry type shared by models, datasets, strategies, codec stages and attacks."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from pollen.errors import ConfigError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps short names to factories so configs and the CLI refer to names only."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ConfigError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._items)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)


# Per-process caches of heavy objects (a loaded model, encoded data). Server processes and Ray actors
# keep them across rounds; the CLI, which only needs them for its preflight, drops them all.
_CACHES: list[Any] = []
F = TypeVar("F", bound=Callable[..., Any])
# Seconds this process spent building cached objects (loading models, encoding data): a client
# reports the part that fell into its call as `load_s`, apart from its training time.
_build = {"seconds": 0.0, "depth": 0}


def process_cache(maxsize: int) -> Callable[[F], F]:
    """functools.lru_cache that `release_process_caches()` can empty and `build_seconds()` times."""
    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            _build["depth"] += 1  # a build inside a build (data needs the tokenizer) counts once
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _build["depth"] -= 1
                if _build["depth"] == 0:
                    _build["seconds"] += time.perf_counter() - t0

        wrapped = functools.lru_cache(maxsize=maxsize)(timed)
        _CACHES.append(wrapped)
        return wrapped  # type: ignore[return-value]

    return deco


def build_seconds() -> float:
    """Total seconds spent in cache misses of `process_cache` functions in this process."""
    return _build["seconds"]


def release_process_caches() -> None:
    """Drop every cached model and dataset of this process, and hand the memory back to the OS."""
    import gc

    for cache in _CACHES:
        cache.cache_clear()
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Return freed heap memory to the OS (glibc keeps it in its arenas unless asked).

    A client actor frees its activations after each training call, but glibc keeps those pages
    (~0.5 GB on the default task) for the process's lifetime; an actor waiting for its next client
    should not hold them. No-op where there is no glibc.
    """
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
