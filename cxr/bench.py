"""Speed on this machine: per model (forward, predict + Grad-CAM, the whole answer, folder
throughput), the app's cold start and the ``gradio_client`` round trip broken down (the HTTP
requests and new ``httpx`` clients of one call, each step's time, the overlay's bytes, the same
requests over one keep-alive connection), and training throughput. The command is ``cxr.cli.bench``.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import torch

from cxr.examples import bundled_examples
from cxr.hub import resolve_weights
from cxr.inference import Predictor
from cxr.io import read_xray
from cxr.launch import ROOT, launch_app, wait_healthy


def timed_ms(fn: Callable[[], object], runs: int) -> dict[str, float]:
    """p50 and p95 in milliseconds after one warm-up call."""
    times = _times_ms(fn, runs)
    return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95))}


def _flat(prefix: str, stats: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_ms_{key}": round(value, 1) for key, value in stats.items()}


def model_speed(weights: Path, image_path: Path, runs: int, batch_size: int) -> dict[str, float]:
    """One model or ensemble: latency of forward, predict + Grad-CAM and the full answer; batch throughput."""
    from cxr.predict import predict_files  # the batch command's own loop

    predictor = Predictor.from_folder(weights)
    image = read_xray(image_path)
    batch = predictor.preprocess(image)

    def forward():  # every member's plain forward: an ensemble's own "forward"
        with torch.no_grad():
            for member in predictor.members:
                member.model(batch)

    results = {"parameters": sum(p.numel() for m in predictor.members for p in m.model.parameters())}
    results |= _flat("forward", timed_ms(forward, runs))
    results |= _flat("predict_cam", timed_ms(lambda: predictor.predict(image), runs))
    # The two timed in turn, call by call: the machine's speed drifts between two series of 30 calls
    # by more than the 20 % asked of this ratio (docs/speed.md).
    results["predict_cam_over_forward_p50"] = round(paired_ratio(lambda: predictor.predict(image), forward, runs), 3)
    # The same answer without its map (resize, lung crop, out-of-population check, calibration), by
    # the batch path: predict_cam against this is what the map itself costs.
    results |= _flat("predict_no_map", timed_ms(lambda: predictor.screen([image]), runs))
    results |= _flat("explain", timed_ms(lambda: predictor.explain(read_xray(image_path)), runs))
    examples = bundled_examples()
    files = (examples * (2 * batch_size // len(examples) + 1))[: 2 * batch_size]  # full-size JPEGs
    list(predict_files(predictor, files[:batch_size], batch_size))  # warm-up
    start = time.perf_counter()
    list(predict_files(predictor, files, batch_size))
    results["batch_images_per_s"] = round(len(files) / (time.perf_counter() - start), 1)
    return results


def cold_start(image_path: Path) -> tuple[dict[str, float], subprocess.Popen, str]:
    """One launch of ``python app.py``: seconds to /v1 answering (model loaded and warm), to the first
    HTTP ``/v1/predict`` answer, to the page being up (gradio_client and MCP too), and a new
    ``gradio_client``'s first answer after that. Returns the figures and the still-running app (the
    caller stops it)."""
    from gradio_client import Client, handle_file

    from cxr.doors import HttpDoor

    start = time.perf_counter()
    process, url, log_file = launch_app()
    wait_healthy(process, url, log_file, page=False)
    up = time.perf_counter() - start
    door = HttpDoor(url)
    try:
        door.screen(image_path)
    finally:
        door.close()
    first_answer = time.perf_counter() - start
    wait_healthy(process, url, log_file, page=True)
    page = time.perf_counter() - start
    client_start = time.perf_counter()
    Client(url, verbose=False).predict(handle_file(str(image_path)), api_name="/predict")
    client_first_call = time.perf_counter() - client_start
    return {"up": up, "http": first_answer, "page": page, "client": client_first_call}, process, url


def cold_starts(image_path: Path, launches: int) -> tuple[dict[str, float], subprocess.Popen, str]:
    """``launches`` cold starts one after another (one launch is luck: disk cache, the other core):
    median and worst of each part. The last launch's app is returned still running."""
    runs, process, url = [], None, ""
    for _ in range(launches):
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        figures, process, url = cold_start(image_path)
        runs.append(figures)
    median = {key: float(np.median([run[key] for run in runs])) for key in runs[0]}
    results = {
        "cold_launches": launches,
        "cold_start_s": round(median["http"], 2),  # launch → first answer (HTTP /v1/predict), median
        "cold_start_max_s": round(max(run["http"] for run in runs), 2),
        "cold_start_each_s": [round(run["http"], 2) for run in runs],
        "cold_server_up_s": round(median["up"], 2),  # launch → /v1 answers, model warm
        "cold_page_up_s": round(median["page"], 2),  # launch → the page, gradio_client and MCP answer
        "cold_page_up_max_s": round(max(run["page"] for run in runs), 2),
        "cold_first_call_s": round(median["http"] - median["up"], 2),  # the first HTTP answer
        "cold_client_first_call_s": round(median["client"], 2),  # a new gradio_client and its first answer
    } | import_seconds()  # of that, importing torch, cxr and the server, then gradio (a fresh process)
    return results, process, url


def app_speed(image_path: Path, runs: int, launches: int = 5) -> dict[str, float]:
    """Cold start (launch → first answer, over ``launches`` launches) and the round trip of every door,
    default model, with their parts."""
    from gradio_client import Client, handle_file

    results, process, url = cold_starts(image_path, launches)
    try:
        # A caller making many calls can hand gradio_client one TLS context to reuse: the second figure.
        client = Client(url, verbose=False)
        reusing = Client(url, verbose=False, ssl_verify=ssl.create_default_context())
        for name, each in (("client", client), ("client_reused_tls", reusing)):
            results |= _flat(
                name, timed_ms(lambda c=each: c.predict(handle_file(str(image_path)), api_name="/predict"), runs)
            )
        results |= client_breakdown(client, image_path, runs)
        results |= app_http(url, image_path, runs)
        results |= doors_speed(url, image_path, runs)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return results


IMPORTS_TIMED = """
import time
start = time.perf_counter()
import torch, fastapi, uvicorn, cxr.http_api, cxr.inference
api = time.perf_counter()
import gradio
print(api - start, time.perf_counter() - api)
"""


def import_seconds() -> dict[str, float]:
    """What app.py imports, timed inside a fresh interpreter (its start and exit, which the app's cold
    start does not pay, left out): what /v1 needs (torch, timm, the model's code, the web server),
    then Gradio, which app.py imports after /v1 is served."""
    result = subprocess.run([sys.executable, "-c", IMPORTS_TIMED], cwd=ROOT, check=True, capture_output=True, text=True)
    api, gradio = (float(part) for part in result.stdout.strip().splitlines()[-1].split())
    return {
        "cold_imports_s": round(api + gradio, 2),
        "cold_imports_api_s": round(api, 2),
        "cold_imports_gradio_s": round(gradio, 2),
    }


@contextlib.contextmanager
def http_log() -> Iterator[list[tuple[str, str, float, float]]]:
    """Every ``httpx.Client`` this process creates and every request it sends meanwhile: (kind, path, start, end).

    A new client loads a new TLS context (certifi's bundle), also for ``http://``: that is its time.
    """
    events: list[tuple[str, str, float, float]] = []
    init, send = httpx.Client.__init__, httpx.Client.send

    def logged(kind: str, method: Callable) -> Callable:
        def wrapper(self, *args, **kwargs):
            begin = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                request = (args[0] if args else kwargs.get("request")) if kind == "request" else None
                events.append((kind, request.url.path if request else "", begin, time.perf_counter()))

        return wrapper

    httpx.Client.__init__, httpx.Client.send = logged("client", init), logged("request", send)
    try:
        yield events
    finally:
        httpx.Client.__init__, httpx.Client.send = init, send


def client_breakdown(client, image_path: Path, runs: int) -> dict[str, float]:
    """Where a default gradio_client call spends its time: medians over ``runs`` logged calls.

    Request times run from sending to the response's headers; ``result_wait`` runs from the queue's
    answer to the join until the client starts fetching the overlay (the app's work, the event
    stream, and gradio_client's 50 ms polling of what that stream received).
    """
    from gradio_client import handle_file

    parts: dict[str, list[float]] = {}
    for _ in range(runs):
        with http_log() as events:
            _, overlay, _ = client.predict(handle_file(str(image_path)), api_name="/predict")
        requests = [e for e in events if e[0] == "request"]
        clients = [e for e in events if e[0] == "client"]
        join = next(e for e in requests if e[1].endswith("/queue/join"))
        row = {
            "requests_per_call": len(requests),
            "new_httpx_clients_per_call": len(clients),
            "new_httpx_client_ms": np.median([(end - begin) * 1000 for *_, begin, end in clients]),
            "upload_ms": next((end - begin) * 1000 for _, p, begin, end in requests if p.endswith("/upload")),
            "join_ms": (join[3] - join[2]) * 1000,
            "result_wait_ms": (max(begin for *_, begin, _ in clients) - join[3]) * 1000,
            "download_ms": next((end - begin) * 1000 for _, p, begin, end in requests if "/file=" in p),
        }
        for key, value in row.items():
            parts.setdefault(key, []).append(value)
    results = {f"client_{key}": round(float(np.median(values)), 1) for key, values in parts.items()}
    for key in ("client_requests_per_call", "client_new_httpx_clients_per_call"):
        results[key] = int(results[key])
    results["overlay_bytes"] = Path(overlay).stat().st_size
    return results


def app_http(url: str, image_path: Path, runs: int) -> dict[str, float]:
    """The same call as gradio_client's four requests (upload, join the queue, read the event stream,
    fetch the overlay), over one keep-alive connection and without polling: the app's own share."""
    with httpx.Client(timeout=60) as http:
        config = http.get(url + "config").raise_for_status().json()
        api = url + config.get("api_prefix", "/gradio_api").strip("/") + "/"
        fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "predict")

        def call() -> None:
            with open(image_path, "rb") as file:
                path = http.post(api + "upload", files=[("files", (image_path.name, file))]).raise_for_status()
            upload = {"path": path.json()[0], "orig_name": image_path.name, "meta": {"_type": "gradio.FileData"}}
            session = uuid.uuid4().hex  # the model input left empty: the app's default model
            body = {"data": [upload, None], "fn_index": fn_index, "session_hash": session}
            http.post(api + "queue/join", json=body).raise_for_status()
            message: dict = {}
            with http.stream("GET", api + "queue/data", params={"session_hash": session}) as stream:
                for line in stream.iter_lines():
                    message = json.loads(line[5:]) if line.startswith("data:") else {}
                    if message.get("msg") == "process_completed":
                        break
            if not message.get("success"):
                raise RuntimeError(f"/predict failed: {message}")
            http.get(message["output"]["data"][1]["url"]).raise_for_status()

        return _flat("app_http", timed_ms(call, runs))


def doors_speed(url: str, image_path: Path, runs: int, concurrency: int = 4) -> dict[str, float]:
    """p50/p95 of one answer through each door (HTTP without and with the map, gradio_client, MCP),
    one caller at a time and with ``concurrency`` callers at once (each its own client)."""
    from concurrent.futures import ThreadPoolExecutor

    from cxr.doors import DOORS

    results: dict[str, float] = {}
    for name, make in DOORS.items():
        door = make(url)
        try:
            results |= _flat(f"door_{name}", timed_ms(lambda d=door: d.screen(image_path), runs))
        finally:
            door.close()
        doors = [make(url) for _ in range(concurrency)]
        try:
            with ThreadPoolExecutor(concurrency) as pool:
                calls = [lambda d=door: d.screen(image_path) for door in doors]
                times = [t for each in pool.map(lambda call: _times_ms(call, runs), calls) for t in each]
        finally:
            for door in doors:
                door.close()
        spread = {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95))}
        results |= _flat(f"door_{name}_x{concurrency}", spread)
    return results


def paired_ratio(fn: Callable[[], object], baseline: Callable[[], object], runs: int) -> float:
    """The median over ``runs`` pairs of ``fn``'s time over ``baseline``'s, each pair timed back to back."""
    fn(), baseline()
    return float(np.median([_call_ms(fn) / _call_ms(baseline) for _ in range(runs)]))


def _times_ms(fn: Callable[[], object], runs: int) -> list[float]:
    """Milliseconds of ``runs`` calls after one warm-up call (a connection, a session, lazy set-up)."""
    fn()
    return [_call_ms(fn) for _ in range(runs)]


def _call_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


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


def speed_report(
    folders: list[Path], image: Path, runs: int, batch_size: int, with_app: bool = True, launches: int = 5
) -> dict:
    """Every figure, per model and (``with_app``) through the app; the top level is the default model's."""
    default = resolve_weights()
    folders = sorted(folders, key=lambda folder: folder.resolve() != default.resolve())  # default first
    models = {folder.name: model_speed(folder, image, runs, batch_size) for folder in folders}
    first = next(iter(models.values()))
    results = {"default": folders[0].name, "image": image.name, "torch_threads": torch.get_num_threads()}
    results |= {key: value for key, value in first.items() if key != "parameters"}
    if with_app:
        results |= app_speed(image, runs, launches)
    results["models"] = models
    return results
