"""Fit temperature, bias and screening threshold on a model's own validation split, by the stress rule.

    python -m cxr.calibrate --weights weights/efficientnet_lite0 --data ../shared/data/chest_xray

The rule (README "Holding up under acquisition changes"): Platt temperature and bias are fitted by log-loss on
the clean validation X-rays and every shifted copy of them pooled (``cxr.stress.BANK``), and the
threshold is the highest that keeps sensitivity >= the target both on the clean split and on that
pool. Fitted on the clean split alone, both were over-confident on X-rays from another period.
``--rule clean`` keeps the old clean-only fit, to measure the difference. train.py ends with the
same step; this command re-runs it on saved weights (the weights file is not touched; config.json,
metrics.json and the model card are rewritten).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from cxr.calibrate import RULES
from cxr.cli import add_data_arguments, calibration_summary, command
from cxr.evaluation import cached_images, validation_samples
from cxr.folder import calibrate_model, staged, write_records
from cxr.model import load_model


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="weights folder to recalibrate in place")
    parser.add_argument("--rule", choices=RULES, default="stress", help="pool the stress bank into the fit, or not")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    weights = Path(args.weights)
    model, config = load_model(weights)  # a broken folder fails here, before the data is decoded
    samples = validation_samples(args.data, config)
    images, labels = cached_images(samples, config, "val", args.cache_dir), np.array([s.label for s in samples])
    target = config.train["args"]["target_sensitivity"]
    calibrate_model(model, config, images, labels, target, args.rule, args.cache_dir)
    with staged(weights, update=True) as folder:  # the weights file is untouched; the records follow the config
        write_records(folder, config, published_as=weights)
    print(f"{args.rule} rule: " + calibration_summary(weights, config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
