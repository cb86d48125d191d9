"""Uploads are not kept: a sweeper that deletes every file in the server's upload cache once it is older
than the TTL, whichever door wrote it.

Gradio's own ``delete_cache`` only deletes the files it tracks; the MCP door writes each base64 upload
into the same folder untracked, so without this sweep those X-rays would stay on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def sweep(folder: Path, max_age: float, keep: Callable[[Path], bool] = lambda path: False) -> int:
    """Delete the files under ``folder`` last written more than ``max_age`` seconds ago (but those ``keep``
    says to keep), then the folders left empty; returns how many files went."""
    cutoff, deleted = time.time() - max_age, 0
    for path in sorted(folder.rglob("*"), reverse=True):  # children before their folder
        with contextlib.suppress(FileNotFoundError, OSError):  # deleted meanwhile, or a folder not empty
            if path.is_file() and path.stat().st_mtime < cutoff and not keep(path):
                path.unlink()
                deleted += 1
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    return deleted


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
