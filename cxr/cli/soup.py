"""Average the weights of fine-tunes that share one pretrained start into one weights folder.

    python -m cxr.cli.soup --members runs/a runs/b runs/c --out runs/soup

The soup is written like a trained folder (fp16 weights, stress-rule calibration, OOD fit, card);
why and how: ``cxr.soup``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cxr.cli import add_data_arguments, calibration_summary, command
from cxr.soup import make_soup


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", nargs="+", required=True, type=Path, help="weights folders, one architecture")
    parser.add_argument("--out", required=True, type=Path, help="the averaged weights folder to write")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    config = make_soup(args.members, args.out, args.data, args.cache_dir)
    print(calibration_summary(args.out, config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
