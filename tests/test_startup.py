"""A start answers /v1 first, then the page: '/' says it is starting until then, and a taken port is one line."""

from __future__ import annotations

import socket

import httpx
import pytest
from gradio_client import Client, handle_file

from cxr.launch import launch_app, wait_healthy
from tests.conftest import EXAMPLES, true_class

pytestmark = pytest.mark.slow  # starts processes (the app, train.py or a command)


def predict_over_http(url: str, example) -> dict:
    with open(example, "rb") as handle:
        response = httpx.post(f"{url}v1/predict", files={"file": (example.name, handle)}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_v1_answers_while_the_page_starts_then_the_page_does(tmp_path):
    process, url, log = launch_app()
    try:
        wait_healthy(process, url, log, page=False)
        before = httpx.get(url, timeout=10)  # Gradio takes seconds to import: the page cannot be up yet
        early_answer = predict_over_http(url, EXAMPLES[0])
        page_was_down = httpx.get(f"{url}v1/health", timeout=10).json()["page"] is False
        assert before.status_code == 503 and before.headers["retry-after"] == "2" and "starting" in before.text
        assert page_was_down, "the page was already up when /v1 first answered: this test saw no API-first start"
        wait_healthy(process, url, log, page=True, timeout=120)
        assert httpx.get(url, timeout=10).status_code == 200
        label, _, page_answer = Client(url, verbose=False).predict(handle_file(str(EXAMPLES[0])), api_name="/predict")
        assert early_answer["decision"] == page_answer["decision"] == label["label"] == true_class(EXAMPLES[0])
        assert early_answer["probability"] == pytest.approx(page_answer["probability"], abs=1e-6)
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, log.read_text()  # SIGTERM: a graceful shutdown
    assert "Traceback" not in log.read_text()


def test_a_taken_port_stops_the_start_with_a_clear_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process, _, log = launch_app(env={"GRADIO_SERVER_PORT": str(port)})
        assert process.wait(timeout=120) == 1, log.read_text()
    text = log.read_text()  # the warm-up, already running, may log after it
    assert f"Cannot start: the server could not listen on port {port}." in text.splitlines(), text
    assert "Traceback" not in text
