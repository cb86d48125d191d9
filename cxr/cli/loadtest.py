"""Concurrent load on the real app over loopback: errors, latency, throughput, and answer integrity.

    python -m cxr.cli.loadtest [--clients 8] [--calls 25] [--url URL] [--json]
    python -m cxr.cli.loadtest --soak 1000 --concurrency 4 [--seconds 1800] [--ttl 20] [--json]
    python -m cxr.cli.loadtest --soak 5000 --door http mcp gradio_client ui [--app-env KEY=VALUE] [--json]

Without --url it starts `python app.py` itself. Each image is first answered alone; under load,
every answer must equal its own image's answer (probability and overlay bytes), which catches
Grad-CAM hooks or state leaking between concurrent requests. Bounded: clients x calls requests.

--soak N --door http mcp gradio_client ui: each door alone, on an app of its own, after --warm-up calls;
the app's resident memory sampled every --sample-every calls and its growth per 1,000 calls fitted
(docs/operations.md). --app-env KEY=VALUE sets the app's environment (e.g. MALLOC_ARENA_MAX=2).

--soak N starts its own app (loopback only, uploads swept after --ttl seconds) and sends N requests
(at most --seconds) from --concurrency callers over the HTTP, gradio_client, MCP and page (ui) doors, with valid,
hostile and oversized inputs; it reports errors, mismatches with each image's solo answer, the app's
resident memory and open descriptors (start, after warm-up, end) and the files left in its cache
after the TTL.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from cxr.cli import command, print_report
from cxr.examples import bundled_examples
from cxr.launch import running_app, start_app
from cxr.loadtest import run_door_soak, run_load, run_soak, soak_inputs


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--calls", type=int, default=25, help="requests per client")
    parser.add_argument("--url", default=None, help="an app already running (default: start one)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--soak", type=int, default=0, metavar="N", help="instead: a soak of N mixed requests")
    parser.add_argument("--concurrency", type=int, default=4, help="soak callers at once")
    parser.add_argument("--seconds", type=float, default=1800, help="soak time bound")
    parser.add_argument("--ttl", type=int, default=20, help="seconds before the soak's app sweeps uploads")
    parser.add_argument(
        "--door",
        nargs="+",
        choices=["http", "mcp", "gradio_client", "ui"],
        default=None,
        help="instead of the mixed soak: each door alone on a fresh app, memory sampled (growth per 1,000 calls)",
    )
    parser.add_argument("--warm-up", type=int, default=200, help="calls before the first memory sample (--door)")
    parser.add_argument("--sample-every", type=int, default=250, help="calls between memory samples (--door)")
    parser.add_argument("--app-env", nargs="*", default=[], metavar="KEY=VALUE", help="environment of the app")
    args = parser.parse_args(argv)
    images = bundled_examples()
    if args.soak and args.door:
        reports = [door_soak(images, door, args) for door in args.door]
        for report in reports:
            print_report(report, args.json)
        return 1 if any(r["errors"] or r["mismatches"] for r in reports) else 0
    if args.soak:
        report = soak(images, args)
        print_report(report, args.json)
        return 1 if report["errors"] or report["mismatches"] else 0
    if args.url:
        report = run_load(args.url, images, args.clients, args.calls)
    else:
        with running_app() as url:
            report = run_load(url, images, args.clients, args.calls)
    print_report(report, args.json)
    return 1 if report["errors"] or report["mismatches"] else 0


def soak(images: list[Path], args: argparse.Namespace) -> dict:
    """Start the app with its own cache folder and a short TTL, soak it, stop it."""
    with tempfile.TemporaryDirectory(prefix="cxr-soak-") as folder:
        cache = Path(folder) / "gradio"
        env = {"GRADIO_TEMP_DIR": str(cache), "CXR_UPLOAD_TTL": str(args.ttl)}
        process, url, _ = start_app(env)
        try:
            inputs = soak_inputs(Path(folder) / "inputs", images)
            bounds = (args.soak, args.concurrency, args.seconds, 2 * args.ttl + 5)
            return run_soak(url, process.pid, cache, inputs, *bounds)
        finally:
            process.terminate()
            process.wait(timeout=30)


def door_soak(images: list[Path], door: str, args: argparse.Namespace) -> dict:
    """One door's soak on an app of its own (so each door's memory is its own), stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="cxr-soak-") as folder:
        env = {"GRADIO_TEMP_DIR": str(Path(folder) / "gradio"), "CXR_UPLOAD_TTL": str(args.ttl)}
        env |= dict(pair.split("=", 1) for pair in args.app_env)
        process, url, _ = start_app(env)
        try:
            inputs = soak_inputs(Path(folder) / "inputs", images)
            report = run_door_soak(url, process.pid, door, inputs, args.soak, args.warm_up, args.sample_every)
            return report | {"app_env": args.app_env}
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    raise SystemExit(main())
