"""Speed on this machine: per model, and through the running app.

    python -m cxr.cli.bench [--weights DIR ...] [--runs 30] [--batch-size 32] [--json]
    python -m cxr.cli.bench --train resnet18 efficientnet_lite0:blocks.2     # training img/s instead

For each model (default: every bundled weights folder): p50/p95 of a plain forward, of predict
with its map, of the same answer without a map, and of the whole answer (decode, predict,
overlay); folder throughput of ``python -m cxr.cli.predict`` (images/s, decode included). Then, for
the default model, the app: cold start (``python app.py`` launched → first ``/v1/predict`` answer,
median and worst of ``--launches`` launches, with its parts; then the page, gradio_client and MCP
coming up, and a new gradio_client's first answer) and the ``gradio_client`` round trip, broken
down: the HTTP requests and new ``httpx`` clients of one call, each step's time, the overlay's
bytes, and the same four requests made directly over one keep-alive connection (``app_http_ms``:
the app's own share). With --json the last stdout line is one JSON object; its top-level figures
are the default model's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cxr.bench import speed_report, train_throughput
from cxr.cli import command, print_report
from cxr.examples import bundled_examples
from cxr.hub import WEIGHTS_DIR, bundled_models


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="*", default=None, help="weights folders (default: every bundled one)")
    parser.add_argument("--image", default=None, help="default: the first bundled example")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32, help="for the folder throughput")
    parser.add_argument("--no-app", action="store_true", help="skip cold start and client round trip")
    parser.add_argument("--launches", type=int, default=5, help="cold starts to measure (median and worst)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--train",
        nargs="*",
        metavar="ARCH[:FREEZE_UNTIL]",
        help="instead: training img/s at 1 and 3 input channels, e.g. resnet18 efficientnet_lite0:blocks.2",
    )
    args = parser.parse_args(argv)
    if args.train is not None:
        for spec in args.train or ["resnet18", "efficientnet_lite0:blocks.2"]:
            arch, _, freeze = spec.partition(":")
            for chans in (1, 3):
                print(f"{spec:28s} in_chans={chans}: {train_throughput(arch, chans, freeze or None):.1f} train img/s")
        return 0
    folders = [Path(w) for w in args.weights] if args.weights else [WEIGHTS_DIR / name for name in bundled_models()]
    image = Path(args.image) if args.image else bundled_examples()[0]
    report = speed_report(folders, image, args.runs, args.batch_size, not args.no_app, args.launches)
    print_report(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
