"""How much of the Grad-CAM map lies on the lungs: the median share by decision, on held-out masks.

    python -m cxr.cli.camlungs --weights weights/efficientnet_lite0_shift --json

The images are those with human-drawn lung masks (V7 Labs, CC BY 4.0) held out from the segmenter by
patient: the classifier's own validation patients. ``uniform`` is the lungs' share of the image, what
a map spread evenly would score.
"""

from __future__ import annotations

import argparse
import json
import logging

from cxr.cli import add_data_arguments, command
from cxr.hub import resolve_weights
from cxr.inference import Predictor
from cxr.segment import cam_lung_share, held_out, load_masked


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="weights folder (default: what the app loads)")
    parser.add_argument("--masks", default="../shared/data/lung_masks", help="folder with masks.csv")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    masked = load_masked(args.data, args.masks)
    masked = masked.subset(held_out(masked, args.data))
    report = cam_lung_share(Predictor.from_folder(args.weights or resolve_weights()), masked)
    if args.json:
        print(json.dumps(report))
    else:
        for label, value in report.items():
            print(f"{label:10s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
