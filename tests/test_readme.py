"""README's Python client snippet, run exactly as written against the running app."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from tests.conftest import EXAMPLES, ROOT, true_class

pytestmark = pytest.mark.slow  # starts processes (the app, train.py or a command)


def readme_snippet(section: str, language: str = "python") -> str:
    """The first ```language block after the heading ``section``."""
    text = (ROOT / "README.md").read_text()
    return re.search(rf"## {section}\n.*?```{language}\n(.*?)```", text, re.S).group(1)


def test_readme_curl_snippet_runs_as_documented(app_url):
    import json
    import subprocess

    command = readme_snippet("Use it from anything", "bash").replace("http://127.0.0.1:7860/", app_url)
    result = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, check=True)
    answer = json.loads(result.stdout)
    assert answer["decision"] == "PNEUMONIA" and answer["unusual"] is False


def test_readme_httpx_snippet_runs_as_documented(app_url, monkeypatch, capsys):
    code = readme_snippet("Use it from anything")
    monkeypatch.chdir(ROOT)
    exec(code.replace("http://127.0.0.1:7860/", app_url), {})
    printed = capsys.readouterr().out.split()
    assert printed[:2] == ["200", "NORMAL"] and printed[2].startswith("0.0")  # as the comment says


def test_readme_mcp_config_reaches_the_tool(app_url):
    import asyncio
    import json

    from tests.test_doors import data_uri, mcp_answer

    config = json.loads(readme_snippet("Use it from anything", "json"))
    url = config["mcpServers"]["cxr-pneumonia"]["url"].replace("http://127.0.0.1:7860/", app_url)

    async def call():
        from mcp import ClientSession
        from mcp.client.streamable_http import streamablehttp_client

        async with streamablehttp_client(url) as (read, write, _), ClientSession(read, write) as session:
            await session.initialize()
            return await session.call_tool("screen_chest_xray", {"upload": data_uri(EXAMPLES[0])})

    assert mcp_answer(asyncio.run(call()))["decision"] == true_class(EXAMPLES[0])


def test_readme_client_snippet_runs_as_documented(app_url, monkeypatch, capsys):
    code = readme_snippet("From Python")
    assert 'api_name="/predict"' in code and "http://127.0.0.1:7860/" in code
    monkeypatch.chdir(ROOT)  # the snippet names the example relative to the repository
    namespace: dict = {}
    exec(code.replace("http://127.0.0.1:7860/", app_url), namespace)
    printed = capsys.readouterr().out.splitlines()[-3:]  # after the client's own "Loaded as API" line
    label, overlay, answer = namespace["label"], namespace["overlay"], namespace["answer"]
    assert printed[0].startswith("PNEUMONIA {'label': 'PNEUMONIA', 'confidence': 0.9")  # as the comment says
    assert printed[1] == "PNEUMONIA False False"
    assert [c["label"] for c in label["confidences"]] == ["PNEUMONIA", "NORMAL"]
    assert abs(sum(c["confidence"] for c in label["confidences"]) - 1.0) < 1e-9
    assert answer["probability"] == label["confidences"][0]["confidence"] and answer["decision"] == label["label"]
    assert set(answer) >= {"probability", "decision", "threshold", "unusual", "uncertain", "model", "sha256"}
    assert printed[2] == overlay and overlay.endswith(".jpeg")
    with Image.open(overlay) as picture:
        assert picture.format == "JPEG" and max(picture.size) <= 1024
