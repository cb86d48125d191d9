"""One writer for a finished weights folder, used by train.py, calibrate, ood, soup and ensemble.

A folder is built (or updated) in ``<name>.partial`` beside its final place and moved there in one
step, so the app's model list and ``cxr-evaluate`` never see a half-written model; its records are
always written in one order: config.json → metrics.json → model card.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from cxr.model import CONFIG_NAME, ENSEMBLE_NAME, ModelConfig
from cxr.ood import AUGMENTED_DRAWS

log = logging.getLogger(__name__)

STAGING_SUFFIXES = (".partial", ".old")  # never a model: a folder being written, or being replaced
METRICS_NAME = "metrics.json"


def is_staging(folder: str | Path) -> bool:
    """A folder being written or replaced (``<name>.partial``, ``<name>.old``): never a model."""
    return Path(folder).name.endswith(STAGING_SUFFIXES)


@contextlib.contextmanager
def staged(out: str | Path, update: bool = False) -> Iterator[Path]:
    """A staging folder that replaces ``out`` when the block ends without an exception.

    ``update``: start from a copy of ``out`` (recalibrating or refitting a folder in place). On an
    exception the staging folder is removed and ``out`` is left as it was.
    """
    out = Path(out)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if update:
        shutil.copytree(out, staging)
    else:
        staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_folder(staging, out)


def replace_folder(staging: Path, out: Path) -> None:
    """Move ``staging`` to ``out``: two renames, so ``out`` is only ever absent or complete."""
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    log.info("wrote %s", out)


def write_records(
    folder: Path, config: ModelConfig, history: list[dict] | None = None, published_as: Path | None = None
) -> None:
    """config.json (an ensemble's: ensemble.json), metrics.json and the model card, from ``config``.

    ``history``: the training epochs; when None, the history already in metrics.json is kept.
    """
    from cxr.card import write_model_card

    config.to_json(folder / (ENSEMBLE_NAME if config.members else CONFIG_NAME))
    metrics = folder / METRICS_NAME
    if history is None and metrics.exists():
        history = json.loads(metrics.read_text()).get("history")
    record = {**({"history": history} if history else {}), "val": config.val_metrics, **config.stress_metrics}
    metrics.write_text(json.dumps(record, indent=2) + "\n")
    write_model_card(folder, published_as=published_as)


def calibrate_and_check(
    folder: Path,
    config: ModelConfig,
    val_images: torch.Tensor,
    labels: np.ndarray,
    train_images: torch.Tensor,
    target_sensitivity: float,
    rule: str = "best",
    cache_dir: str | Path = ".cache",
    groups: np.ndarray | None = None,
    ood_layer: str | None = None,
    ood_draws: int = AUGMENTED_DRAWS,
) -> None:
    """Calibrate the weights as stored in ``folder`` (fp16) by ``rule``, then fit the OOD check there
    (on ``ood_layer``'s pooled output; None: the classifier's input) on ``ood_draws`` augmented draws of
    each training image."""
    from cxr.model import load_model
    from cxr.ood import fit_and_save

    shipped, _ = load_model(folder)  # fp16 as stored: what users will run
    calibrate_model(shipped, config, val_images, labels, target_sensitivity, rule, cache_dir, groups)
    # "not like the training X-rays"
    fit_and_save(folder, shipped, config, train_images, val_images, ood_layer, ood_draws)


def calibrate_model(
    model: torch.nn.Module,
    config: ModelConfig,
    val_images: torch.Tensor,
    labels: np.ndarray,
    target_sensitivity: float,
    rule: str = "best",
    cache_dir: str | Path = ".cache",
    groups: np.ndarray | None = None,
) -> None:
    """Set ``config``'s calibration by ``rule`` (``cxr.calibrate``: a rule's name, or ``best`` by transfer)
    from ``model``'s logits on the validation images, clean and shifted by the bank; ``groups``: each
    image's patient."""
    from cxr.calibrate import calibrate
    from cxr.evaluation import shifted_logits
    from cxr.stress import BANK

    logits = shifted_logits(model, config, val_images, BANK, cache_dir=cache_dir)  # cached for cxr-evaluate
    calibrate(config, logits, labels, target_sensitivity, rule, groups)
