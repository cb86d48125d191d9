"""The real app, started with `python app.py`, called over HTTP with gradio_client."""

from __future__ import annotations

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from cxr.model import ModelConfig
from tests.conftest import EXAMPLES, VARIANT_SOURCE, true_class
from tests.inputs import HOSTILE_CASES, VALID_CASES

pytestmark = pytest.mark.slow  # starts processes (the app, train.py or a command)


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def test_there_are_examples_of_both_classes():
    assert {true_class(p) for p in EXAMPLES} == {"NORMAL", "PNEUMONIA"}
    assert 4 <= len(EXAMPLES) <= 6


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_gets_its_true_class_and_an_overlay(client, example):
    from cxr.hub import DEFAULT_MODEL, WEIGHTS_DIR

    config = ModelConfig.from_json(WEIGHTS_DIR / DEFAULT_MODEL / "config.json")
    label, overlay_path, answer = client.predict(handle_file(str(example)), api_name="/predict")
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert confidences["PNEUMONIA"] + confidences["NORMAL"] == pytest.approx(1.0)
    decision = "PNEUMONIA" if confidences["PNEUMONIA"] >= config.threshold else "NORMAL"
    # The label a client reads is the decision at the threshold, not the more probable class.
    assert label["label"] == answer["decision"] == decision == true_class(example), confidences
    assert answer["probability"] == pytest.approx(confidences["PNEUMONIA"])
    assert answer["threshold"] == pytest.approx(config.threshold)
    assert answer["model"] == DEFAULT_MODEL and answer["sha256"] == config.weights_sha256
    assert answer["unusual"] is False and answer["uncertain"] is False
    with Image.open(overlay_path) as overlay, Image.open(example) as original:
        assert overlay.format == "JPEG" and overlay.mode == "RGB"
        assert abs(overlay.width / overlay.height - original.width / original.height) < 0.01


def test_identical_answers_are_separate_files(client):
    """Two users on one example: each overlay is its own file (Gradio would rewrite a shared one in place)."""
    first, second = (client.predict(handle_file(str(EXAMPLES[0])), api_name="/predict")[1] for _ in range(2))
    with Image.open(first) as a, Image.open(second) as b:
        assert a.tobytes() == b.tobytes() and a.info["comment"] != b.info["comment"]


def test_a_file_that_is_not_an_image_gets_a_clear_error(client, tmp_path):
    fake = tmp_path / "scan.txt"
    fake.write_text("this is not an X-ray")
    with pytest.raises(AppError, match="not an image that can be read"):
        client.predict(handle_file(str(fake)), api_name="/predict")


def test_server_still_answers_after_an_error(client):
    label, _, answer = client.predict(handle_file(str(EXAMPLES[0])), api_name="/predict")
    assert "confidences" in label and label["label"] == answer["decision"]


def test_every_weights_folder_is_offered_and_used(tmp_path):
    """A new weights folder appears in the model dropdown and the API with no code change."""
    import shutil

    from cxr.hub import DEFAULT_MODEL, WEIGHTS_DIR
    from cxr.model import ModelConfig, build_model, save_model
    from tests.conftest import start_app

    shutil.copytree(WEIGHTS_DIR / DEFAULT_MODEL, tmp_path / DEFAULT_MODEL)
    tiny = ModelConfig("test_resnet", input_size=64, threshold=0.0)  # calls everything pneumonia
    save_model(build_model(tiny), tiny, tmp_path / "tiny_resnet")
    process, url, _ = start_app(env={"CXR_WEIGHTS_DIR": str(tmp_path)})
    try:
        client = Client(url, verbose=False)
        parameters = client.view_api(return_format="dict")["named_endpoints"]["/predict"]["parameters"]
        assert parameters[1]["type"]["enum"] == [DEFAULT_MODEL, "tiny_resnet"]
        assert parameters[1]["parameter_default"] == DEFAULT_MODEL
        normal = next(p for p in EXAMPLES if true_class(p) == "NORMAL")
        default_label, _, _ = client.predict(handle_file(str(normal)), api_name="/predict")
        tiny = client.predict(handle_file(str(normal)), "tiny_resnet", api_name="/predict")
        tiny_label, tiny_overlay, tiny_answer = tiny
        assert default_label["confidences"] != tiny_label["confidences"]
        assert tiny_answer["model"] == "tiny_resnet" and tiny_label["label"] == "PNEUMONIA"  # threshold 0
        assert Image.open(tiny_overlay).size == Image.open(normal).size
        with pytest.raises(AppError, match="Unknown model"):
            client.predict(handle_file(str(normal)), "no_such_model", api_name="/predict")
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("case", VALID_CASES)
def test_odd_formats_get_the_same_answer_through_the_api(client, variant_files, case):
    reference, _, _ = client.predict(handle_file(str(VARIANT_SOURCE)), api_name="/predict")
    label, overlay, _ = client.predict(handle_file(str(variant_files[case])), api_name="/predict")
    p_ref = {c["label"]: c["confidence"] for c in reference["confidences"]}["PNEUMONIA"]
    p = {c["label"]: c["confidence"] for c in label["confidences"]}["PNEUMONIA"]
    assert p == pytest.approx(p_ref, abs=0.05), case
    assert Image.open(overlay).size == Image.open(VARIANT_SOURCE).size


@pytest.mark.parametrize("case", HOSTILE_CASES)
def test_hostile_uploads_get_a_clear_message_and_the_server_stays_up(client, hostile_uploads, case):
    path, message = hostile_uploads[case]
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(path)), api_name="/predict")
    label, _, _ = client.predict(handle_file(str(VARIANT_SOURCE)), api_name="/predict")
    assert label["label"] in ("NORMAL", "PNEUMONIA")


def test_no_image_gets_a_clear_message(client):
    with pytest.raises(AppError, match="Upload a chest X-ray image first"):
        client.predict(None, api_name="/predict")


@pytest.mark.parametrize("kind", ["random_colours", "photo_temple", "photo_flower", "document"])
def test_a_picture_that_is_not_a_chest_xray_is_not_assessed(client, not_xrays, kind):
    """No decision for an image the model was not made for: the label and the JSON say NOT_ASSESSED,
    the probability is still there with the reason, and no map is drawn."""
    label, overlay, answer = client.predict(handle_file(str(not_xrays[kind])), api_name="/predict")
    assert label["label"] == answer["decision"] == "NOT_ASSESSED"
    assert {c["label"] for c in label["confidences"]} == {"NORMAL", "PNEUMONIA"}
    assert answer["unusual"] is True and "pediatric chest X-ray population" in answer["reason"]
    assert 0.0 <= answer["probability"] <= 1.0 and overlay is None


@pytest.mark.slow
def test_gradio_keeps_only_recent_sessions_and_few_event_records():
    """Each gradio_client or page visit is a Gradio session holding a copy of the page's configs; the
    app bounds how many it keeps (CXR_SESSION_CAPACITY), so memory stays flat as visitors come and go.
    Gradio's queue also records finished events for its monitoring page: the app keeps 256, summarised
    every 64 events (Gradio's defaults: 10,000, after every event)."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = (
        "import app; from gradio.routes import App; "
        "(gradio_app,) = [r.app for r in app.server.routes if isinstance(getattr(r, 'app', None), App)]; "
        "holder = gradio_app.state_holder; [holder[f'visitor{i}'] for i in range(20)]; "
        "print('SESSIONS', holder.capacity, len(holder.session_data), 'visitor19' in holder, 'visitor0' in holder); "
        "print('EVENTS', app.demo._queue.ANALYTICS_MAX_EVENTS, app.demo._queue.ANAYLTICS_CACHE_FREQUENCY)"
    )
    env = {**os.environ, "CXR_SESSION_CAPACITY": "7", "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("SESSIONS")]
    assert line.split()[1:] == ["7", "7", "True", "False"], result.stdout
    assert "EVENTS 256 64" in result.stdout, result.stdout
