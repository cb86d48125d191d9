"""How much of the map the app draws lies on the lungs: the median share by decision, on held-out masks.

    python -m cxr.cli.camlungs --weights weights/efficientnet_lite0_shift --json

The images are those with human-drawn lung masks (V7 Labs, CC BY 4.0) of the weights' own
validation patients (never trained on; held out from the segmenter too). ``uniform`` is the
lungs' share of the image, what a map spread evenly would score.
"""

from __future__ import annotations

import argparse
import json
import logging

from cxr.cli import add_data_arguments, command
from cxr.hub import resolve_weights
from cxr.inference import Predictor
from cxr.segment import held_out_lung_share


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="weights folder (default: what the app loads)")
    parser.add_argument("--masks", default="../shared/data/lung_masks", help="folder with masks.csv")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    predictor = Predictor.from_folder(args.weights or resolve_weights())  # a broken folder fails first
    report = held_out_lung_share(predictor, args.data, args.masks)
    if args.json:
        print(json.dumps(report))
    else:
        for label, value in report.items():
            print(f"{label:10s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
