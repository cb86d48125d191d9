"""Gradio Space: probability of pneumonia and a Grad-CAM overlay for a chest X-ray (UI only)."""

from __future__ import annotations

import functools
import logging
import os
import threading
import uuid
from pathlib import Path

import gradio as gr
import torch
from gradio.components.label import LabelConfidence, LabelData
from PIL import Image

from cxr import ImageReadError, ModelLoadError, Predictor, model_choices, read_xray
from cxr.examples import bundled_examples
from cxr.ood import REASON as OOD_REASON

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
# The model serves one request at a time (Predictor's lock), so it may use every core this process
# may run on: the affinity mask, not the host's core count that a container (a Space) hides.
torch.set_num_threads(int(os.environ.get("CXR_TORCH_THREADS") or len(os.sched_getaffinity(0))))

EXAMPLES = [str(p) for p in bundled_examples(Path(__file__).parent / "examples")]  # beside app.py, as in a Space
MODELS = model_choices()  # the startup model first, then every folder in weights/
DEFAULT_MODEL = next(iter(MODELS))
NOTICE = (
    "**Research demo, not a diagnostic device.** Trained on pediatric chest X-rays (ages 1-5) from one "
    "hospital; it has not been validated for clinical use. Uploads are analysed in memory and not kept."
)


@functools.cache
def predictor_for(name: str) -> Predictor:
    """Each model is loaded once, on first use."""
    if name not in MODELS:
        raise gr.Error(f"Unknown model {name!r}; choose one of: {', '.join(MODELS)}.")
    return Predictor.from_folder(MODELS[name])


UNUSUAL = (
    f"This image looks {OOD_REASON} (pediatric chest X-rays, ages 1-5; far from them in the model's "
    "feature space): the result is unreliable."
)
UNCERTAIN = (
    "The ensemble's members disagree on this X-ray (some on each side of the threshold): treat it as borderline."
)


class DecisionLabel(gr.Label):
    """A ``gr.Label`` headed by the screening decision at the threshold, not by the more probable class."""

    is_template = True  # rendered by gr.Label's own frontend

    def postprocess(self, value):
        return value if isinstance(value, LabelData) else super().postprocess(value)


def predict(upload: dict | str | None, model: str = DEFAULT_MODEL) -> tuple[LabelData, Image.Image, dict]:
    """Chest X-ray file → (decision with {PNEUMONIA: p, NORMAL: 1 - p}, Grad-CAM overlay, answer as JSON).

    Runs with ``preprocess=False``: Gradio checks and caches the upload but does not decode it,
    so every file, readable or not, reaches ``cxr.io`` and bad ones get its clear message.
    """
    path = upload.get("path") if isinstance(upload, dict) else upload
    if not path:
        raise gr.Error("Upload a chest X-ray image first.")
    try:
        image = read_xray(path)
    except ImageReadError as error:
        raise gr.Error(str(error)) from error
    name = model or DEFAULT_MODEL
    predictor = predictor_for(name)
    prediction, overlay = predictor.explain(image)
    # Gradio stores a returned image under a hash of its bytes and writes it in place: two concurrent
    # identical answers (two users on one example) would share a file while it is rewritten. A
    # per-request JPEG comment keeps every answer its own file.
    overlay.info["comment"] = uuid.uuid4().hex
    if prediction.unusual:
        gr.Warning(UNUSUAL)
    confidences = sorted(prediction.confidences().items(), key=lambda item: -item[1])
    label = LabelData(
        label=prediction.label, confidences=[LabelConfidence(label=k, confidence=v) for k, v in confidences]
    )
    return label, overlay, prediction.record() | {"model": name, "sha256": predictor.weights_sha256}


def decision(answer: dict | None) -> str:
    """The screening decision shown under the probabilities, with any warning."""
    if not answer:
        return ""
    warnings = [text for flag, text in (("unusual", UNUSUAL), ("uncertain", UNCERTAIN)) if answer.get(flag)]
    return (
        f"### Decision: {answer['decision']}\n"
        f"P(pneumonia) = {answer['probability']:.3f}; the model's screening threshold is {answer['threshold']:.3f}."
        + "".join(f"\n\n**Warning:** {text}" for text in warnings)
    )


def describe(model: str) -> str:
    config = predictor_for(model).config
    worst = config.stress_metrics.get("stress_worst")
    shift = f"; under the stress bank of acquisition changes, specificity ≥ {worst['specificity']:.2f}" if worst else ""
    auc = config.val_metrics.get("auc") or float("nan")
    return (
        f"Model `{model}` (timm `{config.architecture}`): validation AUC {auc:.3f} "
        f"on a patient-grouped split{shift}. See its model card in `weights/` for data, metrics and limits."
    )


try:  # load the default before serving: broken weights stop the start with one clear line
    default_predictor = predictor_for(DEFAULT_MODEL)
except ModelLoadError as error:
    raise SystemExit(f"Cannot start: {error}") from None
# Warm-up: one answer on a blank image while the UI is built and the server starts, so the first real
# request doesn't pay for the lazy set-up of torch's kernels and Grad-CAM (see README, Speed).
threading.Thread(target=default_predictor.explain, args=(Image.new("L", (1024, 816), 128),), daemon=True).start()

# Uploads and overlays live in Gradio's cache only briefly: swept once they are UPLOAD_TTL seconds old.
# No analytics, no run history: the app keeps nothing about its users.
UPLOAD_TTL = int(os.environ.get("CXR_UPLOAD_TTL", "600"))
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
                label="Chest X-ray (drag and drop)",
                elem_id="xray",
            )
            model = gr.Dropdown(list(MODELS), value=DEFAULT_MODEL, label="Model", elem_id="model")
            analyze = gr.Button("Analyze", variant="primary", elem_id="analyze")
        with gr.Column():
            label = DecisionLabel(label="Screening decision", elem_id="probability")
            verdict = gr.Markdown(elem_id="decision")
            # JPEG: encoding a 1024 px overlay as PNG took longer than the model (see README, Speed)
            cam = gr.Image(type="pil", format="jpeg", label="Grad-CAM: where the model looked", elem_id="overlay")
            answer = gr.JSON(label="Answer (as API clients get it)", elem_id="answer")
    analyze.click(predict, [image, model], [label, cam, answer], api_name="predict", preprocess=False).success(
        decision, answer, verdict, api_visibility="private"
    )
    # A new image or model clears the previous answer, so no result stands beside the wrong input.
    for trigger in (image.change, model.change):
        trigger(lambda: (None, None, None, ""), None, [label, cam, answer, verdict], api_visibility="private")
    if EXAMPLES:
        gr.Examples(EXAMPLES, inputs=image, label="Example X-rays (Kermany et al. 2018, CC BY 4.0)", elem_id="examples")
    about = gr.Markdown(describe(DEFAULT_MODEL))
    model.change(describe, model, about, api_visibility="private")

if __name__ == "__main__":
    # Two workers for two cores: one decodes and draws while the other holds the model (one at a time,
    # see Predictor). Past CXR_QUEUE_SIZE waiting requests, new ones get Gradio's "queue is full" error.
    demo.queue(default_concurrency_limit=2, max_size=int(os.environ.get("CXR_QUEUE_SIZE", "64")))
    demo.launch(max_file_size="50mb", run_history=False)
