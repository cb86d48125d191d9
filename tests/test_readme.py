"""README's Python client snippet, run exactly as written against the running app."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # starts processes (the app, train.py or a command)


def readme_snippet(section: str) -> str:
    """The first ```python block after the heading ``section``."""
    text = (ROOT / "README.md").read_text()
    return re.search(rf"## {section}\n.*?```python\n(.*?)```", text, re.S).group(1)


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
