"""Uploads are not kept: a sweeper that deletes every file in the server's upload cache once it is older
than the TTL, whichever door wrote it.

Gradio's own ``delete_cache`` only deletes the files it tracks; the MCP door writes each base64 upload
into the same folder untracked, so without this sweep those X-rays would stay on disk.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


def sweep(folder: Path, max_age: float, keep: frozenset[Path] = frozenset()) -> int:
    """Delete the files under ``folder`` last written more than ``max_age`` seconds ago (but ``keep``),
    then the folders left empty; returns how many files went."""
    cutoff, deleted = time.time() - max_age, 0
    for path in sorted(folder.rglob("*"), reverse=True):  # children before their folder
        with contextlib.suppress(FileNotFoundError, OSError):  # deleted meanwhile, or a folder not empty
            if path.is_file() and path not in keep and path.stat().st_mtime < cutoff:
                path.unlink()
                deleted += 1
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    return deleted


def start_sweeper(folder: Path, max_age: float, every: float) -> threading.Thread:
    """Sweep ``folder`` every ``every`` seconds in a daemon thread; the files there now (the app's own,
    such as its example X-rays) are kept."""
    keep = frozenset(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else frozenset()

    def loop() -> None:
        while True:
            time.sleep(every)
            if deleted := sweep(folder, max_age, keep):
                log.info("swept %d upload file(s) older than %.0f s", deleted, max_age)

    thread = threading.Thread(target=loop, name="upload-sweeper", daemon=True)
    thread.start()
    return thread
