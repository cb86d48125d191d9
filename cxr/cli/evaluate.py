"""Evaluate weights on a Kaggle-layout folder, or on the validation split their config records.

    python -m cxr.cli.evaluate --data ../shared/data/chest_xray --split val
    python -m cxr.cli.evaluate --data ../shared/data/chest_xray --split val --stress --json   # shift-stress bank
    python -m cxr.cli.evaluate --data ../shared/data/val_originals --json --plots plots/
    python -m cxr.cli.evaluate --data ../shared/data/chest_xray --split val --flip-tta        # a lever, measured
    python -m cxr.cli.evaluate --data ../shared/data/chest_xray --split val --weights A B    # an ensemble
    python -m cxr.cli.evaluate --data DIR --json --adapt       # site adaptation on DIR's images as one batch

Uses the weights' own preprocessing, temperature and threshold. Several --weights: the mean of their
calibrated probabilities at the mean of their thresholds. --flip-tta: each logit is the mean of the
image's and its mirror image's (the threshold was chosen without it: compare AUCs). --stress: the
same metrics on every validation X-ray changed by each acquisition change of ``cxr.stress.BANK``,
plus the worst of each over the bank; with --split val it also reports the full-size
``val_originals`` beside the data folder (another decoding pipeline), when present. --adapt: the
images are treated as one site's batch and the model's BatchNorm statistics re-estimated on them
(``cxr.adapt``; with --stress, each shifted copy on its own); fewer than 32 images, or a folder that
looks like two sources, are scored without it and the report's "adaptation" line says so.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cxr.cli import add_data_arguments, command, print_report
from cxr.data import list_samples
from cxr.evaluation import cached_images, evaluate, read_config, validation_samples
from cxr.hub import HUB_ERRORS, fetch_weights, resolve_weights


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--weights",
        nargs="+",
        default=None,
        help="weights folders or Hub repos org/name[@rev] (default: what the app loads)",
    )
    parser.add_argument("--split", choices=["val"], default=None, help="the config's validation split of DATA/train")
    parser.add_argument("--stress", action="store_true", help="also evaluate under the shift-stress bank")
    parser.add_argument("--flip-tta", action="store_true", help="average each logit with its mirror image's")
    parser.add_argument("--adapt", action="store_true", help="site adaptation on the images (one batch)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--plots", default=None, metavar="OUT", help="write ROC, PR, reliability, confusion PNGs")
    add_data_arguments(parser, "folder with NORMAL/ and PNEUMONIA/ (or train/ for --split)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    # A folder, or a Hub repo id (org/name[@revision]); a repo that cannot be fetched is an error here,
    # not a fallback: an evaluation must measure the weights it names.
    try:
        weights = [w if w.is_dir() else fetch_weights(*str(w).split("@", 1)) for w in map(Path, args.weights or [])]
    except HUB_ERRORS as error:
        parser.error(f"--weights: neither a folder nor a Hub repo that can be fetched ({type(error).__name__})")
    weights = weights or [resolve_weights()]
    images = None
    if args.split == "val":
        configs = [read_config(w) for w in weights]
        splits = [validation_samples(args.data, config) for config in configs]
        if any([s.path for s in split] != [s.path for s in splits[0]] for split in splits):
            parser.error("these weights were validated on different splits")
        samples, images = splits[0], cached_images(splits[0], configs[0], "val", args.cache_dir)
    else:
        samples = list_samples(args.data)
    report = evaluate(weights, samples, args.plots, args.flip_tta, args.stress, images, args.cache_dir, args.adapt)
    originals = Path(args.data).parent / "val_originals"
    if args.stress and args.split == "val" and originals.is_dir():
        report["val_originals"] = evaluate(weights, list_samples(originals), flip=args.flip_tta, adapt=args.adapt)
    print_report(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
