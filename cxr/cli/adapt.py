"""Measure site adaptation on the stress bank: per shift and batch size, and on mixed batches.

    python -m cxr.cli.adapt --weights weights/efficientnet_lite0_shift --data ../shared/data/chest_xray --json

Each shift of ``cxr.stress.BANK`` applied to the weights' own validation split is one site; its
images are adapted on without labels (``cxr.adapt``) and scored at the weights' calibration and
threshold. Also: half clean / half cropped batches and batches whose classes come from different
sources, scored without adaptation, with it forced, and with the two-source test that refuses it.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from cxr.adapt_study import study
from cxr.cli import add_data_arguments, command
from cxr.evaluation import ShiftedImages, cached_images, validation_samples
from cxr.model import load_model
from cxr.ood import OodScorer


def _table(result: dict) -> str:
    rows = ["| site | batch | AUC | sensitivity | specificity | ECE |", "|---|---|---|---|---|---|"]
    for site, by_batch in result["sites"].items():
        for batch, m in by_batch.items():
            cells = " | ".join(f"{m[k]:.3f}" for k in ("auc", "sensitivity", "specificity", "ece"))
            rows.append(f"| {site} | {batch} | {cells} |")
    for name, entry in result["mixed"].items():
        for mode in ("none", "forced", "checked"):
            m = entry[mode]
            cells = " | ".join(f"{m[k]:.3f}" for k in ("auc", "sensitivity", "specificity", "ece"))
            rows.append(f"| {name} (separation {entry['separation']:.2f}) | {mode} | {cells} |")
    return "\n".join(rows)


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="one weights folder (not an ensemble)")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--images", type=int, default=0, help="a seeded sample of this many validation X-rays")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    model, config = load_model(args.weights)
    ood = OodScorer.from_folder(Path(args.weights), config)
    if ood is None:
        parser.error(f"{args.weights} has no out-of-distribution check (python -m cxr.cli.ood)")
    samples = validation_samples(args.data, config)
    images = cached_images(samples, config, "val", args.cache_dir)
    labels = np.array([s.label for s in samples])
    if args.images:
        pick = np.sort(np.random.default_rng(0).choice(len(samples), args.images, replace=False))
        images, labels = images[torch.from_numpy(pick)], labels[pick]
    result = study(model, config, ood, ShiftedImages(images), labels, args.cache_dir)
    print(json.dumps(result) if args.json else _table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
