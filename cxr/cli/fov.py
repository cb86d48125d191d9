"""Show the field of view: the lung box a model's segmenter finds (or the dimmed frame it shows the
classifier, ``--fov-mode dim``) on full-size X-rays and bank images.

    python -m cxr.cli.fov --weights weights/efficientnet_lite0_fov --out docs/fov_crops.png

Draws the box (green) on the 16 full-size ``val_originals`` and on validation X-rays changed by the
bank's framing changes (crop 22 %, pad 15 %), so a person can see what the classifier is shown.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from cxr.cli import add_data_arguments, command
from cxr.data import list_samples
from cxr.evaluation import cached_images, validation_samples
from cxr.fov import field_of_view
from cxr.io import read_xray
from cxr.model import load_model, preprocessing_for
from cxr.plots import save_crop_sheet
from cxr.stress import apply_shift, shift_by_name


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="a weights folder with a field of view (fov/)")
    parser.add_argument("--out", default="docs/fov_crops.png")
    parser.add_argument("--bank-images", type=int, default=8, help="validation X-rays per framing change")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    model, config = load_model(args.weights)
    fov = field_of_view(model)
    if fov is None:
        parser.error(f"{args.weights} has no field of view (trained without --fov)")
    pre = preprocessing_for(model)
    originals = list_samples(Path(args.data).parent / "val_originals")
    pictures = [np.asarray(read_xray(s.path)) for s in originals]
    tensors = [pre.tensor(read_xray(s.path)) for s in originals]
    titles = [s.path.name[:18] for s in originals]
    val = cached_images(validation_samples(args.data, config), config, "val", args.cache_dir)
    pick = torch.from_numpy(np.random.default_rng(0).choice(len(val), args.bank_images, replace=False))
    for name in ("crop_22", "pad_15"):
        changed = apply_shift(shift_by_name(name), val[pick])
        pictures += [image[0].numpy() for image in changed]
        tensors += list(changed)
        titles += [name] * len(changed)
    seen, boxes = fov.frame(torch.stack(tensors))
    if fov.config.mode == "dim":  # lung-masked input: show the frames as dimmed (at the input size)
        pictures = [image[0].numpy() for image in seen]
    print(f"wrote {save_crop_sheet(pictures, boxes, titles, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
