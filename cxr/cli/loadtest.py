"""Concurrent load on the real app over loopback: errors, latency, throughput, and answer integrity.

    python -m cxr.cli.loadtest [--clients 8] [--calls 25] [--url URL] [--json]

Without --url it starts `python app.py` itself. Each image is first answered alone; under load,
every answer must equal its own image's answer (probability and overlay bytes), which catches
Grad-CAM hooks or state leaking between concurrent requests. Bounded: clients x calls requests.
"""

from __future__ import annotations

import argparse

from cxr.cli import command, print_report
from cxr.examples import bundled_examples
from cxr.launch import running_app
from cxr.loadtest import run_load


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--calls", type=int, default=25, help="requests per client")
    parser.add_argument("--url", default=None, help="an app already running (default: start one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    images = bundled_examples()
    if args.url:
        report = run_load(args.url, images, args.clients, args.calls)
    else:
        with running_app() as url:
            report = run_load(url, images, args.clients, args.calls)
    print_report(report, args.json)
    return 1 if report["errors"] or report["mismatches"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
