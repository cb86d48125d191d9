"""Nothing uploaded is kept: after the cleanup interval no copy of an upload (or its overlay) is on disk."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.conftest import EXAMPLES, start_app

pytestmark = pytest.mark.slow  # starts processes (the app, train.py or a command)


def files_containing(folder, data: bytes) -> list:
    return [p for p in folder.rglob("*") if p.is_file() and p.read_bytes() == data]


def test_uploads_and_overlays_are_deleted_after_the_interval(tmp_path):
    upload = tmp_path / "mine" / "private_xray.png"
    upload.parent.mkdir()
    pixels = np.asarray(Image.open(EXAMPLES[0]).convert("L")).copy()
    pixels[:8, :8] = np.random.default_rng().integers(0, 255, (8, 8))  # bytes no other file has
    Image.fromarray(pixels).save(upload)
    data = upload.read_bytes()
    cache = tmp_path / "gradio-cache"
    process, url, _ = start_app(env={"GRADIO_TEMP_DIR": str(cache), "CXR_UPLOAD_TTL": "8"})
    try:
        label, overlay, _ = Client(url, verbose=False, download_files=str(tmp_path / "client")).predict(
            handle_file(str(upload)), api_name="/predict"
        )
        assert label["label"] in ("NORMAL", "PNEUMONIA")
        overlay_bytes = Path(overlay).read_bytes()
        assert files_containing(cache, data), "the upload never reached this cache: the test would prove nothing"
        deadline = time.time() + 40
        while time.time() < deadline and (files_containing(cache, data) or files_containing(cache, overlay_bytes)):
            time.sleep(1)
        assert not files_containing(cache, data), "the upload is still on the server's disk"
        assert not files_containing(cache, overlay_bytes), "the overlay is still on the server's disk"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_sweeper_deletes_old_uploads_whoever_wrote_them_and_keeps_the_apps_own(tmp_path):
    import os

    from cxr.sweep import sweep

    own, old, new = tmp_path / "a" / "example.jpeg", tmp_path / "b" / "file.jpg", tmp_path / "c" / "upload.png"
    for path in (own, old, new):
        path.parent.mkdir()
        path.write_bytes(b"x")
    for path in (own, old):
        os.utime(path, (time.time() - 100, time.time() - 100))
    assert sweep(tmp_path, max_age=50, keep=frozenset({own})) == 1
    assert own.exists() and new.exists() and not old.exists() and not old.parent.exists()
