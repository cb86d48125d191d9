"""glibc's allocator, tuned and trimmed (cxr.memory): the levers against a server's creeping memory."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time

import pytest

from cxr.memory import _glibc, start_trimmer, trim_malloc, tune_malloc
from tests.conftest import ROOT

glibc_only = pytest.mark.skipif(_glibc() is None, reason="the C library is not glibc")


@glibc_only
def test_malloc_settings_are_applied_and_none_is_a_no_op():
    assert tune_malloc(arenas=4, mmap_threshold=256 * 1024) is True
    assert tune_malloc() is True  # nothing asked, nothing changed


@glibc_only
def test_a_trim_returns_freed_memory_to_the_system():
    """Many small blocks freed below a live one stay in the heap until a trim hands their pages back."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = (
        ctypes.c_void_p,
        [ctypes.c_size_t],
        [ctypes.c_void_p],
    )
    blocks = [libc.malloc(1000) for _ in range(50_000)]  # 50 MB below the mmap threshold: in the heap
    keep = libc.malloc(1000)  # a live block above them: the heap's top cannot shrink past it
    for block in blocks:
        libc.free(block)
    assert trim_malloc() is True  # some memory went back
    libc.free(keep)


@glibc_only
def test_the_trimmer_runs_in_a_daemon_thread_and_can_be_off():
    assert start_trimmer(0) is None
    thread = start_trimmer(0.05)
    time.sleep(0.2)
    assert thread.is_alive() and thread.daemon and thread.name == "malloc-trimmer"


@pytest.mark.slow
def test_the_app_applies_the_malloc_settings_it_is_given():
    code = "import app, threading; print('TRIMMER', any(t.name == 'malloc-trimmer' for t in threading.enumerate()))"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "CXR_MALLOC_ARENAS": "2", "CXR_MALLOC_TRIM_EVERY": "30"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "TRIMMER True" in result.stdout, result.stdout
    assert "malloc: arenas <= 2, mmap threshold - bytes (applied: True)" in result.stderr
