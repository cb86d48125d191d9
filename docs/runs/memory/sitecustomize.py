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

# SIGUSR2: append glibc's malloc totals over every arena (mallinfo2) as one JSON line to $MI_DUMP:
# in use by the program (uordblks + hblkhd) against held free inside the arenas (fordblks).
if os.environ.get("MI_DUMP"):
    import ctypes
    import json

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in [
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            ]
        ]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def on_usr2(*_):
        info = libc.mallinfo2()
        sizes = ("arena", "hblkhd", "fsmblks", "uordblks", "fordblks", "keepcost")  # the byte counts
        mb = {name: round(getattr(info, name) / 2**20, 1) for name in sizes}
        with open(os.environ["MI_DUMP"], "a") as out:
            out.write(json.dumps(mb) + "\n")
        with open("/proc/self/smaps") as smaps, open(os.environ["MI_DUMP"] + f".smaps{on_usr2.count}", "w") as out:
            out.write(smaps.read())  # which mappings hold the resident memory
        on_usr2.count += 1

    on_usr2.count = 0

    signal.signal(signal.SIGUSR2, on_usr2)

# MCP_TRACE: log the type and repr of any exception the MCP server's queued tool path raises (the
# in-process gradio_client job), to name the failure that reaches the agent as an empty error.
if os.environ.get("MCP_TRACE"):
    import gradio.mcp

    original = gradio.mcp.GradioMCPServer._execute_tool_without_progress

    async def traced(self, job):
        try:
            return await original(self, job)
        except BaseException as error:
            with open(os.environ["MCP_TRACE"], "a") as out:
                out.write(f"{type(error).__module__}.{type(error).__name__}: {error!r}\n")
            raise

    gradio.mcp.GradioMCPServer._execute_tool_without_progress = traced
