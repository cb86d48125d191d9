"""Train the lung segmenter behind the field-of-view crop and report its held-out Dice.

    python -m cxr.cli.segmenter --data ../shared/data/chest_xray --masks ../shared/data/lung_masks \
        --out runs/lung_segmenter

Masks of the classifier's validation patients (its patient-grouped split) are held out; the Dice
printed is theirs. ``train.py --fov runs/lung_segmenter`` then crops to the lungs with it.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from cxr.cli import add_data_arguments, command
from cxr.folder import staged
from cxr.fov import FieldOfView, SegmenterConfig
from cxr.segment import held_out, load_masked, segmenter_dice, train_segmenter


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--masks", default="../shared/data/lung_masks", help="folder with masks.csv")
    parser.add_argument("--out", default="runs/lung_segmenter")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--encoder", default="efficientnet_lite0", help="timm backbone (features_only)")
    parser.add_argument("--size", type=int, default=128, help="the segmenter's input side")
    parser.add_argument("--margin", type=float, default=0.08, help="the lung box widened by this share per side")
    parser.add_argument("--split-seed", type=int, default=0, help="the classifier's split (train.py --split-seed)")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="the classifier's (train.py --val-fraction)")
    parser.add_argument("--limit", type=int, default=0, help="train on this many masks only (smoke runs)")
    parser.add_argument(
        "--no-pretrained", action="store_true", help="start the encoder from scratch (always, for encoders but Lite0)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    masked = load_masked(Path(args.data), args.masks)
    holdout = held_out(masked, args.data, args.val_fraction, args.split_seed)
    train, test = masked.subset(~holdout), masked.subset(holdout)
    if args.limit:
        train = train.subset(np.arange(len(train.samples)) < args.limit)
    config = SegmenterConfig(encoder=args.encoder, size=args.size, margin=args.margin)
    pretrained = not args.no_pretrained and args.encoder == "efficientnet_lite0"  # the one offline ImageNet start
    segmenter, history = train_segmenter(train, config, epochs=args.epochs, pretrained=pretrained)
    dice = segmenter_dice(segmenter, test)
    config.train = {
        "masks": "V7 Labs COVID-19 X-ray dataset lung masks (CC BY 4.0) on Kermany et al. 2018 images",
        "train_masks": len(train.samples),
        "held_out_masks": len(test.samples),
        "held_out_by": "patient: the classifier's validation patients and the official val",
        "split": {"seed": args.split_seed, "val_fraction": args.val_fraction},
        "epochs": args.epochs,
        "imagenet_start": pretrained,
        "minutes": round(sum(h["seconds"] for h in history) / 60, 1),
        "held_out_dice": {"mean": float(dice.mean()), "median": float(np.median(dice)), "min": float(dice.min())},
        "history": history,
    }
    with staged(args.out) as staging:
        FieldOfView(segmenter).save(staging)
    print(json.dumps({"out": args.out, **config.train, "history": None}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
