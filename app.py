"""Gradio Space: probability of pneumonia and a Grad-CAM overlay for a chest X-ray, with its doors:
the page and gradio_client at /, plain HTTP/JSON at /v1, MCP at /gradio_api/mcp/.

Run as ``python app.py`` (as a Space does), it answers /v1 as soon as the model is warm and mounts the
page once Gradio, a 3 s import of its own, is loaded (cxr.startup); imported, it builds everything at once.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import torch
from fastapi import FastAPI
from PIL import Image

from cxr import ImageReadError, ModelLoadError, model_choices
from cxr.capacity import Capacity, ServerBusyError
from cxr.examples import bundled_examples, example_label
from cxr.http_api import router
from cxr.inference import NOT_ASSESSED
from cxr.io import formats_text
from cxr.memory import start_trimmer, tune_malloc
from cxr.ood import REASON as OOD_REASON
from cxr.service import Screening, UnknownModelError
from cxr.sessions import session_pruner
from cxr.startup import ApiFirst
from cxr.sweep import copies_of, start_sweeper, touched_on_hand_out

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("app")
logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio polls itself; each request is not news
# The model serves one request at a time (Predictor's lock), so it may use every core this process
# may run on: the affinity mask, not the host's core count that a container (a Space) hides.
torch.set_num_threads(int(os.environ.get("CXR_TORCH_THREADS") or len(os.sched_getaffinity(0))))

# glibc's allocator, set before the server's threads start (why and the figures: docs/operations.md, Memory).
tune_malloc(int(os.environ.get("CXR_MALLOC_ARENAS", "0")), int(os.environ.get("CXR_MALLOC_MMAP_THRESHOLD", "0")))
start_trimmer(float(os.environ.get("CXR_MALLOC_TRIM_EVERY", "5")))  # 0: off
# Gradio's queue records each finished event for its monitoring page (off here) and by default rebuilds a
# pandas summary of its last 10,000 after every event: memory and work that grew with the calls served.
os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "256")
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "64")

EXAMPLES = [str(p) for p in bundled_examples(Path(__file__).parent / "examples")]  # beside app.py, as in a Space
SCREENING = Screening(model_choices())  # the startup model first, then every folder in weights/
MODELS, DEFAULT_MODEL = SCREENING.models, SCREENING.default
# Two workers for two cores: one decodes and draws while the other holds the model (one at a time,
# see Predictor). Past QUEUE_SIZE waiting requests, new ones are turned away, on every door.
WORKERS, QUEUE_SIZE = 2, int(os.environ.get("CXR_QUEUE_SIZE", "64"))
SESSION_CAPACITY = int(os.environ.get("CXR_SESSION_CAPACITY", "256"))  # Gradio sessions kept (see below)
# One bound on answers for every door: the UI and gradio_client wait in Gradio's queue first, HTTP /v1 and
# MCP (answered without the queue, see below) only here.
CAPACITY = Capacity(WORKERS, QUEUE_SIZE)
NOTICE = (
    "**Research demo, not a diagnostic device.** Trained on pediatric chest X-rays (ages 1-5) from one "
    "hospital; it has not been validated for clinical use. Uploads are analysed in memory and not kept."
)


try:  # load the default before serving: broken weights stop the start with one clear line
    SCREENING.predictor()
except ModelLoadError as error:
    raise SystemExit(f"Cannot start: {error}") from None
# Warm-up while the server starts and the page is built; /v1/health answers 200 once it is done.
# Not a daemon: a process that exits right after the import waits for it, because torch aborts
# ("terminate called without an active exception") if its threads are torn down mid-forward.
threading.Thread(target=SCREENING.warm_up, name="warm-up").start()

# One server, one port: plain HTTP/JSON at /v1 (docs at /docs), then the page and gradio_client at /
# and the screening tool over MCP at /gradio_api/mcp/. All share the models, their lock and CAPACITY.
# Gradio's queue keeps an emptied entry per session ever seen (cxr.sessions): pruned every minute.
PAGE_READY = threading.Event()  # set once the page is mounted; /v1/health reports it


def pending_sessions() -> dict[str, set]:
    """Gradio's queue's per-session bookkeeping; nothing before the page is built."""
    return demo._queue.pending_event_ids_session if PAGE_READY.is_set() else {}


server = FastAPI(
    title="Pneumonia screening on chest X-rays",
    description=NOTICE,
    version="1",
    lifespan=lambda _: session_pruner(pending_sessions, every=60),
)
server.include_router(router(SCREENING, CAPACITY, page_ready=PAGE_READY))
if __name__ == "__main__":  # answer /v1 now, while Gradio is imported and the page is built (cxr.startup)
    HOST = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")  # a Space sets 0.0.0.0
    PORT = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    API = ApiFirst(server, HOST, PORT, PAGE_READY).start()
    log.info("serving on http://%s:%d/ (HTTP/JSON at /v1 now; the page and MCP once built)", HOST, PORT)

import gradio as gr  # noqa: E402  (after the server starts: see the module's docstring)
from gradio import processing_utils  # noqa: E402
from gradio.components.label import LabelConfidence, LabelData  # noqa: E402
from gradio.utils import get_upload_folder  # noqa: E402


def user_error(message: str) -> gr.Error:
    """An expected mistake (a bad file, an unknown model): one log line and a clear message, no traceback."""
    log.warning("refused: %s", message)
    return gr.Error(message, print_exception=False)


NOT_ASSESSED_TEXT = (
    f"### No screening decision\nThis image does not look like a chest X-ray of a child like those the "
    f"model was trained on (ages 1-5): it is {OOD_REASON}. The model gives no decision for it; the "
    "probability below is shown for reference only and is not reliable."
)
UNCERTAIN = (
    "The ensemble's members disagree on this X-ray (some on each side of the threshold): treat it as borderline."
)
HOW_TO_READ = f"""
- **Probability** is the model's calibrated P(pneumonia): its temperature and bias were fitted on a
  patient-grouped validation split, clean and under simulated acquisition changes (cropping,
  exposure, blur, JPEG, markers), so about that share of such X-rays are pneumonia.
- **Decision** is PNEUMONIA when the probability reaches the model's **threshold**, chosen so that at
  least 97 % of pneumonia cases in validation are caught; below it, NORMAL.
- **NOT_ASSESSED**: the image is far from the training X-rays in the model's feature space (a photo,
  a document, an adult's film, an unusual acquisition). No decision is given; the probability is
  shown but means little. **Uncertain** (ensembles): members fall on both sides of the threshold.
- **Grad-CAM** colours the regions whose features pushed the model towards the decision shown, at a
  coarse 7 x 7 resolution. It shows where the evidence the model used lies, not a lesion, and red is
  not "disease": for a NORMAL decision it marks what made the model call it normal.
- Accepted files: {formats_text()}, up to 50 MB. Trained only on pediatric X-rays from one hospital.
"""
MAP_CAPTION = "Grad-CAM: regions that pushed the model towards {decision}"


class DecisionLabel(gr.Label):
    """A ``gr.Label`` headed by the screening decision at the threshold, not by the more probable class."""

    is_template = True  # rendered by gr.Label's own frontend

    def postprocess(self, value):
        return value if isinstance(value, LabelData) else super().postprocess(value)


class AnswerJSON(gr.JSON):
    """A ``gr.JSON`` whose value stays a plain dict: MCP's direct path prints outputs as they are (not
    ``root={...}``), and every other door gets the same JSON as before."""

    is_template = True  # rendered by gr.JSON's own frontend

    def postprocess(self, value):
        return value if isinstance(value, dict) else super().postprocess(value)


def answer_upload(upload: dict | str | None, model: str) -> tuple[LabelData, Image.Image | None, dict]:
    """The three outputs for one upload (a Gradio FileData dict or a path); gr.Error for a bad file or model."""
    path = upload.get("path") if isinstance(upload, dict) else upload
    try:
        prediction, overlay, record = SCREENING.screen(path, model or DEFAULT_MODEL)
    except (ImageReadError, UnknownModelError) as error:
        raise user_error(str(error)) from error
    confidences = sorted(prediction.confidences().items(), key=lambda item: -item[1])
    label = LabelData(
        label=prediction.decision, confidences=[LabelConfidence(label=k, confidence=v) for k, v in confidences]
    )
    return label, overlay, record


async def screen_chest_xray(
    upload: dict | str | None, model: str = DEFAULT_MODEL
) -> tuple[LabelData, Image.Image | None, dict]:
    """Screen one frontal chest X-ray of a young child (ages 1-5) for pneumonia.
    Research demo, not a diagnostic device: never use it for a patient's care.

    Returns the decision with P(pneumonia) and P(normal), a Grad-CAM overlay of the regions that pushed
    the model towards its decision, and the answer as JSON: probability (calibrated P(pneumonia)),
    decision (PNEUMONIA or NORMAL at the model's threshold; NOT_ASSESSED when the image does not look
    like the pediatric chest X-rays the model was trained on: no decision, no overlay, "reason" says
    why), threshold, unusual (true: outside that population), uncertain (true: an ensemble's members
    disagree, treat as borderline), ood_distance, model and sha256 of the weights.

    Args:
        upload: the chest X-ray file ({formats}), as an http(s) URL or a base64 data URI.
        model: the model's name (default: the shipped default).
    """
    try:
        return await CAPACITY.run(answer_upload, upload, model)
    except ServerBusyError as error:
        raise user_error(str(error)) from error


screen_chest_xray.__doc__ = screen_chest_xray.__doc__.replace("{formats}", formats_text())


def render(answer: dict | None) -> tuple[str, dict, dict]:
    """The words around an answer: the headline text, the bars' emphasis, and what the map explains."""
    if not answer:
        return "", gr.update(elem_classes=[]), gr.update(label=MAP_CAPTION.format(decision="the decision"))
    if answer["decision"] == NOT_ASSESSED:
        text = NOT_ASSESSED_TEXT + f" (P(pneumonia) = {answer['probability']:.3f})"
        return text, gr.update(elem_classes=["not-assessed"]), gr.update(label="Grad-CAM: not drawn (no decision)")
    text = (
        f"### Decision: {answer['decision']}\n"
        f"P(pneumonia) = {answer['probability']:.3f}; the model's screening threshold is {answer['threshold']:.3f}."
    )
    if answer.get("uncertain"):
        text += f"\n\n**Warning:** {UNCERTAIN}"
    return text, gr.update(elem_classes=[]), gr.update(label=MAP_CAPTION.format(decision=answer["decision"]))


def describe(model: str) -> str:
    config = SCREENING.predictor(model).config
    worst = config.stress_metrics.get("stress_worst")
    shift = f"; under the stress bank of acquisition changes, specificity ≥ {worst['specificity']:.2f}" if worst else ""
    auc = config.val_metrics.get("auc") or float("nan")
    return (
        f"Model `{model}` (timm `{config.architecture}`): validation AUC {auc:.3f} "
        f"on a patient-grouped split{shift}. See its model card in `weights/` for data, metrics and limits."
    )


# Uploads and overlays live in Gradio's cache only briefly: swept once they are UPLOAD_TTL seconds old.
# No analytics, no run history: the app keeps nothing about its users.
UPLOAD_TTL = int(os.environ.get("CXR_UPLOAD_TTL", "600"))
WRAP_JSON = ".wrap-json * { overflow-wrap: anywhere; white-space: pre-wrap; }"  # long sha256 values wrap
CSS = ".not-assessed .output-class, .not-assessed .confidence-set { opacity: 0.45; }"  # bars de-emphasised
with gr.Blocks(
    title="Pneumonia screening on chest X-rays", delete_cache=(UPLOAD_TTL, UPLOAD_TTL), analytics_enabled=False
) as demo:
    gr.Markdown("# Pneumonia screening on chest X-rays\n" + NOTICE)
    with gr.Row():
        with gr.Column():
            image = gr.Image(
                type="filepath",
                image_mode=None,
                sources=["upload", "clipboard"],
                label=f"Chest X-ray (drag and drop: {formats_text()})",
                elem_id="xray",
            )
            model = gr.Dropdown(list(MODELS), value=DEFAULT_MODEL, label="Model", elem_id="model")
            analyze = gr.Button("Analyze", variant="primary", elem_id="analyze")
        with gr.Column():
            verdict = gr.Markdown(elem_id="decision")
            label = DecisionLabel(label="Screening decision", elem_id="probability")
            # JPEG: encoding a 1024 px overlay as PNG took longer than the model (see README, Speed)
            caption = MAP_CAPTION.format(decision="the decision")
            cam = gr.Image(type="pil", format="jpeg", label=caption, elem_id="overlay")
            with gr.Accordion("How to read this", open=False, elem_id="how-to-read"):
                gr.Markdown(HOW_TO_READ)
            answer = AnswerJSON(label="Answer (as API clients get it)", elem_id="answer", elem_classes=["wrap-json"])
    # The button's event is the UI's own (private, queued: the browser shows its place in line). The API
    # endpoint /predict is a twin on a hidden trigger, not queued: MCP then calls the function directly
    # (Gradio's queued MCP path shares one loopback client among agents, and about one call in 1,000-1,500
    # was cancelled in it), while gradio_client calls still join Gradio's queue (its bound and "Queue is
    # full"). Both end in CAPACITY.
    analyze.click(screen_chest_xray, [image, model], [label, cam, answer], api_visibility="private", preprocess=False)
    api_trigger = gr.Button(visible=False)
    api_trigger.click(
        screen_chest_xray, [image, model], [label, cam, answer], api_name="predict", queue=False, preprocess=False
    )
    # Every answer, from the button or an example, is put into words by one private step.
    answer.change(render, answer, [verdict, label, cam], api_visibility="private")
    # A new image or model from the user clears the previous answer, so no result stands beside the
    # wrong input (``input``, not ``change``: an example click sets the image and then answers). Not
    # queued: behind other users' analyses, a queued clear could finish after an Analyze clicked right
    # after the drop, and wipe its answer.
    for trigger in (image.input, model.input):
        trigger(lambda: (None, None, None), None, [label, cam, answer], queue=False, api_visibility="private")
    if EXAMPLES:
        gr.Examples(
            EXAMPLES,
            inputs=image,
            outputs=[label, cam, answer],
            fn=screen_chest_xray,
            run_on_click=True,  # a click answers, as the button does (the default model)
            preprocess=False,
            example_labels=[example_label(path) for path in EXAMPLES],
            label="Example X-rays: click one to analyse it (Kermany et al. 2018, CC BY 4.0)",
            elem_id="examples",
        )
    about = gr.Markdown(describe(DEFAULT_MODEL))
    model.change(describe, model, about, api_visibility="private")

demo.queue(default_concurrency_limit=WORKERS, max_size=QUEUE_SIZE)
# Gradio keeps each session's copy of the page's component configs (about 30 KB) for its 10,000 most
# recent sessions, and every gradio_client has its own: the server's memory climbed with its callers
# until 10,000 of them had come. This app keeps no per-session state (no gr.State; every answer is
# computed from its inputs), so a few hundred recent sessions are plenty. mount_gradio_app takes no
# such argument; launch() would set this same attribute.
demo.state_session_capacity = SESSION_CAPACITY
# Gradio sweeps only the files it tracks; the MCP door's uploads land in the same folder untracked, and
# a run that stopped early leaves its uploads behind. Only Gradio's copies of the examples stay.
start_sweeper(Path(get_upload_folder()), UPLOAD_TTL, every=max(1, UPLOAD_TTL // 2), keep=copies_of(map(Path, EXAMPLES)))
# Gradio's MCP door hands out the copy of a base64 upload it already holds without touching it (its
# save_file_to_cache does touch), so the sweep could delete that copy before the tool read it: "No file
# was received" for 34 of 300 calls of one X-ray, 6 at once, with a 1 s TTL (docs/operations.md, Privacy).
# Its clock now restarts at each hand-out, under the sweep's lock. mcp.py looks the function up at call time.
processing_utils.save_base64_to_cache = touched_on_hand_out(processing_utils.save_base64_to_cache)


def mount_page() -> FastAPI:
    """The page, gradio_client's API and MCP, mounted on ``server`` at / (beside /v1)."""
    return gr.mount_gradio_app(
        server, demo, path="/", max_file_size="50mb", run_history=False, css=CSS + WRAP_JSON, mcp_server=True
    )


if __name__ == "__main__":
    API.attach_page(mount_page, demo)
    API.wait()
else:  # imported (tests, `gradio app.py`): whoever serves ``server`` runs the page's startup with it
    mount_page()
    PAGE_READY.set()
