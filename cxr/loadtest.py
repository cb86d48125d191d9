"""Concurrent load on the real app over loopback: errors, latency, throughput, and answer integrity.

Each image is first answered alone; under load, every answer must equal its own image's answer
(probability and overlay pixels), which catches Grad-CAM hooks or state leaking between
concurrent requests. Bounded: clients x calls requests. The soak (:func:`run_soak`) mixes the three
doors and valid, hostile and oversized inputs, and watches the app's memory, descriptors and cache.
The command is ``cxr.cli.loadtest``.
"""

from __future__ import annotations

import hashlib
import threading
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


def process_stats(pid: int) -> dict[str, int]:
    """Resident memory (MB: all, anonymous, file pages) and open file descriptors of a process, from
    /proc (Linux). Anonymous pages are the heaps; file pages, code and mapped files paged in."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    mb = {name: int(fields[key].split()[0]) // 1024 for name, key in RSS_FIELDS.items()}
    return mb | {"fds": len(list(Path(f"/proc/{pid}/fd").iterdir()))}


RSS_FIELDS = {"rss_mb": "VmRSS", "anon_mb": "RssAnon", "file_mb": "RssFile"}


def files_in(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()} if folder.exists() else set()


def soak_inputs(folder: Path, images: list[Path]) -> list[tuple[str, Path]]:
    """Mixed traffic: valid X-rays, a file that is not an image, and one over the 50 MB limit."""
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "not_an_image.jpg"
    text.write_text("a text file renamed .jpg\n" * 40)
    oversized = folder / "oversized.png"
    with open(oversized, "wb") as handle:  # sparse: 51 MB on the wire, no disk used
        handle.truncate(51 * 2**20)
    return [("valid", image) for image in images] + [("hostile", text), ("oversized", oversized)]


MIXED_DOORS = ("http", "gradio_client", "mcp", "ui")  # the mixed soak's valid X-rays go round these


def run_soak(
    url: str,
    pid: int,
    cache: Path,
    inputs: list[tuple[str, Path]],
    calls: int,
    concurrency: int,
    seconds: float,
    ttl_wait: float,
) -> dict:
    """``calls`` requests (at most ``seconds``) from ``concurrency`` callers over mixed doors and inputs.

    Each valid image is answered alone first; every later answer must equal it (probability to 1e-6,
    decision). Hostile and oversized inputs must be refused, never fail otherwise. Resident memory
    and descriptors of the app (``pid``) at start, after warm-up and at the end; files left in its
    Gradio cache (``cache``) ``ttl_wait`` seconds after the last call.
    """
    from cxr.doors import DOORS, DoorError

    start_stats, own_files = process_stats(pid), files_in(cache)  # the app's own: its example X-rays
    doors = {name: DOORS[name](url) for name in ("http", "mcp")}
    reference = {path: doors["http"].screen(path) for kind, path in inputs if kind == "valid"}

    def one(index: int) -> str:
        kind, path = inputs[index % len(inputs)]
        door = mixed_door(index, kind)
        caller = DOORS[door](url) if door != "mcp" else None
        try:
            answer = (caller or doors["mcp"]).screen(path)
        except DoorError as error:
            return "refused" if kind != "valid" else f"error: {error}"
        except Exception as error:  # a transport failure counts against the server
            return f"error: {type(error).__name__}: {error}"
        finally:
            if caller:
                caller.close()
        if kind != "valid":
            return f"error: {kind} input was answered"
        return judge(answer, reference[path])

    with ThreadPoolExecutor(concurrency) as pool:
        # Warm-up: one round of the soak's own traffic (every door, every kind of input, ``concurrency``
        # at once), so "after warm-up" means every path and every worker thread has run once.
        # Its answers are judged like the rest: an error while warming up is an error.
        warm_up = list(pool.map(one, range(concurrency * 4)))
    warm_stats = process_stats(pid)

    deadline = time.perf_counter() + seconds
    outcomes: list[str] = []
    with ThreadPoolExecutor(concurrency) as pool:
        for begin in range(0, calls, concurrency * 4):  # in rounds, so the time bound is checked
            if time.perf_counter() > deadline:
                break
            outcomes += pool.map(one, range(begin, min(begin + concurrency * 4, calls)))
    for door in doors.values():
        door.close()
    end_stats = process_stats(pid)
    time.sleep(ttl_wait)
    return {
        "calls": len(outcomes),
        "warm_up_calls": len(warm_up),
        "concurrency": concurrency,
        **tally(warm_up, outcomes),
        "valid_calls_per_door": door_counts(inputs, len(outcomes)),
        "rss_mb": {"start": start_stats["rss_mb"], "warm": warm_stats["rss_mb"], "end": end_stats["rss_mb"]},
        "rss_growth_after_warmup_mb": end_stats["rss_mb"] - warm_stats["rss_mb"],
        "fds": {"start": start_stats["fds"], "warm": warm_stats["fds"], "end": process_stats(pid)["fds"]},
        "cache_files_after_ttl": sorted(files_in(cache) - own_files),
    }


def mixed_door(index: int, kind: str) -> str:
    """The door of the mixed soak's call ``index``: valid X-rays go round MIXED_DOORS, the rest to HTTP."""
    return MIXED_DOORS[index % len(MIXED_DOORS)] if kind == "valid" else "http"


def door_counts(inputs: list[tuple[str, Path]], calls: int) -> dict[str, int]:
    """How many of the mixed soak's ``calls`` sent a valid X-ray through each door."""
    doors = [mixed_door(index, "valid") for index in range(calls) if inputs[index % len(inputs)][0] == "valid"]
    return {door: doors.count(door) for door in MIXED_DOORS}


def judge(answer: dict, expected: dict) -> str:
    """ "ok" when an answer is its image's solo answer (probability to 1e-6, decision), else "mismatch"."""
    same = abs(answer["probability"] - expected["probability"]) < 1e-6
    return "ok" if same and answer["decision"] == expected["decision"] else "mismatch"


def tally(warm_up: list[str], outcomes: list[str]) -> dict:
    """Errors (warm-up included: an error while warming up counts), mismatches, and refusals of the soak proper."""
    errors = [o for o in warm_up + outcomes if o.startswith("error")]
    return {
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "mismatches": (warm_up + outcomes).count("mismatch"),
        "refused": outcomes.count("refused"),
    }


def _parts(stat: dict) -> list[int]:
    return [stat["anon_mb"], stat["file_mb"]]


def memory_slope(samples: list[tuple[int, int]]) -> float | None:
    """Resident memory growth in MB per 1,000 calls: the least-squares slope through (calls, MB) samples."""
    if len(samples) < 2:
        return None
    calls, rss = np.array(samples, dtype=float).T
    return float(np.polyfit(calls, rss, 1)[0] * 1000)


def run_door_soak(
    url: str,
    pid: int,
    door: str,
    inputs: list[tuple[str, Path]],
    calls: int,
    warm_up: int = 200,
    sample_every: int = 250,
    concurrency: int = 2,
) -> dict:
    """``calls`` requests through one door after ``warm_up`` of the same, the app's resident memory
    sampled every ``sample_every`` calls; growth is the slope through the samples (MB per 1,000 calls).

    Valid X-rays alternate with hostile inputs as ``inputs`` lists them; the HTTP door alternates
    answers with and without the overlay; every gradio_client and UI call is a new visitor (a new Gradio
    session). Each valid answer must equal the image's solo answer.
    """
    from cxr.doors import DOORS, DoorError

    if door == "mcp":  # a 51 MB body is refused (413) before the tool runs, and the client's session ends with it
        inputs = [(kind, path) for kind, path in inputs if kind != "oversized"]
    reference_door = DOORS["http"](url)
    reference = {path: reference_door.screen(path) for kind, path in inputs if kind == "valid"}
    reference_door.close()
    names = ["http", "http_cam"] if door == "http" else [door]
    kept = door not in ("gradio_client", "ui")
    callers = [DOORS[names[i % len(names)]](url) for i in range(concurrency * len(names))] if kept else []
    free = list(range(len(callers)))
    lock = threading.Lock()

    def one(index: int) -> str:
        kind, path = inputs[index % len(inputs)]
        if not kept:  # gradio_client and the page: a new visitor each call (Gradio keeps state per session)
            caller, slot = DOORS[door](url), None
        else:  # HTTP keeps its connections; an MCP client keeps its session
            with lock:  # each caller (one connection or session) serves one request at a time
                slot = next(i for i in free if i % len(names) == index % len(names))
                free.remove(slot)
            caller = callers[slot]
        try:
            answer = caller.screen(path)
        except DoorError as error:
            return "refused" if kind != "valid" else f"error: a valid X-ray was refused: {error}"
        except Exception as error:  # a transport failure counts against the server
            return f"error: {type(error).__name__}: {error}"
        finally:
            if slot is None:
                caller.close()
            else:
                with lock:
                    free.append(slot)
        if kind != "valid":
            return f"error: {kind} input was answered"
        return judge(answer, reference[path])

    outcomes: list[str] = []
    stats: list[tuple[int, dict]] = []
    with ThreadPoolExecutor(concurrency) as pool:
        warm_outcomes = list(pool.map(one, range(warm_up)))
        stats.append((0, process_stats(pid)))
        for begin in range(0, calls, sample_every):
            outcomes += pool.map(one, range(warm_up + begin, warm_up + min(begin + sample_every, calls)))
            stats.append((len(outcomes), process_stats(pid)))
    samples = [(n, stat["rss_mb"]) for n, stat in stats]
    for caller in callers:
        caller.close()
    return {
        "door": door,
        "calls": len(outcomes),
        "warm_up_calls": warm_up,
        **tally(warm_outcomes, outcomes),
        "inputs": [kind for kind, _ in inputs],
        "rss_mb_samples": samples,
        "rss_growth_mb": samples[-1][1] - samples[0][1],
        "growth_mb_per_1000_calls": memory_slope(samples),
        # The slope of the second half alone: growth that levels off shows here as a smaller figure.
        "growth_mb_per_1000_calls_second_half": memory_slope(samples[len(samples) // 2 :]),
        "anon_file_mb": {"warm": _parts(stats[0][1]), "end": _parts(stats[-1][1])},
        "fds": process_stats(pid)["fds"],
    }
