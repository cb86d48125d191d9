"""Screen many chest X-ray files: one CSV row per file, optional Grad-CAM overlays.

    python -m cxr.cli.predict PATH... [--weights DIR] [--out results.csv] [--cam-dir DIR] [--batch-size 32] [--adapt]
    python -m cxr.cli.predict PATH... --engine ray [--workers 2] [--out results.parquet]

PATHs are files, folders (searched recursively for images and DICOM) or CSV manifests (a ``path``
column; with --engine ray also fsspec URLs such as s3://, where that filesystem is installed). Without --cam-dir the
images go through the model in batches (no gradients); with it each one gets its Grad-CAM
overlay as a PNG. A file that cannot be read gets a row with its error; the run goes on.
--adapt: the files are one site's batch; the model's BatchNorm statistics are re-estimated on all
of them first (``cxr.adapt``), then each is scored. Fewer than 32 readable images, or files that look
like two sources, are scored without it, and one line says why.
--engine ray: Ray Data reads the list and an actor pool of --workers scores it (``cxr.ray_engine``,
``pip install .[ray]``), same columns; on a cluster when RAY_ADDRESS is set. --out *.parquet writes
Parquet instead of CSV.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import sys
from pathlib import Path

from cxr.cli import command
from cxr.hub import resolve_weights
from cxr.inference import Predictor
from cxr.predict import FIELDS, collect_files, predict_files, read_for_adaptation


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image or DICOM files, or folders of them")
    parser.add_argument("--weights", default=None, help="weights folder (default: what the app loads)")
    parser.add_argument("--out", default=None, help="CSV file (default: standard output)")
    parser.add_argument("--cam-dir", default=None, help="write a Grad-CAM overlay PNG per image here")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--adapt", action="store_true", help="site adaptation on all the files first (one site)")
    parser.add_argument("--engine", choices=["local", "ray"], default="local", help="ray: Ray Data actor pool")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors (one model load, one core each)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    files = collect_files(args.paths)
    if not files:
        parser.error("no image files found in " + " ".join(args.paths))
    weights = Path(args.weights) if args.weights else resolve_weights()
    if args.engine == "ray":
        return ray_main(weights, files, args)
    predictor = Predictor.from_folder(weights)
    cam_dir = Path(args.cam_dir) if args.cam_dir else None
    failed = 0
    adapting = predictor.adapted_to(read_for_adaptation(predictor, files)) if args.adapt else contextlib.nullcontext()
    with (
        adapting as adaptations,
        open(args.out, "w", newline="") if args.out else contextlib.nullcontext(sys.stdout) as stream,
    ):
        for adaptation in adaptations or []:
            print(adaptation.message(), file=sys.stderr)
        writer = csv.DictWriter(stream, FIELDS)
        writer.writeheader()
        for row in predict_files(predictor, files, args.batch_size, cam_dir):
            writer.writerow(row)
            failed += bool(row["error"])
    print(f"{len(files)} files: {len(files) - failed} answered, {failed} could not be read", file=sys.stderr)
    return 0


def ray_main(weights: Path, files: list[Path], args: argparse.Namespace) -> int:
    """The Ray Data engine: the same rows, written as CSV or (``.parquet``) Parquet."""
    if args.cam_dir:
        raise SystemExit("--cam-dir is for the local engine (one Grad-CAM backward per image)")
    try:
        from cxr.ray_engine import ray_predict
    except ImportError as error:
        raise SystemExit(f"--engine ray needs the ray extra: pip install .[ray] ({error})") from None
    import pandas as pd

    rows = pd.DataFrame(list(ray_predict(weights, files, args.workers, args.batch_size, args.adapt)), columns=FIELDS)
    if args.out and args.out.endswith(".parquet"):
        rows.to_parquet(args.out, index=False)
    else:
        rows.to_csv(args.out or sys.stdout, index=False)
    failed = int((rows["error"] != "").sum())
    print(f"{len(files)} files: {len(files) - failed} answered, {failed} could not be read", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
