# Ad-hoc: glibc's own accounting (mallinfo2, every arena) beside the resident memory, across one door's
# calls: is the growth memory the program holds (uordblks, hblkhd) or free memory the arenas keep (fordblks)?
# python docs/runs/memory/mallinfo_soak.py mcp 1000 [KEY=VALUE ...]   (app environment)
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from cxr.examples import bundled_examples
from cxr.launch import start_app
from cxr.loadtest import process_stats, run_door_soak, soak_inputs


def mappings(path: Path) -> dict[str, tuple[str, int]]:
    """Each mapping's start address → (its name or [anon], its resident kB) from a copy of /proc/PID/smaps."""
    found, current = {}, None
    for line in path.read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            current = fields[0].split("-")[0]
            found[current] = (fields[5] if len(fields) > 5 else "[anon]", 0)
        elif fields[0] == "Rss:":
            found[current] = (found[current][0], int(fields[1]))
    return found


def smaps_growth(dump: Path) -> dict[str, int]:
    """Resident kB gained between the two copies, by mapping name (new anonymous mappings apart)."""
    before, after = mappings(Path(f"{dump}.smaps0")), mappings(Path(f"{dump}.smaps1"))
    growth: dict[str, int] = {}
    for start, (name, kb) in after.items():
        key = name if start in before else f"new {name}"
        growth[key] = growth.get(key, 0) + kb - before.get(start, (name, 0))[1]
    for start, (name, kb) in before.items():
        if start not in after:
            growth[f"gone {name}"] = growth.get(f"gone {name}", 0) - kb
    return {k: v for k, v in sorted(growth.items(), key=lambda item: -abs(item[1])) if abs(v) >= 256}


door, calls = sys.argv[1], int(sys.argv[2])
dump = Path(tempfile.mkdtemp()) / "mallinfo.jsonl"
here = str(Path(__file__).parent)
env = {"PYTHONPATH": f"{here}:{Path.cwd()}", "MI_DUMP": str(dump), "CXR_UPLOAD_TTL": "20"}
env |= dict(pair.split("=", 1) for pair in sys.argv[3:])
process, url, _ = start_app(env)
try:
    inputs = soak_inputs(dump.parent / "inputs", bundled_examples())
    warm = run_door_soak(url, process.pid, door, inputs, calls=0, warm_up=200)
    os.kill(process.pid, signal.SIGUSR2)
    time.sleep(1)
    rss0 = process_stats(process.pid)
    report = run_door_soak(url, process.pid, door, inputs, calls=calls, warm_up=0)
    os.kill(process.pid, signal.SIGUSR2)
    time.sleep(1)
    rss1 = process_stats(process.pid)
    first, last = (json.loads(line) for line in dump.read_text().splitlines())
    print(
        json.dumps(
            {
                "door": door,
                "calls": calls,
                "env": sys.argv[3:],
                "errors": report["errors"],
                "first_error": report["first_error"],
                "rss": [rss0, rss1],
                "mallinfo_mb": [first, last],
                "slope": report["growth_mb_per_1000_calls"],
                "smaps_growth_kb": smaps_growth(dump),
            }
        )
    )
finally:
    process.terminate()
    process.wait(timeout=30)
