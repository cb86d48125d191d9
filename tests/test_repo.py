"""The repository can be pushed to a Hugging Face Space as it is: big and binary files go through LFS."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT

HUB_PLAIN_GIT_LIMIT = 10 * 1024 * 1024  # the Hub refuses larger files that Git LFS does not track


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def tracked() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    return [name for name in git("ls-files", "-z").split("\0") if name]


def is_binary(path) -> bool:
    """Git's own test: a NUL byte in the first 8000 bytes."""
    with open(path, "rb") as handle:
        return b"\0" in handle.read(8000)


def test_every_big_or_binary_tracked_file_has_an_lfs_rule(tracked):
    needs_lfs = [n for n in tracked if (ROOT / n).stat().st_size > HUB_PLAIN_GIT_LIMIT or is_binary(ROOT / n)]
    assert any((ROOT / n).stat().st_size > HUB_PLAIN_GIT_LIMIT for n in needs_lfs)  # the rule is exercised
    lines = git("check-attr", "filter", "--", *needs_lfs).splitlines()  # "<path>: filter: <value>"
    uncovered = [line for line in lines if not line.endswith(": filter: lfs")]
    assert len(lines) == len(needs_lfs) and not uncovered, uncovered


def test_text_files_stay_plain_git(tracked):
    """Code and configs must stay diffable: no LFS rule catches them."""
    text = [n for n in tracked if n.endswith((".py", ".json", ".md", ".toml", ".txt"))]
    lines = git("check-attr", "filter", "--", *text).splitlines()
    assert lines and all(line.endswith(": filter: unspecified") for line in lines), lines[:5]
