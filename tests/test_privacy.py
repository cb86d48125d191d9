"""Nothing uploaded is kept: after the cleanup interval no copy of an upload (or its overlay) is on disk."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from cxr.doors import McpDoor, data_uri, tool_answer
from tests.conftest import EXAMPLES, start_app

pytestmark = pytest.mark.slow  # starts processes (the app, train.py or a command)


def files_containing(folder, data: bytes) -> list:
    return [p for p in folder.rglob("*") if p.is_file() and p.read_bytes() == data]


def private_xray(path: Path) -> bytes:
    """An example X-ray with a corner of random pixels: bytes no other file has. Returns them."""
    path.parent.mkdir(exist_ok=True)
    pixels = np.asarray(Image.open(EXAMPLES[0]).convert("L")).copy()
    pixels[:8, :8] = np.random.default_rng().integers(0, 255, (8, 8))
    Image.fromarray(pixels).save(path)
    return path.read_bytes()


def test_uploads_and_overlays_are_deleted_after_the_interval(tmp_path):
    """Through gradio_client (Gradio tracks the files) and MCP (answered outside the queue: the sweeper)."""
    upload, agents_upload = tmp_path / "mine" / "private_xray.png", tmp_path / "mine" / "agents_xray.png"
    data, agents_data = private_xray(upload), private_xray(agents_upload)
    cache = tmp_path / "gradio-cache"
    leftover = cache / "an-earlier-run" / "their_xray.png"  # a run stopped before its sweep left this
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"someone's upload")
    os.utime(leftover, (time.time() - 3600, time.time() - 3600))
    process, url, _ = start_app(env={"GRADIO_TEMP_DIR": str(cache), "CXR_UPLOAD_TTL": "8"})
    try:
        label, overlay, _ = Client(url, verbose=False, download_files=str(tmp_path / "client")).predict(
            handle_file(str(upload)), api_name="/predict"
        )
        assert label["label"] in ("NORMAL", "PNEUMONIA")
        door = McpDoor(url)
        try:
            result = door.call({"upload": data_uri(agents_upload)})
        finally:
            door.close()
        assert tool_answer(result)["decision"] in ("NORMAL", "PNEUMONIA")
        agents_overlay = next(i.text for i in result.content if i.type == "text" and i.text.startswith("Image URL:"))
        kept = [data, agents_data, Path(overlay).read_bytes(), Path(agents_overlay.split("file=")[1]).read_bytes()]
        for each in (data, agents_data):
            assert files_containing(cache, each), "an upload never reached this cache: the test would prove nothing"
        deadline = time.time() + 40
        while time.time() < deadline and any(files_containing(cache, each) for each in kept):
            time.sleep(1)
        assert not files_containing(cache, data), "the upload is still on the server's disk"
        assert not files_containing(cache, agents_data), "the MCP upload is still on the server's disk"
        assert not files_containing(cache, kept[2]), "the overlay is still on the server's disk"
        assert not files_containing(cache, kept[3]), "the MCP answer's overlay is still on the server's disk"
        assert not leftover.exists(), "an earlier run's upload is still on the server's disk"
        for example in EXAMPLES:  # Gradio serves the examples from this cache: its copies stay
            assert files_containing(cache, example.read_bytes()), f"the cached copy of {example.name} was swept"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_sweeper_deletes_old_uploads_whoever_wrote_them_and_keeps_copies_of_the_apps_examples(tmp_path):
    import os

    from cxr.sweep import copies_of, sweep

    example = tmp_path / "examples" / "example.jpeg"
    copy, renamed, same_name, new = (
        tmp_path / "cache" / d / n
        for d, n in [("a", "example.jpeg"), ("b", "upload.jpeg"), ("c", "example.jpeg"), ("d", "upload.png")]
    )
    for path, data in ((example, b"x"), (copy, b"x"), (renamed, b"x"), (same_name, b"a user's X-ray"), (new, b"y")):
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
    for path in (copy, renamed, same_name):
        os.utime(path, (time.time() - 100, time.time() - 100))
    assert sweep(tmp_path / "cache", max_age=50, keep=copies_of([example])) == 2
    assert copy.exists() and new.exists()  # the example's cached copy, and an upload younger than the TTL
    assert not renamed.exists() and not same_name.exists() and not same_name.parent.exists()
