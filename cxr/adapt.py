"""Site adaptation for a batch of X-rays from one site: BatchNorm statistics re-estimated on its images.

A network's BatchNorm layers normalise each channel with the mean and variance seen in training.
X-rays from another site (another detector, exposure, collimation) move those statistics, and the
calibrated probabilities move with them. Given many unlabelled images from one site, re-estimating
the statistics on them (AdaBN, Li et al. 2016; with a prior on the training statistics as in
Schneider et al. 2020, "Improving robustness against common corruptions by covariate shift
adaptation") takes the site's shift out of the features before the head reads them. No label is
used, no weight is trained, and the model is restored afterwards.

Its assumption: the batch is one site. It fails on a batch thrown together from two archives, and
worst when the archives differ by label too (normals from one, pneumonias from another): then the
statistics it removes carry the label. :func:`mixture` tests the batch for two sources before
adapting (two clusters in the frozen ImageNet features that the out-of-distribution check uses,
separated more than one site's images are) and adaptation is refused with a one-line reason.

Never on the single-image path: one image has no statistics to estimate (``MIN_IMAGES``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from cxr.forward import batched_logits
from cxr.fov import framed
from cxr.model import ModelConfig, preprocessing_for
from cxr.ood import OodScorer, pooled_features

log = logging.getLogger(__name__)

MIN_IMAGES = 32  # fewer images do not estimate a channel's mean and variance well enough
PRIOR_IMAGES = 64  # the training statistics count as this many images (Schneider et al.'s N)
MAX_IMAGES = 1024  # statistics from at most this many images of a larger batch (a seeded sample), in one pass
# Two clusters further apart than this (``mixture``): two sources, no adaptation. Measured on
# efficientnet_lite0_shift with 300 validation X-rays: one-site batches (the clean split and each of
# the bank's 17 shifts) 1.6-2.8; half clean / half crop_22 7.4; clean normals with cropped pneumonias
# 3.9, the reverse 3.4. The margin to the confounded batches is thin (docs/results.md).
MIXED_SEPARATION = 3.1


@dataclass(frozen=True)
class Adaptation:
    """What happened to a batch: adapted or not, on how many images, and why not."""

    adapted: bool
    images: int
    reason: str = ""
    separation: float | None = None  # the mixture statistic (``mixture``), when measured

    def message(self) -> str:
        if self.adapted:
            return f"site adaptation: BatchNorm statistics re-estimated on {self.images} images"
        return f"site adaptation skipped: {self.reason}"


def trained_norms(model: torch.nn.Module, config: ModelConfig) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers whose statistics were estimated on the training X-rays.

    Layers before the recipe's ``freeze_until`` kept their ImageNet statistics in training, and the
    layers after them learned on features normalised that way: re-estimating those on X-rays would
    move every feature the head knows (measured: it costs clean specificity), so they stay.
    """
    first = config.train.get("args", {}).get("freeze_until")
    norms, reached = [], not first
    for name, module in model.named_modules():
        reached = reached or name == first or name.startswith(f"{first}.")
        if reached and isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            norms.append(module)
    return norms


@torch.no_grad()
def _batch_statistics(model: torch.nn.Module, norms: list, images_u8: torch.Tensor) -> list[tuple]:
    """Each of ``norms``' mean and variance on ``images_u8`` in one pass (every layer normalising with
    the batch's own statistics, so each sees the adapted layers before it); the model is left in
    eval mode with its statistics as they were."""
    pre = preprocessing_for(model)
    device = next(model.parameters()).device
    saved = [_snapshot(m) for m in norms]
    model.eval()
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # with one pass: exactly this batch's statistics
            m.train()
        model(pre.batch(list(framed(model, images_u8))).to(device))
        return [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    finally:
        for m, state in zip(norms, saved, strict=True):
            _restore(m, state)
            m.eval()


def _snapshot(norm: torch.nn.modules.batchnorm._BatchNorm) -> tuple:
    return norm.running_mean.clone(), norm.running_var.clone(), norm.num_batches_tracked.clone(), norm.momentum


def _restore(norm: torch.nn.modules.batchnorm._BatchNorm, state: tuple) -> None:
    mean, var, tracked, momentum = state
    norm.running_mean.copy_(mean)
    norm.running_var.copy_(var)
    norm.num_batches_tracked.copy_(tracked)
    norm.momentum = momentum


@contextlib.contextmanager
def adapted(
    model: torch.nn.Module,
    config: ModelConfig,
    images_u8: torch.Tensor,
    ood: OodScorer | None = None,
    check_mixture: bool = True,
    seed: int = 0,
) -> Iterator[Adaptation]:
    """Inside the block, ``model``'s trained BatchNorm layers (:func:`trained_norms`) normalise with
    statistics of ``images_u8`` (uint8 (N, 1, S, S)); restored on exit. Too few images, or a batch
    that looks like two sources (:func:`mixture`, on the distances of the ``ood`` check; without one
    the test cannot be made and nothing is adapted): unchanged, and the ``Adaptation`` yielded says why."""
    n = len(images_u8)
    if n < MIN_IMAGES:
        yield Adaptation(False, n, f"{n} image(s); adaptation needs at least {MIN_IMAGES} from one site")
        return
    if n > MAX_IMAGES:
        pick = torch.from_numpy(np.random.default_rng(seed).choice(n, MAX_IMAGES, replace=False))
        images_u8, n = images_u8[pick.sort().values], MAX_IMAGES
    separation = None
    if check_mixture:
        if ood is None:
            yield Adaptation(False, n, "no out-of-distribution check to test the images for two sources")
            return
        separation = mixture(model, images_u8, ood)
        if separation > MIXED_SEPARATION:
            reason = f"the images look like two sources (cluster separation {separation:.2f} > {MIXED_SEPARATION})"
            yield Adaptation(False, n, reason + "; adapt each source's folder on its own", separation)
            return
    norms = trained_norms(model, config)
    if not norms:
        yield Adaptation(False, n, "this model has no BatchNorm layers trained on X-rays to adapt", separation)
        return
    saved = [_snapshot(m) for m in norms]
    weight = n / (n + PRIOR_IMAGES)
    try:
        target = _batch_statistics(model, norms, images_u8)
        for m, (mean0, var0, _, _), (mean1, var1) in zip(norms, saved, target, strict=True):
            m.running_mean.copy_((1 - weight) * mean0 + weight * mean1)
            m.running_var.copy_((1 - weight) * var0 + weight * var1)
        log.info("BatchNorm statistics of %d layers re-estimated on %d images", len(norms), n)
        yield Adaptation(True, n, separation=separation)
    finally:
        for m, state in zip(norms, saved, strict=True):
            _restore(m, state)


def mixture(model: torch.nn.Module, images_u8: torch.Tensor, ood: OodScorer) -> float:
    """How clearly the batch splits into two sources: 2-means on each image's log distance from the
    training X-rays as they are (the out-of-distribution check's acquisition fit, which sees framing,
    exposure and texture, where the check itself is fitted to look past them), the gap between the two centres over the
    within-cluster spread, weighted by how balanced the split is (a few outliers are not a source).

    One dimension, whatever the feature count. One site shifted as a whole moves every distance
    together and stays one cluster; two sources, or one class from another archive, split them.
    """
    from sklearn.cluster import KMeans

    distance = np.log(ood.acquisition.distance(pooled_features(model, images_u8, ood.layer)) + 1e-9)[:, None]
    clusters = KMeans(n_clusters=2, n_init=4, random_state=0).fit(distance)
    sizes = np.bincount(clusters.labels_, minlength=2)
    spread = np.sqrt(clusters.inertia_ / len(distance))
    gap = float(abs(clusters.cluster_centers_[0, 0] - clusters.cluster_centers_[1, 0]))
    return gap / max(spread, 1e-6) * (2 * sizes.min() / sizes.sum())


def adapted_logits(
    model: torch.nn.Module,
    config: ModelConfig,
    images_u8: torch.Tensor,
    batch_size: int = 0,
    ood: OodScorer | None = None,
    check_mixture: bool = True,
    seed: int = 0,
) -> tuple[np.ndarray, list[Adaptation]]:
    """Raw logits of ``images_u8``, each batch adapted on itself: the images in a seeded random
    order cut into batches of ``batch_size`` (0: all of them, one batch), logits back in input order."""
    order = np.random.default_rng(seed).permutation(len(images_u8)) if batch_size else np.arange(len(images_u8))
    size = max(1, batch_size or len(images_u8))
    logits, reports = np.empty(len(images_u8), dtype=np.float32), []
    for start in range(0, len(order), size):
        index = torch.from_numpy(order[start : start + size])
        with adapted(model, config, images_u8[index], ood, check_mixture, seed) as report:
            logits[index.numpy()] = batched_logits(model, images_u8[index])
        reports.append(report)
    return logits, reports
