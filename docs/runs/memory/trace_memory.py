# Ad-hoc: a tracemalloc diff of the app across one door's calls (docs/operations.md, memory per door).
# Needs sitecustomize.py in /tmp/tmdbg (the app loads it through PYTHONPATH):
# python docs/runs/memory/trace_memory.py mcp
import os
import signal
import sys
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

from cxr.doors import DOORS
from cxr.examples import bundled_examples
from cxr.launch import start_app
from cxr.loadtest import process_stats

door = sys.argv[1]
env = {"PYTHONPATH": "/tmp/tmdbg:/work/main", "TM_DUMP": f"/tmp/tm_{door}", "TM_FRAMES": "6", "CXR_UPLOAD_TTL": "20"}
process, url, _ = start_app(env)
images = bundled_examples()
keep = [DOORS[door](url) for _ in range(2)] if door != "gradio_client" else None


def call(i):
    c = keep[i % 2] if keep else DOORS[door](url)
    c.screen(images[i % len(images)])
    if not keep:
        c.close()


try:
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(call, range(200)))
        os.kill(process.pid, signal.SIGUSR1)
        time.sleep(1)  # tracing starts
        list(pool.map(call, range(100)))
        time.sleep(2)
        os.kill(process.pid, signal.SIGUSR1)
        time.sleep(8)
        r0 = process_stats(process.pid)["rss_mb"]
        list(pool.map(call, range(300, 900)))
        time.sleep(2)
        os.kill(process.pid, signal.SIGUSR1)
        time.sleep(8)
        r1 = process_stats(process.pid)["rss_mb"]
    a = tracemalloc.Snapshot.load(f"/tmp/tm_{door}.1")
    b = tracemalloc.Snapshot.load(f"/tmp/tm_{door}.2")
    print("rss", r0, r1)
    print(
        "traced total",
        sum(s.size for s in a.statistics("filename")) / 1e6,
        sum(s.size for s in b.statistics("filename")) / 1e6,
    )
    for stat in b.compare_to(a, "traceback")[:12]:
        print(f"{stat.size_diff / 1e6:+.2f} MB {stat.count_diff:+d}")
        for line in stat.traceback.format()[-12:]:
            print("   ", line)
finally:
    process.terminate()
    process.wait()
