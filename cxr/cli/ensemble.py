"""Assemble weights folders into one ensemble folder, calibrated by the rule that transfers best (cxr.calibrate).

    python -m cxr.cli.ensemble --members runs/a runs/b weights/efficientnet_lite0 --out weights/ensemble

Members are copied as they are; ``ensemble.json`` records them and the calibration of their mean
(``cxr.ensemble``). The app and every command serve the folder as one model.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cxr.calibrate import RULES
from cxr.cli import add_data_arguments, calibration_summary, command
from cxr.ensemble import build_ensemble


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", nargs="+", required=True, type=Path, help="weights folders (one split)")
    parser.add_argument("--out", required=True, type=Path, help="the ensemble folder to write")
    parser.add_argument("--target-sensitivity", type=float, default=0.97)
    parser.add_argument(
        "--rule", choices=[*RULES, "best"], default="best", help="calibration rule (best: the one that transfers best)"
    )
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    config = build_ensemble(args.members, args.out, args.data, args.target_sensitivity, args.cache_dir, args.rule)
    print(calibration_summary(args.out, config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
