"""The real app, started with `python app.py`, called over HTTP with gradio_client."""

from __future__ import annotations

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from tests.conftest import EXAMPLES, true_class


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def test_there_are_examples_of_both_classes():
    assert {true_class(p) for p in EXAMPLES} == {"NORMAL", "PNEUMONIA"}
    assert 4 <= len(EXAMPLES) <= 6


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_gets_its_true_class_and_an_overlay(client, example):
    import json

    from cxr.hub import DEFAULT_MODEL, WEIGHTS_DIR

    threshold = json.loads((WEIGHTS_DIR / DEFAULT_MODEL / "config.json").read_text())["threshold"]
    label, overlay_path = client.predict(handle_file(str(example)), api_name="/predict")
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert confidences["PNEUMONIA"] + confidences["NORMAL"] == pytest.approx(1.0)
    decision = "PNEUMONIA" if confidences["PNEUMONIA"] >= threshold else "NORMAL"
    assert decision == true_class(example), confidences
    with Image.open(overlay_path) as overlay, Image.open(example) as original:
        assert overlay.format == "PNG" and overlay.mode == "RGB"
        assert abs(overlay.width / overlay.height - original.width / original.height) < 0.01


def test_a_file_that_is_not_an_image_gets_a_clear_error(client, tmp_path):
    fake = tmp_path / "scan.txt"
    fake.write_text("this is not an X-ray")
    with pytest.raises(AppError, match="not an image that can be read"):
        client.predict(handle_file(str(fake)), api_name="/predict")


def test_server_still_answers_after_an_error(client):
    label, _ = client.predict(handle_file(str(EXAMPLES[0])), api_name="/predict")
    assert "confidences" in label
