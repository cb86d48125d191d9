"""Every command ends a user's mistake (a broken weights folder, an unreadable image) with one line
on stderr and exit status 1, never a traceback; each runs as ``python -m cxr.<name>`` and as a
console script (pyproject.toml)."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cxr.hub import DEFAULT_MODEL, WEIGHTS_DIR
from cxr.model import WEIGHTS_NAME
from tests.conftest import EXAMPLES, ROOT

# Each command is ``python -m cxr.cli.<name>`` and the console script ``cxr-<name>``, nothing else.
COMMANDS = ["evaluate", "predict", "calibrate", "ood", "soup", "ensemble", "bench", "loadtest"]
COMMANDS += ["segmenter", "adapt", "camlungs", "fov", "recipes"]
WEIGHTLESS = ("loadtest", "segmenter")  # load no weights


@pytest.fixture
def broken(tmp_path):
    """A copy of the default weights with its weights file cut in half (the checksum catches it)."""
    folder = tmp_path / "broken"
    shutil.copytree(WEIGHTS_DIR / DEFAULT_MODEL, folder)
    data = (folder / WEIGHTS_NAME).read_bytes()
    (folder / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    return folder


@pytest.fixture
def kaggle_folder(tmp_path):
    """NORMAL/ and PNEUMONIA/ with the bundled examples in them."""
    for example in EXAMPLES:
        label = "PNEUMONIA" if example.name.startswith("pneumonia") else "NORMAL"
        (tmp_path / "data" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(example, tmp_path / "data" / label / example.name)
    return tmp_path / "data"


def arguments(name: str, broken, tmp_path, data) -> list[str]:
    return {
        "evaluate": ["--data", str(data), "--weights", str(broken)],
        "predict": [str(EXAMPLES[0]), "--weights", str(broken)],
        "calibrate": ["--weights", str(broken), "--data", str(data)],
        "ood": ["--weights", str(broken), "--data", str(data)],
        "soup": ["--members", str(broken), str(broken), "--out", str(tmp_path / "soup"), "--data", str(data)],
        "ensemble": ["--members", str(broken), "--out", str(tmp_path / "ensemble"), "--data", str(data)],
        "bench": ["--weights", str(broken), "--no-app", "--runs", "1"],
        "adapt": ["--weights", str(broken), "--data", str(data)],
        "camlungs": ["--weights", str(broken), "--data", str(data)],
        "fov": ["--weights", str(broken), "--data", str(data)],
        "recipes": [str(broken), "--lungs", "--data", str(data)],
    }[name]


def run(name: str, argv: list[str], capsys) -> tuple[int, str]:
    main = importlib.import_module(f"cxr.cli.{name}").main
    status = main(argv)
    return status, capsys.readouterr().err.strip()


@pytest.mark.parametrize("name", [c for c in COMMANDS if c not in WEIGHTLESS])
def test_a_broken_weights_folder_is_one_line_and_exit_1(name, broken, tmp_path, kaggle_folder, capsys):
    status, err = run(name, arguments(name, broken, tmp_path, kaggle_folder), capsys)
    lines = [line for line in err.splitlines() if not line.startswith(("INFO", "WARNING"))]
    assert status == 1
    assert len(lines) == 1 and lines[0].startswith("Cannot load the model:"), err
    assert str(broken) in lines[0] and "sha256" in lines[0]
    if name in ("soup", "ensemble"):  # nothing written, not even a staging folder
        assert not any(tmp_path.glob(f"{name}*")), sorted(tmp_path.iterdir())


def test_an_unreadable_image_in_an_evaluated_folder_is_one_line_naming_it(kaggle_folder, capsys):
    bad = kaggle_folder / "NORMAL" / "scan.jpeg"
    bad.write_bytes(b"not an image at all")
    status, err = run("evaluate", ["--data", str(kaggle_folder), "--weights", str(WEIGHTS_DIR / DEFAULT_MODEL)], capsys)
    assert status == 1
    assert err.splitlines()[-1].startswith(f"Cannot read the image: {bad}: This file is not an image"), err
    assert "Traceback" not in err


def test_every_command_is_a_console_script_and_a_module():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {f"cxr-{name}": f"cxr.cli.{name}:main" for name in COMMANDS}
    assert sorted(p.stem for p in (ROOT / "cxr" / "cli").glob("*.py") if p.stem != "__init__") == sorted(COMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["module", "script"])
def test_a_command_started_as_a_process_prints_one_line(how, broken):
    """The real entry points: ``python -m cxr.cli.predict`` and the installed ``cxr-predict``."""
    script = Path(sys.executable).parent / "cxr-predict"  # installed by requirements-dev.txt (-e .)
    start = [sys.executable, "-m", "cxr.cli.predict"] if how == "module" else [str(script)]
    result = subprocess.run(
        [*start, str(EXAMPLES[0]), "--weights", str(broken)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"Cannot load the model: {broken}")
    assert "Traceback" not in result.stderr


def test_every_command_readme_shows_exists_and_answers_help(capsys):
    import re

    readme = (ROOT / "README.md").read_text()
    shown = set(re.findall(r"python -m cxr\.cli\.(\w+)", readme))
    assert shown and shown <= set(COMMANDS), shown - set(COMMANDS)
    assert re.findall(r"python -m cxr\.(?!cli\.)\w+", readme) == []  # the old spellings are gone
    for name in sorted(shown):
        with pytest.raises(SystemExit) as done:
            importlib.import_module(f"cxr.cli.{name}").main(["--help"])
        assert done.value.code == 0 and "usage:" in capsys.readouterr().out


def test_a_data_folder_without_the_class_folders_is_one_line(tmp_path, capsys):
    status, err = run("evaluate", ["--data", str(tmp_path), "--weights", str(WEIGHTS_DIR / DEFAULT_MODEL)], capsys)
    assert status == 1
    assert err.splitlines()[-1] == (
        f"Cannot use the data: {tmp_path / 'NORMAL'} is missing: expected NORMAL/ and PNEUMONIA/ in {tmp_path}"
    )
