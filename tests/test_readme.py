"""README's Python client snippet, run exactly as written against the running app."""

from __future__ import annotations

import re

import pytest

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
    import json

    from cxr.doors import MCP_PATH, McpDoor

    config = json.loads(readme_snippet("Use it from anything", "json"))
    url = config["mcpServers"]["cxr-pneumonia"]["url"].replace("http://127.0.0.1:7860/", app_url)
    door = McpDoor(url.removesuffix(MCP_PATH))
    try:
        assert door.screen(EXAMPLES[0])["decision"] == true_class(EXAMPLES[0])
    finally:
        door.close()
