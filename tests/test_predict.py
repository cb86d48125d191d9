"""`python -m cxr.cli.predict`: batch screening of files and folders to CSV, bad files reported in it."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import pytest
from PIL import Image

from cxr.hub import DEFAULT_MODEL, WEIGHTS_DIR
from cxr.inference import Predictor
from cxr.io import read_xray
from tests.conftest import EXAMPLES, ROOT, VARIANT_SOURCE
from tests.inputs import HOSTILE_CASES, VALID_CASES

pytestmark = pytest.mark.slow  # starts processes (the app, train.py or a command)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_folder(WEIGHTS_DIR / DEFAULT_MODEL)


def run_predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cxr.cli.predict", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def rows_by_name(csv_text: str) -> dict[str, dict[str, str]]:
    return {row["file"].rsplit("/", 1)[-1]: row for row in csv.DictReader(io.StringIO(csv_text))}


def test_folders_to_csv_with_bad_files_reported(predictor, variant_files, hostile_uploads, tmp_path):
    out = tmp_path / "results.csv"
    missing = tmp_path / "gone.png"
    variants, hostile = next(iter(variant_files.values())).parent, next(iter(hostile_uploads.values()))[0].parent
    result = run_predict(str(ROOT / "examples"), str(variants), str(hostile), str(missing), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "predict: 100%" in result.stderr  # the progress bar
    rows = rows_by_name(out.read_text())
    assert len(rows) == len(EXAMPLES) + len(variant_files) + len(hostile_uploads) + 1

    for example in EXAMPLES:  # batched, no-gradient answers equal the app's one-image answers
        single = predictor.predict(read_xray(example))
        row = rows[example.name]
        assert float(row["probability"]) == pytest.approx(single.probability, abs=1e-4)
        assert row["decision"] == single.label and row["unusual"] == "0" and not row["error"]
    source = predictor.predict(read_xray(VARIANT_SOURCE)).probability
    for name in VALID_CASES:  # every format and mode decoded like the original
        assert float(rows[name]["probability"]) == pytest.approx(source, abs=0.05), name
    for name in HOSTILE_CASES:
        message = hostile_uploads[name][1]
        assert rows[name]["probability"] == "" and message in rows[name]["error"], (name, rows[name])
    assert rows["gone.png"]["error"] == "No such file."


def test_pictures_that_are_not_chest_xrays_are_not_assessed_in_the_csv(not_xrays, tmp_path):
    out = tmp_path / "results.csv"
    result = run_predict(str(next(iter(not_xrays.values())).parent), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = rows_by_name(out.read_text())
    assert {name: row["decision"] for name, row in rows.items()} == {p.name: "NOT_ASSESSED" for p in not_xrays.values()}
    assert all(row["unusual"] == "1" and row["probability"] for row in rows.values())


def test_a_csv_manifest_lists_the_files(tmp_path):
    from cxr.predict import collect_files

    manifest = tmp_path / "site" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text(f"patient,path\n1,a.jpeg\n2,{EXAMPLES[0]}\n3,s3://archive/b.dcm\n4,\n")
    assert collect_files([manifest]) == [manifest.parent / "a.jpeg", EXAMPLES[0], "s3://archive/b.dcm"]


def test_cam_dir_writes_one_overlay_per_image(predictor, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"  # two inputs with the same name
    for folder in (first, second):
        folder.mkdir()
        (folder / "xray.jpeg").write_bytes(EXAMPLES[0].read_bytes())
    result = run_predict(str(first), str(second / "xray.jpeg"), "--cam-dir", str(tmp_path / "cams"))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    overlays = [row["overlay"] for row in rows]
    assert len(set(overlays)) == 2, overlays
    source = Image.open(EXAMPLES[0])
    for overlay in overlays:
        with Image.open(overlay) as picture:
            assert picture.format == "PNG" and picture.mode == "RGB"
            assert picture.width / picture.height == pytest.approx(source.width / source.height, rel=0.01)
    single = predictor.predict(read_xray(EXAMPLES[0])).probability
    assert float(rows[0]["probability"]) == pytest.approx(single, abs=1e-6)  # the CSV writes six decimals


def test_no_images_is_a_usage_error(tmp_path):
    result = run_predict(str(tmp_path))
    assert result.returncode == 2 and "no image files found" in result.stderr


def test_broken_weights_are_one_clear_line(tmp_path):
    result = run_predict(str(EXAMPLES[0]), "--weights", str(tmp_path))  # an empty folder
    assert result.returncode == 1 and result.stderr.startswith("Cannot load the model:")
    assert "Traceback" not in result.stderr
