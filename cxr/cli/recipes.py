"""Compare training recipes over their seeds: each figure's mean and spread across the runs of a recipe.

    python -m cxr.cli.recipes weights/efficientnet_lite0_shift runs/base-s2 runs/lung1-s0 runs/lung1-s1 --lungs

Folders are grouped by the train.py arguments they recorded, less the seed and the paths; the
figures are those each run recorded on its validation split and on the stress bank (what
``cxr.cli.evaluate --stress`` reports). ``--lungs`` adds the median share of the app's map on the
lungs by decision (``cxr.cli.camlungs``), on the masked X-rays of the validation patients.
Without ``--lungs``, a folder's ``lung_share.json`` (the output of ``cxr-camlungs --json``), if any, is
read instead: runs whose weights are gone keep their figures (``docs/runs/``).
``--record DIR`` writes the comparison into DIR's ``config.json`` (``recipes``) and its model card.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from cxr.cli import add_data_arguments, command
from cxr.folder import staged, write_records
from cxr.inference import Predictor
from cxr.model import CONFIG_NAME, ModelConfig
from cxr.recipes import group_runs
from cxr.segment import held_out_lung_share

LUNG_SHARE_NAME = "lung_share.json"


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="trained weights folders")
    parser.add_argument("--lungs", action="store_true", help="also the map's share on the lungs (about 1 min a run)")
    parser.add_argument("--masks", default="../shared/data/lung_masks", help="folder with masks.csv")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument(
        "--record", default=None, metavar="DIR", help="also write the comparison into DIR's config.json and model card"
    )
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    extra = {}
    for folder in args.folders:
        recorded = Path(folder) / LUNG_SHARE_NAME  # what cxr-camlungs --json measured, kept beside a run's records
        if args.lungs:
            share = held_out_lung_share(Predictor.from_folder(folder), args.data, args.masks)
        elif recorded.is_file():
            share = json.loads(recorded.read_text())
        else:
            continue
        extra[folder] = {f"lungs_{label.lower()}": share[label]["median"] for label in share if label != "uniform"}
    recipes = [recipe.summary() for recipe in group_runs(args.folders, extra)]
    if args.record:
        config = ModelConfig.from_json(Path(args.record) / CONFIG_NAME)
        config.recipes = recipes
        with staged(args.record, update=True) as folder:  # the weights are untouched; the records follow
            write_records(folder, config, published_as=Path(args.record))
    if args.json:
        print(json.dumps({"recipes": recipes}))
        return 0
    for recipe in recipes:
        print(f"{recipe['recipe']}\n  seeds {recipe['seeds']}: {', '.join(recipe['runs'])}")
        for name, spread in recipe["figures"].items():
            values = " ".join(f"{v:.3f}" for v in spread["values"])
            print(f"  {name:22s} mean {spread['mean']:.4f}  [{spread['min']:.3f}, {spread['max']:.3f}]  ({values})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
