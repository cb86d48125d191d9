"""Does an upload look like the training X-rays? Mahalanobis distance in the model's feature space.

    python -m cxr.cli.ood --weights weights/efficientnet_lite0_shift --layer blocks.3 [--draws 3]

Fits a mean and a shrunk covariance (Ledoit-Wolf) on the pooled features of the training split, each
X-ray drawn --draws times through the training augmentation (0: as they are), and the lowest
threshold that flags at most 2 % of the validation X-rays and at most 2 % of their copies changed by
the stress bank; writes ``ood.safetensors`` and records it (with its sha256 and every shift's false
alarms) in ``config.json``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cxr.cli import add_data_arguments, command
from cxr.evaluation import split_images
from cxr.folder import staged, write_records
from cxr.model import load_model
from cxr.ood import AUGMENTED_DRAWS, OOD_NAME, fit_and_save


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    add_data_arguments(parser)
    parser.add_argument("--layer", default=None, help="pool this module's output (default: the classifier input)")
    parser.add_argument(
        "--draws", type=int, default=AUGMENTED_DRAWS, help="training augmentation draws per training X-ray"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    folder = Path(args.weights)
    model, config = load_model(folder)
    train_images, val_images = split_images(args.data, config, args.cache_dir)
    with staged(folder, update=True) as staging:
        stats = fit_and_save(staging, model, config, train_images, val_images, args.layer, args.draws)
        write_records(staging, config, published_as=folder)
    print(f"wrote {folder / OOD_NAME}: {stats}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
