"""Does an upload look like the training X-rays? Mahalanobis distance in the model's feature space.

    python -m cxr.ood --weights weights/efficientnet_lite0 --data ../shared/data/chest_xray

Fits a mean and a shrunk covariance (Ledoit-Wolf) on the pooled features of the training split,
and a threshold that lets >= 99 % of the validation X-rays pass; writes ``ood.safetensors`` and
records it (with its sha256) in ``config.json``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cxr.model import CONFIG_NAME, ModelConfig, ModelLoadError, sha256_file

log = logging.getLogger(__name__)

OOD_NAME = "ood.safetensors"
VAL_PASS = 0.99


class FeatureCapture:
    """Captures features during a forward pass (no second pass): by default the pooled features
    entering the classifier; with ``layer``, that module's output averaged over space."""

    def __init__(self, model: torch.nn.Module, layer: str | None = None):
        self.features: torch.Tensor | None = None
        if layer:
            self._handle = model.get_submodule(layer).register_forward_hook(self._pool)
        else:
            self._handle = model.get_classifier().register_forward_pre_hook(self._keep)

    def _keep(self, _module, inputs) -> None:
        self.features = inputs[0].detach().flatten(1)

    def _pool(self, _module, _inputs, output) -> None:
        self.features = output.detach().float().mean(dim=(2, 3))

    def close(self) -> None:
        self._handle.remove()

    def __enter__(self) -> FeatureCapture:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()  # the hook must not outlive the pass it was set for


class OodScorer:
    """Squared Mahalanobis distance of features from the training distribution."""

    def __init__(self, mean: torch.Tensor, precision: torch.Tensor, threshold: float, layer: str | None = None):
        self.mean, self.precision, self.threshold, self.layer = mean, precision, threshold, layer

    @classmethod
    def from_folder(cls, folder: Path, config: ModelConfig) -> OodScorer | None:
        if not config.ood:
            return None
        path = folder / OOD_NAME
        if not path.is_file() or sha256_file(path) != config.ood["sha256"]:
            raise ModelLoadError(f"{path}: missing or its sha256 does not match {folder / CONFIG_NAME}")
        tensors = load_file(path)
        return cls(tensors["mean"], tensors["precision"], float(config.ood["threshold"]), config.ood.get("layer"))

    def distance(self, features: torch.Tensor) -> np.ndarray:
        centered = features.double() - self.mean.double()
        return ((centered @ self.precision.double()) * centered).sum(1).numpy()


@torch.no_grad()
def pooled_features(model: torch.nn.Module, batches, layer: str | None = None) -> torch.Tensor:
    chunks = []
    with FeatureCapture(model, layer) as capture:
        for batch in batches:
            model(batch)
            chunks.append(capture.features)
    return torch.cat(chunks)


def fit(train_features: torch.Tensor, val_features: torch.Tensor) -> tuple[OodScorer, dict]:
    from sklearn.covariance import LedoitWolf

    estimate = LedoitWolf().fit(train_features.double().numpy())
    scorer = OodScorer(torch.from_numpy(estimate.location_).float(), torch.from_numpy(estimate.precision_).float(), 0.0)
    val_distances = scorer.distance(val_features)
    scorer.threshold = float(np.quantile(val_distances, VAL_PASS, method="higher"))
    stats = {"threshold": scorer.threshold, "val_pass_rate": float(np.mean(val_distances <= scorer.threshold))}
    return scorer, stats


def fit_and_save(
    folder: Path,
    model: torch.nn.Module,
    config: ModelConfig,
    train_images: torch.Tensor,
    val_images: torch.Tensor,
    layer: str | None = None,
) -> dict:
    """Fit the check on cached uint8 training/validation images; write ood.safetensors, record it in config.

    ``layer``: a module whose output is pooled instead of the classifier's input, e.g. a stage that
    fine-tuning left frozen (ImageNet features, which keep non-X-rays far from X-rays).
    """
    from cxr.model import preprocessing_for

    pre = preprocessing_for(model)
    features = [
        pooled_features(model, (pre.batch(list(images[i : i + 128])) for i in range(0, len(images), 128)), layer)
        for images in (train_images, val_images)
    ]
    scorer, stats = fit(*features)
    save_file({"mean": scorer.mean.contiguous(), "precision": scorer.precision.contiguous()}, folder / OOD_NAME)
    config.ood = {
        "file": OOD_NAME,
        "sha256": sha256_file(folder / OOD_NAME),
        "distance": "mahalanobis^2",
        "fit_on": f"{len(train_images)} training images",
        "layer": layer,
        **stats,
    }
    return stats


def main() -> None:
    from cxr.evaluation import split_images
    from cxr.folder import staged, write_records
    from cxr.model import load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", default="../shared/data/chest_xray", help="folder with train/")
    parser.add_argument("--cache-dir", default=".cache")
    parser.add_argument("--layer", default=None, help="pool this module's output (default: the classifier input)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    folder = Path(args.weights)
    model, config = load_model(folder)
    train_images, val_images = split_images(args.data, config, args.cache_dir)
    with staged(folder, update=True) as staging:
        stats = fit_and_save(staging, model, config, train_images, val_images, args.layer)
        write_records(staging, config, published_as=folder)
    log.info("wrote %s: %s", folder / OOD_NAME, stats)


if __name__ == "__main__":
    main()
