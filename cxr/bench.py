"""Latency on this machine: plain forward, predict + Grad-CAM, and app cold start to first answer.

python -m cxr.bench [--weights DIR] [--runs 30] [--json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from cxr.evaluate import print_report
from cxr.hub import resolve_weights
from cxr.inference import Predictor
from cxr.io import read_xray
from cxr.serve import ROOT, running_app


def _p50_ms(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def model_latency(weights: Path, image_path: Path, runs: int) -> dict[str, float]:
    """p50 of a plain forward and of the full predict + Grad-CAM + overlay path, one image."""
    predictor = Predictor.from_folder(weights)
    image = read_xray(image_path)
    batch = predictor.preprocess(image)

    def forward():
        with torch.no_grad():
            predictor.model(batch)

    return {
        "forward_ms_p50": _p50_ms(forward, runs),
        "predict_cam_ms_p50": _p50_ms(lambda: predictor.predict(image), runs),
        "explain_ms_p50": _p50_ms(lambda: predictor.explain(read_xray(image_path)), runs),
    }


def train_throughput(architecture: str, in_chans: int, freeze_until: str | None = None, steps: int = 4) -> float:
    """Training images/s (forward + backward + AdamW step, batch 32, 224 px, channels_last)."""
    from cxr.model import ModelConfig, build_model, freeze_before

    model = build_model(ModelConfig(architecture, in_chans=in_chans)).train().to(memory_format=torch.channels_last)
    if freeze_until:
        freeze_before(model, freeze_until)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(32, in_chans, 224, 224).contiguous(memory_format=torch.channels_last)
    y = torch.rand(32, 1)

    def step():
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return 32 * steps / (time.perf_counter() - start)


def cold_start(image_path: Path) -> float:
    """Seconds from launching ``python app.py`` to the first /predict answer through gradio_client."""
    from gradio_client import Client, handle_file

    start = time.perf_counter()
    with running_app() as url:
        Client(url, verbose=False).predict(handle_file(str(image_path)), api_name="/predict")
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--image", default=None, help="default: the first bundled example")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--train",
        nargs="*",
        metavar="ARCH[:FREEZE_UNTIL]",
        help="instead: training img/s at 1 and 3 input channels, e.g. resnet18 efficientnet_lite0:blocks.2",
    )
    args = parser.parse_args()
    if args.train is not None:
        for spec in args.train or ["resnet18", "efficientnet_lite0:blocks.2"]:
            arch, _, freeze = spec.partition(":")
            for chans in (1, 3):
                print(f"{spec:28s} in_chans={chans}: {train_throughput(arch, chans, freeze or None):.1f} train img/s")
        return
    weights = Path(args.weights) if args.weights else resolve_weights()
    image = Path(args.image) if args.image else sorted((ROOT / "examples").glob("*.jpeg"))[0]
    results = {"weights": str(weights), "torch_threads": torch.get_num_threads()}
    results |= model_latency(weights, image, args.runs)
    results["cold_start_s"] = cold_start(image)
    print_report(results, args.json)


if __name__ == "__main__":
    main()
