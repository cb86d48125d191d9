# Ad-hoc: a gradio_client door soak with two clients kept for every call (docs/operations.md, memory per door).
# python docs/runs/memory/gradio_client_kept.py same
import json
import sys
from concurrent.futures import ThreadPoolExecutor

from gradio_client import Client, handle_file

from cxr.examples import bundled_examples
from cxr.launch import start_app
from cxr.loadtest import memory_slope, process_stats

fresh = sys.argv[1] == "fresh"
env = dict(a.split("=", 1) for a in sys.argv[2:])
process, url, _ = start_app(env)
images = bundled_examples()
clients = [Client(url, verbose=False) for _ in range(2)]


def call(i):
    c = Client(url, verbose=False) if fresh else clients[i % 2]
    c.predict(handle_file(str(images[i % len(images)])), api_name="/predict")
    if fresh:
        c.close()


try:
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(call, range(200)))
        samples = [(0, process_stats(process.pid)["rss_mb"])]
        for b in range(0, 1000, 250):
            list(pool.map(call, range(b, b + 250)))
            samples.append((b + 250, process_stats(process.pid)["rss_mb"]))
    print(json.dumps({"fresh": fresh, "env": env, "samples": samples, "slope": memory_slope(samples)}))
finally:
    process.terminate()
    process.wait()
