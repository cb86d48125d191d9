"""Uploads are not kept: a sweeper that deletes every file in the server's upload cache once it is older
than the TTL, whichever door wrote it.

Gradio's own ``delete_cache`` only deletes the files it tracks; the MCP door writes each base64 upload
into the same folder untracked, so without this sweep those X-rays would stay on disk.

A file's age is the time since it was last written or handed out: :func:`touched_on_hand_out` restarts
the clock of a cached copy that is given to a request again, under the lock the sweep holds while it
checks and deletes a file, so no request is handed a copy that is deleted before it reads it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
# Held by a hand-out (see touched_on_hand_out) and by the sweep while it checks and deletes one file.
_HAND_OUT = threading.Lock()


def sweep(folder: Path, max_age: float, keep: Callable[[Path], bool] = lambda path: False) -> int:
    """Delete the files under ``folder`` last written or handed out more than ``max_age`` seconds ago (but
    those ``keep`` says to keep), and the folders that have stood empty as long; returns how many files went.

    A folder waits because Gradio names each cache folder by its content's hash and writes into it right
    after ``mkdir(exist_ok=True)``: one emptied a moment ago may be about to get a new copy of the same
    bytes (the same X-ray's overlay), and removing it then failed that write. Deleting a file sets its
    folder's clock, so a folder goes one ``max_age`` after its last file."""
    cutoff, deleted = time.time() - max_age, 0
    for path in sorted(folder.rglob("*"), reverse=True):  # children before their folder
        # Suppressed: deleted meanwhile, or a folder not empty. The lock: one file at a time, so a hand-out
        # waits at most one file's check.
        with contextlib.suppress(FileNotFoundError, OSError), _HAND_OUT:
            if path.is_file() and path.stat().st_mtime < cutoff and not keep(path):
                path.unlink()
                deleted += 1
            elif path.is_dir() and path.stat().st_mtime < cutoff and not any(path.iterdir()):
                path.rmdir()
    return deleted


def touched_on_hand_out(save: Callable[..., str]) -> Callable[..., str]:
    """``save`` (it returns the path of a cached copy, an existing one when those bytes are already cached),
    with the copy's clock restarted each time it is handed out, atomically with respect to the sweep. A
    copy handed out again is then deleted a TTL after its last use, not on its first use's schedule while
    the request it was just given waits to read it."""

    @functools.wraps(save)
    def save_and_touch(*args: Any, **kwargs: Any) -> str:
        with _HAND_OUT:
            path = save(*args, **kwargs)
            os.utime(path)
        return path

    return save_and_touch


def copies_of(originals: Iterable[Path]) -> Callable[[Path], bool]:
    """True for a file with the name and the bytes of one of ``originals``: Gradio's cached copy of the app's
    own example X-rays (it keeps the name), never a user's file, whatever its age or name."""
    wanted = {(path.name, hashlib.sha256(path.read_bytes()).digest()) for path in originals}
    names = {name for name, _ in wanted}
    return lambda path: path.name in names and (path.name, hashlib.sha256(path.read_bytes()).digest()) in wanted


def start_sweeper(folder: Path, max_age: float, every: float, keep: Callable[[Path], bool]) -> threading.Thread:
    """Sweep ``folder`` every ``every`` seconds in a daemon thread, keeping what ``keep`` says (the app's
    own files, see :func:`copies_of`). Files an earlier run left there go too: they are someone's uploads."""

    def loop() -> None:
        while True:
            time.sleep(every)
            if deleted := sweep(folder, max_age, keep):
                log.info("swept %d upload file(s) older than %.0f s", deleted, max_age)

    thread = threading.Thread(target=loop, name="upload-sweeper", daemon=True)
    thread.start()
    return thread
