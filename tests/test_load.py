"""A short load run in CI, and what a user meets when the queue is full."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from gradio_client import Client, handle_file

from cxr.loadtest import run_load
from tests.conftest import EXAMPLES, running_app

pytestmark = pytest.mark.slow  # starts processes (the app, train.py or a command)


def test_concurrent_clients_each_get_their_own_answer(app_url):
    report = run_load(app_url, EXAMPLES, clients=4, calls=3)
    assert report["calls"] == 12
    assert report["errors"] == 0, report["first_error"]
    assert report["mismatches"] == 0  # no Grad-CAM state leaks between concurrent requests


def test_a_full_queue_refuses_with_a_message_and_keeps_serving():
    with running_app({"CXR_QUEUE_SIZE": "1"}) as url:

        def call(image) -> str:
            try:
                Client(url, verbose=False).predict(handle_file(str(image)), api_name="/predict")
                return "ok"
            except Exception as error:  # the client raises what the server said
                return str(error)

        with ThreadPoolExecutor(10) as pool:
            outcomes = list(pool.map(call, [EXAMPLES[i % len(EXAMPLES)] for i in range(10)]))
        assert "ok" in outcomes
        refused = [o for o in outcomes if o != "ok"]
        assert refused and all("queue is full" in o.lower() for o in refused), refused
        assert call(EXAMPLES[0]) == "ok"  # and it still answers afterwards


def test_a_short_soak_over_every_door_leaves_nothing_behind():
    """CI's soak (README gives the 1,000-call figures): mixed doors and inputs, no error on valid input,
    no answer that differs from its image's solo answer, descriptors back, no upload left after the TTL."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    command = [sys.executable, "-m", "cxr.cli.loadtest", "--soak", "120", "--concurrency", "4", "--ttl", "5", "--json"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # The first error leads the message: pytest cuts a long report short, and CI's log is all there is.
    failure = (report["first_error"], report)
    assert result.returncode == 0 and report["errors"] == 0 and report["mismatches"] == 0, failure
    assert report["calls"] == 120 and report["refused"] > 0  # hostile and oversized inputs were sent, and refused
    assert all(n > 0 for n in report["valid_calls_per_door"].values()), report["valid_calls_per_door"]
    assert report["fds"]["end"] <= report["fds"]["warm"] + 2, report["fds"]
    assert report["cache_files_after_ttl"] == [], report["cache_files_after_ttl"]


@pytest.fixture(scope="module")
def app_process():
    from cxr.launch import start_app

    process, url, _ = start_app()
    yield process, url
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.parametrize("door", ["http", "mcp", "gradio_client", "ui"])
def test_one_door_soak_samples_memory_and_judges_every_answer(app_process, door, tmp_path):
    """The per-door soak behind docs/operations.md's memory figures: a short run of each door."""
    from cxr.loadtest import run_door_soak, soak_inputs

    process, url = app_process
    inputs = soak_inputs(tmp_path, EXAMPLES[:2])
    report = run_door_soak(url, process.pid, door, inputs, calls=24, warm_up=8, sample_every=8)
    assert report["errors"] == 0 and report["mismatches"] == 0, report["first_error"]
    hostile = [kind for kind in report["inputs"] if kind != "valid"]  # MCP gets no 51 MB body (413 ends its session)
    assert report["calls"] == 24 and report["refused"] == 24 // len(report["inputs"]) * len(hostile) > 0
    assert [calls for calls, _ in report["rss_mb_samples"]] == [0, 8, 16, 24]
    assert all(rss > 50 for _, rss in report["rss_mb_samples"]) and report["growth_mb_per_1000_calls"] is not None
    anon, file = report["anon_file_mb"]["end"]  # the resident memory's parts: heaps and paged-in files
    assert anon > 50 and file > 10 and anon + file <= report["rss_mb_samples"][-1][1] + 1
    assert process.poll() is None  # the server is still up
