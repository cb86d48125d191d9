"""Keep a long-running server's resident memory flat: glibc's allocator, tuned and trimmed.

Measured on the app (docs/operations.md, "Memory per door"): Python's own heap does not grow across
calls, yet the resident memory did, faster on the Gradio doors. The growth sits in glibc's malloc:
every worker thread gets an arena of its own, and freed blocks between live ones stay mapped. Three
levers, all settable from the environment, all no-ops where glibc is not the C library:

- fewer arenas (``M_ARENA_MAX``): threads share a few heaps instead of fragmenting many;
- a fixed mmap threshold (``M_MMAP_THRESHOLD``): large buffers (decoded X-rays, overlays, uploads)
  get pages of their own that go back to the system when freed; glibc otherwise raises the threshold
  after the first large free, and later large buffers land in the heaps;
- a periodic ``malloc_trim(0)``: free pages inside every arena are returned to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import threading
import time

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc's mallopt parameters (malloc.h)


@functools.cache  # loaded once: the trimmer asks for it every few seconds
def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (it has ``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return libc


def tune_malloc(arenas: int = 0, mmap_threshold: int = 0) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` and fix its mmap threshold at ``mmap_threshold`` bytes
    (0 leaves a setting as it is). Call it early: arenas already created stay. True when applied."""
    libc = _glibc()
    if libc is None:
        log.info("not glibc: malloc left as it is")
        return False
    applied = True
    if arenas:
        applied &= bool(libc.mallopt(M_ARENA_MAX, arenas))
    if mmap_threshold:
        applied &= bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold))
    log.info(
        "malloc: arenas <= %s, mmap threshold %s bytes (applied: %s)", arenas or "-", mmap_threshold or "-", applied
    )
    return applied


def trim_malloc() -> bool:
    """Return the free memory of every malloc arena to the system now; True if some was returned."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def start_trimmer(every: float) -> threading.Thread | None:
    """Trim malloc every ``every`` seconds in a daemon thread (None without glibc or with ``every`` <= 0)."""
    if every <= 0 or _glibc() is None:
        return None

    def loop() -> None:
        while True:
            time.sleep(every)
            trim_malloc()

    thread = threading.Thread(target=loop, name="malloc-trimmer", daemon=True)
    thread.start()
    return thread
