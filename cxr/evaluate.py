"""Evaluate weights on a Kaggle-layout folder, or on the validation split their config records.

    python -m cxr.evaluate --data ../shared/data/chest_xray --split val
    python -m cxr.evaluate --data ../shared/data/val_originals --json --plots plots/
    python -m cxr.evaluate --data ../shared/data/chest_xray --split val --flip-tta        # a lever, measured
    python -m cxr.evaluate --data ../shared/data/chest_xray --split val --weights A B    # an ensemble

Uses the weights' own preprocessing, temperature and threshold. Several --weights: the mean of their
calibrated probabilities at the mean of their thresholds. --flip-tta: each logit is the mean of the
image's and its mirror image's (the threshold was chosen without it: compare AUCs).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cxr.data import Sample, list_samples, load_grayscale, resize_to_input, split_by_patient
from cxr.hub import HUB_ERRORS, fetch_weights, resolve_weights
from cxr.metrics import auc_confidence_interval, binary_metrics, probabilities
from cxr.model import ModelConfig, load_model, preprocessing_for

log = logging.getLogger(__name__)


def validation_samples(data_dir: str | Path, config: ModelConfig) -> list[Sample]:
    """The patient-grouped validation split recorded in ``config``, rebuilt from ``data_dir/train``."""
    split = config.train["split"]
    _, val = split_by_patient(list_samples(Path(data_dir) / "train"), split["val_fraction"], split["seed"])
    if {s.patient for s in val} != set(split["val_patients"]):
        raise ValueError(f"{data_dir}: the validation split differs from the one recorded in the config")
    return val


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, samples: list[Sample], batch_size: int = 64, flip: bool = False
) -> np.ndarray:
    """Raw logits for each sample, decoded and preprocessed as in the app (``flip``: mean with the mirror)."""
    pre = preprocessing_for(model)
    logits = []
    for start in tqdm(range(0, len(samples), batch_size), desc="evaluate", unit="batch"):
        chunk = samples[start : start + batch_size]
        batch = pre.batch([resize_to_input(load_grayscale(s.path), pre.input_size) for s in chunk])
        output = model(batch).squeeze(1)
        if flip:
            output = (output + model(batch.flip(-1)).squeeze(1)) / 2
        logits.append(output)
    return torch.cat(logits).numpy()


def evaluate(
    weights: str | Path | list[str | Path], samples: list[Sample], plots: str | Path | None = None, flip: bool = False
) -> dict:
    """Metrics at the weights' own threshold, with a bootstrap AUC interval; a list of weights is an ensemble."""
    members = [weights] if isinstance(weights, str | Path) else list(weights)
    probs, thresholds = [], []
    for member in members:
        model, config = load_model(member)
        probs.append(probabilities(predict_logits(model, samples, flip=flip), config.temperature, config.logit_bias))
        thresholds.append(config.threshold)
    prob, threshold = np.mean(probs, axis=0), float(np.mean(thresholds))
    labels = np.array([s.label for s in samples])
    metrics = binary_metrics(prob, labels, threshold)
    if 0 < labels.sum() < len(labels):
        metrics["auc_ci95"] = list(auc_confidence_interval(prob, labels))
    if plots:
        from cxr.plots import save_plots

        save_plots(prob, labels, threshold, plots)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with NORMAL/ and PNEUMONIA/ (or train/ for --split)")
    parser.add_argument(
        "--weights",
        nargs="+",
        default=None,
        help="weights folders or Hub repos org/name[@rev] (default: what the app loads)",
    )
    parser.add_argument("--split", choices=["val"], default=None, help="the config's validation split of DATA/train")
    parser.add_argument("--flip-tta", action="store_true", help="average each logit with its mirror image's")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--plots", default=None, metavar="OUT", help="write ROC, PR, reliability, confusion PNGs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    # A folder, or a Hub repo id (org/name[@revision]); a repo that cannot be fetched is an error here,
    # not a fallback: an evaluation must measure the weights it names.
    try:
        weights = [w if w.is_dir() else fetch_weights(*str(w).split("@", 1)) for w in map(Path, args.weights or [])]
    except HUB_ERRORS as error:
        parser.error(f"--weights: neither a folder nor a Hub repo that can be fetched ({type(error).__name__})")
    weights = weights or [resolve_weights()]
    if args.split == "val":
        splits = [validation_samples(args.data, ModelConfig.from_json(w / "config.json")) for w in weights]
        if any([s.path for s in split] != [s.path for s in splits[0]] for split in splits):
            parser.error("these weights were validated on different splits")
        samples = splits[0]
    else:
        samples = list_samples(args.data)
    print_report(evaluate(weights, samples, args.plots, args.flip_tta), args.json)


def print_report(results: dict, as_json: bool) -> None:
    """One JSON object on the last stdout line, or an aligned key/value table."""
    if as_json:
        print(json.dumps(results))
        return
    for key, value in results.items():
        print(f"{key:20s} {value:.4f}" if isinstance(value, float) else f"{key:20s} {value}")


if __name__ == "__main__":
    main()
