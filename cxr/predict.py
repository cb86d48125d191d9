"""Screen many chest X-ray files: one CSV row per file (the fields API clients get), optional
Grad-CAM overlays. Without a CAM folder the images go through the model in batches (no
gradients); with one each gets its overlay as a PNG. A file that cannot be read gets a row with
its error; the run goes on. The command is ``cxr.cli.predict``.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from cxr.inference import Prediction, Predictor
from cxr.io import IMAGE_SUFFIXES, ImageReadError, read_xray

FIELDS = ["file", "probability", "decision", "threshold", "unusual", "uncertain", "ood_distance", "overlay", "error"]


def collect_files(paths: Iterable[str | Path]) -> list[Path | str]:
    """Files as given (whatever their name, so bad ones get reported), folders searched for images, and
    CSV manifests (``.csv``) read for their ``path`` column (or their first). URLs (``s3://...``) stay
    strings, for the Ray engine to fetch."""
    files: list[Path | str] = []
    for given in paths:
        if "://" in str(given):
            files.append(str(given))
            continue
        path = Path(given)
        if path.suffix.lower() == ".csv" and path.is_file():
            files += manifest_paths(path)
        elif path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


def manifest_paths(manifest: Path) -> list[Path | str]:
    """The files a CSV manifest lists (its ``path`` column, or its first): relative ones from its folder,
    URLs as they are."""
    with open(manifest, newline="") as handle:
        rows = list(csv.reader(handle))
    header = [name.strip().lower() for name in rows[0]] if rows else []
    column = header.index("path") if "path" in header else 0
    listed = [row[column].strip() for row in rows[1:] if len(row) > column and row[column].strip()]
    return [name if "://" in name else manifest.parent / name for name in listed]


def _row(file: Path, prediction: Prediction | None = None, error: str = "", overlay: str = "") -> dict:
    if prediction is None:
        return {"file": str(file), "error": error}
    record = prediction.record()  # the same fields API clients get, as CSV text
    distance = record["ood_distance"]
    return {
        "file": str(file),
        "probability": f"{record['probability']:.6f}",
        "decision": record["decision"],
        "threshold": f"{record['threshold']:.6f}",
        "unusual": "" if distance is None else int(record["unusual"]),
        "uncertain": int(record["uncertain"]),
        "ood_distance": "" if distance is None else f"{distance:.1f}",
        "overlay": overlay,
        "error": "",
    }


def _read(file: Path | str) -> Image.Image | str:
    """The image, or the reason it cannot be read."""
    if isinstance(file, str):
        return "A URL is fetched only by the Ray engine (--engine ray)."
    if not file.is_file():
        return "No such file."
    try:
        return read_xray(file)
    except ImageReadError as error:
        return str(error)
    except OSError as error:  # permission denied, a file that vanished while read
        return error.strerror or str(error)


def _overlay_path(cam_dir: Path, file: Path, taken: set[str]) -> Path:
    """``<stem>.png`` in ``cam_dir``, numbered when two inputs share a stem."""
    name, n = f"{file.stem}.png", 1
    while name in taken:
        n += 1
        name = f"{file.stem}-{n}.png"
    taken.add(name)
    return cam_dir / name


def read_for_adaptation(predictor: Predictor, files: list[Path]) -> torch.Tensor:
    """Every readable file at the model's input size (uint8 (N, 1, S, S)): one site's batch to adapt on."""
    images = [_read(file) for file in tqdm(files, desc="read for adaptation", unit="img", file=sys.stderr)]
    tensors = [predictor.preprocess.tensor(image) for image in images if isinstance(image, Image.Image)]
    return torch.stack(tensors) if tensors else torch.zeros(0, 1, 1, 1, dtype=torch.uint8)


def predict_files(
    predictor: Predictor,
    files: list[Path],
    batch_size: int = 32,
    cam_dir: Path | None = None,
    progress_bar: bool = True,
) -> Iterator[dict]:
    """One CSV row (a dict of FIELDS) per file, in order, with a progress bar (unless told not to)."""
    if cam_dir:
        cam_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    with tqdm(total=len(files), desc="predict", unit="img", file=sys.stderr, disable=not progress_bar) as progress:
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            images = [_read(file) for file in chunk]
            rows = [
                _row(file, error=image) if isinstance(image, str) else None
                for file, image in zip(chunk, images, strict=True)
            ]
            readable = [i for i, image in enumerate(images) if isinstance(image, Image.Image)]
            if cam_dir:  # Grad-CAM needs a backward per image
                for i in readable:
                    prediction, picture = predictor.explain(images[i])
                    target = _overlay_path(cam_dir, chunk[i], taken)
                    picture.save(target)
                    rows[i] = _row(chunk[i], prediction, overlay=str(target))
            elif readable:
                predictions = predictor.screen([images[i] for i in readable])
                for i, prediction in zip(readable, predictions, strict=True):
                    rows[i] = _row(chunk[i], prediction)
            yield from rows
            progress.update(len(chunk))
