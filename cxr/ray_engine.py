"""Batch screening on Ray Data: the same rows as :func:`cxr.predict.predict_files`, from a pool of actors.

Ray Data turns the list of files into a dataset; one ``map_batches`` stage runs :class:`Scorer`
actors (``workers`` of them, one model load each), and each actor scores its batches with the
library's own batched path (``predict_files``: decode with ``cxr.io``, screen without gradients,
unreadable files become rows with an error). The same code runs on a laptop (a local Ray started
here) and on a cluster (``ray job submit``, with ``RAY_ADDRESS`` set). Needs the ``ray`` extra:
``pip install .[ray]``.

Site adaptation composes: a first pass over the site's images (on the driver) re-estimates the
BatchNorm statistics (``cxr.adapt``); the adapted weights go to every actor through Ray's object
store, then the scoring pass runs.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cxr.inference import Predictor
from cxr.predict import FIELDS, predict_files, read_for_adaptation

log = logging.getLogger(__name__)


class Scorer:
    """One Ray actor: the model loaded once (adapted weights applied, if given), rows for each batch."""

    def __init__(self, weights: str, batch_size: int, adapted_states=None):
        import ray
        import torch

        torch.set_num_threads(1)  # one core per actor: Ray schedules actors on cores
        if isinstance(adapted_states, ray.ObjectRef):  # the adapted weights, shared through the object store
            adapted_states = ray.get(adapted_states)
        self.predictor = Predictor.from_folder(weights)
        for member, state in zip(self.predictor.members, adapted_states or [], strict=False):
            member.model.load_state_dict(state, strict=True)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        names = [str(name) for name in batch["file"]]
        with tempfile.TemporaryDirectory(prefix="cxr-ray-") as folder:
            files = [_local_copy(name, Path(folder), i) for i, name in enumerate(names)]
            rows = list(predict_files(self.predictor, files, self.batch_size, progress_bar=False))
        for row, name in zip(rows, names, strict=True):
            row["file"] = name  # the name as given (a URL stays a URL)
        return {field: [_text(row.get(field, "")) for row in rows] for field in FIELDS}


def _text(value) -> str:
    return "" if value is None else str(value)


def _local_copy(name: str, folder: Path, index: int) -> Path:
    """A local path for ``name``: itself, or for an fsspec URL (s3://, gs://, ...) a downloaded copy."""
    if "://" not in name:
        return Path(name)
    import fsspec

    target = folder / f"{index}-{Path(name).name}"
    try:
        with fsspec.open(name, "rb") as source:
            target.write_bytes(source.read())
    except Exception as error:  # unreachable or missing: the row says so, the job goes on
        log.warning("cannot fetch %s: %s", name, error)
        return folder / f"{index}-missing"
    return target


def ray_predict(
    weights: Path, files: list[Path | str], workers: int = 2, batch_size: int = 32, adapt: bool = False
) -> Iterator[dict]:
    """Rows (dicts of FIELDS) in input order, scored by ``workers`` Ray actors. Starts a local Ray
    unless one is running or ``RAY_ADDRESS`` names a cluster."""
    import ray

    if not ray.is_initialized():
        ray.init(logging_level=logging.WARNING, include_dashboard=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows in the order of the files
    states = None
    if adapt:
        states = _adapted_states(weights, [f for f in files if "://" not in str(f)])
    dataset = ray.data.from_items([{"file": str(file)} for file in files])
    scored = dataset.map_batches(
        Scorer,
        fn_constructor_args=(str(weights), batch_size, ray.put(states) if states else None),
        compute=ray.data.ActorPoolStrategy(size=workers),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=1,
    )
    for batch in scored.iter_batches(batch_size=batch_size, batch_format="numpy"):
        for i in range(len(batch["file"])):
            yield {field: str(batch[field][i]) for field in FIELDS}


def _adapted_states(weights: Path, files: list[Path | str]) -> list[dict] | None:
    """The first pass: every member's weights with BatchNorm statistics of the site's images (None when
    adaptation declines; its one-line reason is logged)."""
    predictor = Predictor.from_folder(weights)
    with predictor.adapted_to(read_for_adaptation(predictor, [Path(f) for f in files])) as adaptations:
        for adaptation in adaptations:
            log.warning("%s", adaptation.message())
        if not all(adaptation.adapted for adaptation in adaptations):
            return None
        return [{k: v.clone() for k, v in m.model.state_dict().items()} for m in predictor.members]
