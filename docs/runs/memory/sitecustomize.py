# Loaded by the app through PYTHONPATH (trace_memory.py): a first SIGUSR1 starts tracemalloc,
# each later one dumps a snapshot.
import os
import signal
import tracemalloc

if os.environ.get("TM_DUMP"):
    count = [0]

    def on_signal(*_):
        if not tracemalloc.is_tracing():
            tracemalloc.start(int(os.environ.get("TM_FRAMES", "1")))
            return
        count[0] += 1
        tracemalloc.take_snapshot().dump(f"{os.environ['TM_DUMP']}.{count[0]}")

    signal.signal(signal.SIGUSR1, on_signal)
