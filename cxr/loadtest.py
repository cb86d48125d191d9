"""Concurrent load on the real app over loopback: errors, latency, throughput, and answer integrity.

Each image is first answered alone; under load, every answer must equal its own image's answer
(probability and overlay pixels), which catches Grad-CAM hooks or state leaking between
concurrent requests. Bounded: clients x calls requests. The command is ``cxr.cli.loadtest``.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def _answer(client, image: Path) -> tuple[float, str]:
    from gradio_client import handle_file

    _, overlay, answer = client.predict(handle_file(str(image)), api_name="/predict")
    with Image.open(overlay) as picture:  # the pixels: each answer's file carries its own request id
        return answer["probability"], hashlib.sha256(picture.tobytes()).hexdigest()


def run_load(url: str, images: list[Path], clients: int = 8, calls: int = 25) -> dict:
    """Drive ``clients`` concurrent gradio_client sessions for ``calls`` requests each."""
    from gradio_client import Client

    alone = Client(url, verbose=False)
    reference = {image: _answer(alone, image) for image in images}

    def session(index: int) -> list[tuple[float, str]]:
        client, outcomes = Client(url, verbose=False), []
        for call in range(calls):
            image = images[(index + call) % len(images)]  # clients send different images at once
            start = time.perf_counter()
            try:
                probability, overlay = _answer(client, image)
            except Exception as error:  # any failure counts; the run goes on
                outcomes.append((time.perf_counter() - start, f"error: {type(error).__name__}: {error}"))
                continue
            expected_p, expected_overlay = reference[image]
            same = abs(probability - expected_p) < 1e-9 and overlay == expected_overlay
            outcomes.append((time.perf_counter() - start, "ok" if same else "mismatch"))
        return outcomes

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = [o for result in pool.map(session, range(clients)) for o in result]
    wall = time.perf_counter() - started
    latencies = np.array([seconds for seconds, status in outcomes if status == "ok"]) * 1000
    errors = [status for _, status in outcomes if status.startswith("error")]
    return {
        "clients": clients,
        "calls": clients * calls,
        "errors": len(errors),
        "mismatches": sum(status == "mismatch" for _, status in outcomes),
        "first_error": errors[0] if errors else None,
        "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else None,
        "p95_ms": float(np.percentile(latencies, 95)) if len(latencies) else None,
        "throughput_per_s": len(outcomes) / wall,
    }
